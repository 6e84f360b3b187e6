"""The logit lens (viz.tasks.lens) against the model itself, for every decoder family.

Tiny random models start with unit final-norm weights, and a norm applied twice to a normalised vector
with unit weights changes nothing: every test here first gives the final norm random weights (and
biases), so that normalising twice, or not at all, would show.
"""

import copy
import dataclasses

import pytest
import torch

from viz.core.errors import CaptureError
from viz.tasks.lens import LensUnavailable, chosen_rank, lens_logits, lens_parts
from viz.core.models import DECODER_FAMILIES, ModelBundle

DECODERS = [f"tiny-{f}" for f in ("gpt2", *DECODER_FAMILIES)]
SHIPPED = ["atlas-lm"]  # the shipped decoder (a missing folder fails, it does not shrink the suite)
TEXT = "The cat sat on the mat because it was"


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def perturbed(bundle: ModelBundle, arch=None) -> ModelBundle:
    """A copy of `bundle` whose final norm has random weights and biases (seeded)."""
    model = copy.deepcopy(bundle.model)
    b = ModelBundle(bundle.name, model, bundle.tokenizer, arch or bundle.arch)
    norms, _ = lens_parts(b)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in norms:
            for name, p in m.named_parameters():
                if p.dim() == 1:  # norm weight / bias (not OPT's project_out matrix)
                    p.copy_((torch.rand(p.shape, generator=g) * 1.5 + 0.25) if "weight" in name
                            else torch.randn(p.shape, generator=g) * 0.5)
    return b


def ids_of(bundle: ModelBundle) -> list[int]:
    return bundle.tokenizer(TEXT)["input_ids"]


def forward(bundle: ModelBundle):
    with torch.inference_mode():
        return bundle.model(input_ids=torch.tensor([ids_of(bundle)]), output_hidden_states=True, use_cache=False)


def tiny_extra(family: str) -> ModelBundle:
    """Families without a `tiny-` registry entry whose logits are post-processed (Cohere, Granite)."""
    import transformers as tf

    from viz.core.arch import arch_for
    from viz.core.models import _load_tiny

    dec = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=128, max_position_embeddings=256, pad_token_id=0)
    cfg = {"cohere": lambda: tf.CohereConfig(logit_scale=0.5, **dec),
           "granite": lambda: tf.GraniteConfig(logits_scaling=4.0, **dec)}[family]()
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    _, tok = _load_tiny("llama")
    return ModelBundle(f"tiny-{family}", model, tok, arch_for(cfg.model_type))


@pytest.mark.parametrize("name", DECODERS + SHIPPED + ["cohere", "granite"])
def test_last_layer_lens_equals_the_model_logits(load, name):
    bundle = perturbed(tiny_extra(name) if name in ("cohere", "granite") else load(name))
    out = forward(bundle)
    lens = lens_logits(bundle, [h[0] for h in out.hidden_states])  # [layer + 1, token, vocab]
    assert lens.shape == (bundle.n_layers + 1, len(ids_of(bundle)), out.logits.shape[-1])
    torch.testing.assert_close(lens[-1], out.logits[0].float(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", DECODERS + SHIPPED)
def test_each_layer_lens_is_the_model_cut_after_that_layer(load, name):
    """Independent reference: the model with its layer list cut after layer l (final norm and head kept)
    computes unembed(norm(h_l)) itself: that must be the lens of layer l."""
    bundle = perturbed(load(name))
    full = lens_logits(bundle, [h[0] for h in forward(bundle).hidden_states])
    L = bundle.n_layers
    for cut in range(1, L):
        short = copy.deepcopy(bundle.model)
        lists = [(n, m) for n, m in short.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == L]
        assert len(lists) == 1, [n for n, _ in lists]
        parent, child = lists[0][0].rpartition(".")[::2]
        setattr(short.get_submodule(parent), child, torch.nn.ModuleList(list(lists[0][1])[:cut]))
        short.config.num_hidden_layers = cut
        if getattr(short.config, "layer_types", None):
            short.config.layer_types = short.config.layer_types[:cut]
        with torch.inference_mode():
            logits = short(input_ids=torch.tensor([ids_of(bundle)]), use_cache=False).logits[0].float()
        torch.testing.assert_close(full[cut], logits, atol=1e-4, rtol=0)


def test_normalising_the_last_layer_twice_is_caught(load):
    """What the tests above guard against: with `last_normed` wrong, the last layer leaves the logits."""
    bundle = load("tiny-llama")
    wrong = dataclasses.replace(bundle.arch, lens=dataclasses.replace(bundle.arch.lens, last_normed=False))
    b = perturbed(bundle, wrong)
    out = forward(b)
    lens = lens_logits(b, [h[0] for h in out.hidden_states])
    assert (lens[-1] - out.logits[0]).abs().max() > 1e-2


@pytest.mark.parametrize("name", DECODERS + SHIPPED)
def test_unembedding_in_the_table_is_the_models_output_embedding(load, name):
    bundle = load(name)
    assert lens_parts(bundle)[1] is bundle.model.get_output_embeddings()


def test_lens_refuses_encoders_with_a_message(load):
    with pytest.raises(LensUnavailable, match="causal LM") as e:
        lens_parts(load("tiny-bert"))
    assert isinstance(e.value, CaptureError)


def test_chosen_rank():
    logits = torch.tensor([[0.1, 3.0, 2.0, 3.0], [5.0, 1.0, 0.0, -1.0]])
    assert chosen_rank(logits, 2).tolist() == [3, 3]
    assert chosen_rank(logits, 1).tolist() == [1, 2]  # a tie counts in the token's favour
    assert chosen_rank(logits, 0).tolist() == [4, 1]
