"""Two models over the same sentences, their heads matched (viz.analysis.match): `match_models`.

Level. When both tokenizers cut every sentence into the same tokens (a model and its fine-tuned copy, two
checkpoints of one run), heads are compared row by row over tokens, special tokens included. Otherwise they are
compared over *words*: the sentence's whitespace-separated words, which both tokenizations cover. Each token is
given to the word holding its first non-space character (character offsets from the tokenizer); special tokens
([CLS], [SEP], BOS, EOS) are set aside and every row renormalised over the remaining tokens; then pieces are merged
as the Attention page merges them (Clark et al. 2019: sum over a word's key pieces, mean over its query pieces),
so each word row is still a distribution. A sentence cut by a model's token limit keeps only the words both
models saw whole.

The corpus runs like the Head atlas (length-sorted padded batches through `viz.atlas.core.forward_attention`,
progress after every batch, `should_stop` before each: a cancelled run comes back with `cancelled=True`).
"""

from __future__ import annotations

import bisect
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from viz.analysis.match import Pair, SimilarityAccumulator, assign, split
from viz.atlas.core import DEFAULT_BATCH, DEFAULT_MAX_TOKENS, atlas_stack, forward_attention, iter_batches
from viz.core.models import ModelBundle

LEVELS = ("auto", "tokens", "words")
WORD_CHUNK = 64  # sentences whose word-level attention is held at once (per model)


class MatchError(ValueError):
    """The two models cannot be matched as asked; the message says why and what to do."""


@dataclass
class MatchResult:
    """Heads of A matched to heads of B. similarity [NA, NB], heads row-major by layer then head."""

    model_a: str
    model_b: str
    shape_a: tuple[int, int]  # (layers, heads)
    shape_b: tuple[int, int]
    similarity: np.ndarray
    pairs: list[Pair]
    level: str  # "tokens" | "words"
    n_sentences: int = 0
    n_rows: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    stack_a: str = ""
    stack_b: str = ""
    notes: list[str] = field(default_factory=list)

    def pair_rows(self) -> list[dict]:
        """One dict per matched pair: a_layer, a_head, b_layer, b_head, similarity."""
        out = []
        for p in self.pairs:
            (al, ah), (bl, bh) = split(p.a, self.shape_a[1]), split(p.b, self.shape_b[1])
            out.append({"a_layer": al, "a_head": ah, "b_layer": bl, "b_head": bh, "similarity": p.similarity})
        return out

    def to_json(self) -> dict:
        """The `python -m viz match --json` contract."""
        return {"a": {"model": self.model_a, "layers": self.shape_a[0], "heads": self.shape_a[1]},
                "b": {"model": self.model_b, "layers": self.shape_b[0], "heads": self.shape_b[1]},
                "level": self.level, "sentences": self.n_sentences, "rows": self.n_rows,
                "similarity": np.round(self.similarity, 6).tolist(),
                "pairs": [{"a": [r["a_layer"], r["a_head"]], "b": [r["b_layer"], r["b_head"]],
                           "similarity": round(r["similarity"], 6)} for r in self.pair_rows()]}


# ----------------------------------------------------------------------------- tokens or words
def _token_ids(bundle: ModelBundle, sentences: Sequence[str], limit: int) -> list[list[int]]:
    with bundle.lock:  # fast tokenizers are not thread-safe
        return bundle.tokenizer(list(sentences), truncation=True, max_length=limit)["input_ids"]


def same_tokens(bundle_a: ModelBundle, bundle_b: ModelBundle, sentences: Sequence[str], limit: int) -> bool:
    """Whether both tokenizers give every sentence the same token ids (then heads compare token by token)."""
    if not sentences:
        return True
    return _token_ids(bundle_a, sentences, limit) == _token_ids(bundle_b, sentences, limit)


def word_map(bundle: ModelBundle, sentence: str, ids: list[int], offsets: list[tuple[int, int]]) -> np.ndarray:
    """[token] -> index of the whitespace word holding the token's first non-space character, -1 for special
    tokens (and pieces with no character of their own)."""
    starts = [m.start() for m in re.finditer(r"\S+", sentence)]
    special = set(bundle.tokenizer.all_special_ids) - {bundle.tokenizer.unk_token_id}
    out = np.full(len(ids), -1, dtype=np.int64)
    for t, (i, (s, e)) in enumerate(zip(ids, offsets)):
        if i in special or e <= s:
            continue
        chars = sentence[s:e]
        c = s + (len(chars) - len(chars.lstrip()))
        if c < e:
            out[t] = bisect.bisect_right(starts, c) - 1
    return out


def word_maps(bundle: ModelBundle, sentences: Sequence[str], limit: int) -> tuple[list[np.ndarray], list[int]]:
    """Per sentence, the token -> word map, and how many leading words the model saw whole (a truncated sentence
    loses its last, perhaps partial, word)."""
    tok = bundle.tokenizer
    if not getattr(tok, "is_fast", False):
        raise MatchError(f"{bundle.name}'s tokenizer gives no character offsets (not a fast tokenizer), and "
                         "comparing it with a model of another tokenizer needs them to find the words.")
    with bundle.lock:
        enc = tok(list(sentences), truncation=True, max_length=limit, return_offsets_mapping=True)
        full = tok(list(sentences))["input_ids"]
    maps, whole = [], []
    for s, ids, offs, f in zip(sentences, enc["input_ids"], enc["offset_mapping"], full):
        m = word_map(bundle, s, ids, offs)
        n_words = len(s.split())
        whole.append(n_words if len(f) <= len(ids) else max(0, int(m.max(initial=-1))))  # drop a cut word
        maps.append(m)
    return maps, whole


def to_words(attn: torch.Tensor, words: np.ndarray, n_words: int) -> torch.Tensor:
    """One sentence's attention `[heads, T, T]` -> `[heads, W, W]` over its first `n_words` words: special tokens
    set aside (rows renormalised), key pieces summed, query pieces averaged (module docstring)."""
    w = torch.as_tensor(words)
    keep = (w >= 0) & (w < n_words)
    a = attn[:, :, keep]
    a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
    member = torch.zeros((int(keep.sum()), n_words), dtype=a.dtype)
    member[torch.arange(member.shape[0]), w[keep]] = 1.0  # [kept token, word]
    keys = a @ member  # [heads, T, W]: sum over key pieces
    rows = member.T[:, :] / member.sum(0).clamp_min(1)[:, None]  # [W, kept token]: mean over query pieces
    return rows @ keys[:, keep]


# ----------------------------------------------------------------------------- the run
def _heads(bundle: ModelBundle) -> tuple[str, int, int]:
    stack = atlas_stack(bundle)
    return stack, bundle.stack_layers(stack), bundle.n_heads(stack)


def match_models(bundle_a: ModelBundle, bundle_b: ModelBundle, sentences: Sequence[str], *,
                 max_tokens: int = DEFAULT_MAX_TOKENS, level: str = "auto", batch_size: int = DEFAULT_BATCH,
                 progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> MatchResult:
    """Every head of A against every head of B over `sentences` -> MatchResult (similarity, matched pairs).

    level: "auto" (tokens when both tokenizers agree on every sentence, else words), "tokens" or "words".
    Attention read: encoder self-attention (encoder-decoders: the encoder), a decoder's causal self-attention."""
    if level not in LEVELS:
        raise MatchError(f"Unknown level '{level}': use one of {', '.join(LEVELS)}.")
    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise MatchError("No sentences to compare the models on: give a text or a corpus.")
    t0 = time.perf_counter()
    limit = min(max_tokens, bundle_a.max_tokens, bundle_b.max_tokens)
    same = same_tokens(bundle_a, bundle_b, sentences, limit)
    if level == "tokens" and not same:
        raise MatchError(f"{bundle_a.name} and {bundle_b.name} cut these sentences into different tokens: compare "
                         "them at word level (level 'words' or 'auto').")
    level = "tokens" if level == "auto" and same else ("words" if level == "auto" else level)
    (sa, la, ha), (sb, lb, hb) = _heads(bundle_a), _heads(bundle_b)
    acc = SimilarityAccumulator(la * ha, lb * hb)
    run = _by_tokens if level == "tokens" else _by_words
    done, cancelled = run(bundle_a, bundle_b, sentences, limit, batch_size, acc, progress, should_stop)
    sim = acc.similarity()
    return MatchResult(bundle_a.name, bundle_b.name, (la, ha), (lb, hb), sim, assign(sim) if acc.rows else [],
                       level, done, acc.rows, time.perf_counter() - t0, cancelled, sa, sb)


def _stopped(should_stop) -> bool:
    return should_stop is not None and should_stop()


def _by_tokens(bundle_a, bundle_b, sentences, limit, batch_size, acc, progress, should_stop):
    """Both models on the very same padded batches; the real cells of every sentence packed in one order."""
    done = 0
    for batch in iter_batches(bundle_a, sentences, batch_size=batch_size, max_tokens=limit):
        if _stopped(should_stop):
            return done, True
        a, b = forward_attention(bundle_a, batch), forward_attention(bundle_b, batch)  # [B, L, H, T, T]
        cells = (batch.mask[:, :, None] & batch.mask[:, None, :]).reshape(-1)  # real (query, key) cells
        pa = a.permute(1, 2, 0, 3, 4).reshape(acc.n_a, -1)[:, cells]
        pb = b.permute(1, 2, 0, 3, 4).reshape(acc.n_b, -1)[:, cells]
        acc.add(pa, pb, int(batch.mask.sum()))
        done += len(batch.ids)
        if progress is not None:
            progress(done, len(sentences))
    return done, False


def _word_attention(bundle, part, maps, n_words, limit, batch_size, should_stop):
    """Each sentence of `part` -> its word-level attention `[heads, W, W]` (None when stopped)."""
    out: list[torch.Tensor | None] = [None] * len(part)
    for batch in iter_batches(bundle, part, batch_size=batch_size, max_tokens=limit, chunk=len(part)):
        if _stopped(should_stop):
            return None
        attn = forward_attention(bundle, batch)
        for r, i in enumerate(batch.sentence_ids.tolist()):
            n = int(batch.mask[r].sum())
            a = attn[r, :, :, :n, :n].reshape(-1, n, n)
            out[i] = to_words(a, maps[i], n_words[i])
    return out


def _by_words(bundle_a, bundle_b, sentences, limit, batch_size, acc, progress, should_stop):
    done = 0
    for start in range(0, len(sentences), WORD_CHUNK):
        part = sentences[start:start + WORD_CHUNK]
        maps_a, whole_a = word_maps(bundle_a, part, limit)
        maps_b, whole_b = word_maps(bundle_b, part, limit)
        n_words = [min(x, y) for x, y in zip(whole_a, whole_b)]
        wa = _word_attention(bundle_a, part, maps_a, n_words, limit, batch_size, should_stop)
        wb = None if wa is None else _word_attention(bundle_b, part, maps_b, n_words, limit, batch_size, should_stop)
        if wb is None:
            return done, True
        keep = [i for i, n in enumerate(n_words) if n > 0]
        if keep:
            acc.add(torch.cat([wa[i].reshape(acc.n_a, -1) for i in keep], 1),
                    torch.cat([wb[i].reshape(acc.n_b, -1) for i in keep], 1), sum(n_words[i] for i in keep))
        done += len(part)
        if progress is not None:
            progress(done, len(sentences))
    return done, False


def sentence_views(bundle_a: ModelBundle, bundle_b: ModelBundle, text: str, level: str,
                   max_tokens: int = DEFAULT_MAX_TOKENS) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One sentence as both models saw it at `level` -> (A [NA, n, n], B [NB, n, n], labels [n]): the rows the
    similarity of a pair is the mean over (token labels, or the whitespace words)."""
    limit = min(max_tokens, bundle_a.max_tokens, bundle_b.max_tokens)
    out, labels = [], []
    if level == "words":
        (ma, wa), (mb, wb) = word_maps(bundle_a, [text], limit), word_maps(bundle_b, [text], limit)
        n = min(wa[0], wb[0])
        labels = text.split()[:n]
    for bundle, m in ((bundle_a, ma if level == "words" else None), (bundle_b, mb if level == "words" else None)):
        batch = next(iter_batches(bundle, [text], max_tokens=limit))
        attn = forward_attention(bundle, batch)[0]  # [L, H, T, T]
        flat = attn.reshape(-1, *attn.shape[2:])
        if level == "words":
            flat = to_words(flat, m[0], n)
        else:
            with bundle.lock:
                labels = bundle.tokenizer.convert_ids_to_tokens(batch.ids[0].tolist())
        out.append(flat.numpy())
    return out[0], out[1], labels
