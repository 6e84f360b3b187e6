"""Per-head slices of a model's weights, as numpy (for norm-based attention).

Captured value vectors (`Capture.values`) hold what each head mixes; what reaches the
residual stream is `v @ W_O[h]`, the head's rows of the output projection (Kobayashi et
al. 2020, "Attention is not only a weight", eq. 5-6). This module reads those rows — and,
for post-LN families, the LayerNorm that follows the attention block — out of the
model once, so analysis code never touches torch.

Shapes:
    output_projections  [layer, head, head_dim, dim]
    output_biases       [layer, dim]
    attention_layernorm (gamma [layer, dim], beta [layer, dim], eps)
"""

from __future__ import annotations

import re

import numpy as np
import torch

from viz.core.arch import CROSS, DECODER, ENCODER
from viz.core.models import ModelBundle

# LayerNorm applied to (attention output + residual) in post-LN families: model_type -> stack -> regex.
# Pre-LN families (GPT-2, T5, mBART, Pegasus) normalise the layer *input* instead, so the
# LN-aware decomposition of Kobayashi et al. 2021 does not apply to them.
_BERT_LN = {ENCODER: r"encoder\.layer\.\d+\.attention\.output\.LayerNorm"}
_BART_LN = {ENCODER: r"encoder\.layers\.\d+\.self_attn_layer_norm",
            DECODER: r"decoder\.layers\.\d+\.self_attn_layer_norm",
            CROSS: r"decoder\.layers\.\d+\.encoder_attn_layer_norm"}
POST_LN: dict[str, dict[str, str]] = {
    "bert": _BERT_LN, "electra": _BERT_LN, "roberta": _BERT_LN, "xlm-roberta": _BERT_LN, "camembert": _BERT_LN,
    "distilbert": {ENCODER: r"transformer\.layer\.\d+\.sa_layer_norm"},
    "albert": {ENCODER: r"albert_layers\.\d+\.attention\.LayerNorm"},
    "bart": _BART_LN, "marian": _BART_LN,
}


def _modules(bundle: ModelBundle, pattern: str, n_layers: int) -> list:
    """Modules matching `pattern` in call order, one per layer. A single shared module (ALBERT)
    is repeated for every layer."""
    found = [m for name, m in bundle.model.named_modules() if re.search(r"(^|\.)" + pattern + "$", name)]
    if not found:
        raise LookupError(f"No module matches '{pattern}' in {type(bundle.model).__name__}; arch.py needs fixing.")
    if len(found) == 1 and n_layers > 1:
        found = found * n_layers
    if len(found) != n_layers:
        raise LookupError(f"Found {len(found)} modules for '{pattern}', expected {n_layers} (one per layer).")
    return found


def _linear_weight(module) -> torch.Tensor:
    """Weight as [in, out]: nn.Linear stores [out, in]; GPT-2's Conv1D already stores [in, out]."""
    w = module.weight.detach().float()
    return w if type(module).__name__ == "Conv1D" else w.T


def output_projections(bundle: ModelBundle, stack: str, n_layers: int, n_heads: int) -> np.ndarray:
    """Each head's rows of the attention output projection: [layer, head, head_dim, dim].

    `concat_h(v_h) @ W` equals `sum_h v_h @ W[h]` with `W[h] = W[h*d:(h+1)*d]` (W as [in, out]).
    """
    site = bundle.arch.sites[stack]
    mods = _modules(bundle, site.output, n_layers)
    ws = torch.stack([_linear_weight(m) for m in mods])  # [layer, in, out]
    L, d_in, d_out = ws.shape
    return ws.reshape(L, n_heads, d_in // n_heads, d_out).numpy()


def output_biases(bundle: ModelBundle, stack: str, n_layers: int) -> np.ndarray:
    """Bias of the output projection, [layer, dim] (zeros where the projection has none, e.g. T5)."""
    site = bundle.arch.sites[stack]
    mods = _modules(bundle, site.output, n_layers)
    out = []
    for m in mods:
        b = getattr(m, "bias", None)
        out.append(b.detach().float().numpy() if b is not None else np.zeros(_linear_weight(m).shape[1], np.float32))
    return np.stack(out)


def attention_layernorm(bundle: ModelBundle, stack: str, n_layers: int) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(gamma [layer, dim], beta [layer, dim], eps) of the post-attention LayerNorm; None for pre-LN families."""
    pattern = POST_LN.get(bundle.model.config.model_type, {}).get(stack)
    if pattern is None:
        return None
    mods = _modules(bundle, pattern, n_layers)
    gamma = np.stack([m.weight.detach().float().numpy() for m in mods])
    beta = np.stack([m.bias.detach().float().numpy() for m in mods])
    return gamma, beta, float(mods[0].eps)
