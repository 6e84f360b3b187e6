"""Faithfulness scores (viz.causal.faithfulness, viz.causal.attribution_corpus) against explicit loops: AOPC
comprehensiveness and sufficiency recomputed here with one full-model forward per removal, the random baseline
per seed with numpy's own permutation, Kendall's τ by counting concordant pairs, a removal whose answer is known
(removing every candidate), and the acceptance check on the shipped minilm-mlm: occlusion is more comprehensive
than a random ranking over the bundled sample sentences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from viz.causal.attribution_corpus import bootstrap_interval, example_problem, run_corpus
from viz.causal.attribution_methods import occlusion
from viz.causal.attribution_target import prepare
from viz.causal.faithfulness import FRACTIONS, agreement, faithfulness
from viz.tasks.corpus import sample_corpus

TEXT = "the old man and the young dog walked to the [MASK] near the river before the long night fell ."


@pytest.fixture(scope="module")
def problem(load):
    return prepare(load("tiny-bert-mlm"), TEXT)


def p_target(p, ids: torch.Tensor) -> float:
    """m from the full model: softmax of every position's logits, read at the mask (minus the foil's)."""
    with torch.no_grad():
        probs = p.bundle.model(input_ids=ids[None]).logits[0, p.position].softmax(-1)
    m = probs[p.target_id] - (probs[p.foil_id] if p.foil_id is not None else 0.0)
    return float(m)


def explicit_aopc(p, order: list[int], fractions=FRACTIONS) -> tuple[float, float]:
    """ERASER by hand: for each fraction, the top ceil(q n) of the candidates removed (comprehensiveness) or
    kept alone (sufficiency); the mean of m(x) - m(variant) over the fractions."""
    mask = p.bundle.tokenizer.mask_token_id
    cands = [i for i in range(p.n) if p.candidates[i]]
    mx = p_target(p, p.ids)
    comp, suff = [], []
    for q in fractions:
        k = min(len(cands), max(1, math.ceil(q * len(cands))))
        top = order[:k]
        without = p.ids.clone()
        without[top] = mask
        only = p.ids.clone()
        only[[c for c in cands if c not in top]] = mask
        comp.append(mx - p_target(p, without))
        suff.append(mx - p_target(p, only))
    return float(np.mean(comp)), float(np.mean(suff))


def by_score(p, scores) -> list[int]:
    cands = [i for i in range(p.n) if p.candidates[i]]
    return sorted(cands, key=lambda i: (-scores[i], i))


def test_aopc_equals_an_explicit_loop(problem):
    p = problem
    rng = np.random.default_rng(3)
    scores = {"a": rng.normal(size=p.n), "b": occlusion(p)}
    rep = faithfulness(p, scores, seeds=2)
    assert int(p.candidates.sum()) == 19  # 20 words and the full stop, less the mask
    assert rep.counts == [1, 1, 2, 4, 10]  # ceil(0.01 * 19) = 1, ceil(0.05 * 19) = 1, 2, 4, ceil(0.5 * 19) = 10
    for name, s in scores.items():
        comp, suff = explicit_aopc(p, by_score(p, s))
        assert rep.methods[name].comprehensiveness == pytest.approx(comp, abs=1e-6)
        assert rep.methods[name].sufficiency == pytest.approx(suff, abs=1e-6)
    assert rep.m_input == pytest.approx(p_target(p, p.ids), abs=1e-7)


def test_random_baseline_is_the_mean_over_seeds_and_reports_its_spread(problem):
    p = problem
    rep = faithfulness(p, {"occlusion": occlusion(p)}, seeds=4)
    cands = np.flatnonzero(p.candidates)
    per_seed = [explicit_aopc(p, list(np.random.default_rng(s).permutation(cands))) for s in range(4)]
    comp = np.array([c for c, _ in per_seed])
    assert rep.random.comprehensiveness == pytest.approx(comp.mean(), abs=1e-6)
    assert rep.random.sufficiency == pytest.approx(np.mean([s for _, s in per_seed]), abs=1e-6)
    spread = rep.random_spread("comprehensiveness")
    assert spread["std"] == pytest.approx(comp.std(ddof=1), abs=1e-6) and spread["std"] > 0
    assert spread["min"] == pytest.approx(comp.min(), abs=1e-6) and spread["max"] == pytest.approx(comp.max(), abs=1e-6)


def test_removing_every_candidate_has_a_known_answer(problem):
    """At 100 %: nothing is left to keep, so sufficiency is exactly 0, and comprehensiveness is m(x) minus m with
    every candidate replaced, whatever the ranking."""
    p = problem
    rep = faithfulness(p, {"a": np.arange(p.n, dtype=float), "b": -np.arange(p.n, dtype=float)}, fractions=(1.0,),
                       seeds=3)
    gone = p.ids.clone()
    gone[p.candidates] = p.bundle.tokenizer.mask_token_id
    expected = p_target(p, p.ids) - p_target(p, gone)
    for r in (rep.methods["a"], rep.methods["b"], rep.random):
        assert r.sufficiency == 0.0
        assert r.comprehensiveness == pytest.approx(expected, abs=1e-6)


def test_contrast_measures_the_probability_difference(load):
    p = prepare(load("tiny-bert-mlm"), TEXT, foil="cat")
    rep = faithfulness(p, {"occlusion": occlusion(p)}, seeds=1)
    assert rep.m_input == pytest.approx(p_target(p, p.ids), abs=1e-7)
    comp, suff = explicit_aopc(p, by_score(p, occlusion(p)))
    assert rep.methods["occlusion"].comprehensiveness == pytest.approx(comp, abs=1e-6)


def test_kendall_tau_counts_concordant_pairs(problem):
    p = problem
    rng = np.random.default_rng(0)
    scores = {"a": rng.normal(size=p.n), "b": rng.normal(size=p.n), "c": np.zeros(p.n)}
    tau = agreement(scores, p.candidates)
    cands = np.flatnonzero(p.candidates)
    x, y = scores["a"][cands], scores["b"][cands]
    n = len(cands)
    conc = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i in range(n) for j in range(i + 1, n))
    assert tau["a"]["b"] == pytest.approx(conc / (n * (n - 1) / 2), abs=1e-12)
    assert tau["a"]["a"] == pytest.approx(1.0) and tau["b"]["a"] == tau["a"]["b"]
    assert math.isnan(tau["a"]["c"])  # a constant score ranks nothing


def test_bootstrap_interval_brackets_the_mean():
    v = np.random.default_rng(1).normal(0.3, 0.1, size=50)
    lo, hi = bootstrap_interval(v)
    se = v.std(ddof=1) / np.sqrt(len(v))  # the normal interval, mean ± 1.96 se, for comparison
    assert lo < v.mean() < hi and abs((hi - lo) - 2 * 1.96 * se) < 0.3 * 2 * 1.96 * se


def test_corpus_examples_are_seeded_and_cancel_stops(load):
    bundle = load("tiny-bert-mlm")
    sentences = ["the cat sat on the mat .", "dogs bark at night .", "a b", "she read the paper today ."]
    a = example_problem(bundle, sentences[0], 0)
    b = example_problem(bundle, sentences[0], 0)
    assert a.position == b.position and a.tokens[a.position] == "[MASK]"
    word = bundle.tokenizer.tokenize(sentences[0])[a.position - 1]
    assert word.isalpha()
    seen = []
    res = run_corpus(bundle, sentences, ["attention", "occlusion"], ig_steps=4, seeds=2,
                     progress=lambda d, t: seen.append((d, t)), should_stop=lambda: len(seen) >= 2)
    assert res.cancelled and seen == [(1, 4), (2, 4)] and len(res.examples) == 2
    full = run_corpus(bundle, sentences, ["attention"], seeds=2)
    assert not full.cancelled and len(full.examples) + full.skipped == 4 and full.methods == ("attention", "occlusion")
    s = full.summary().set_index("method")
    assert set(s.index) == {"attention", "occlusion", "random"}
    df = full.frame()
    occl = df[df.method == "occlusion"].comprehensiveness.to_numpy()
    assert s.loc["occlusion", "comprehensiveness"] == pytest.approx(occl.mean())


def test_occlusion_is_more_comprehensive_than_random_on_minilm_mlm(load):
    """The first 40 of the bundled sample sentences (bench/bench_attribution.py runs all 300; a sentence costs ~1 s
    here, compute-bound): occlusion's
    comprehensiveness, averaged over the examples, is above the random ranking's, with the 95 % bootstrap
    intervals apart."""
    bundle = load("minilm-mlm")
    res = run_corpus(bundle, sample_corpus().sentences[:40], ["occlusion"], seeds=3)
    assert len(res.examples) >= 35
    s = res.summary().set_index("method")
    occl, rnd = s.loc["occlusion"], s.loc["random"]
    assert occl.comprehensiveness > rnd.comprehensiveness
    assert occl.comprehensiveness_lo > rnd.comprehensiveness_hi
