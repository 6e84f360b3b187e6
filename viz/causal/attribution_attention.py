"""The attention side, as attributions of the same prediction: one forward recorded by our attention function,
then the existing analyses (`viz.analysis.flow`, `viz.analysis.norms`) read at the predicting position.

For a masked LM or a decoder (self-attention, row = the predicting position p, last layer L-1):
    attention  mean over heads of A_{L-1}[h, p, :]
    rollout    attention rollout R_{L-1}[p, :] (Abnar & Zuidema 2020, Â = renorm(0.5 A + 0.5 I))
    flow       attention flow from token p at the output of the last layer to every input token (their §3)
    norm       ‖Σ_h α^h_{pj} f_h(x_j)‖ of the last layer (Kobayashi et al. 2020, §5)
For an encoder–decoder the prediction reads the source through cross-attention; with c = the head mean of the
last decoder layer's cross-attention row at the explained step (over the source):
    attention  c
    rollout    c · R_enc (the encoder's rollout, last layer)
    flow       c · F_enc (the encoder's flow from every output token to every input token; up to
               FLOW_MAX_TOKENS source tokens)
    norm       ‖Σ_h α^h_{tj} f_h(x_j)‖ of that cross-attention layer
None of these depends on the target token; all are non-negative.
"""

from __future__ import annotations

import numpy as np
import torch

from viz.analysis.flow import FLOW_MAX_TOKENS, FLOW_ROW_MAX_TOKENS, attention_flow, attention_rollout
from viz.analysis.norms import summed_norm_attention
from viz.core.arch import CROSS, DECODER, ENCODER
from viz.core.capture import recording
from viz.causal.attribution_catalog import ATTENTION_METHODS
from viz.causal.attribution_target import Problem
from viz.core.weights import output_projections

def _stack(rec, stack: str) -> tuple[np.ndarray, np.ndarray]:
    """(attentions [layer, head, q, k], values per query head [layer, head, k, d]) of a recorded forward."""
    attn = torch.stack([a[0] for a in rec.data[(stack, "attn")]]).float().cpu().numpy()
    v = torch.stack([t[0] for t in rec.data[(stack, "v")]]).float().cpu().numpy()  # [layer, kv_head, k, d]
    H, KV = attn.shape[1], v.shape[1]
    return attn, v[:, np.arange(H) // max(1, H // KV)]


def _record(problem: Problem) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    b, ids = problem.bundle, problem.ids[None]
    kw = {"decoder_input_ids": problem.decoder_ids[None]} if b.kind == "encoder-decoder" else {}
    with b.lock, torch.inference_mode(), recording(b, qkv=True) as rec:
        model = b.model.base_model if b.kind == "encoder" else b.model  # no 30k-vocabulary head on every token
        model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, **kw)
    return {s: _stack(rec, s) for s in b.arch.stacks if rec.data.get((s, "attn"))}


def _norm_row(problem: Problem, stack: str, attn: np.ndarray, values: np.ndarray, row: int) -> np.ndarray:
    L, H = attn.shape[:2]
    try:
        w_o = output_projections(problem.bundle, stack, L, H)[-1:]
    except (LookupError, KeyError):
        return np.full(attn.shape[-1], np.nan)
    return summed_norm_attention(attn[-1:, :, row:row + 1], values[-1:], w_o)[0, 0]


def attention_scores(problem: Problem, methods=ATTENTION_METHODS) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """{method: scores [T]} for the attention-based methods asked for, and {method: note} where one could not
    be computed (its scores are NaN then)."""
    rec = _record(problem)
    T, out, notes = problem.n, {}, {}
    if problem.kind == "encoder-decoder":
        enc_attn, _ = rec[ENCODER]
        cross, cross_v = rec[CROSS]
        t = problem.decoder_ids.shape[0] - 1  # the explained step's query row
        c = cross[-1, :, t].mean(0).astype(np.float64)
        if "attention" in methods:
            out["attention"] = c
        if "rollout" in methods:
            out["rollout"] = c @ attention_rollout(enc_attn)[-1]
        if "flow" in methods:
            if T > FLOW_MAX_TOKENS:
                out["flow"] = np.full(T, np.nan)
                notes["flow"] = (f"flow needs the encoder's full flow matrix, limited to {FLOW_MAX_TOKENS} source "
                                 f"tokens here (this source has {T})")
            else:
                out["flow"] = c @ attention_flow(enc_attn, max_tokens=None)
        if "norm" in methods:
            out["norm"] = _norm_row(problem, CROSS, cross, cross_v, t)
    else:
        stack = ENCODER if problem.kind == "encoder" else DECODER
        attn, values = rec[stack]
        p = problem.position
        if "attention" in methods:
            out["attention"] = attn[-1, :, p].mean(0).astype(np.float64)
        if "rollout" in methods:
            out["rollout"] = attention_rollout(attn)[-1, p]
        if "flow" in methods:
            if T > FLOW_ROW_MAX_TOKENS:
                out["flow"] = np.full(T, np.nan)
                notes["flow"] = f"flow is limited to {FLOW_ROW_MAX_TOKENS} tokens here (this input has {T})"
            else:
                out["flow"] = attention_flow(attn, queries=[p], max_tokens=None)[0]
        if "norm" in methods:
            out["norm"] = _norm_row(problem, stack, attn, values, p)
    for m, v in out.items():
        if m == "norm" and np.isnan(v).all() and m not in notes:
            notes[m] = "norm-based attention needs the output projection's place in viz/arch.py for this family"
    return out, notes
