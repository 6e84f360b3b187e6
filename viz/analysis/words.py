"""Views of an attention matrix at word level or without special tokens.

Merging follows Clark et al. 2019 ("What does BERT look at?", §2): attention *to* a
split word is the sum over its pieces, attention *from* a split word is the mean
over its pieces, so every row still sums to 1.
"""

from __future__ import annotations

import numpy as np


def merge_pieces(attn: np.ndarray, q_spans, k_spans) -> np.ndarray:
    """[..., query, key] -> [..., query_words, key_words]; spans are [start, end) over tokens."""
    k_starts = np.array([s for s, _ in k_spans])
    summed = np.add.reduceat(attn, k_starts, axis=-1)  # sum over key pieces
    rows = [summed[..., s:e, :].mean(axis=-2) for s, e in q_spans]  # mean over query pieces
    return np.stack(rows, axis=-2)


def span_labels(tokens: list[str], spans, tokenizer=None) -> list[str]:
    """A label per span: the pieces joined back into the word."""
    out = []
    for s, e in spans:
        pieces = tokens[s:e]
        if tokenizer is not None and e - s > 1:
            out.append(tokenizer.convert_tokens_to_string(pieces).strip() or "".join(pieces))
        else:
            out.append("".join(p[2:] if i and p.startswith("##") else p for i, p in enumerate(pieces)))
    return out


def drop_rows_cols(attn: np.ndarray, keep_q: np.ndarray, keep_k: np.ndarray, renormalise: bool = True) -> np.ndarray:
    """Remove query rows / key columns (e.g. [CLS], [SEP]); optionally renormalise rows to sum to 1."""
    out = attn[..., keep_q, :][..., keep_k]
    if renormalise:
        out = out / np.clip(out.sum(axis=-1, keepdims=True), 1e-12, None)
    return out


def aggregate(attn: np.ndarray, how: str = "mean", axis=(0, 1)) -> np.ndarray:
    """[layer, head, q, k] -> [q, k] by mean or max over the given axes."""
    if how == "mean":
        return attn.mean(axis=axis)
    if how == "max":
        return attn.max(axis=axis)
    raise ValueError(f"unknown aggregation {how!r}; use 'mean' or 'max'")


def structural(special: np.ndarray, ids, unk_id: int | None) -> np.ndarray:
    """bool [token]: the special tokens a "hide special tokens" view drops ([CLS], [SEP], </s>, padding).
    An unknown-word token ([UNK], <unk>) stands for a word the user typed (an emoji, a rare script) and
    stays: hiding it made those words vanish without a trace."""
    special = np.asarray(special, dtype=bool)
    if ids is None or unk_id is None:
        return special
    return special & (np.asarray(ids) != unk_id)
