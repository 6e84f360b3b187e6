"""Views of an attention matrix at word level or without special tokens (`attention_view` applies the
Attention page's toggles to a capture).

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
    """A label per span: the pieces joined back into the word. With the tokenizer every span is decoded, one
    piece or several (a one-piece word of a byte-level BPE kept its raw `Ġthe` beside decoded words before)."""
    out = []
    for s, e in spans:
        pieces = tokens[s:e]
        if tokenizer is not None:
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


def sink_aware(attn: np.ndarray) -> np.ndarray:
    """[..., query, key] without the first token (row and column), rows renormalised to sum to 1: what a head
    does once its "attention sink" (Xiao et al. 2023) is set aside. Rows that gave everything to the
    first token become all zero rather than undefined."""
    out = attn[..., 1:, 1:]
    total = out.sum(axis=-1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 1e-12)


def attention_view(cap, stack: str, words: bool = False, hide: bool = False, tokenizer=None, sink: bool = False):
    """A capture's `stack` attention `[layer, head, query, key]` and its (query, key) labels after the
    Attention page's toggles: `words` merges word pieces (`merge_pieces`, labels from `span_labels`),
    `sink` sets the first token aside (`sink_aware`; for cross-attention only the first source column),
    `hide` drops special-token rows and columns and renormalises each row (`drop_rows_cols`; kept when
    nothing else would be left). Without toggles the capture's own array comes back, not a copy."""
    attn = cap.attentions[stack]
    (q_tok, k_tok), ((q_sp, q_spec), (k_sp, k_spec)) = cap.axis_tokens(stack), cap.axis_spans(stack)
    if words:
        attn = merge_pieces(attn, q_sp, k_sp)
        q_lab, k_lab = span_labels(q_tok, q_sp, tokenizer), span_labels(k_tok, k_sp, tokenizer)
        q_spec, k_spec = q_spec[[s for s, _ in q_sp]], k_spec[[s for s, _ in k_sp]]
    else:
        q_lab, k_lab = list(q_tok), list(k_tok)
    if sink and len(k_lab) > 1:
        same = stack != "cross"  # cross-attention's first key is a source token, its first row a target token
        attn = sink_aware(attn) if same else drop_rows_cols(attn, np.ones(attn.shape[-2], bool),
                                                            np.arange(attn.shape[-1]) > 0)
        q_lab, q_spec = (q_lab[1:], q_spec[1:]) if same else (q_lab, q_spec)
        k_lab, k_spec = k_lab[1:], k_spec[1:]
    if hide and (~q_spec).any() and (~k_spec).any():
        attn = drop_rows_cols(attn, ~q_spec, ~k_spec)
        q_lab = [t for t, s in zip(q_lab, q_spec) if not s]
        k_lab = [t for t, s in zip(k_lab, k_spec) if not s]
    return attn, q_lab, k_lab
