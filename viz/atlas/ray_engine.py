"""`--engine ray`: the atlas's chunks computed by Ray actors, each holding the model once.

Why plain actors and not Ray Data. Ray Data's `map_batches(ActorClass, compute=ActorPoolStrategy(...))`
is the usual shape for offline batch inference, and the worker side here is the same (an actor class
that loads the model in `__init__` and maps a batch of sentences). What decides it is the driver side
the atlas needs: (1) the result of a chunk is a few hundred KB of partial sums that must be checkpointed
under its chunk_id *as it arrives* and folded in chunk_id order; Ray Data re-blocks rows as it likes
(blocks are not our chunks) and hands results back as rows to be written by a datasink, so keeping
"one chunk = one task = one checkpoint file, counted once" would fight its execution model;
(2) `--resume` must skip chunks by id before any work is scheduled, which is a driver loop anyway;
(3) Ray Data needs `ray[data]` (pyarrow and friends) on every node, where `ray` core is enough here.
Plain actors give the rest directly: `max_restarts` restarts a killed worker (reloading the model),
`max_task_retries` re-runs the chunk it was computing, and the driver re-sends a chunk whose actor is
gone for good to another one; `OrderedMerge` counts a chunk once whatever happens.

The driver (viz.atlas.job) reads the corpus and sends each chunk's sentences to a worker (a few hundred
KB per chunk: far below what the model's forward pass costs), so only the machine running the driver
needs the corpus file; workers need this project importable and the model loadable by name (a hub id
their cache or network can reach, a bundled name, or a path on every node), never a pickled model.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from viz.atlas.chunks import Partial
from viz.atlas.job import JobError, JobSpec
from viz.atlas.stream import Chunk
from viz.core import paths

RESTARTS = 3  # a killed worker comes back (model reloaded) this many times
RETRIES = 3  # ... and re-runs the chunk it had (and those queued on it)
RESEND = 3  # a chunk whose actor is gone for good goes to another one at most this often
CONNECT_TIMEOUT_S = 3.0
START_TIMEOUT_S = 600.0  # workers load the model; a cluster short of resources would wait forever
AUTH_HINT = (" If the cluster uses token authentication, set RAY_AUTH_MODE=token (token in ~/.ray/auth_token "
             "or RAY_AUTH_TOKEN), as for `ray job submit`.")
CLIENT_EXCLUDES = [".git", ".venv", "tests", "bench", "**/__pycache__", "*.parts"]


def client_runtime_env() -> dict:
    """What a Ray Client ships to the cluster: the checkout (its root is the workers' working directory), or,
    when installed from a wheel, the `viz` package itself (its _bundle holds the shipped models and data)."""
    if paths.INSTALLED:
        return {"py_modules": [str(paths.PACKAGE)], "excludes": ["**/__pycache__"]}
    return {"working_dir": str(paths.ROOT), "excludes": CLIENT_EXCLUDES}


def import_ray():
    try:
        import ray
    except ImportError:
        raise JobError("--engine ray needs Ray, which is not installed here: `pip install -r requirements-ray.txt` "
                       "(ray[client]==2.60.0), or leave out --engine ray to run embedded.") from None
    return ray


def check_address(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connection to host:port first: Ray itself retries an unreachable GCS for about a minute."""
    if address in (None, "", "auto", "local"):
        return
    url = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = url.hostname, url.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise JobError(f"--address '{address}' is not host:port, ray://host:port or auto.")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise JobError(f"cannot reach a Ray cluster at {address} ({reason} after at most {timeout:.0f} s): "
                       "start one with `ray start --head` or check the address and port.") from None
    _probe(address, host, port, url.scheme == "ray", timeout)


def _probe(address: str, host: str, port: int, client: bool, timeout: float) -> None:
    """Ask the port the first question ray.init would (GetClusterId of the GCS, or a Ray Client ping),
    with a deadline: something else listening there (a proxy, a web server) is refused at once instead of
    after Ray's own ~20 s of retries. Skipped when grpc or Ray's generated stubs are not importable."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc, ray_client_pb2, ray_client_pb2_grpc
    except ImportError:
        return
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        if client:
            ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(
                ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING), timeout=timeout)
        else:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(gcs_service_pb2.GetClusterIdRequest(),
                                                                               timeout=timeout)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAUTHENTICATED and os.environ.get("RAY_AUTH_MODE") != "token":
            raise JobError(f"the Ray cluster at {address} asks for a token." + AUTH_HINT) from None
        if e.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            what = "Ray Client server (ray://, port 10001 by default)" if client else "Ray head node (GCS, port 6379)"
            raise JobError(f"{address} answers, but not as a {what}: {e.code().name}. Check the address and "
                           "port (`ray status` on the head node prints them).") from None
    finally:
        channel.close()


class AtlasWorker:
    """One Ray actor: loads the model once (by name or path, on its own node), pins torch threads."""

    def __init__(self, model: str, options: dict, threads: int, gpus: float) -> None:
        import torch

        from viz.core.env import quiet
        from viz.core.models import ModelLoadError, load_key

        quiet()
        torch.set_num_threads(max(1, threads))  # Ray sets OMP_NUM_THREADS; torch's own pool must match
        try:
            self.bundle = load_key(model)
        except ModelLoadError as e:
            raise RuntimeError(f"worker could not load model '{model}': {e}") from None
        if gpus > 0:
            if not torch.cuda.is_available():
                raise RuntimeError("worker was given a GPU share but torch sees no CUDA device")
            self.bundle.model.to("cuda")
        self.options = options

    def info(self) -> dict:
        return {"pid": os.getpid(), "node": socket.gethostname(), "model": self.bundle.name}

    def process(self, chunk_id: int, start: int, sentences: tuple[str, ...]) -> dict:
        from viz.atlas.chunks import process_chunk

        return process_chunk(self.bundle, sentences, start, chunk_id, **self.options).to_arrays()


def _cause(e: BaseException) -> str:
    """The first line of what went wrong inside Ray, without Ray's own traceback."""
    text = str(getattr(e, "cause", None) or getattr(e, "error_msg", None) or e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith((" ", "Traceback", "File "))]
    for ln in reversed(lines):  # the exception line comes last in a traceback
        if "Error" in ln or "error" in ln:
            return ln.removeprefix("RuntimeError: ")[:400]  # ours, raised in the worker: the message says it all
    return (lines[-1] if lines else type(e).__name__)[:400]


class RayExecutor:
    """`workers` actors on a local Ray (started and stopped here) or on the cluster at `address`."""

    def __init__(self, spec: JobSpec, address: str | None = None, workers: int = 2, gpus_per_worker: float = 0.0,
                 threads: int = 1) -> None:
        if workers < 1:
            raise JobError("--workers must be at least 1.")
        # inside `ray job submit` RAY_ADDRESS names the job's cluster: a plain ray.init() would join it anyway
        self.spec, self.address, self.n_workers = spec, address or os.environ.get("RAY_ADDRESS"), workers
        self.gpus, self.threads = gpus_per_worker, max(1, threads)
        self.slots = 2 * workers  # one computing, one queued per worker: no idle gap between chunks
        self.ray = None
        self.started_here = False  # True when this executor called ray.init
        self.actors: list = []
        self.refs: dict = {}  # ObjectRef -> (chunk, actor index, resends)
        self.load = [0] * workers

    # ------------------------------------------------------------------ cluster
    def start(self) -> "RayExecutor":
        check_address(self.address)
        ray = self.ray = import_ray()
        common = {"logging_level": "ERROR", "log_to_driver": False}
        try:
            if ray.is_initialized():  # a caller (a test, a notebook) already connected: use that Ray as it is
                pass
            elif self.address:
                env = None
                if self.address.startswith("ray://"):  # a client: ship this project to the cluster
                    env = client_runtime_env()
                ray.init(address=self.address, runtime_env=env, **common)
                self.started_here = True
            else:
                tmp = os.environ.get("VIZ_RAY_TMPDIR") or Path(tempfile.gettempdir()) / f"atlas-ray-{os.getuid()}"
                ray.init(num_cpus=self.n_workers * self.threads, include_dashboard=False, _temp_dir=str(tmp),
                         object_store_memory=256 * 2**20, **common)
                self.started_here = True
        except (ConnectionError, RuntimeError, ValueError) as e:
            hint = AUTH_HINT if self.address and os.environ.get("RAY_AUTH_MODE") != "token" else ""
            raise JobError(f"could not start or join Ray at {self.address or 'a new local cluster'}: {_cause(e)}"
                           + hint) from None
        try:
            self._start_workers()
        except BaseException:
            self.close()
            raise
        return self

    def _start_workers(self) -> None:
        ray = self.ray
        self._check_resources()
        free = ray.available_resources()
        if free.get("CPU", 0) < self.n_workers * self.threads or free.get("GPU", 0) < self.n_workers * self.gpus:
            print(f"atlas: waiting for the Ray cluster to free resources for {self.n_workers} workers (free now: "
                  f"{free.get('CPU', 0):g} CPUs, {free.get('GPU', 0):g} GPUs)", file=sys.stderr, flush=True)
        cls = ray.remote(num_cpus=self.threads, num_gpus=self.gpus, max_restarts=RESTARTS,
                         max_task_retries=RETRIES)(AtlasWorker)
        self.actors = [cls.remote(self.spec.model, self.spec.options(), self.threads, self.gpus)
                       for _ in range(self.n_workers)]
        try:
            # no retries here: a worker that cannot load the model fails for good, and each retry would make
            # Ray print its traceback on the driver's stdout
            self.infos = ray.get([a.info.options(max_task_retries=0).remote() for a in self.actors],
                                 timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise JobError(f"{self.n_workers} workers did not start within {START_TIMEOUT_S:.0f} s; the cluster has "
                           f"{self._resources()}. Ask for fewer --workers or --gpus-per-worker.") from None
        except ray.exceptions.RayError as e:
            raise JobError(_cause(e)) from None

    def _resources(self) -> str:
        r = self.ray.cluster_resources()
        return f"{r.get('CPU', 0):g} CPUs and {r.get('GPU', 0):g} GPUs"

    def _check_resources(self) -> None:
        """Workers the cluster cannot place would wait forever: say so now (an autoscaling cluster counts
        only the nodes it has at this moment)."""
        r = self.ray.cluster_resources()
        cpus, gpus = self.n_workers * self.threads, self.n_workers * self.gpus
        if r.get("CPU", 0) < cpus or r.get("GPU", 0) < gpus:
            raise JobError(f"{self.n_workers} workers x {self.threads} CPUs"
                           + (f" x {self.gpus:g} GPUs" if self.gpus else "")
                           + f" do not fit: the Ray cluster has {self._resources()}. Ask for fewer --workers, "
                           "--threads or --gpus-per-worker, or add nodes first.")

    def worker_pids(self, refresh: bool = False) -> list[int]:
        if refresh:  # a restarted worker has a new process
            self.infos = self.ray.get([a.info.remote() for a in self.actors])
        return [i["pid"] for i in self.infos]

    def drain(self) -> None:
        """Wait for the chunks still in flight and drop them: the workers are free for another run (after an
        interrupted one, in a notebook or a test)."""
        if self.refs:
            self.ray.wait(list(self.refs), num_returns=len(self.refs))
        self.refs, self.load = {}, [0] * len(self.actors)

    def close(self) -> None:
        if self.ray is None:
            return
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # already gone: nothing to stop
                pass
        self.actors, self.refs = [], {}
        if self.started_here:  # our connection (and, without --address, our local cluster)
            self.ray.shutdown()
        self.ray = None

    def __enter__(self) -> "RayExecutor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ work
    @property
    def in_flight(self) -> int:
        return len(self.refs)

    def submit(self, chunk: Chunk, resends: int = 0, avoid: int | None = None) -> None:
        choices = [i for i in range(len(self.actors)) if i != avoid] or list(range(len(self.actors)))
        i = min(choices, key=lambda j: self.load[j])
        ref = self.actors[i].process.remote(chunk.chunk_id, chunk.start, chunk.sentences)
        self.refs[ref] = (chunk, i, resends)
        self.load[i] += 1

    def results(self, timeout: float | None = None) -> list[Partial]:
        if not self.refs:
            return []
        ray = self.ray
        ready, rest = ray.wait(list(self.refs), num_returns=1, timeout=timeout)  # the first as soon as it is in
        if ready and rest:  # and every other one already finished
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        out = []
        for ref in ready:
            chunk, i, resends = self.refs.pop(ref)
            self.load[i] -= 1
            try:
                out.append(Partial.from_arrays(ray.get(ref)))
            except ray.exceptions.RayActorError as e:  # its worker is gone beyond its restarts
                if resends >= RESEND:
                    raise JobError(f"chunk {chunk.chunk_id} failed on {resends + 1} workers: {_cause(e)}") from None
                self.submit(chunk, resends + 1, avoid=i)
            except ray.exceptions.RayError as e:  # an error inside the worker's code
                last = chunk.start + len(chunk.sentences) - 1
                raise JobError(f"chunk {chunk.chunk_id} (sentences {chunk.start:,}-{last:,}) failed on a worker: "
                               f"{_cause(e)}") from None
        return out
