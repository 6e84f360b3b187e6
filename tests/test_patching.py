"""Activation patching: interventions whose answer is known, attribution patching against the finite difference
of a small interpolated patch, the task's checks and messages, cancel, and the shipped models.
(Every site against explicit hooks: test_patching_families.py; against TransformerLens: test_patching_tl.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from causal_models import CLEAN, CORRUPT, MASKED, own, pair_for, tiny
from viz.causal.atp import attribution, compare
from viz.causal.components import session
from viz.causal.patching import patch_all_positions, sweep
from viz.causal.task import PatchError, make_task, run_metric
from viz.core.models import TINY_FAMILIES


# ----------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_everything_restores_all_and_nothing_restores_nothing(family):
    bundle = tiny(family)
    task = make_task(bundle, **pair_for(bundle))
    first = "encoder" if bundle.kind != "decoder" else "decoder"
    # the whole input of the first block is the clean input: the clean run, bit for bit
    assert patch_all_positions(bundle, task, "resid_pre", 0, stack=first) == 1.0
    with torch.inference_mode(), session(bundle, edit={(first, "resid_pre"): lambda layer, x: None}):
        assert task.normalise(float(run_metric(bundle, task, "corrupt")[0])) == 0.0
    res = sweep(bundle, task, "resid_pre", first)  # batched: the same up to float rounding across batch rows
    changed = [i for i, (a, b) in enumerate(zip(task.clean_ids, task.corrupt_ids)) if a != b]
    assert changed == [2]  # cat -> dog, after [CLS] the
    np.testing.assert_allclose(res.effect[0, changed], 1.0, atol=1e-5)  # the only token that differs carries it all
    np.testing.assert_allclose(np.delete(res.effect[0], changed), 0.0, atol=1e-5)  # the same embedding: nothing
    nothing = sweep(bundle, task, "head", alpha=0.0)  # every patch a no-op (a + 0·(clean − a))
    np.testing.assert_allclose(nothing.effect, 0.0, atol=1e-5)


# ----------------------------------------------------------------------------- attribution patching
@pytest.mark.parametrize("family", ["gpt2", "bert", "bart"])  # LayerNorm families: float64 all the way through
def test_attribution_is_the_derivative_of_an_interpolated_patch(family):
    """AtP = d/dα m(a_corrupt + α(a_clean − a_corrupt)) at α = 0, normalised; the exact patch at α = 1e-6 in float64
    gives that derivative to ~1e-6 (its error shrinks linearly with α: measured 4.6e-4 at 1e-3 down to 4.9e-7)."""
    bundle = tiny(family, torch.float64)
    task = make_task(bundle, **pair_for(bundle))
    table = attribution(bundle, task)
    assert {site for _, site in table} == {"resid_pre", "attn_out", "mlp_out", "head", "head_pos", "pattern"}
    eps = 1e-6
    for (stack, site), atp in table.items():
        fd = sweep(bundle, task, site, stack, alpha=eps).effect / eps
        assert atp.shape == fd.shape
        assert np.abs(fd - atp).max() <= 1e-5 * max(1.0, np.abs(atp).max()), (stack, site, np.abs(fd - atp).max())
        if site in ("resid_pre", "head"):
            assert np.abs(atp).max() > 1e-3, (stack, site)


def test_compare_reports_correlation_and_the_worst_cells():
    exact = np.array([[1.0, 0.0], [0.5, 0.2]])
    atp = np.array([[0.9, 0.0], [-0.5, 0.2]])
    agree = compare(exact, atp, top=2)
    assert agree.worst[0] == ((1, 0), 0.5, -0.5) and agree.worst[1][0] == (0, 0)
    assert agree.correlation == pytest.approx(np.corrcoef(exact.ravel(), atp.ravel())[0, 1])


# ----------------------------------------------------------------------------- the task
def test_bad_input_gets_one_sentence():
    lm = own("tiny-llama")
    with pytest.raises(PatchError, match=r"clean input has 7 tokens and the corrupted one 8") as e:
        make_task(lm, CLEAN, "the big dog sat on the mat")
    assert "\n" not in str(e.value)
    with pytest.raises(PatchError, match="clean input is empty"):
        make_task(lm, "  ", CORRUPT)
    with pytest.raises(PatchError, match="same tokens"):
        make_task(lm, CLEAN, CLEAN)
    with pytest.raises(PatchError, match="no masked-LM head"):
        make_task(own("tiny-bert"), *MASKED)
    with pytest.raises(PatchError, match=r"no \[MASK\] in the clean text"):
        make_task(own("tiny-bert-mlm"), CLEAN, CORRUPT)
    with pytest.raises(PatchError, match="answer and the foil are the same"):
        make_task(lm, CLEAN, CORRUPT, target="hat", foil="hat")


def test_an_answer_split_into_tokens_counts_by_its_first_and_says_so():
    lm = own("tiny-llama")  # MiniLM's WordPiece vocabulary: "grandmothers" is grandmother + ##s
    task = make_task(lm, CLEAN, CORRUPT, target="grandmothers", foil="cat")
    assert task.target_token == "grandmother" and task.foil_token == "cat"
    assert any("'grandmothers' is 2 tokens (grandmother + ##s); the metric uses the first, 'grandmother'" in n
               for n in task.notes)
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([task.clean_ids])).logits[0, -1]
    assert task.metric_clean == pytest.approx(float(logits[task.target] - logits[task.foil]), abs=1e-5)


def test_defaults_are_the_top_predictions():
    lm = own("tiny-llama")
    task = make_task(lm, CLEAN, CORRUPT)
    with torch.inference_mode():
        top = [int(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()) for ids in
               (task.clean_ids, task.corrupt_ids)]
    assert task.target == top[0]
    assert task.foil == (top[1] if top[1] != top[0] else task.foil)
    js = sweep(lm, task, "head_pos").to_json()
    assert {"clean_tokens", "corrupt_tokens", "target", "foil", "answer_position", "metric", "site", "method",
            "rows", "cols", "effect"} <= set(js)
    assert js["rows"] == ["L0", "L1"] and js["cols"] == ["H0", "H1", "H2", "H3"]
    assert np.array(js["effect"]).shape == (2, 4, len(task.clean_ids)) and js["answer_position"] == 6


def test_a_cancelled_sweep_keeps_nothing_it_did_not_run():
    lm = own("tiny-llama")
    task = make_task(lm, CLEAN, CORRUPT)
    seen = []
    res = sweep(lm, task, "resid_pre", batch_size=3, progress=lambda d, t: seen.append((d, t)),
                should_stop=lambda: len(seen) >= 2)
    assert res.cancelled and seen == [(3, 14), (6, 14)]
    assert np.isfinite(res.effect.ravel()[:6]).all() and np.isnan(res.effect.ravel()[6:]).all()
    full = sweep(lm, task, "resid_pre", batch_size=3)
    np.testing.assert_allclose(res.effect.ravel()[:6], full.effect.ravel()[:6], atol=1e-6)


# ----------------------------------------------------------------------------- shipped models
def test_seq2seq_dates_restores_the_month_from_the_month_token():
    """'3 March 2021' -> '2021 - 03 - 03', '3 April 2021' -> '2021 - 04 - 03': the decoder reads '<s> 2021 -' in both
    runs and the answer is '03' against '04'. The month token in the encoder carries it at every layer."""
    bundle = own("seq2seq-dates")
    task = make_task(bundle, "3 March 2021", "3 April 2021")
    assert (task.target_token, task.foil_token) == ("03", "04") and task.decoder_tokens == ("<s>", "2021", "-")
    enc = sweep(bundle, task, "resid_pre", "encoder").effect
    month = task.clean_tokens.index("march")
    np.testing.assert_allclose(enc[:, month], 1.0, atol=1e-4)
    assert np.abs(np.delete(enc, month, axis=1)).max() < 0.05
    dec = sweep(bundle, task, "resid_pre").effect  # the decoder's own inputs are the same: layer 0 restores nothing
    assert np.abs(dec[0]).max() < 1e-5 and dec[1, -1] > 0.2
    cross = sweep(bundle, task, "attn_out", "cross").effect
    assert cross[:, -1].sum() > 0.8  # what arrives through cross-attention at the answer position
