"""The atlas's unit of work: one chunk of the corpus -> its *partial sums*, and their exact merge.

A chunk is `chunk_sentences` consecutive sentences with a `chunk_id` (chunk k starts at corpus index
k * chunk_sentences). `process_chunk` runs it exactly as the whole-corpus job always has (tokenized
1,024 at a time, length-sorted, padded batches bounded by attention cells) and returns a `Partial`:
int64 counts and float64 sums per statistic and head, and a top-k of sentences kept in a total order
(viz.analysis.head_stats.top_merge). The final table is a plain sum of partials divided by counts,
so it does not depend on which process did which chunk or when it finished. `OrderedMerge` adds
partials in chunk_id order whatever order they arrive in, so even the float64 additions happen in one
order: a cluster run gives the same numbers as the embedded run, and a corpus of one chunk gives the
numbers of a plain `run_atlas` over it. `run_atlas` is the embedded engine: chunks one after the other, merged.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from viz.analysis.head_stats import HeadStatsAccumulator
from viz.atlas.core import (DEFAULT_BATCH, DEFAULT_MAX_TOKENS, AtlasCancelled, AtlasResult, TokenClasses, atlas_stack,
                            iter_batches, process_batch)
from viz.core.models import ModelBundle

CHUNK_SENTENCES = 4096  # a multiple of iter_batches' 1,024-sentence tokenization block: same batches as one pass
COUNTERS = ("chunk_id", "n_chunks", "n_sentences", "n_tokens", "n_truncated", "n_layers", "n_heads", "max_tokens")


@dataclass
class Partial:
    """Partial sums of one chunk (or of several merged chunks: `n_chunks`)."""

    chunk_id: int
    n_layers: int
    n_heads: int
    max_tokens: int  # the effective token limit (the model's own limit may be lower than asked)
    model_name: str = ""
    stack: str = ""
    n_chunks: int = 1
    n_sentences: int = 0
    n_tokens: int = 0
    n_truncated: int = 0
    acc: HeadStatsAccumulator | None = None
    wacc: HeadStatsAccumulator | None = None
    cancelled: bool = False
    seconds: float = 0.0  # compute time of the chunk(s), for rates

    def merge(self, other: "Partial") -> None:
        """Add `other` into this partial (the caller decides the order: see OrderedMerge)."""
        if (other.n_layers, other.n_heads) != (self.n_layers, self.n_heads):
            raise ValueError(f"chunk {other.chunk_id} has {other.n_layers}x{other.n_heads} heads, "
                             f"not {self.n_layers}x{self.n_heads}: was it run with another model?")
        if (other.wacc is None) != (self.wacc is None):
            raise ValueError(f"chunk {other.chunk_id} was run with{'' if other.wacc else 'out'} word statistics")
        for name in ("n_chunks", "n_sentences", "n_tokens", "n_truncated"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds += other.seconds
        self.acc.merge(other.acc)
        if self.wacc is not None:
            self.wacc.merge(other.wacc)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Numpy arrays only (an .npz checkpoint, or a message between processes)."""
        out = {k: np.int64(getattr(self, k)) for k in COUNTERS}
        out |= {"model_name": np.str_(self.model_name), "stack": np.str_(self.stack),
                "seconds": np.float64(self.seconds)}
        out |= {f"acc_{k}": v for k, v in self.acc.to_arrays().items()}
        if self.wacc is not None:
            out |= {f"wacc_{k}": v for k, v in self.wacc.to_arrays().items()}
        return out

    @classmethod
    def from_arrays(cls, a) -> "Partial":
        p = cls(**{k: int(a[k]) for k in COUNTERS}, model_name=str(a["model_name"]), stack=str(a["stack"]),
                seconds=float(a["seconds"]))
        p.acc = HeadStatsAccumulator.from_arrays({k[4:]: a[k] for k in a if k.startswith("acc_")})
        if "wacc_sums" in a:
            p.wacc = HeadStatsAccumulator.from_arrays({k[5:]: a[k] for k in a if k.startswith("wacc_")})
        return p

    def save(self, path: str | Path) -> None:
        """Write atomically (a temporary file renamed into place): a killed run never leaves half a chunk."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **self.to_arrays())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> "Partial":
        with np.load(path, allow_pickle=False) as z:
            return cls.from_arrays({k: z[k] for k in z.files})


def empty_partial(bundle: ModelBundle, chunk_id: int, max_tokens: int, words: bool, top_k: int) -> Partial:
    cfg = bundle.config
    L = bundle.n_layers
    H = int(getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads", None) or cfg.n_head)
    return Partial(chunk_id, L, H, min(max_tokens, bundle.max_tokens), bundle.name, atlas_stack(bundle), n_chunks=0,
                   acc=HeadStatsAccumulator(L, H, top_k), wacc=HeadStatsAccumulator(L, H, top_k) if words else None)


def process_chunk(bundle: ModelBundle, sentences: Sequence[str], start: int = 0, chunk_id: int = 0, *,
                  batch_size: int = DEFAULT_BATCH, max_tokens: int = DEFAULT_MAX_TOKENS, words: bool = False,
                  top_k: int = 5, tc: TokenClasses | None = None, progress: Callable[[int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> Partial:
    """Partial sums of `sentences` (corpus indices start, start+1, ...). progress(done) after every batch;
    should_stop() before every batch (then the partial so far comes back with `cancelled=True`)."""
    t0 = time.perf_counter()
    tc = tc or TokenClasses(bundle.tokenizer, bundle.lock)
    acc = wacc = None
    info: dict = {}
    done = n_tokens = 0
    cancelled = False
    for batch in iter_batches(bundle, sentences, batch_size, max_tokens, words=words, stats=info):
        if should_stop is not None and should_stop():
            cancelled = True
            break
        batch.sentence_ids += start
        acc, wacc = process_batch(bundle, batch, tc, acc, wacc, words, top_k)
        done += len(batch.ids)
        n_tokens += int(batch.mask.sum())
        if progress is not None:
            progress(done)
    p = empty_partial(bundle, chunk_id, max_tokens, words, top_k)
    if acc is not None:  # L and H as the attention really came out
        p.n_layers, p.n_heads, p.acc, p.wacc = acc.n_layers, acc.n_heads, acc, wacc
    p.n_chunks, p.n_sentences, p.n_tokens = 1, done, n_tokens
    p.n_truncated, p.cancelled = info.get("n_truncated", 0), cancelled
    p.seconds = time.perf_counter() - t0
    return p


@dataclass
class OrderedMerge:
    """Folds partials into one total in chunk_id order, whatever order they arrive in.

    A partial that arrives early waits in `pending` until every chunk before it is in; a chunk that
    arrives twice (a retried task, a checkpoint and a recomputation) is counted once."""

    next_id: int = 0
    total: Partial | None = None
    pending: dict[int, Partial] = field(default_factory=dict)

    def add(self, p: Partial) -> bool:
        """-> False when this chunk was already counted."""
        if p.chunk_id < self.next_id or p.chunk_id in self.pending:
            return False
        self.pending[p.chunk_id] = p
        while self.next_id in self.pending:
            q = self.pending.pop(self.next_id)
            if self.total is None:
                self.total = copy.deepcopy(q)  # the total grows in place: never alias a caller's partial
            else:
                self.total.merge(q)
            self.next_id += 1
        return True

    def complete(self) -> bool:
        return not self.pending


def to_result(p: Partial, seconds: float, cancelled: bool = False) -> AtlasResult:
    """Partial sums of the whole corpus -> AtlasResult (means = sums / counts)."""
    acc, wacc = p.acc, p.wacc
    res = AtlasResult(
        model_name=p.model_name, stack=p.stack, n_layers=p.n_layers, n_heads=p.n_heads,
        n_sentences=p.n_sentences, n_tokens=p.n_tokens, n_truncated=p.n_truncated, max_tokens=p.max_tokens,
        stats=acc.means(), max_entropy=acc.max_entropy, top_ids=acc.top_ids.numpy(),
        top_scores=acc.top_scores.numpy(), seconds=seconds, cancelled=cancelled)
    if wacc is not None:
        res.word_stats, res.word_max_entropy = wacc.means(), wacc.max_entropy
        res.word_top_ids, res.word_top_scores = wacc.top_ids.numpy(), wacc.top_scores.numpy()
    return res


def run_atlas(bundle: ModelBundle, sentences: Sequence[str], *, batch_size: int = DEFAULT_BATCH,
              max_tokens: int = DEFAULT_MAX_TOKENS, words: bool = False, top_k: int = 5, chunk: int | None = None,
              progress: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None, cancel_raises: bool = False) -> AtlasResult:
    """Per-head statistics of `bundle` over `sentences` (see viz.analysis.head_stats for definitions).

    The embedded engine: the corpus is cut into chunks of `chunk` sentences (default
    viz.atlas.chunks.CHUNK_SENTENCES), each processed into partial sums and merged in order, exactly as
    the cluster engine does (viz.atlas.job). progress(done, total) is called after every batch;
    should_stop() before every batch: when it says stop, the partial result comes back with
    `cancelled=True` (or AtlasCancelled is raised)."""
    t0 = time.perf_counter()
    size = chunk or CHUNK_SENTENCES
    tc = TokenClasses(bundle.tokenizer, bundle.lock)
    merged = OrderedMerge()
    cancelled = False
    for k, start in enumerate(range(0, len(sentences), size)):
        tick = None if progress is None else (lambda d, s=start: progress(s + d, len(sentences)))
        part = process_chunk(bundle, sentences[start:start + size], start, k, batch_size=batch_size,
                             max_tokens=max_tokens, words=words, top_k=top_k, tc=tc, progress=tick,
                             should_stop=should_stop)
        merged.add(part)
        if part.cancelled:
            cancelled = True
            break
    if cancelled and cancel_raises:
        raise AtlasCancelled(f"Stopped after {merged.total.n_sentences} of {len(sentences)} sentences.")
    total = merged.total or empty_partial(bundle, 0, max_tokens, words, top_k)  # an empty corpus
    return to_result(total, time.perf_counter() - t0, cancelled)
