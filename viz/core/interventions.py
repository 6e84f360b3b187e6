"""Change what the model computes, for one call only: causal self-attention, ablated heads.

Same discipline as `viz.core.capture`: the change rides our attention function (`viz.core.recorder`) and is
held in a ContextVar for the current call only, so one session's ablation never reaches another
session that shares the model, and an exception inside the forward leaves nothing behind.

- causal: the decoder's look-ahead mask ("Attention is all you need", §3.2.3) added to an
  encoder's self-attention mask, so position i attends only to positions <= i.
- ablate: zero chosen heads' outputs (the head's slice of the merged context, just before the
  output projection). transformers v5 removed `head_mask`; this is its replacement, for every family.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from viz.core.models import ModelBundle
from viz.core.recorder import EDIT, Edit, active


@dataclass(frozen=True)
class Intervention:
    causal: bool = False
    ablate: frozenset[tuple[int, int]] = frozenset()  # (layer, head) pairs of `stack`
    stack: str = "encoder"

    @property
    def is_noop(self) -> bool:
        return not self.causal and not self.ablate


def n_heads(config, stack: str) -> int:
    for name in ("num_attention_heads", "n_head", "n_heads", "num_heads",
                 "decoder_attention_heads" if stack != "encoder" else "encoder_attention_heads"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError("cannot tell the number of heads from the config")


def edit_for(bundle: ModelBundle, iv: Intervention) -> Edit:
    """The recorder-level `Edit` an intervention stands for."""
    H = bundle.n_heads(iv.stack)
    scales = {}
    for layer, head in iv.ablate:
        s = scales.setdefault((iv.stack, int(layer)), torch.ones(H, device=bundle.device))
        s[int(head)] = 0.0
    return Edit(n_layers={s: bundle.stack_layers(s) for s in bundle.arch.stacks},
                causal=frozenset([iv.stack]) if iv.causal else frozenset(), scales=scales)


@contextmanager
def applied(bundle: ModelBundle, iv: Intervention | None):
    """Apply `iv` to forwards inside this context only."""
    if iv is None or iv.is_noop:
        yield
        return
    if iv.causal and bundle.kind != "encoder":
        raise ValueError("The causal-mask comparison is for encoders (decoders are causal already).")
    with active(EDIT, edit_for(bundle, iv)):
        yield
