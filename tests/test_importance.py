"""Head importance (Michel et al. 2019) on a tiny random BertForMaskedLM built from a config."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from viz.core.arch import arch_for
from viz.atlas.importance import NoMaskedLMHead, head_gates, head_importance, mask_tokens
from viz.core.models import ModelBundle, minilm_dir

def hook_count(model) -> int:
    """Every forward and forward-pre hook on the model (the gates are pre-hooks)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


SENTENCES = ["The cat sat on the mat.", "Dogs bark at night, loudly!", "Is it raining again today?",
             "She read the paper and drank her coffee."]


@pytest.fixture(scope="module")
def mlm_bundle():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128)
    model = BertForMaskedLM(cfg).eval()
    model.set_attn_implementation("eager")
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    return ModelBundle(name="tiny-mlm", model=model, tokenizer=tok, arch=arch_for("bert"), has_mlm_head=True)


def test_importance_shape_and_determinism(mlm_bundle):
    before = hook_count(mlm_bundle.model)
    imp = head_importance(mlm_bundle, SENTENCES, batch_size=2)
    assert imp.shape == (2, 4) and np.isfinite(imp).all() and (imp > 0).all()
    assert np.allclose(imp, head_importance(mlm_bundle, SENTENCES, batch_size=2))  # seeded masking
    assert hook_count(mlm_bundle.model) == before  # gate hooks removed
    assert all(p.grad is None for p in mlm_bundle.model.parameters())
    norm = head_importance(mlm_bundle, SENTENCES, batch_size=2, normalize=True)
    assert np.allclose(np.linalg.norm(norm, axis=1), 1)


def test_gate_zero_equals_removing_the_head(mlm_bundle):
    """A zero gate on (layer 1, head 2) == zeroing that head's columns of the output projection."""
    model = mlm_bundle.model
    ids = mlm_bundle.tokenizer(["The cat sat on the mat."], return_tensors="pt")["input_ids"]
    with torch.no_grad(), head_gates(mlm_bundle, 4) as gates:
        gates[1, 2] = 0.0
        gated = model(input_ids=ids).logits
    dense = model.bert.encoder.layer[1].attention.output.dense
    saved = dense.weight.detach().clone()
    try:
        with torch.no_grad():
            dense.weight[:, 16:24] = 0.0  # head 2 of 4, head_dim 8
            ablated = model(input_ids=ids).logits
    finally:
        with torch.no_grad():
            dense.weight.copy_(saved)
    assert torch.allclose(gated, ablated, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, gated)  # outside the scope: no gates


def test_gate_hooks_removed_after_an_error(mlm_bundle):
    before = hook_count(mlm_bundle.model)
    with pytest.raises(RuntimeError, match="boom"):
        with head_gates(mlm_bundle, 4):
            raise RuntimeError("boom")
    assert hook_count(mlm_bundle.model) == before


def test_bert_masking_within_binomial_bounds():
    """Devlin et al. 2019 §3.1: each maskable token is chosen with p = 0.15; a chosen one becomes [MASK] with
    p = 0.8, a random token with 0.1, stays with 0.1. Every count must lie within 5 standard deviations of
    its binomial mean (a false alarm once in ~3.5 million runs; 80/5/15 or a 20 % rate are > 10 sd off)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (64, 256), generator=gen)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False
    maskable[:, 200:] &= torch.arange(56) % 2 == 0  # some positions of the tail are not maskable (padding)
    inputs, labels = mask_tokens(ids, maskable, 103, 30522, gen)
    chosen = labels != -100

    def within(k: int, n: int, p: float) -> bool:
        return abs(k - n * p) <= 5 * (n * p * (1 - p)) ** 0.5

    assert not (chosen & ~maskable).any() and (labels[chosen] == ids[chosen]).all()
    n_maskable, n = int(maskable.sum()), int(chosen.sum())
    assert within(n, n_maskable, 0.15), (n, n_maskable)
    masked = chosen & (inputs == 103)
    kept = chosen & (inputs == ids)
    rnd = chosen & ~masked & ~kept
    assert within(int(masked.sum()), n, 0.8) and within(int(kept.sum()), n, 0.1) and within(int(rnd.sum()), n, 0.1)
    assert (inputs[~chosen] == ids[~chosen]).all()  # nothing else changes
    # random replacements are drawn from the whole vocabulary (ids here are 1000-1999): uniform over 30522
    r = inputs[rnd]
    assert within(int((r >= 15261).sum()), len(r), 0.5) and int(((r >= 1000) & (r < 2000)).sum()) < 0.1 * len(r)
    # a row with nothing chosen by chance still gets one token (so a short sentence still counts)
    one = torch.tensor([[5, 6, 7]])
    _, lab = mask_tokens(one, torch.tensor([[False, True, False]]), 103, 30522, gen, rate=0.0)
    assert (lab != -100).tolist() == [[False, True, False]]


def test_importance_equals_a_finite_difference_of_the_loss(mlm_bundle):
    """I_h = mean over batches |dL/dξ_h| (Michel et al. 2019 eq. 2-3) against central differences of the
    masked-LM loss in float64, where ξ_h scales head h's slice of the output projection's input (the same
    thing as scaling that slice of W_O's columns) in an eager copy of the model: no gates, no recorder."""
    import copy

    model = mlm_bundle.model
    seen = []

    def spy(module, args, kwargs):
        seen.append({k: kwargs[k].clone() for k in ("input_ids", "attention_mask", "labels")})

    handle = model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        imp = head_importance(mlm_bundle, SENTENCES, batch_size=2)
    finally:
        handle.remove()
    assert len(seen) == 2  # 4 sentences, 2 per batch: the masked batches the gradients were taken on
    ref = copy.deepcopy(model).double()
    ref.set_attn_implementation("eager")
    L, H, d, eps = 2, 4, 8, 1e-4

    def loss(layer: int, head: int, scale: float, batch: dict) -> float:
        dense = ref.bert.encoder.layer[layer].attention.output.dense
        saved = dense.weight[:, head * d:(head + 1) * d].clone()
        with torch.no_grad():
            dense.weight[:, head * d:(head + 1) * d] *= scale
            out = ref(**batch).loss.item()
            dense.weight[:, head * d:(head + 1) * d] = saved
        return out

    fd = np.zeros((L, H))
    for batch in seen:
        for layer in range(L):
            for head in range(H):
                g = (loss(layer, head, 1 + eps, batch) - loss(layer, head, 1 - eps, batch)) / (2 * eps)
                fd[layer, head] += abs(g) / len(seen)
    np.testing.assert_allclose(imp, fd, rtol=2e-3, atol=1e-6)
    assert fd.max() > 100 * 1e-6  # not a comparison of zeros


def test_no_mlm_head_message(load):
    with pytest.raises(NoMaskedLMHead, match="has no masked-LM head"):
        head_importance(load("tiny-bert"), SENTENCES)
