"""Head importance (Michel et al. 2019) on a tiny random BertForMaskedLM built from a config."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from viz.arch import arch_for
from viz.importance import NoMaskedLMHead, head_gates, head_importance, mask_tokens
from viz.models import ModelBundle, minilm_dir

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


def test_bert_masking():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (8, 50))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False
    inputs, labels = mask_tokens(ids, maskable, 103, 30522, gen)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert 0.05 < chosen.float().mean() < 0.3
    assert (inputs[~chosen] == ids[~chosen]).all()
    assert (inputs[chosen] == 103).float().mean() > 0.5


def test_no_mlm_head_message(load):
    with pytest.raises(NoMaskedLMHead, match="has no masked-LM head"):
        head_importance(load("tiny-bert"), SENTENCES)
