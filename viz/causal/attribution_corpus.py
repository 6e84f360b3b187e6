"""Every attribution method over many examples: which one is most faithful for this model, with spread.

One prediction per sentence, chosen by a seeded draw (numpy default_rng([seed, sentence index])) so a run can be
repeated exactly:
- masked LM: one whole-word, alphabetic token is masked; the prediction there is explained;
- decoder: a position p >= 1 with a next token inside the sentence; the prediction after token p;
- encoder–decoder: one step of the model's greedy output.
The target is the model's own prediction. Sentences longer than `max_tokens` tokens, or with no such position,
are skipped (and counted).

Per method and example: comprehensiveness and sufficiency (AOPC, `viz.causal.faithfulness`), minus nothing:
the random ranking's values are kept beside them per example (mean over its seeds), and Kendall's τ with
occlusion. The summary gives, per method, the mean over examples, the standard deviation, a 95 % bootstrap
interval of the mean (2,000 resamples, seed 0) and the share of examples where the method beats random.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from viz.causal.attribution import attribute_problem
from viz.causal.attribution_catalog import DEFAULT_METHODS, IG_STEPS, METHODS, RANDOM_SEEDS, AttributionError, \
    parse_methods
from viz.causal.attribution_target import Problem, prepare
from viz.core.models import ModelBundle

DEFAULT_MAX_TOKENS = 64
BOOTSTRAP = 2000


@dataclass
class CorpusAttribution:
    model_name: str
    methods: tuple[str, ...]
    rows: list[dict] = field(default_factory=list)  # one per (example, method): see `frame`
    examples: list[dict] = field(default_factory=list)  # one per example: sentence, position, target, gap, seconds
    skipped: int = 0
    cancelled: bool = False
    seconds: float = 0.0

    def frame(self) -> pd.DataFrame:
        """Long table: example, sentence index, method, comprehensiveness, sufficiency, random_comprehensiveness,
        random_sufficiency, tau_occlusion."""
        return pd.DataFrame(self.rows, columns=["example", "sentence", "method", "comprehensiveness", "sufficiency",
                                                "random_comprehensiveness", "random_sufficiency", "tau_occlusion"])

    def summary(self, seed: int = 0) -> pd.DataFrame:
        """Per method (and `random`): mean, std, 95 % bootstrap interval of the mean, share of examples beating
        random, for comprehensiveness (higher is better) and sufficiency (lower is better); mean τ with occlusion."""
        df = self.frame()
        out = []
        for name in list(self.methods) + ["random"]:
            if name == "random":
                part = df[df.method == self.methods[0]]
                comp, suff = part.random_comprehensiveness.to_numpy(), part.random_sufficiency.to_numpy()
                tau = np.full(len(part), np.nan)
                beat_c = beat_s = np.full(len(part), np.nan)
            else:
                part = df[df.method == name]
                comp, suff, tau = (part[c].to_numpy(float) for c in ("comprehensiveness", "sufficiency",
                                                                     "tau_occlusion"))
                beat_c = np.where(np.isnan(comp), np.nan, comp > part.random_comprehensiveness.to_numpy())
                beat_s = np.where(np.isnan(suff), np.nan, suff < part.random_sufficiency.to_numpy())
            row = {"method": name, "examples": int(np.isfinite(comp).sum())}
            for key, v, beat in (("comprehensiveness", comp, beat_c), ("sufficiency", suff, beat_s)):
                lo, hi = bootstrap_interval(v, seed)
                row |= {key: _mean(v), f"{key}_std": _std(v), f"{key}_lo": lo, f"{key}_hi": hi,
                        f"{key}_beats_random": _mean(beat)}
            row["tau_occlusion"] = _mean(tau)
            out.append(row)
        return pd.DataFrame(out)

    def verdict(self) -> str:
        """One paragraph: the most comprehensive and the most sufficient method, and whether their lead over the
        runner-up is larger than the spread (non-overlapping 95 % intervals)."""
        s = self.summary()
        s = s[(s.method != "random") & s.examples.gt(0)]
        if s.empty:
            return "No example could be scored."
        parts = []
        for key, best_high in (("comprehensiveness", True), ("sufficiency", False)):
            ranked = s.sort_values(key, ascending=not best_high)
            first = ranked.iloc[0]
            label = METHODS[first.method].label if first.method in METHODS else first.method
            text = f"most {'comprehensive' if best_high else 'sufficient'}: {label} ({first[key]:.3f}, 95 % " \
                   f"interval {first[f'{key}_lo']:.3f}–{first[f'{key}_hi']:.3f}"
            if len(ranked) > 1:
                second = ranked.iloc[1]
                apart = first[f"{key}_lo"] > second[f"{key}_hi"] if best_high else first[f"{key}_hi"] < second[f"{key}_lo"]
                other = METHODS[second.method].label if second.method in METHODS else second.method
                text += "; ahead of " if apart else "; within the spread of "
                text += f"{other} at {second[key]:.3f})"
            else:
                text += ")"
            parts.append(text)
        n = len(self.examples)
        return f"Over {n} example{'s' * (n != 1)} of {self.model_name}: " + "; ".join(parts) + "."


def _mean(v) -> float:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _std(v) -> float:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def bootstrap_interval(v, seed: int = 0, n: int = BOOTSTRAP) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of the finite values of v."""
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n, len(v)))
    means = v[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# ----------------------------------------------------------------------------- one example per sentence
def _word_positions(problem_tokens: list[str], special: np.ndarray) -> list[int]:
    """Whole-word alphabetic tokens (not a '##' piece, not followed by one)."""
    out = []
    for i, t in enumerate(problem_tokens):
        nxt = problem_tokens[i + 1] if i + 1 < len(problem_tokens) else ""
        if not special[i] and t.isalpha() and not nxt.startswith("##"):
            out.append(i)
    return out


def example_problem(bundle: ModelBundle, sentence: str, index: int, seed: int = 0,
                    max_tokens: int = DEFAULT_MAX_TOKENS) -> Problem | None:
    """The seeded prediction to explain in one sentence (see the module docstring), or None to skip it."""
    from viz.core.capture import _special

    from viz.tasks.generate_lm import prompt_ids

    rng = np.random.default_rng([seed, index])
    tok = bundle.tokenizer
    with bundle.lock:  # fast tokenizers are not thread-safe
        ids = tok(sentence)["input_ids"]
        n_prompt = len(prompt_ids(bundle, sentence)) if bundle.kind == "decoder" and sentence.strip() else 0
    if len(ids) > max_tokens or len(ids) < 2:
        return None
    try:
        if bundle.kind == "encoder":
            words = _word_positions(tok.convert_ids_to_tokens(ids), _special(tok, ids))
            return prepare(bundle, sentence, position=int(rng.choice(words))) if words else None
        if bundle.kind == "decoder":
            return prepare(bundle, sentence, position=int(rng.integers(1, n_prompt - 1))) if n_prompt >= 3 else None
        first = prepare(bundle, sentence)
        step = int(rng.integers(0, len(first.output_ids)))
        return first if step == 0 else prepare(bundle, sentence, position=step)
    except AttributionError:
        return None


def run_corpus(bundle: ModelBundle, sentences: Sequence[str], methods: Sequence[str] = DEFAULT_METHODS, *,
               seed: int = 0, max_tokens: int = DEFAULT_MAX_TOKENS, ig_steps: int = IG_STEPS,
               seeds: int = RANDOM_SEEDS, progress: Callable[[int, int], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> CorpusAttribution:
    """Attribute and score one seeded prediction per sentence. `progress(done, total)` after each sentence;
    `should_stop()` is polled before each one (a cancelled result says so)."""
    methods = parse_methods(list(methods))
    if "occlusion" not in methods:  # every method's τ is taken against leave-one-out
        methods = methods + ("occlusion",)
    res = CorpusAttribution(bundle.name, methods)
    t0 = time.perf_counter()
    for i, sentence in enumerate(sentences):
        if should_stop is not None and should_stop():
            res.cancelled = True
            break
        problem = example_problem(bundle, sentence, i, seed, max_tokens)
        if problem is None or not problem.candidates.any():
            res.skipped += 1
        else:
            a = attribute_problem(problem, methods, with_faithfulness=True, ig_steps=ig_steps, seeds=seeds)
            k = len(res.examples)
            fr = a.faithfulness
            res.examples.append({"example": k, "sentence": i, "text": sentence, "position": problem.position,
                                 "target": problem.target, "m": fr.m_input,
                                 "ig_relative_gap": a.ig.relative_gap if a.ig else float("nan"),
                                 "seconds": float(sum(a.seconds.values()))})
            for m in methods:
                res.rows.append({"example": k, "sentence": i, "method": m,
                                 "comprehensiveness": fr.methods[m].comprehensiveness,
                                 "sufficiency": fr.methods[m].sufficiency,
                                 "random_comprehensiveness": fr.random.comprehensiveness,
                                 "random_sufficiency": fr.random.sufficiency,
                                 "tau_occlusion": a.agreement[m].get("occlusion", float("nan"))})
        if progress is not None:
            progress(i + 1, len(sentences))
    res.seconds = time.perf_counter() - t0
    return res
