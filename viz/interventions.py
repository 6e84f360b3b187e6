"""Change what the model computes, for one call only: causal self-attention, ablated heads.

Same discipline as `viz.capture`: hooks are installed once per model and do nothing unless a
ContextVar holds an `Intervention` for the current call, so one session's ablation never reaches
another session that shares the model.

- causal: the decoder's look-ahead mask ("Attention is all you need", §3.2.3) added to an
  encoder's self-attention mask, so position i attends only to positions <= i.
- ablate: zero chosen heads' outputs (the head's slice of the merged context, just before the
  output projection). transformers v5 removed `head_mask`; this is its hook-based replacement.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from viz.models import ModelBundle

_INSTALL_LOCK = threading.Lock()


@dataclass(frozen=True)
class Intervention:
    causal: bool = False
    ablate: frozenset[tuple[int, int]] = frozenset()  # (layer, head) pairs of `stack`
    stack: str = "encoder"

    @property
    def is_noop(self) -> bool:
        return not self.causal and not self.ablate


@dataclass
class _Active:
    iv: Intervention
    calls: dict[str, int] = field(default_factory=dict)  # output-projection calls so far: the layer index


_ACTIVE: ContextVar[_Active | None] = ContextVar("viz_intervention", default=None)


def _causal_hook(stack: str):
    def hook(module, args, kwargs):
        state = _ACTIVE.get()
        if state is None or not state.iv.causal or state.iv.stack != stack:
            return None
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        T = hidden.shape[1]
        floor = torch.finfo(hidden.dtype).min
        causal = torch.triu(torch.full((T, T), floor, dtype=hidden.dtype), diagonal=1)[None, None]
        if "attention_mask" in kwargs or len(args) < 2:
            mask = kwargs.get("attention_mask")
            kwargs["attention_mask"] = causal if mask is None else (mask + causal).clamp(min=floor)
            return args, kwargs
        mask = args[1]
        args = (args[0], causal if mask is None else (mask + causal).clamp(min=floor), *args[2:])
        return args, kwargs

    hook._viz = True
    return hook


def _ablate_hook(stack: str, n_heads: int):
    def hook(module, args):
        state = _ACTIVE.get()
        if state is None or state.iv.stack != stack:
            return None
        layer = state.calls.get(stack, 0)
        state.calls[stack] = layer + 1
        heads = [h for (l, h) in state.iv.ablate if l == layer]
        if not heads:
            return None
        x = args[0].clone()
        d = x.shape[-1] // n_heads
        for h in heads:
            x[..., h * d:(h + 1) * d] = 0.0
        return (x, *args[1:])

    hook._viz = True
    return hook


def n_heads(config, stack: str) -> int:
    for name in ("num_attention_heads", "n_head", "n_heads", "num_heads",
                 "decoder_attention_heads" if stack != "encoder" else "encoder_attention_heads"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError("cannot tell the number of heads from the config")


def install(bundle: ModelBundle) -> None:
    """Attach the intervention hooks once (idempotent)."""
    import re

    model = bundle.model
    with _INSTALL_LOCK:
        if getattr(model, "_viz_intervention_handles", None):
            return
        handles = []
        for name, module in model.named_modules():
            for stack, site in bundle.arch.sites.items():
                if site.matches(name) and stack != "cross":
                    handles.append(module.register_forward_pre_hook(_causal_hook(stack), with_kwargs=True))
                if re.search(r"(^|\.)" + site.output + "$", name):
                    handles.append(module.register_forward_pre_hook(_ablate_hook(stack, n_heads(model.config, stack))))
        model._viz_intervention_handles = handles


@contextmanager
def applied(bundle: ModelBundle, iv: Intervention | None):
    """Apply `iv` to forwards inside this context only."""
    if iv is None or iv.is_noop:
        yield
        return
    if iv.causal and bundle.kind != "encoder":
        raise ValueError("The causal-mask comparison is for encoders (decoders are causal already).")
    install(bundle)
    token = _ACTIVE.set(_Active(iv))
    try:
        yield
    finally:
        _ACTIVE.reset(token)
