"""The one capture point: our own function in transformers' `AttentionInterface`.

In transformers 5 nearly every family (BERT … T5, BART, GPT-2, Llama, Qwen, Mistral, Gemma, Phi,
GPT-NeoX, OPT, ModernBERT) calls attention as `ALL_ATTENTION_FUNCTIONS[impl](module, q, k, v, mask,
**kw)`. We register `atlas` there (and, in `AttentionMaskInterface`, the SDPA mask builder) and switch
every loaded model to it. The function sees every head's q, k, v exactly as the model computes them
(after RoPE; GQA key/value heads at their own count) and decides per call:

- nothing records (no `Recorder` in this context) -> the fast path, SDPA, so capture costs nothing;
- a layer nobody asked for -> SDPA as well;
- a recorded layer -> the family's own `eager_attention_forward` (its scaling, soft-capping, sliding
  window, position bias and sink logits stay exact), keeping the weights, q, k and v. When only some
  query rows are wanted, SDPA computes the output and the eager math runs on those rows only.

Families whose eager math SDPA cannot reproduce (soft-capping, sink logits, or no SDPA support) always
take the eager path, recorded or not.

As in transformers' `utils/output_capturing.py`, what a call records is held in a ContextVar: two
threads (Streamlit sessions) sharing one model never see each other's tensors, and a context that
exits — normally or by an exception inside the forward — leaves nothing behind. No forward hooks.

Edits (`Edit`, used by `viz.core.interventions` and `viz.atlas.importance`) ride the same function: a causal
look-ahead mask added to an encoder's self-attention, a per-head scale on each head's output
just before the output projection (0 ablates a head; a tensor with grad gives importance gates), and a
per-key scale on the value vectors of every head (0 zeroes one token's values: value zeroing,
`viz.causal.attribution_vz`).

Layer index = order of calls per stack within a context, modulo the stack's layer count (ALBERT
calls one shared module for every layer).

Shapes recorded per layer (torch, model dtype and device):
    attn    [batch, head, row, key]
    q       [batch, head, row, head_dim]
    k, v    [batch, kv_head, key, head_dim]
    thumb   [batch, head, pool, pool]      average-pooled weights (all rows), when `pool` is set
    mask    [batch, 1|head, row, key]      the additive mask the eager math used (0 / -inf), with `details`
    bias    [batch, head, row, key]        a position bias added to the scores (T5), with `details`
    scaling, softcap (floats per layer, in `Recorder.meta`), with `details`
    first   [batch, head]                  mean weight on key 0 over rows i >= 1 (the "sink" share), unless every
                                           row's weights are kept (`first_share` of them then, once)
"""

from __future__ import annotations

import sys
import threading
from collections import defaultdict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from viz.core.arch import CROSS, DECODER, ENCODER

ATLAS = "atlas"
_REGISTER_LOCK = threading.Lock()
_registered = False


# ----------------------------------------------------------------------------- what a context asks for
@dataclass
class Recorder:
    """What one call keeps. `layers[stack]`: set of layer indices (missing stack or None = all);
    `rows[stack]`: LongTensor of query positions (missing or None = all)."""

    n_layers: dict[str, int]
    layers: dict[str, frozenset[int] | None] = field(default_factory=dict)
    rows: dict[str, torch.Tensor | None] = field(default_factory=dict)
    weights: bool = True  # keep the weights themselves (False: only `first` and thumbnails)
    qkv: bool = True
    pool: int = 0  # > 0: keep a [head, pool, pool] thumbnail of each recorded layer
    details: bool = False  # keep what the scores were made of: mask rows, position bias, scaling, soft-cap
    data: dict[tuple[str, str], list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))
    recorded: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    meta: dict[tuple[str, str], list] = field(default_factory=lambda: defaultdict(list))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def wants(self, stack: str, layer: int) -> bool:
        chosen = self.layers.get(stack)
        return chosen is None or layer in chosen

    def keep(self, stack: str, name: str, tensor: torch.Tensor) -> None:
        self.data[(stack, name)].append(tensor.detach())


@dataclass
class Edit:
    """A change to the computation for the calls in this context."""

    n_layers: dict[str, int]
    causal: frozenset[str] = frozenset()  # stacks given a look-ahead mask
    scales: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)  # (stack, layer) -> [head]
    # (stack, layer) -> [batch, key]: multiplies every head's value vector of each key, per batch row
    values: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))


RECORDER: ContextVar[Recorder | None] = ContextVar("viz_recorder", default=None)
EDIT: ContextVar[Edit | None] = ContextVar("viz_edit", default=None)


def _next_layer(state, stack: str) -> int:
    i = state.calls[stack]
    state.calls[stack] = i + 1
    n = state.n_layers.get(stack) or 0
    return i % n if n else i


@contextmanager
def active(var: ContextVar, state) -> Iterator:
    token = var.set(state)
    try:
        yield state
    finally:
        var.reset(token)


# ----------------------------------------------------------------------------- masks
def float_mask(mask: torch.Tensor | None, module, query: torch.Tensor, key: torch.Tensor,
               is_causal: bool | None = None) -> torch.Tensor | None:
    """The additive mask eager attention expects, from what the SDPA mask builder gave: None means
    "causal" or "none" by the rule `sdpa_attention_forward` applies; bool True means "attend"."""
    dtype, low = query.dtype, torch.finfo(query.dtype).min
    if mask is None:
        causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        Q, K = query.shape[2], key.shape[2]
        if not (causal and Q > 1):
            return None
        return torch.full((Q, K), low, dtype=dtype, device=query.device).triu(1 + K - Q)[None, None]
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, low)
    return mask


def with_look_ahead(mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """`mask` (SDPA form) with the decoder's look-ahead mask added (Vaswani et al. 2017, §3.2.3)."""
    Q, K = query.shape[2], key.shape[2]
    allowed = torch.ones((Q, K), dtype=torch.bool, device=query.device).tril(K - Q)[None, None]
    if mask is None:
        return allowed
    if mask.dtype == torch.bool:
        return mask & allowed
    return mask.masked_fill(~allowed, torch.finfo(mask.dtype).min)


# ----------------------------------------------------------------------------- the function
def _sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward


def _eager_exact_only(module, kwargs) -> bool:
    """SDPA cannot reproduce this call: soft-capped logits, sink logits, or a family without SDPA."""
    return (kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None
            or getattr(module, "_viz_fast", "sdpa") != "sdpa")


def _eager(module, query, key, value, mask, **kwargs):
    return module._viz_eager(module, query, key, value, float_mask(mask, module, query, key, kwargs.get("is_causal")),
                             **kwargs)


def _rows_of(tensor, rows: torch.Tensor):
    """Slice the query axis (dim 2) of a [batch, head|1, query, key] tensor; broadcast dims stay."""
    if tensor is None or not torch.is_tensor(tensor) or tensor.dim() != 4 or tensor.shape[2] == 1:
        return tensor
    return tensor.index_select(2, rows.to(tensor.device))


def _eager_rows(module, query, key, value, mask, rows: torch.Tensor, kwargs) -> torch.Tensor:
    """Eager weights of the query rows `rows` only -> [batch, head, len(rows), key]."""
    rows = rows.to(query.device)
    if mask is not None:
        mask = _rows_of(mask, rows)
    else:
        causal = kwargs.get("is_causal")
        causal = getattr(module, "is_causal", True) if causal is None else causal
        Q, K = query.shape[2], key.shape[2]
        if causal and Q > 1:  # the look-ahead mask of these rows only, never the whole [Q, K]
            ahead = torch.arange(K, device=query.device)[None, :] > rows[:, None] + (K - Q)
            mask = ~ahead[None, None]
    kw = {k: _rows_of(v, rows) if k == "position_bias" else v for k, v in kwargs.items()}
    kw["is_causal"] = False  # the mask is explicit from here on
    _, weights = _eager(module, query.index_select(2, rows), key, value, mask, **kw)
    return weights


def atlas_attention(module, query, key, value, attention_mask, **kwargs):
    """Registered as `atlas` in `ALL_ATTENTION_FUNCTIONS`; see the module docstring."""
    rec, edit = RECORDER.get(), EDIT.get()
    eager_only = _eager_exact_only(module, kwargs)
    if rec is None and edit is None:
        if eager_only:
            return _eager(module, query, key, value, attention_mask, **kwargs)
        return _sdpa()(module, query, key, value, attention_mask, **kwargs)

    stack = getattr(module, "_viz_stack", ENCODER)
    scale = None
    if edit is not None:
        layer = _next_layer(edit, stack)
        if stack in edit.causal:
            attention_mask = with_look_ahead(attention_mask, query, key)
        scale = edit.scales.get((stack, layer))
        vscale = edit.values.get((stack, layer))
        if vscale is not None:  # value [batch, kv_head, key, head_dim]
            value = value * vscale.to(device=value.device, dtype=value.dtype)[:, None, :, None]
    keep = False
    if rec is not None:
        layer = _next_layer(rec, stack)
        keep = rec.wants(stack, layer)

    weights = None
    rows = rec.rows.get(stack) if keep else None
    if keep and rows is None or eager_only:
        out, weights = _eager(module, query, key, value, attention_mask, **kwargs)
        if rows is not None:
            weights = weights.index_select(2, rows.to(weights.device))
    else:
        out, _ = _sdpa()(module, query, key, value, attention_mask, **kwargs)
        if keep:  # the eager math on the wanted rows only; rows are independent in a softmax
            weights = _eager_rows(module, query, key, value, attention_mask, rows, kwargs)
    if keep:
        _record(rec, stack, layer, weights, query, key, value, rows)
        if rec.details:
            _record_details(rec, stack, module, query, key, attention_mask, rows, kwargs)
    if scale is not None:
        out = out * scale.to(out.dtype).view(1, 1, -1, 1)
    return out, weights


def _record(rec: Recorder, stack: str, layer: int, weights, query, key, value, rows) -> None:
    rec.recorded[stack].append(layer)
    w = weights.detach()
    if rec.weights:
        rec.keep(stack, "attn", w)
    # the sink share over rows i >= 1 (row 0 of a causal model has nowhere else to look); when every row's
    # weights are kept, the capture computes it once from them afterwards (`first_share`), not per layer here
    if rows is None and not rec.weights:
        rec.keep(stack, "first", first_share(w))
    elif rows is not None:
        later = (rows >= 1).to(w.device)
        rec.keep(stack, "first", (w[:, :, later, 0] if bool(later.any()) else w[..., 0]).float().mean(-1))
    if rec.pool and rows is None:
        size = (min(rec.pool, w.shape[-2]), min(rec.pool, w.shape[-1]))
        rec.keep(stack, "thumb", F.adaptive_avg_pool2d(w.float(), size))
    if rec.qkv:
        rec.keep(stack, "q", query if rows is None else query.index_select(2, rows.to(query.device)))
        rec.keep(stack, "k", key)
        rec.keep(stack, "v", value)


def first_share(w):
    """[..., row, key] weights of every row -> [...]: the mean weight on key 0 over rows i >= 1 (all rows when
    there is one). Torch or numpy."""
    first = w[..., 1:, 0] if w.shape[-2] > 1 else w[..., 0]
    return first.float().mean(-1) if torch.is_tensor(first) else first.astype(np.float32).mean(-1)


def _record_details(rec: Recorder, stack: str, module, query, key, mask, rows, kwargs) -> None:
    """What the eager scores were made of, for the kept rows: scores = q·k·scaling (soft-capped) + bias + mask."""
    full = float_mask(mask, module, query, key, kwargs.get("is_causal"))
    if full is None:
        full = torch.zeros((1, 1, query.shape[2], key.shape[2]), dtype=query.dtype, device=query.device)
    full = full.expand(full.shape[0], full.shape[1], query.shape[2], key.shape[2])
    rec.keep(stack, "mask", full if rows is None else _rows_of(full, rows))
    bias = kwargs.get("position_bias")
    if bias is not None:
        bias = bias.expand(query.shape[0], -1, query.shape[2], key.shape[2])
        rec.keep(stack, "bias", bias if rows is None else _rows_of(bias, rows))
    scaling = kwargs.get("scaling")
    rec.meta[(stack, "scaling")].append(float(query.shape[-1] ** -0.5 if scaling is None else scaling))
    softcap = kwargs.get("softcap")
    rec.meta[(stack, "softcap")].append(float("nan") if softcap is None else float(softcap))


# ----------------------------------------------------------------------------- installing
def register() -> None:
    """Register `atlas` with transformers once per process."""
    global _registered
    with _REGISTER_LOCK:
        if _registered:
            return
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(ATLAS, atlas_attention)
        AttentionMaskInterface.register(ATLAS, sdpa_mask)
        _registered = True


def supports_interface(model_class) -> bool:
    """Whether a transformers class computes attention through `ALL_ATTENTION_FUNCTIONS`."""
    check = getattr(model_class, "_can_set_attn_implementation", None)
    return bool(check and check())


def stack_of(name: str, kind: str) -> str:
    """Which attention a module named `name` computes: cross-attention modules say so in their
    names (encoder_attn, EncDecAttention, crossattention); otherwise encoder/decoder by position."""
    low = name.lower()
    if any(s in low for s in ("encoder_attn", "encdecattention", "crossattention", "cross_attn")):
        return CROSS
    if kind == "encoder-decoder":
        return DECODER if low.startswith("decoder.") or ".decoder." in low else ENCODER
    return DECODER if kind == "decoder" else ENCODER


def install(model, kind: str) -> None:
    """Switch `model` to the `atlas` attention function and tag its modules with their stack and their
    family's eager function. Idempotent; call once after loading."""
    register()
    if getattr(model, "_viz_installed", False):
        return
    fast = "sdpa" if getattr(type(model), "_supports_sdpa", False) else "eager"
    for name, module in model.named_modules():
        family = sys.modules.get(type(module).__module__)
        eager = getattr(family, "eager_attention_forward", None)
        if eager is None:
            continue
        module._viz_stack = stack_of(name, kind)
        module._viz_eager = eager
        module._viz_fast = fast
    model.set_attn_implementation(ATLAS)
    model._viz_installed = True
