"""`--engine ray` on a local Ray cluster: the same CSV as the embedded engine, with chunks arriving in any
order, with a worker killed mid-run, and after an interrupted run resumed from its checkpoints.

Every cluster here is small (2 CPUs, no dashboard, its own temp dir) and is shut down; the last test
checks that no raylet / GCS process of these clusters is left behind."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from viz.analysis.head_stats import STATS  # noqa: E402
from viz.atlas.job import EmbeddedExecutor, JobSpec, parts_dir, run_job, write_csv  # noqa: E402
from viz.atlas.ray_engine import RayExecutor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 25  # 300 sentences -> 12 chunks
TMP = Path(f"/tmp/atlas-ray-test-{os.getpid()}")  # short: Ray's socket paths must stay under 108 bytes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    lines = [s for s in (ROOT / "data" / "sample_sentences.txt").read_text().splitlines() if s.strip()]
    path = tmp_path_factory.mktemp("ray") / "corpus.txt"
    path.write_text("\n".join(lines[:300]) + "\n")
    return path


@pytest.fixture(scope="module")
def embedded(corpus, load, tmp_path_factory):
    """The embedded engine's frame over the same chunks, torch on 1 thread like each Ray worker."""
    import torch

    spec = JobSpec(model="minilm", corpus=str(corpus), out=str(tmp_path_factory.mktemp("emb") / "emb.csv"),
                   chunk_sentences=CHUNK)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run_job(spec, EmbeddedExecutor(spec, load("minilm")))
    finally:
        torch.set_num_threads(threads)
    write_csv(res, spec, decimals=None)
    return pd.read_csv(spec.out)


def assert_same(df: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert len(df) == len(ref) and list(df.columns) == list(ref.columns)
    assert (df[["layer", "head", "role"]].values == ref[["layer", "head", "role"]].values).all()
    a, b = df[list(STATS)].to_numpy(float), ref[list(STATS)].to_numpy(float)
    assert np.all(np.abs(a - b) <= 1e-9 * np.maximum(np.abs(b), 1e-12)), np.abs(a - b).max()


def ray_processes(tag: str) -> list[str]:
    """Processes of the cluster whose temp dir is `tag` (raylet, gcs_server, workers name their session dir)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [ln for ln in out if tag in ln and "pytest" not in ln]


def wait_gone(tag: str, timeout: float = 60) -> list[str]:
    deadline = time.time() + timeout
    while ray_processes(tag) and time.time() < deadline:
        time.sleep(0.5)  # a stopped cluster's processes exit in their own time: poll for that condition
    return ray_processes(tag)


def test_cli_ray_two_workers_reversed_chunks_equals_embedded(corpus, embedded, tmp_path):
    """The whole command as a user runs it: a local Ray started and stopped by the command."""
    out = tmp_path / "ray.csv"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VIZ_RAY_TMPDIR": str(TMP) + "-cli"}
    r = subprocess.run([sys.executable, "-m", "viz", "atlas", "--model", "minilm", "--corpus", str(corpus),
                        "--out", str(out), "--engine", "ray", "--workers", "2", "--chunk-sentences", str(CHUNK),
                        "--reverse-chunks", "100", "--decimals", "-1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "300 sentences" in r.stdout and "Traceback" not in r.stderr
    assert "12 chunks" in r.stderr  # the last progress line
    assert_same(pd.read_csv(out), embedded)
    assert not parts_dir(out).exists()  # checkpoints go once the CSV is written
    assert not wait_gone(f"{TMP}-cli")  # the command stopped the cluster it started
    shutil.rmtree(f"{TMP}-cli", ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    """One small local cluster for the in-process tests: 3 CPU slots, the shared 2 workers and one more."""
    ray.init(num_cpus=3, include_dashboard=False, _temp_dir=str(TMP), object_store_memory=128 * 2**20,
             logging_level="ERROR", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def workers(cluster, corpus, tmp_path_factory):
    """Two MiniLM workers shared by the in-process runs below (each start costs a model load per worker)."""
    spec = JobSpec(model="minilm", corpus=str(corpus), out=str(tmp_path_factory.mktemp("w") / "w.csv"),
                   chunk_sentences=CHUNK)
    ex = RayExecutor(spec, workers=2).start()
    try:
        yield ex
    finally:
        ex.close()


def test_worker_killed_mid_run_loses_no_chunk(workers, corpus, embedded, tmp_path):
    spec = JobSpec(model="minilm", corpus=str(corpus), out=str(tmp_path / "kill.csv"), chunk_sentences=CHUNK)
    killed = []

    def kill_one(part) -> None:  # after the first chunk is in: SIGKILL a worker with chunks queued on it
        if not killed:
            killed.append(workers.worker_pids()[1])
            os.kill(killed[0], signal.SIGKILL)

    res = run_job(spec, workers, on_chunk=kill_one)
    assert workers.worker_pids(refresh=True)[1] != killed[0]  # Ray restarted the worker (and reloaded the model)
    assert res.n_sentences == 300
    write_csv(res, spec, decimals=None)
    assert_same(pd.read_csv(spec.out), embedded)


def test_interrupted_run_resumes_from_checkpoints(workers, corpus, embedded, tmp_path):
    from viz.atlas.job import JobError, Progress

    spec = JobSpec(model="minilm", corpus=str(corpus), out=str(tmp_path / "resume.csv"), chunk_sentences=CHUNK)
    seen = []

    def interrupt(part) -> None:  # Ctrl-C after three chunks are counted
        seen.append(part.chunk_id)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(spec, workers, on_chunk=interrupt)
    workers.drain()  # what was in flight when the run stopped is dropped, as a new process would
    saved = sorted(parts_dir(spec.out).glob("chunk-*.npz"))
    assert len(saved) >= 3 and not Path(spec.out).exists()
    with pytest.raises(JobError, match="--resume"):  # no silent restart over an unfinished run
        run_job(spec, executor=None)
    resumed = []
    progress = Progress(None)
    res = run_job(spec, workers, resume=True, progress=progress, on_chunk=lambda p: resumed.append(p.chunk_id))
    assert progress.resumed == len(saved) and progress.chunks == 12 and sorted(resumed) == list(range(12))
    assert res.n_sentences == 300
    write_csv(res, spec, decimals=None)
    assert_same(pd.read_csv(spec.out), embedded)


def test_worker_that_cannot_load_the_model_is_one_line(cluster, corpus, tmp_path, capsys):
    from viz.atlas.job import JobError

    spec = JobSpec(model="no-such-model-xyz", corpus=str(corpus), out=str(tmp_path / "bad.csv"))
    with pytest.raises(JobError) as e:
        RayExecutor(spec, workers=1).start()
    assert str(e.value).startswith("worker could not load model 'no-such-model-xyz'") and "\n" not in str(e.value)
    assert "Traceback" not in capsys.readouterr().out  # no retried start-up task for Ray to report


def test_no_ray_process_left_behind(workers):
    workers.close()  # the module's fixtures would stop them too; here they stop before the check
    ray.shutdown()
    assert not wait_gone(str(TMP))
    shutil.rmtree(TMP, ignore_errors=True)
