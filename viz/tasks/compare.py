"""Two runs of one sentence side by side: unmasked vs masked, bidirectional vs causal, full vs ablated.

Head change is the Jensen–Shannon divergence between a head's attention rows in the two runs,
averaged over query positions (rows are distributions over keys). Prediction change is the KL
divergence KL(base || variant) of the masked-LM output distribution at each position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viz.core.capture import Capture, capture
from viz.core.interventions import Intervention
from viz.tasks.mlm import with_mask_token
from viz.core.models import ModelBundle

VARIANTS = {
    "mask": "Unmasked vs masked tokens",
    "causal": "Bidirectional vs causal (look-ahead) mask",
    "ablate": "Full model vs heads ablated",
}


def js_divergence(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Jensen–Shannon divergence (natural log, in [0, ln 2]) between distributions along `axis`."""
    p, q = np.clip(p, 0, None), np.clip(q, 0, None)
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(a > 0, a * (np.log(a) - np.log(np.where(b > 0, b, 1))), 0.0)
        return t.sum(axis=axis)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(p || q) per row of logits `[..., vocab]` (computed from log-softmax, numerically stable)."""
    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    lp, lq = log_softmax(p_logits.astype(np.float64)), log_softmax(q_logits.astype(np.float64))
    return (np.exp(lp) * (lp - lq)).sum(-1)


@dataclass
class Comparison:
    variant: str
    base: Capture
    other: Capture
    diff: np.ndarray  # [layer, head, q, k] other - base, encoder (or decoder-only) stack
    head_js: np.ndarray  # [layer, head] mean JS divergence over query rows
    kl: np.ndarray | None  # [token] KL(base || other) of the output distributions, when logits exist

    def top_heads(self, n: int = 10) -> list[tuple[int, int, float]]:
        flat = np.argsort(self.head_js, axis=None)[::-1][:n]
        H = self.head_js.shape[1]
        return [(int(i // H), int(i % H), float(self.head_js.flat[i])) for i in flat]


def compare(bundle: ModelBundle, text: str, variant: str, *, positions: tuple[int, ...] = (),
            heads: frozenset[tuple[int, int]] = frozenset()) -> Comparison:
    """Run `text` twice — as is, and with the `variant` change — and measure what moved."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    if bundle.tokenizer.mask_token:
        text = with_mask_token(text, bundle.tokenizer)
    stack = bundle.arch.stacks[0]
    iv = None
    if variant == "causal":
        iv = Intervention(causal=True, stack=stack)
    elif variant == "ablate":
        iv = Intervention(ablate=frozenset(heads), stack=stack)
    logits = bundle.has_mlm_head or bundle.kind == "decoder"
    base = capture(bundle, text, with_logits=logits)
    other = capture(bundle, text, with_logits=logits, mask_positions=positions if variant == "mask" else (),
                    intervention=iv)
    a, b = base.attentions[stack], other.attentions[stack]
    kl = kl_divergence(base.logits, other.logits) if base.logits is not None else None
    return Comparison(variant, base, other, b - a, js_divergence(a, b).mean(-1), kl)
