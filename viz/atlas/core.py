"""The head-atlas job: stream a corpus through a model in padded, length-sorted batches and
aggregate per-head statistics (`viz.analysis.head_stats`) without keeping attention matrices.

Memory is flat in the corpus size: the corpus is tokenized `chunk` sentences at a time, each
batch's attention is folded into per-head sums and a running top-k and then dropped. Sorting
each chunk by length before batching cuts padding (what makes the job nearly as fast as a
plain batched forward, see bench/bench_atlas.py).

Which attention: encoder self-attention for encoders and encoder-decoders (only the encoder
runs), the causal self-attention for decoder-only models.
"""

from __future__ import annotations

import contextlib
import unicodedata
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from viz.analysis.head_stats import STATS, HeadStatsAccumulator, head_roles, merge_words
from viz.core.arch import DECODER, ENCODER
from viz.core.capture import recording, word_spans
from viz.core.models import ModelBundle

DEFAULT_MAX_TOKENS = 128
DEFAULT_BATCH = 32
DEFAULT_MAX_CELLS = 32 * 32 * 32  # attention cells per batch (x layers x heads): 32 sentences of 32 tokens
PIECE_MARKERS = ("##", "Ġ", "▁", "Ċ")


class AtlasCancelled(RuntimeError):
    """Raised by `run_atlas(..., cancel_raises=True)` when `should_stop()` said stop."""


@dataclass
class Batch:
    ids: torch.Tensor  # [B, T] long, right-padded
    mask: torch.Tensor  # [B, T] bool
    sentence_ids: torch.Tensor  # [B] long: index into the corpus
    word_ids: list[list[int | None]] | None = None  # per row, tokenizer word ids (None = special)


@dataclass
class AtlasResult:
    """Per-head statistics of one model over one corpus. Arrays are [layer, head] unless noted."""

    model_name: str
    stack: str
    n_layers: int
    n_heads: int
    n_sentences: int  # sentences processed
    n_tokens: int  # real tokens processed
    n_truncated: int
    max_tokens: int
    stats: dict[str, np.ndarray]
    max_entropy: float
    top_ids: np.ndarray  # [stat, layer, head, k] corpus indices of the strongest sentences, -1 = none
    top_scores: np.ndarray  # [stat, layer, head, k]
    word_stats: dict[str, np.ndarray] | None = None
    word_max_entropy: float = float("nan")
    word_top_ids: np.ndarray | None = None
    word_top_scores: np.ndarray | None = None
    seconds: float = 0.0
    cancelled: bool = False
    role_labels: dict[str, np.ndarray] | None = None  # {"tokens"|"words": [L, H]} as read from a CSV

    def roles(self, words: bool = False) -> np.ndarray:
        if self.role_labels is not None:
            return self.role_labels["words" if words and "words" in self.role_labels else "tokens"]
        if words and self.word_stats is not None:
            return head_roles(self.word_stats, self.word_max_entropy)
        return head_roles(self.stats, self.max_entropy)

    def top(self, stat: str, layer: int, head: int, words: bool = False) -> list[tuple[int, float]]:
        """[(sentence index, score)] where `stat` of this head is highest, best first."""
        ids, scores = (self.word_top_ids, self.word_top_scores) if words and self.word_top_ids is not None \
            else (self.top_ids, self.top_scores)
        s = STATS.index(stat)
        return [(int(i), float(v)) for i, v in zip(ids[s, layer, head], scores[s, layer, head]) if i >= 0]


def frame(result: AtlasResult, decimals: int | None = 6) -> pd.DataFrame:
    """One row per (layer, head): `layer, head, entropy, distance, cls, sep, punct, self, prev, next, first, role`,
    then `word_<stat>`, `word_role` when word-level statistics were computed. The CLI's CSV and the page's
    table are this frame."""
    L, H = result.n_layers, result.n_heads
    ll, hh = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    cols: dict[str, np.ndarray] = {"layer": ll.ravel(), "head": hh.ravel()}
    cols.update({s: result.stats[s].ravel() for s in STATS})
    cols["role"] = result.roles().ravel()
    if result.word_stats is not None:
        cols.update({f"word_{s}": result.word_stats[s].ravel() for s in STATS})
        cols["word_role"] = result.roles(words=True).ravel()
    df = pd.DataFrame(cols)
    if decimals is not None:
        df = df.round({c: decimals for c in df.columns if c not in ("layer", "head", "role", "word_role")})
    return df


OPTIONAL_STATS = ("first",)  # added later: older CSVs open without it (NaN)


class AtlasCsvError(ValueError):
    """A file is not a CSV written by `python -m viz atlas` (or the page's table download)."""


def read_csv(data: bytes, name: str) -> AtlasResult:
    """The CLI's CSV (`frame`) back into an AtlasResult: statistics and roles as written; no sentences,
    so no top-k (`top()` is empty) and `n_sentences` 0."""
    import io

    try:
        df = pd.read_csv(io.BytesIO(data))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise AtlasCsvError(f"'{name}' is not a readable CSV file ({str(e).splitlines()[0]}).") from None
    for s in OPTIONAL_STATS:  # a table written before this column existed
        for col in (s, f"word_{s}"):
            if col not in df.columns and (col == s or "word_role" in df.columns):
                df[col] = np.nan
    missing = [c for c in ("layer", "head", *STATS, "role") if c not in df.columns]
    if missing:
        raise AtlasCsvError(f"'{name}' is not a head-atlas table: it has no {', '.join(missing)} column. Open a CSV "
                            "written by `python -m viz atlas --out FILE.csv` or by this page's table download.")
    try:
        layer, head = df["layer"].to_numpy(int), df["head"].to_numpy(int)
    except (ValueError, TypeError):
        raise AtlasCsvError(f"'{name}': the layer and head columns must hold whole numbers.") from None
    L, H = int(layer.max()) + 1, int(head.max()) + 1
    if len(df) != L * H or layer.min() < 0 or head.min() < 0 or len(set(zip(layer, head))) != L * H:
        raise AtlasCsvError(f"'{name}' should have one row per (layer, head) for {L} layers x {H} heads; it has "
                            f"{len(df)} rows.")
    df = df.sort_values(["layer", "head"])

    def grid(col: str, kind=float) -> np.ndarray:
        return df[col].to_numpy(kind).reshape(L, H)

    try:
        stats = {s: grid(s) for s in STATS}
        words = all(f"word_{s}" in df.columns for s in (*STATS, "role"))
        word_stats = {s: grid(f"word_{s}") for s in STATS} if words else None
    except (ValueError, TypeError):
        raise AtlasCsvError(f"'{name}': the statistic columns must hold numbers.") from None
    roles = {"tokens": grid("role", object)} | ({"words": grid("word_role", object)} if words else {})
    none = np.full((len(STATS), L, H, 0), -1)
    return AtlasResult(model_name=name, stack="", n_layers=L, n_heads=H, n_sentences=0, n_tokens=0, n_truncated=0,
                       max_tokens=0, stats=stats, max_entropy=float("nan"), top_ids=none, top_scores=none.astype(float),
                       word_stats=word_stats, role_labels=roles)


# ----------------------------------------------------------------------------- token classes
def is_punct_token(token: str) -> bool:
    """A token made only of Unicode punctuation (categories P*), ignoring sub-word markers."""
    for m in PIECE_MARKERS:
        if token.startswith(m):
            token = token[len(m):]
    return bool(token) and all(unicodedata.category(c).startswith("P") for c in token)


class TokenClasses:
    """Per-id lookups: start token ([CLS]/BOS), separator/end ([SEP]/EOS), special, punctuation.

    [UNK] and [MASK] are ordinary tokens here (they stand for words of the sentence)."""

    def __init__(self, tokenizer, lock=None) -> None:
        self.tok = tokenizer
        self.lock = lock if lock is not None else contextlib.nullcontext()  # the bundle's: tokenizers aren't thread-safe
        ids = lambda *names: {i for n in names if (i := getattr(tokenizer, n, None)) is not None}  # noqa: E731
        self.cls = ids("cls_token_id", "bos_token_id")
        self.sep = ids("sep_token_id", "eos_token_id") - self.cls
        not_special = ids("unk_token_id", "mask_token_id")
        self.special = (set(tokenizer.all_special_ids) | self.cls | self.sep) - not_special
        self._cache: dict[int, tuple[bool, bool, bool, bool]] = {}

    def _row(self, i: int) -> tuple[bool, bool, bool, bool]:
        if i not in self._cache:
            special = i in self.special
            punct = not special and is_punct_token(self.tok.convert_ids_to_tokens(i) or "")
            self._cache[i] = (i in self.cls, i in self.sep, punct, special)
        return self._cache[i]

    def classes(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, T] ids -> [B, T, 4] bool: cls, sep, punct, special."""
        uniq, inv = torch.unique(ids, return_inverse=True)
        if any(int(i) not in self._cache for i in uniq):
            with self.lock:
                for i in uniq:
                    self._row(int(i))
        table = torch.tensor([self._cache[int(i)] for i in uniq], dtype=torch.bool).view(-1, 4)
        return table[inv]


# ----------------------------------------------------------------------------- batching
def runner(bundle: ModelBundle):
    """The module that runs the stack the atlas reads (no LM head: its logits are not needed)."""
    model = bundle.model
    if bundle.kind == "encoder-decoder":
        return model.get_encoder()
    return getattr(model, "base_model", model)


def atlas_stack(bundle: ModelBundle) -> str:
    return ENCODER if ENCODER in bundle.arch.stacks else DECODER


def _split(order, lengths, batch_size: int, max_cells: int) -> Iterator[np.ndarray]:
    """Consecutive groups of `order` with <= batch_size items and items * max_len^2 <= max_cells (>= 1 item)."""
    start = 0
    while start < len(order):
        end, T = start, 0
        while end < len(order) and end - start < batch_size:
            t = max(T, lengths[order[end]])
            if end > start and (end - start + 1) * t * t > max_cells:
                break
            T, end = t, end + 1
        yield order[start:end]
        start = end


def iter_batches(bundle: ModelBundle, sentences: Sequence[str], batch_size: int = DEFAULT_BATCH,
                 max_tokens: int = DEFAULT_MAX_TOKENS, chunk: int = 1024, words: bool = False,
                 stats: dict | None = None, sort: bool = True, max_cells: int = DEFAULT_MAX_CELLS) -> Iterator[Batch]:
    """Tokenize `chunk` sentences at a time, sort them by length (unless `sort=False`: corpus order),
    yield right-padded batches of at most `batch_size` sentences and `max_cells` attention cells
    (batch x tokens^2: a batch of long sentences is smaller, so peak memory does not depend on how
    long the corpus's longest sentences are). `stats` (optional dict) receives `n_truncated`."""
    tok = bundle.tokenizer
    limit = min(max_tokens, bundle.max_tokens)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for start in range(0, len(sentences), chunk):
        part = list(sentences[start:start + chunk])
        with bundle.lock:  # fast tokenizers are not thread-safe
            enc = tok(part, truncation=True, max_length=limit)
            rows = enc["input_ids"]
            wids = [enc.word_ids(i) for i in range(len(part))] if words else None
            if stats is not None:
                long = [i for i, r in enumerate(rows) if len(r) == limit]
                if long:  # only sentences at the limit may have been cut: count them exactly
                    full = tok([part[i] for i in long])["input_ids"]
                    stats["n_truncated"] = stats.get("n_truncated", 0) + sum(len(f) > limit for f in full)
        order = np.argsort([len(r) for r in rows], kind="stable") if sort else np.arange(len(rows))
        for idx in _split(order, [len(r) for r in rows], batch_size, max_cells):
            T = max(len(rows[i]) for i in idx)
            ids = torch.full((len(idx), T), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), T), dtype=torch.bool)
            for r, i in enumerate(idx):
                ids[r, :len(rows[i])] = torch.tensor(rows[i])
                mask[r, :len(rows[i])] = True
            yield Batch(ids, mask, torch.as_tensor(start + idx, dtype=torch.long),
                        [wids[i] for i in idx] if words else None)


def forward_attention(bundle: ModelBundle, batch: Batch) -> torch.Tensor:
    """One batch through the model with the capture hooks on -> attention [B, L, H, T, T]."""
    stack = atlas_stack(bundle)
    with bundle.lock, torch.inference_mode(), recording(bundle, qkv=False) as rec:
        dev = bundle.device
        runner(bundle)(input_ids=batch.ids.to(dev), attention_mask=batch.mask.long().to(dev), use_cache=False)
        return torch.stack(rec.data[(stack, "attn")], dim=1).float().cpu()


def word_view(batch: Batch, classes: torch.Tensor):
    """Word-level index and masks: ([B, T] word index, [B, W] mask, [B, W] rows, [B, W, 3] groups).

    A word's cls/sep/special class is its first piece's; it is punctuation when all its pieces are."""
    B, T = batch.ids.shape
    index = np.full((B, T), -1, dtype=np.int64)
    starts = []
    special = classes[..., 3].numpy()
    for r, wids in enumerate(batch.word_ids):
        n = int(batch.mask[r].sum())
        spans = word_spans([None if special[r, t] else w for t, w in enumerate(wids[:n])])
        lengths = [e - s for s, e in spans]
        index[r, :n] = np.repeat(np.arange(len(spans)), lengths)
        starts.append([s for s, _ in spans])
    W = max(len(s) for s in starts)
    wmask = torch.zeros((B, W), dtype=torch.bool)
    first = torch.zeros((B, W), dtype=torch.long)
    for r, st in enumerate(starts):
        wmask[r, :len(st)] = True
        first[r, :len(st)] = torch.as_tensor(st)
    index_t = torch.from_numpy(index)
    safe = index_t.clamp_min(0)
    real = (index_t >= 0).long()
    pieces = torch.zeros((B, W), dtype=torch.long).scatter_add_(1, safe, real)
    punct = torch.zeros((B, W), dtype=torch.long).scatter_add_(1, safe, real * classes[..., 2].long())
    head = classes.gather(1, first[..., None].expand(B, W, 4)) & wmask[..., None]  # first piece's classes
    groups = torch.stack([head[..., 0], head[..., 1], (punct == pieces) & (pieces > 0)], -1)
    return index_t, wmask, wmask & ~head[..., 3], groups


def process_batch(bundle: ModelBundle, batch: Batch, tc: TokenClasses, acc: HeadStatsAccumulator | None,
                  wacc: HeadStatsAccumulator | None = None, words: bool = False, top_k: int = 5):
    """Forward one batch and fold it into the accumulators (created on the first batch) -> (acc, wacc).

    On a model placed on an accelerator the batch goes there and the statistics are reduced there too;
    only per-head sums and the top-k come back to the CPU."""
    device = model_device(bundle)
    on = batch if device.type == "cpu" else Batch(batch.ids.to(device), batch.mask.to(device), batch.sentence_ids,
                                                  batch.word_ids)
    attn = forward_attention(bundle, on)  # [B, L, H, T, T]
    if acc is None:
        acc = HeadStatsAccumulator(attn.shape[1], attn.shape[2], top_k)
        wacc = HeadStatsAccumulator(attn.shape[1], attn.shape[2], top_k) if words else None
    classes = tc.classes(batch.ids)  # [B, T, 4] on the CPU
    dev = classes.to(attn.device)
    acc.add(attn, on.mask, ~dev[..., 3], dev[..., :3], batch.sentence_ids)
    if words:
        index, wmask, wrows, wgroups = (t.to(attn.device) for t in word_view(batch, classes))
        wacc.add(merge_words(attn.float(), index, wmask.shape[1]), wmask, wrows, wgroups, batch.sentence_ids)
    return acc, wacc


def model_device(bundle: ModelBundle) -> torch.device:
    """Where the model's weights are (the CPU unless a worker moved it to a GPU)."""
    p = next(bundle.model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
