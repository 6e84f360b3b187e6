"""Does attention explain? Input attributions of one prediction, side by side with attention, scored for
faithfulness (Jain & Wallace 2019; Wiegreffe & Pinter 2019; Bastings & Filippova 2020; DeYoung et al. 2020).

    res = attribute(bundle, "The capital of France is [MASK].", faithfulness=True)
    res.scores["occlusion"]      # [T] one score per input token
    res.faithfulness.methods["attention"].comprehensiveness

The prediction and the function f every method explains: `viz.causal.attribution_target`. The methods:
gradient x input, integrated gradients and occlusion (`attribution_methods`), value zeroing (`attribution_vz`),
last-layer attention, rollout, flow and norm-based attention (`attribution_attention`). Faithfulness and
agreement: `viz.causal.faithfulness`. Another method (ALTI-style contributions, issue 28's
`viz.causal.contributions`) plugs in with `register(Method(...), compute)`: computed once there, scored here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from viz.causal.attribution_attention import attention_scores
from viz.causal.attribution_catalog import (ATTENTION_METHODS, DEFAULT_METHODS, FRACTIONS, IG_STEPS,  # noqa: F401
                                            METHODS, RANDOM_SEEDS, AttributionError, Method, parse_methods)
from viz.causal.attribution_methods import IGResult, grad_x_input, integrated_gradients, occlusion
from viz.causal.attribution_target import Problem, evaluate, prepare
from viz.causal.attribution_vz import ValueZeroing, value_zeroing
from viz.causal.faithfulness import FaithfulnessReport, agreement, faithfulness
from viz.core.models import ModelBundle


_PLUGINS: dict[str, Callable[[Problem], np.ndarray]] = {}


def register(method: Method, compute: Callable[[Problem], np.ndarray]) -> None:
    """Add a method computed elsewhere (`compute(problem) -> scores [T]`): it is shown and scored like the others."""
    METHODS[method.name] = method
    _PLUGINS[method.name] = compute


@dataclass
class Attribution:
    problem: Problem
    f: float  # f(x)
    scores: dict[str, np.ndarray]  # method -> [T]
    notes: dict[str, str] = field(default_factory=dict)  # method -> why its scores are NaN
    ig: IGResult | None = None
    vz: ValueZeroing | None = None
    faithfulness: FaithfulnessReport | None = None
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def tokens(self) -> list[str]:
        return self.problem.tokens

    def to_json(self, digits: int = 6) -> dict:
        """The CLI contract (`python -m viz attribute --json`; NaN -> null)."""
        p = self.problem

        def r(x):
            return None if x is None or not np.isfinite(x) else round(float(x), digits)

        out = {"tokens": p.tokens, "target": p.target, "foil": p.foil, "position": p.position, "f": r(self.f),
               "predicted": p.token(p.predicted_id), "replacement": p.token(p.replacement_id),
               "special": [bool(s) for s in p.special], "candidates": [bool(c) for c in p.candidates],
               "scores": {m: [r(v) for v in s] for m, s in self.scores.items()},
               "completeness_gap": r(self.ig.gap) if self.ig else None,
               "faithfulness": None, "random": None,
               "agreement": {a: {b: r(t) for b, t in row.items()} for a, row in self.agreement.items()},
               "notes": self.notes}
        if p.output_ids is not None:
            out["output_tokens"] = p.output_tokens
        if self.ig:
            out["integrated_gradients"] = {"steps": self.ig.steps, "f_baseline": r(self.ig.f_baseline),
                                           "relative_gap": r(self.ig.relative_gap)}
        fr = self.faithfulness
        if fr is not None:
            out["faithfulness"] = {m: {"comprehensiveness": r(v.comprehensiveness), "sufficiency": r(v.sufficiency)}
                                   for m, v in fr.methods.items()}
            out["random"] = {"comprehensiveness": r(fr.random.comprehensiveness),
                             "sufficiency": r(fr.random.sufficiency), "seeds": len(fr.random_runs),
                             "spread": {k: {s: r(v) for s, v in fr.random_spread(k).items()}
                                        for k in ("comprehensiveness", "sufficiency")}}
            out["m"] = r(fr.m_input)
            out["fractions"], out["removed"] = list(fr.fractions), fr.counts
        return out


def attribute_problem(problem: Problem, methods: Sequence[str] = DEFAULT_METHODS, *, with_faithfulness: bool = False,
                      ig_steps: int = IG_STEPS, seeds: int = RANDOM_SEEDS,
                      progress: Callable[[str], None] | None = None) -> Attribution:
    """Every method in `methods` on `problem`, their agreement, and (with_faithfulness) their faithfulness."""
    methods = parse_methods(list(methods))
    (fx,) = evaluate(problem, problem.ids[None])
    res = Attribution(problem, float(fx), {})

    def timed(name: str, fn):
        if progress is not None:
            progress(name)
        t0 = time.perf_counter()
        out = fn()
        res.seconds[name] = time.perf_counter() - t0
        return out

    attn = [m for m in methods if m in ATTENTION_METHODS]
    if attn:
        scores, notes = timed("attention-based", lambda: attention_scores(problem, attn))
        res.scores.update(scores)
        res.notes.update(notes)
    for m in methods:
        if m == "grad_x_input":
            res.scores[m] = timed(m, lambda: grad_x_input(problem))
        elif m == "integrated_gradients":
            res.ig = timed(m, lambda: integrated_gradients(problem, ig_steps))
            res.scores[m] = res.ig.scores
        elif m == "occlusion":
            res.scores[m] = timed(m, lambda: occlusion(problem))
        elif m == "value_zeroing":
            res.vz = timed(m, lambda: value_zeroing(problem))
            res.scores[m] = res.vz.scores
        elif m in _PLUGINS:
            res.scores[m] = np.asarray(timed(m, lambda: _PLUGINS[m](problem)), dtype=np.float64)
    res.scores = {m: res.scores[m] for m in methods}  # the order asked for
    res.agreement = agreement(res.scores, problem.candidates)
    if with_faithfulness:
        res.faithfulness = timed("faithfulness", lambda: faithfulness(problem, res.scores, FRACTIONS, seeds))
    return res


def attribute(bundle: ModelBundle, text: str, target: str | None = None, foil: str | None = None,
              position: int | None = None, methods: Sequence[str] | str | None = None, *,
              with_faithfulness: bool = False, ig_steps: int = IG_STEPS, seeds: int = RANDOM_SEEDS) -> Attribution:
    """`prepare` the prediction, then `attribute_problem`. Raises AttributionError (one sentence) on bad input."""
    chosen = parse_methods(methods)
    problem = prepare(bundle, text, target=target, foil=foil, position=position)
    return attribute_problem(problem, chosen, with_faithfulness=with_faithfulness, ig_steps=ig_steps, seeds=seeds)
