"""Faithfulness of an attribution: what happens to the prediction when the tokens it ranks highest are removed
(DeYoung et al. 2020, "ERASER: A Benchmark to Evaluate Rationalized NLP Models", ACL, §4.2), and how far two
attributions agree on the ranking.

For a ranking r of the candidate tokens (highest score first; ties broken by position) and a removal fraction q,
k_q = min(n, max(1, ceil(q · n))) of the n candidates are taken, and with m the target's probability
(`viz.causal.attribution_target.m_of`):

    comprehensiveness_q = m(x) - m(x without the top k_q)          (higher: the ranking found what matters)
    sufficiency_q       = m(x) - m(x keeping only the top k_q)      (lower: the top tokens suffice on their own)
    AOPC = mean over q in FRACTIONS (1, 5, 10, 20, 50 %)

"Without" replaces the tokens by the problem's replacement token, positions kept. The random baseline ranks the
candidates by a random permutation (numpy default_rng(seed), seeds 0..RANDOM_SEEDS-1) and reports the mean over
seeds with its spread (standard deviation, min, max). Agreement is Kendall's τ-b (scipy.stats.kendalltau) between
two methods' scores over the candidate tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.stats import kendalltau

from viz.causal.attribution_catalog import FRACTIONS, RANDOM_SEEDS, AttributionError
from viz.causal.attribution_target import Problem, evaluate, removed


@dataclass
class Faithfulness:
    comprehensiveness: float  # AOPC over FRACTIONS
    sufficiency: float
    comp_bins: np.ndarray  # [fraction] m(x) - m(x without the top k)
    suff_bins: np.ndarray  # [fraction] m(x) - m(x with only the top k)


@dataclass
class FaithfulnessReport:
    m_input: float  # m(x)
    fractions: tuple[float, ...]
    counts: list[int]  # k per fraction
    methods: dict[str, Faithfulness]
    random: Faithfulness  # mean over seeds (bins: mean too)
    random_runs: list[Faithfulness] = field(default_factory=list)  # one per seed

    def random_spread(self, which: str) -> dict[str, float]:
        """{mean, std, min, max} over seeds of 'comprehensiveness' or 'sufficiency'."""
        v = np.array([getattr(r, which) for r in self.random_runs])
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "min": float(v.min()), "max": float(v.max())}


def counts_for(n: int, fractions=FRACTIONS) -> list[int]:
    """Tokens removed per fraction: min(n, max(1, ceil(q · n)))."""
    return [min(n, max(1, math.ceil(q * n - 1e-9))) for q in fractions]


def ranking(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidate positions by descending score (NaN last), ties by position."""
    cand = np.flatnonzero(candidates)
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64)[cand], nan=-np.inf)
    return cand[np.lexsort((cand, -s))]


def removal_masks(order: np.ndarray, candidates: np.ndarray, counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(without the top k, with only the top k) as drop masks, each bool [fraction, T]."""
    T = len(candidates)
    comp, suff = np.zeros((len(counts), T), bool), np.zeros((len(counts), T), bool)
    for b, k in enumerate(counts):
        comp[b, order[:k]] = True
        suff[b] = candidates
        suff[b, order[:k]] = False
    return comp, suff


def aopc(m_input: float, m_comp: np.ndarray, m_suff: np.ndarray) -> Faithfulness:
    cb, sb = m_input - np.asarray(m_comp, float), m_input - np.asarray(m_suff, float)
    return Faithfulness(float(cb.mean()), float(sb.mean()), cb, sb)


def _nan() -> Faithfulness:
    return Faithfulness(float("nan"), float("nan"), np.zeros(0), np.zeros(0))


def score_rankings(m_of_drops: Callable[[np.ndarray], np.ndarray], candidates: np.ndarray,
                   orders: dict[str, np.ndarray], fractions=FRACTIONS) -> tuple[float, list[int], dict]:
    """AOPC of every ranking in `orders` with one batched call `m_of_drops(drop [B, T]) -> m [B]` over the
    distinct inputs (the input itself first). -> (m(x), counts, {name: Faithfulness})."""
    counts = counts_for(int(candidates.sum()), fractions)
    masks = {name: removal_masks(o, candidates, counts) for name, o in orders.items()}
    rows, index = [np.zeros(len(candidates), bool)], {}
    for comp, suff in masks.values():
        for r in np.concatenate([comp, suff]):
            key = r.tobytes()
            if key not in index:
                index[key] = len(rows)
                rows.append(r)
    m = m_of_drops(np.stack(rows))
    out = {}
    for name, (comp, suff) in masks.items():
        out[name] = aopc(float(m[0]), m[[index[r.tobytes()] for r in comp]], m[[index[r.tobytes()] for r in suff]])
    return float(m[0]), counts, out


def faithfulness(problem: Problem, scores: dict[str, np.ndarray], fractions=FRACTIONS,
                 seeds: int = RANDOM_SEEDS) -> FaithfulnessReport:
    """Comprehensiveness and sufficiency (AOPC) of every method's ranking and of `seeds` random rankings."""
    cand = problem.candidates
    if not cand.any():
        raise AttributionError("No token can be removed (the input holds only special tokens and the prediction "
                               "itself): add words to the text.")
    orders = {f"method:{k}": ranking(v, cand) for k, v in scores.items() if not np.isnan(v).all()}
    rng_orders = {f"random:{s}": np.random.default_rng(s).permutation(np.flatnonzero(cand)) for s in range(seeds)}
    m_x, counts, res = score_rankings(lambda d: evaluate(problem, removed(problem, d), "m"), cand,
                                      orders | rng_orders, fractions)
    runs = [res[f"random:{s}"] for s in range(seeds)]
    mean = Faithfulness(float(np.mean([r.comprehensiveness for r in runs])),
                        float(np.mean([r.sufficiency for r in runs])),
                        np.mean([r.comp_bins for r in runs], axis=0), np.mean([r.suff_bins for r in runs], axis=0))
    methods = {k: res.get(f"method:{k}", _nan()) for k in scores}
    return FaithfulnessReport(m_x, tuple(fractions), counts, methods, mean, runs)


def agreement(scores: dict[str, np.ndarray], candidates: np.ndarray) -> dict[str, dict[str, float]]:
    """Kendall's τ-b between every pair of methods over the candidate tokens (NaN where undefined)."""
    cand = np.flatnonzero(candidates)
    out: dict[str, dict[str, float]] = {}
    for a, sa in scores.items():
        out[a] = {}
        for b, sb in scores.items():
            x, y = np.asarray(sa, float)[cand], np.asarray(sb, float)[cand]
            if len(cand) < 2 or np.isnan(x).any() or np.isnan(y).any() or np.ptp(x) == 0 or np.ptp(y) == 0:
                out[a][b] = float("nan")
            else:
                out[a][b] = float(kendalltau(x, y).statistic)
    return out
