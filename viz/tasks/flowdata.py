"""Everything the Layer flow page shows for one stack of one capture, computed once.

Glue between the model-side reads (`viz.core.weights`: output projections, LayerNorm) and the pure
analyses (`viz.analysis.flow`, `.norms`): after this call everything is numpy and figure code
never sees the model. Attention flow itself is not here: it is slow, so the page asks for it
per layer / per token (`viz.app.cache.get_flow`).

Shapes (q = query tokens, k = key tokens; q == k for self-attention):
    raw          [layer, head, q, k]     captured attention
    raw_mean     [layer, q, k]           head mean
    norm         [layer, head, q, k]     ‖α f(x)‖ per head (Kobayashi 2020)
    norm_summed  [layer, q, k]           ‖Σ_h α f(x)‖
    norm_res     [layer, q, q]           residual- (and, post-LN, LayerNorm-) aware norms (Kobayashi 2021)
    graph        [layer, q, q]           Â = renorm(0.5 A + 0.5 I) (Abnar & Zuidema 2020)
    rollout      [layer, q, q]
    hidden       [layer + 1, q, dim]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viz.analysis.flow import attention_rollout, residual_attention
from viz.analysis.norms import norm_attention, residual_norm_attention, summed_norm_attention
from viz.core.arch import CROSS
from viz.core.capture import Capture
from viz.core.models import ModelBundle
from viz.core.weights import attention_layernorm, output_biases, output_projections


@dataclass
class LayerFlow:
    stack: str
    query_tokens: list[str]
    key_tokens: list[str]
    raw: np.ndarray
    raw_mean: np.ndarray
    norm: np.ndarray | None = None
    norm_summed: np.ndarray | None = None
    norm_res: np.ndarray | None = None
    norm_res_kind: str = ""  # "residual + LayerNorm" | "residual"
    graph: np.ndarray | None = None
    rollout: np.ndarray | None = None
    hidden: np.ndarray | None = None
    note: str = ""  # why something is missing, for the page to show

    @property
    def self_attention(self) -> bool:
        return self.stack != CROSS

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything computed, for an NPZ download."""
        out = {"query_tokens": np.array(self.query_tokens), "key_tokens": np.array(self.key_tokens)}
        for name in ("raw", "raw_mean", "norm", "norm_summed", "norm_res", "graph", "rollout", "hidden"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        return out


def layer_flow(bundle: ModelBundle, cap: Capture, stack: str) -> LayerFlow:
    """Compute the page's arrays for `stack` (encoder | decoder | cross)."""
    q_tok, k_tok = cap.axis_tokens(stack)
    raw = cap.attentions[stack]
    L, H = raw.shape[:2]
    lf = LayerFlow(stack, list(q_tok), list(k_tok), raw, raw.mean(axis=1))
    values = cap.head_values(stack) if stack in cap.values else None
    if values is not None:
        try:
            w_o = output_projections(bundle, stack, L, H)
        except LookupError as e:
            lf.note = f"Norm-based attention unavailable: {e}"
        else:
            lf.norm = norm_attention(raw, values, w_o).astype(np.float32)
            lf.norm_summed = summed_norm_attention(raw, values, w_o).astype(np.float32)
            if lf.self_attention and stack in cap.hidden_states:
                ln = attention_layernorm(bundle, stack, L)
                lf.norm_res = residual_norm_attention(raw, values, w_o, cap.hidden_states[stack][:-1],
                                                      output_biases(bundle, stack, L), ln).astype(np.float32)
                lf.norm_res_kind = "residual + LayerNorm" if ln is not None else "residual (pre-LN model)"
    if lf.self_attention:
        lf.graph = residual_attention(raw)
        lf.rollout = attention_rollout(raw)
        lf.hidden = cap.hidden_states.get(stack)
    return lf
