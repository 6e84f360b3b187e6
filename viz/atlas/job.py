"""The atlas over a corpus file of any size: chunks streamed from the file, partial sums checkpointed
per chunk, merged in chunk order; the same driver for the embedded engine and the Ray engine.

    spec = JobSpec(model="minilm", corpus="corpus.txt.gz", out="stats.csv")
    result = run_job(spec, EmbeddedExecutor(spec))            # or viz.atlas.ray_engine.RayExecutor(spec, ...)

An *executor* computes chunks: `submit(chunk)`, `results(timeout)` -> finished `Partial`s in any order,
`in_flight`, `slots` (how many chunks it wants in flight), `close()`. The driver reads the corpus one
chunk at a time (memory flat in the corpus size), keeps at most `slots` chunks in flight, writes each
finished chunk to `<out>.parts/chunk-<id>.npz` (atomically) and folds it into an `OrderedMerge`.
`resume=True` loads the chunks already there instead of computing them again; a chunk that comes
back twice (a retried task) is counted once. The `.parts` folder is removed once the CSV is written.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, TextIO

from viz.atlas.core import DEFAULT_BATCH, DEFAULT_MAX_TOKENS, AtlasResult, TokenClasses, frame
from viz.atlas.chunks import CHUNK_SENTENCES, OrderedMerge, Partial, process_chunk, to_result
from viz.atlas.stream import Chunk, file_size, iter_chunks


class JobError(RuntimeError):
    """The job cannot run or go on; the message (one line) says why and what to do."""


@dataclass(frozen=True)
class JobSpec:
    model: str
    corpus: str
    out: str
    column: str | None = None
    words: bool = False
    max_tokens: int = DEFAULT_MAX_TOKENS
    batch_size: int = DEFAULT_BATCH
    top_k: int = 5
    chunk_sentences: int = CHUNK_SENTENCES

    def options(self) -> dict:
        """What a worker needs besides the chunk (never a model: workers load it themselves)."""
        return {"batch_size": self.batch_size, "max_tokens": self.max_tokens, "words": self.words, "top_k": self.top_k}

    def manifest(self) -> dict:
        """Everything that must match for checkpoints to be reused (the corpus by size and mtime)."""
        path = Path(self.corpus)
        st = path.stat() if path.is_file() else None
        m = {k: v for k, v in asdict(self).items() if k != "out"}
        return m | {"corpus": str(path.resolve()), "corpus_bytes": st.st_size if st else None,
                    "corpus_mtime_ns": st.st_mtime_ns if st else None}


def parts_dir(out: str | Path) -> Path:
    return Path(f"{out}.parts")


def chunk_path(folder: Path, chunk_id: int) -> Path:
    return folder / f"chunk-{chunk_id:08d}.npz"


def prepare_parts(spec: JobSpec, resume: bool) -> tuple[Path, set[int]]:
    """The checkpoint folder, and the chunk ids already done there (only with resume)."""
    folder = parts_dir(spec.out)
    done = {int(p.stem.split("-")[1]) for p in folder.glob("chunk-*.npz")} if folder.is_dir() else set()
    manifest = folder / "manifest.json"
    if done and not resume:
        raise JobError(f"'{folder}' holds {len(done)} chunk checkpoints of an unfinished run: add --resume to "
                       "continue it, or delete that folder to start over.")
    if done:
        try:
            old = json.loads(manifest.read_text())
        except (OSError, ValueError):
            old = {}
        diff = [k for k, v in spec.manifest().items() if old.get(k) != v]
        if diff:
            raise JobError(f"cannot resume from '{folder}': its run had other settings or another corpus file "
                           f"({', '.join(diff)}). Delete that folder to start over.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(spec.manifest(), indent=1))
    except OSError as e:
        raise JobError(f"cannot write checkpoints next to --out in '{folder}': {e.strerror or e}.") from None
    return folder, done


class Progress:
    """Sentences and chunks done, rate and ETA on a stream, at most every `every` seconds.

    The ETA extrapolates the rate of this run's own chunks over the bytes of the file still to read
    (compressed bytes for .gz), so it needs no count of the corpus up front."""

    def __init__(self, stream: TextIO | None = sys.stderr, every: float = 2.0, total_bytes: int = 0) -> None:
        self.stream, self.every, self.total_bytes = stream, every, total_bytes
        self.t0 = self.last = time.perf_counter()
        self.chunks = self.resumed = self.sentences = self.new_sentences = 0
        self.bytes_done = self.new_bytes = 0
        self.shown = -1  # chunks at the last line printed

    def chunk(self, p: Partial, n_bytes: int, resumed: bool = False) -> None:
        self.chunks += 1
        self.sentences += p.n_sentences
        self.bytes_done += n_bytes
        if resumed:
            self.resumed += 1
        else:
            self.new_sentences += p.n_sentences
            self.new_bytes += n_bytes
        self.show()

    def line(self) -> str:
        dt = time.perf_counter() - self.t0
        rate = self.new_sentences / dt if dt > 0 else 0.0
        parts = [f"{self.chunks} chunks" + (f" ({self.resumed} from checkpoints)" if self.resumed else ""),
                 f"{self.sentences:,} sentences", f"{rate:,.0f} sent/s"]
        if self.total_bytes:
            parts.append(f"{min(1.0, self.bytes_done / self.total_bytes):.0%} of the file")
            if self.new_bytes:
                eta = max(0, self.total_bytes - self.bytes_done) * dt / self.new_bytes
                parts.append(f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")
        return "atlas: " + " · ".join(parts)

    def show(self, force: bool = False) -> None:
        """Print a line if `every` seconds passed since the last one and a chunk finished since it (force: no wait)."""
        now = time.perf_counter()
        if self.stream is None or self.chunks == self.shown:
            return
        if force or now - self.last >= self.every:
            self.last, self.shown = now, self.chunks
            print(self.line(), file=self.stream, flush=True)


class EmbeddedExecutor:
    """Chunks computed in this process, one at a time (the default engine)."""

    slots = 1

    def __init__(self, spec: JobSpec, bundle=None) -> None:
        from viz.core.models import ModelLoadError, load_key

        self.spec = spec
        try:
            self.bundle = bundle or load_key(spec.model)
        except ModelLoadError as e:
            raise JobError(str(e)) from None
        self.tc = TokenClasses(self.bundle.tokenizer, self.bundle.lock)
        self._out: list[Partial] = []

    @property
    def in_flight(self) -> int:
        return len(self._out)

    def submit(self, chunk: Chunk) -> None:
        self._out.append(process_chunk(self.bundle, chunk.sentences, chunk.start, chunk.chunk_id, tc=self.tc,
                                       **self.spec.options()))

    def results(self, timeout: float | None = None) -> list[Partial]:
        out, self._out = self._out, []
        return out

    def close(self) -> None:
        pass


def run_job(spec: JobSpec, executor, *, resume: bool = False, progress: Progress | None = None,
            on_chunk: Callable[[Partial], None] | None = None, reorder: int = 0) -> AtlasResult:
    """Run the atlas over `spec.corpus` with `executor` -> AtlasResult (does not write the CSV; see write_csv).

    on_chunk(partial) is called as each chunk is counted (tests use it to kill a worker or interrupt);
    `reorder` > 0 submits the chunks in reversed windows of that many (tests: arrival order must not matter).
    """
    t0 = time.perf_counter()
    folder, done = prepare_parts(spec, resume)
    progress = progress or Progress(None)
    progress.total_bytes = progress.total_bytes or file_size(spec.corpus)
    merged = OrderedMerge()
    spans: dict[int, int] = {}  # chunk id -> its bytes of the file, while in flight
    last_end = 0

    def count(p: Partial, resumed: bool = False) -> None:
        if not resumed and p.chunk_id not in done:
            p.save(chunk_path(folder, p.chunk_id))
            done.add(p.chunk_id)
        if merged.add(p):
            progress.chunk(p, spans.pop(p.chunk_id, 0), resumed)
            if on_chunk is not None:
                on_chunk(p)

    def take(block: bool) -> None:
        for p in executor.results(timeout=progress.every if block else 0):
            count(p)
        progress.show()

    def submit(window: list[Chunk]) -> None:
        for c in reversed(window) if reorder else window:
            while executor.in_flight >= executor.slots:
                take(block=True)
            executor.submit(c)
            take(block=False)

    window: list[Chunk] = []
    for chunk in iter_chunks(spec.corpus, spec.column, spec.chunk_sentences):
        spans[chunk.chunk_id], last_end = chunk.end_byte - last_end, chunk.end_byte
        if chunk.chunk_id in done:
            while len(merged.pending) > 2 * executor.slots and executor.in_flight:
                take(block=True)  # checkpoints waiting behind a slow chunk: keep memory bounded
            try:
                part = Partial.load(chunk_path(folder, chunk.chunk_id))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # unreadable: compute again
                print(f"atlas: recomputing chunk {chunk.chunk_id}: its checkpoint is unreadable ({e})", file=sys.stderr)
                done.discard(chunk.chunk_id)
            else:
                count(part, resumed=True)
                continue
        window.append(chunk)
        if len(window) >= max(1, reorder):
            submit(window)
            window = []
    submit(window)
    while executor.in_flight:
        take(block=True)
    progress.show(force=True)
    if merged.total is None or not merged.complete():
        raise JobError("the run ended with chunks missing; rerun with --resume to compute them")
    return to_result(merged.total, time.perf_counter() - t0)


def write_csv(result: AtlasResult, spec: JobSpec, decimals: int | None = 6) -> None:
    """The CSV contract of `python -m viz atlas`; the checkpoints go once it is written."""
    frame(result, decimals).to_csv(spec.out, index=False)
    shutil.rmtree(parts_dir(spec.out), ignore_errors=True)
