"""Masked-LM predictions and masking comparisons on tiny random masked-LMs."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from viz.core.capture import capture
from viz.tasks.compare import compare, js_divergence, kl_divergence
from viz.core.interventions import Intervention, applied
from viz.tasks.mlm import MaskError, mask_sweep, predict

TEXT = "The cat sat on the mat because it was tired."
MLMS = ["tiny-bert-mlm", "tiny-roberta-mlm", "tiny-distilbert-mlm", "tiny-albert-mlm", "tiny-electra-mlm",
        "tiny-modernbert-mlm"]


@pytest.mark.parametrize("name", MLMS)
def test_causal_mask_zeros_future_attention(load, name):
    bundle = load(name)
    cap = capture(bundle, TEXT, intervention=Intervention(causal=True))
    a = cap.attentions["encoder"]
    assert np.abs(np.triu(a, k=1)).max() == 0.0
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
    assert np.abs(np.triu(capture(bundle, TEXT).attentions["encoder"], k=1)).max() > 0  # and only for that call


@pytest.mark.parametrize("name", MLMS)
def test_ablated_head_output_really_is_zero(load, name):
    bundle = load(name)
    seen = []
    site = bundle.arch.sites["encoder"]
    import re

    outs = [m for n, m in bundle.model.named_modules() if re.search(r"(^|\.)" + site.output + "$", n)]
    handles = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone())) for m in outs]
    try:
        with torch.inference_mode(), applied(bundle, Intervention(ablate=frozenset({(1, 2)}))):
            bundle.model(**bundle.tokenizer(TEXT, return_tensors="pt"))
        seen_ablated = list(seen)
        seen.clear()
        with torch.inference_mode():
            bundle.model(**bundle.tokenizer(TEXT, return_tensors="pt"))
    finally:
        [h.remove() for h in handles]
    d = seen_ablated[1].shape[-1] // 4
    assert torch.count_nonzero(seen_ablated[1][..., 2 * d:3 * d]) == 0  # layer 1, head 2 silenced
    assert torch.count_nonzero(seen_ablated[1][..., :2 * d]) > 0  # its neighbours are not
    assert torch.count_nonzero(seen[1][..., 2 * d:3 * d]) > 0  # and the next plain call is untouched


def test_unmasked_vs_masked_is_zero_when_nothing_is_masked(load):
    cmp = compare(load("tiny-bert-mlm"), TEXT, "mask", positions=())
    assert np.abs(cmp.diff).max() == 0 and cmp.head_js.max() == 0 and np.abs(cmp.kl).max() < 1e-9


def test_masking_changes_attention_and_predictions(load):
    cmp = compare(load("tiny-bert-mlm"), TEXT, "mask", positions=(2,))
    assert cmp.other.tokens[2] == "[MASK]" and cmp.base.tokens[2] == "cat"
    assert cmp.head_js.max() > 0 and cmp.kl[2] > 0
    assert cmp.top_heads(3)[0][2] == cmp.head_js.max()


def test_ablation_changes_only_later_layers(load):
    cmp = compare(load("tiny-bert-mlm"), TEXT, "ablate", heads=frozenset({(0, 1)}))
    assert cmp.head_js[0].max() == 0 and cmp.head_js[1].max() > 0


def test_divergences_hand_cases():
    p, q = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert js_divergence(p, q) == pytest.approx(np.log(2))
    assert js_divergence(p, p) == 0
    assert kl_divergence(np.log(np.array([[0.5, 0.5]])), np.log(np.array([[0.9, 0.1]])))[0] == pytest.approx(
        0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1))


def test_predictions_and_per_layer_shapes(load):
    bundle = load("tiny-bert-mlm")
    # tokens: [CLS] the [MASK] sat on the [MASK] . [SEP]; position 4 ('on') is masked by choice
    r = predict(bundle, "The [MASK] sat on the <mask>.", positions=(4,), top_k=4, layers=True)
    assert [p.position for p in r.predictions] == [2, 4, 6]
    first = r.predictions[0]
    assert len(first.top) == 4 and first.original is None
    assert len(first.layer_top) == bundle.n_layers + 1 and all(len(row) == 4 for row in first.layer_top)
    on = next(p for p in r.predictions if p.position == 4)
    assert on.original == "on" and len(on.layer_original_rank) == bundle.n_layers + 1
    # the last layer of the logit lens is the model's own prediction
    assert on.layer_top[-1][0][0] == on.top[0][0]


def eager_copy(bundle):
    """The same weights in a deep copy on transformers' own eager attention: it never calls our function."""
    model = copy.deepcopy(bundle.model)
    model.set_attn_implementation("eager")
    return model


@pytest.mark.parametrize("name", ["tiny-bert-mlm", "tiny-roberta-mlm", "minilm-mlm"])
def test_mask_sweep_equals_one_masked_forward_per_token(load, name):
    """The reference masks one token, runs one forward of an eager copy, reads softmax at that position:
    probabilities and ranks equal the sweep's, whatever its batch size (1, 3, 16: one batch, several, a
    ragged last one)."""
    bundle = load(name)
    tok, model = bundle.tokenizer, eager_copy(bundle)
    ids = tok(TEXT, return_tensors="pt")["input_ids"][0]
    special = set(tok.all_special_ids)
    positions = [i for i, t in enumerate(ids.tolist()) if t not in special]
    prob, rank = [], []
    for p in positions:
        x = ids.clone()
        x[p] = tok.mask_token_id
        with torch.inference_mode():
            probs = model(input_ids=x[None]).logits[0, p].double().softmax(-1)
        prob.append(float(probs[ids[p]]))
        rank.append(int((probs > probs[ids[p]]).sum()) + 1)
    for batch_size in (1, 3, 16):
        s = mask_sweep(bundle, TEXT, batch_size=batch_size)
        assert s.positions == positions and s.tokens == tok.convert_ids_to_tokens(ids.tolist())
        np.testing.assert_allclose(s.prob, prob, rtol=1e-4, atol=1e-7)
        assert s.rank.tolist() == rank, batch_size
        assert s.pll == pytest.approx(np.log(prob).sum(), rel=1e-4)


@pytest.mark.parametrize("name", ["tiny-bert-mlm", "tiny-roberta-mlm", "tiny-modernbert-mlm", "minilm-mlm"])
def test_predict_is_a_direct_softmax_of_the_model(load, name):
    """Top-k tokens and probabilities == softmax of an eager copy's logits at each mask; the per-layer rows ==
    the masked-LM head applied to that copy's hidden states; the original token's probability and rank too."""
    bundle = load(name)
    tok, model = bundle.tokenizer, eager_copy(bundle)
    text = "The cat sat on the [MASK] because it was tired."
    r = predict(bundle, text, positions=(2,), top_k=6, layers=True)
    ids = torch.tensor(r.capture.input_ids)[None]
    assert ids[0, 2] == tok.mask_token_id and [p.position for p in r.predictions] == [2, 6]
    with torch.inference_mode():
        out = model(input_ids=ids, output_hidden_states=True)
        probs = out.logits[0].double().softmax(-1)  # [T, vocab]
        # the copy's own head modules, applied to the copy's own hidden states (embeddings first)
        lens = [_head(model, bundle.arch.mlm_head, h[0]).double().softmax(-1) for h in out.hidden_states]
    original = tok(text)["input_ids"][2]
    for pred in r.predictions:
        p = probs[pred.position]
        top = p.topk(6)
        assert [t for t, _ in pred.top] == tok.convert_ids_to_tokens(top.indices.tolist())
        np.testing.assert_allclose([q for _, q in pred.top], top.values.numpy(), atol=2e-6)
        assert len(pred.layer_top) == len(lens) == bundle.n_layers + 1
        for row, lp in zip(pred.layer_top, lens):
            want = lp[pred.position].topk(6)
            assert [t for t, _ in row] == tok.convert_ids_to_tokens(want.indices.tolist())
            np.testing.assert_allclose([q for _, q in row], want.values.numpy(), atol=2e-6)
    cat = r.predictions[0]
    assert cat.original == tok.convert_ids_to_tokens(original) == "cat"
    np.testing.assert_allclose(cat.layer_original_prob, [float(lp[2, original]) for lp in lens], atol=2e-6)
    assert cat.layer_original_rank == [int((lp[2] > lp[2, original]).sum()) + 1 for lp in lens]


def _head(model, parts, hidden):
    for part in parts:
        hidden = getattr(model, part)(hidden)
    return hidden


@pytest.mark.parametrize("text,expected", [
    ("no mask anywhere", "No mask"),
    ("[MASK] [MASK] [MASK]", "Every token is masked"),
    ("word " * 300 + "[MASK]", "at most 128"),
])
def test_bad_mask_input(load, text, expected):
    with pytest.raises(MaskError, match=expected):
        predict(load("tiny-bert-mlm"), text)


def test_model_without_mlm_head_is_refused_with_names(load):
    with pytest.raises(MaskError, match="minilm-mlm"):
        predict(load("minilm"), "a [MASK] here")
    with pytest.raises(MaskError, match="no masked-LM head"):
        mask_sweep(load("tiny-bert"), TEXT)


def test_mask_cli_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "viz", "mask", "--model", "tiny-bert-mlm", "--text",
                        "a [MASK] b [MASK] c", "--top-k", "3", "--json", "--layers"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [m["position"] for m in out["masks"]] == [2, 4]
    assert len(out["masks"][0]["top_k"]) == 3 and {"token", "prob"} <= set(out["masks"][0]["top_k"][0])
    assert len(out["masks"][0]["layers"]) == 3
    r = subprocess.run([sys.executable, "-m", "viz", "mask", "--model", "minilm", "--text", "a [MASK]"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "minilm-mlm" in r.stderr


@pytest.mark.parametrize("name", MLMS)
def test_last_layer_lens_is_the_models_own_prediction(load, name):
    """The masked-LM head applied to the last hidden state gives the model's own probabilities (ModernBERT's
    final norm, RoBERTa's lm_head, DistilBERT's vocab layers): the lens reads the real residual stream."""
    r = predict(load(name), "The [MASK] sat on the mat.", top_k=5, layers=True)
    p = r.predictions[0]
    assert [t for t, _ in p.layer_top[-1]] == [t for t, _ in p.top]
    np.testing.assert_allclose([q for _, q in p.layer_top[-1]], [q for _, q in p.top], atol=1e-5)
