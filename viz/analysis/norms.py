"""Norm-based attention (Kobayashi et al. 2020, "Attention is Not Only a Weight: Analyzing
Transformers with Vector Norms", EMNLP, §3) and its residual- and LayerNorm-aware variant
(Kobayashi et al. 2021, "Incorporating Residual and Normalization Layers into Analysis of
Masked Language Models", EMNLP, §3-4).

A head's output for query i is  sum_j α_ij f(x_j)  with  f(x_j) = (x_j W_V + b_V) W_O^h
(the captured value vector times the head's rows of the output projection). Instead of the
weight α_ij, look at the size of what is actually added: ‖α_ij f(x_j)‖.

Shapes:
    attn        [layer, head, query, key]
    values      [layer, head, key, head_dim]      (value projection output, bias included)
    w_o         [layer, head, head_dim, dim]      (viz.core.weights.output_projections)
    residual    [layer, query, dim]                (hidden state entering each layer)
"""

from __future__ import annotations

import numpy as np


def transformed_values(values: np.ndarray, w_o: np.ndarray) -> np.ndarray:
    """f(x_j) = v_j W_O^h for every head: [layer, head, key, dim] (Kobayashi 2020, eq. 6)."""
    return np.einsum("lhkd,lhde->lhke", values.astype(np.float64), w_o.astype(np.float64))


def norm_attention(attn: np.ndarray, values: np.ndarray, w_o: np.ndarray) -> np.ndarray:
    """‖α_ij f_h(x_j)‖ per head (Kobayashi 2020, eq. 7): [layer, head, query, key].

    Equals α_ij · ‖f_h(x_j)‖ since α >= 0.
    """
    fnorm = np.linalg.norm(transformed_values(values, w_o), axis=-1)  # [layer, head, key]
    return attn * fnorm[:, :, None, :]


def _gram_norm(coef: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """‖sum_m coef[m, i, j] c_{j,m}‖ from gram [key, m, m'] = <c_{j,m}, c_{j,m'}>: [query, key]."""
    tmp = np.einsum("gij,jhg->hij", coef, gram)
    return np.sqrt(np.clip((coef * tmp).sum(axis=0), 0.0, None))


def summed_norm_attention(attn: np.ndarray, values: np.ndarray, w_o: np.ndarray) -> np.ndarray:
    """‖sum_h α^h_ij f_h(x_j)‖: the whole layer's attention block as one matrix (Kobayashi 2020, §5),
    [layer, query, key]. Computed through per-key Gram matrices so no [q, k, dim] tensor is built."""
    f = transformed_values(values, w_o)  # [layer, head, key, dim]
    out = np.empty((attn.shape[0],) + attn.shape[2:])
    for lv in range(attn.shape[0]):
        gram = np.einsum("hkd,gkd->khg", f[lv], f[lv])
        out[lv] = _gram_norm(attn[lv].astype(np.float64), gram)
    return out


def residual_norm_attention(attn: np.ndarray, values: np.ndarray, w_o: np.ndarray, residual: np.ndarray,
                            bias: np.ndarray | None = None,
                            layernorm: tuple[np.ndarray, np.ndarray, float] | None = None) -> np.ndarray:
    """Residual-aware (ATTN-RES) and, with `layernorm`, LayerNorm-aware (ATTN-RES-LN) norms
    (Kobayashi et al. 2021, eq. 8-11) for self-attention: [layer, query, key].

    Token i's update is  y_i = sum_j z_ij + b  with  z_ij = sum_h α^h_ij f_h(x_j) + δ_ij x_i
    (the residual x_i is token i's own contribution). Returned: ‖z_ij‖, or, for post-LN models
    given `layernorm = (gamma [layer, dim], beta, eps)`, ‖g_i(z_ij)‖ with
    g_i(z) = gamma ⊙ (z - mean(z)) / s(y_i), s(y_i) = sqrt(var(y_i) + eps): LN(y_i) is then exactly
    sum_j g_i(z_ij) + gamma ⊙ (b - mean(b)) / s(y_i) + beta.
    """
    f = transformed_values(values, w_o)  # [layer, head, key, dim]
    x = residual.astype(np.float64)       # [layer, query, dim]
    L, H, T, _ = f.shape
    if attn.shape[-1] != attn.shape[-2] or x.shape[1] != T:
        raise ValueError("the residual-aware variant needs self-attention (square) matrices")
    out = np.empty((L, T, T))
    for lv in range(L):
        comps = np.concatenate([f[lv], x[lv][None]], axis=0)  # [head + 1, key, dim]; last = residual
        coef = np.concatenate([attn[lv].astype(np.float64), np.eye(T)[None]], axis=0)
        scale = np.ones(T)
        if layernorm is not None:
            gamma, _, eps = layernorm
            y = np.einsum("hij,hjd->id", attn[lv], f[lv]) + x[lv]
            if bias is not None:
                y = y + bias[lv]
            scale = np.sqrt(y.var(axis=-1) + eps)  # s(y_i)
            comps = gamma[lv] * (comps - comps.mean(axis=-1, keepdims=True))
        gram = np.einsum("hkd,gkd->khg", comps, comps)
        out[lv] = _gram_norm(coef, gram) / scale[:, None]
    return out


def row_normalise(m: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 (to compare norms with attention weights on one scale)."""
    return m / np.clip(m.sum(axis=-1, keepdims=True), 1e-12, None)
