"""The attribution methods as data (name, label, signed, exact definition), their defaults and `parse_methods`:
light enough (no torch, no numpy) for the command line to build its --help and check --methods before any model
loads. The computations live in viz.causal.attribution and the modules it names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from viz.core.errors import CaptureError

IG_STEPS = 64  # the completeness gap stays under 5 % of f(x) - f(baseline) on minilm-mlm's sample (bench)
RANDOM_SEEDS = 10  # random rankings behind the faithfulness baseline
FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)  # ERASER's removal fractions (DeYoung et al. 2020)


class AttributionError(CaptureError):
    """Input an attribution cannot use; the message (one sentence) is for the user."""


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    signed: bool  # scores can be negative (evidence against the target): drawn on a diverging scale
    definition: str  # exact, for --help and the page
    short: str = ""  # an axis label

    @property
    def tag(self) -> str:
        return self.short or self.label


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("grad_x_input", "gradient × input", True,
           "Σ_d ∂f/∂e_id · e_id on the input embeddings e the model looks up (its input-embedding module's output)",
           "grad × input"),
    Method("integrated_gradients", "integrated gradients", True,
           "captum LayerIntegratedGradients on the embedding lookup: Σ_d (e_id − e'_id) ∫₀¹ ∂f/∂e_id(e' + α(e − e')) "
           "dα, Gauss–Legendre over the stated steps; baseline e' = every candidate token replaced by the "
           "replacement token; completeness gap |Σ IG − (f(x) − f(e'))| reported", "int. gradients"),
    Method("occlusion", "occlusion (leave-one-out)", True,
           "f(x) − f(x with token i replaced by the replacement token), positions kept; 0 for non-candidates",
           "occlusion"),
    Method("value_zeroing", "value zeroing", False,
           "Mohebbi et al. 2023: C_l[i,j] = 1 − cos(layer-l output of i, same with token j's value vectors zeroed in "
           "layer l, its input clean), rows normalised, rolled out over layers; the predicting position's row "
           "(encoder–decoders: the step's cross-attention zeroing row times the encoder's rollout)", "value zeroing"),
    Method("attention", "attention (last layer)", False,
           "last layer's attention from the predicting position, mean over heads (encoder–decoders: cross-attention)",
           "attention"),
    Method("rollout", "attention rollout", False,
           "Abnar & Zuidema 2020 rollout of renorm(0.5·A + 0.5·I) to the last layer, the predicting position's row "
           "(encoder–decoders: the cross-attention row times the encoder's rollout)", "rollout"),
    Method("flow", "attention flow", False,
           "Abnar & Zuidema 2020 max-flow from the predicting position at the last layer to each input token "
           "(encoder–decoders: the cross-attention row times the encoder's flow matrix)", "flow"),
    Method("norm", "norm-based attention", False,
           "Kobayashi et al. 2020: ‖Σ_h α_h,pj f_h(x_j)‖ of the last layer (encoder–decoders: its cross-attention)",
           "norm-based"),
)}
DEFAULT_METHODS = tuple(METHODS)
ATTENTION_METHODS = ("attention", "rollout", "flow", "norm")


def parse_methods(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'grad_x_input,occlusion' (or a list; None = all) -> known method names, in the order given."""
    names = list(DEFAULT_METHODS) if text is None else (
        [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text))
    names = [n for n in names if n]
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise AttributionError(f"Unknown method {', '.join(repr(b) for b in bad) or '(none given)'}: choose from "
                               f"{', '.join(METHODS)}.")
    return tuple(dict.fromkeys(names))
