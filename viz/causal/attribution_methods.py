"""Gradient and perturbation attributions of one prediction (`viz.causal.attribution_target.Problem`) to its
input tokens. Every function returns float64 [T], one score per input token, in units of f.

- gradient x input (Shrikumar et al. 2016; Denil et al. 2014):  s_i = Σ_d ∂f/∂e_id · e_id  on the input
  embeddings e the model looks up (the output of its input-embedding module, before positions and norms).
- integrated gradients (Sundararajan et al. 2017) by captum's `LayerIntegratedGradients` on that embedding
  lookup:  s_i = Σ_d (e_id - e'_id) · ∫₀¹ ∂f/∂e_id(e' + α(e - e')) dα,  the integral by captum's Gauss–Legendre
  rule over `steps` points, all steps in one batch. The baseline e' is the input with every candidate token
  replaced by the replacement token (special tokens and the predicting mask kept), so completeness reads
  Σ_i s_i = f(x) - f(baseline); the gap is reported.
- occlusion / leave-one-out (Li et al. 2016; Zeiler & Fergus 2014):  s_i = f(x) - f(x with token i replaced),
  for every candidate token, all variants in batches; 0 for tokens that are not candidates.

captum's hook goes on a private module that calls the shared embedding, never on the shared model itself:
another session's forward through the same model sees nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from viz.causal.attribution_catalog import IG_STEPS
from viz.causal.attribution_target import CHUNK, Problem, evaluate, f_of, input_embedding, logits, removed

@dataclass
class IGResult:
    scores: np.ndarray  # [T]
    f_input: float
    f_baseline: float
    steps: int
    captum_delta: float  # captum's own convergence delta, Σ s - (f(x) - f(baseline))

    @property
    def gap(self) -> float:
        """|Σ IG - (f(x) - f(baseline))|, the completeness gap."""
        return float(abs(self.scores.sum() - (self.f_input - self.f_baseline)))

    @property
    def relative_gap(self) -> float:
        d = abs(self.f_input - self.f_baseline)
        return self.gap / d if d > 0 else float("nan")


class _Lookup(torch.nn.Module):
    """The shared input-embedding module called as a function: captum may hook this wrapper (made per call)
    without touching the model every session shares."""

    def __init__(self, embedding: torch.nn.Module) -> None:
        super().__init__()
        self.fn = embedding.forward  # a bound method, not a child module: no parameters registered twice

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fn(ids)


def _grad_mode():
    """Gradients even when the caller runs under inference mode (pages, tests)."""
    return torch.inference_mode(False)


def grad_x_input(problem: Problem) -> np.ndarray:
    """Σ_d ∂f/∂e_id · e_id per token -> [T]."""
    emb = input_embedding(problem.bundle)
    with problem.bundle.lock, _grad_mode(), torch.enable_grad():
        e = emb(problem.ids[None]).detach().requires_grad_(True)
        f = f_of(problem, logits(problem, embeds=e))
        (g,) = torch.autograd.grad(f.sum(), e)  # parameters' .grad stays untouched
    return (g * e).sum(-1)[0].detach().double().cpu().numpy()


def baseline_ids(problem: Problem) -> torch.Tensor:
    """The input with every candidate token replaced: [T]."""
    return removed(problem, problem.candidates[None])[0]


def integrated_gradients(problem: Problem, steps: int = IG_STEPS) -> IGResult:
    """captum LayerIntegratedGradients on the embedding lookup, baseline `baseline_ids`, all steps batched."""
    from captum.attr import LayerIntegratedGradients

    b = problem.bundle
    lookup = _Lookup(input_embedding(b))

    def forward(ids: torch.Tensor) -> torch.Tensor:
        return f_of(problem, logits(problem, embeds=lookup(ids)))

    base = baseline_ids(problem)
    with b.lock, _grad_mode(), torch.enable_grad():
        lig = LayerIntegratedGradients(forward, lookup)
        attr, delta = lig.attribute(problem.ids[None], baselines=base[None], n_steps=int(steps),
                                    internal_batch_size=int(steps), return_convergence_delta=True)
    fx, fb = evaluate(problem, torch.stack([problem.ids, base]))
    return IGResult(attr.sum(-1)[0].detach().double().cpu().numpy(), float(fx), float(fb), int(steps),
                    float(delta.detach().reshape(-1)[0]))


def occlusion(problem: Problem, chunk: int = CHUNK) -> np.ndarray:
    """f(x) - f(x with token i replaced) for every candidate i; 0 elsewhere -> [T]."""
    cand = np.flatnonzero(problem.candidates)
    drop = np.zeros((len(cand) + 1, problem.n), dtype=bool)  # row 0: the input itself
    drop[np.arange(1, len(cand) + 1), cand] = True
    f = evaluate(problem, removed(problem, drop), chunk=chunk)
    out = np.zeros(problem.n)
    out[cand] = f[0] - f[1:]
    return out
