"""Inside a layer (`viz.inside.walk`): every number of one head and of the whole layer, against the model itself,
on every tiny family and the bundled MiniLM."""

import numpy as np
import pytest
import torch

from viz.core.capture import CaptureError, capture
from viz.inside.walk import head_walk, inside, pick_keys, to_json
from viz.core.models import DECODER_FAMILIES, TINY_FAMILIES

TEXT = "The cat sat on the mat because it was tired."
SHORT = "The cat sat."  # 6 tokens: inside every sliding window (8) of the tiny models
TARGET = "a b c d e f g h"  # teacher forcing: longer than SHORT's source, shorter than a random model's rambling
MODELS = ["minilm", *[f"tiny-{f}" for f in TINY_FAMILIES]]
GQA = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3")  # 4 query heads over 2 key/value heads


def _target(bundle):
    return TARGET if bundle.kind == "encoder-decoder" else None


@pytest.mark.parametrize("name", MODELS)
def test_every_number_equals_the_model(load, name):
    """Weights = the model's attention row (<= 1e-6); q·k·s from W_q·x and W_k·x (+ RoPE) = ours (<= 1e-4);
    the recomposed layer output = the model's next hidden state (<= 1e-4), on the first and the last layer,
    every stack (encoder, decoder, cross), every head, the first and the last query position."""
    bundle = load(name)
    for stack in bundle.arch.stacks:
        n = bundle.stack_layers("decoder" if stack == "cross" else stack)
        for layer in sorted({0, n - 1}):
            for token in (0, -1):
                run = inside(bundle, TEXT, _target(bundle), stack=stack, layer=layer, token=token)
                assert run.layer_walk is not None, run.layer_note
                assert run.layer_walk.recomposition_error <= 1e-4, (stack, layer, token, run.layer_walk.steps)
                for head in range(run.weights.shape[0]):
                    w = head_walk(run, head)
                    assert w.weight_error <= 1e-6
                    assert w.projection_error is not None and w.projection_error <= 1e-4, (stack, layer, head)
                    np.testing.assert_allclose(w.weighted_values.sum(0), w.head_output, atol=1e-6)
                    np.testing.assert_allclose(w.products.sum(1) * w.scaling, w.raw_scores, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(run.contributions.sum(0) + run.out_bias,
                                           _attention_step(run), atol=1e-5)


def _attention_step(run):
    """The layer walk's attention-sublayer output for the run's own stack."""
    names = {"encoder": "self-attention", "decoder": "masked self-attention", "cross": "cross-attention"}
    return next(s.vector for s in run.layer_walk.steps if s.kind == "attention" and s.sublayer == names[run.stack])


def test_last_layer_compares_after_the_final_norm(load):
    """transformers 5 writes hidden_states[-1] after the final norm: the walk applies it, and says so."""
    run = inside(load("tiny-llama"), TEXT, layer=-1, token=-1)
    assert run.layer_walk.final == ("norm",) and run.layer_walk.steps[-1].kind == "final"
    assert run.layer_walk.recomposition_error <= 1e-4
    raw = next(s.vector for s in run.layer_walk.steps if s.kind == "output")
    assert np.abs(raw - run.layer_walk.model_output).max() > 1e-2  # without the final norm it would not match
    assert inside(load("tiny-llama"), TEXT, layer=0).layer_walk.final == ()


@pytest.mark.parametrize("name", ["minilm", "tiny-llama"])
def test_scores_from_projection_weights_by_hand(load, name):
    """An independent reference: W_q and W_k read as tensors, applied to hidden_states[L] with numpy (Llama: its
    input RMSNorm and the model's own rotary embedding), equal the walk's raw scores."""
    bundle = load(name)
    layer, token, head = 1, 4, 3
    w = head_walk(inside(bundle, TEXT, layer=layer, token=token), head)
    full = capture(bundle, TEXT, layers=[layer])
    x = torch.tensor(full.hidden_states[full.stacks[0]][layer])  # [T, D]: the layer input at every position
    T, d = len(x), len(w.query)
    with torch.no_grad():
        if name == "minilm":
            att = bundle.model.encoder.layer[layer].attention.self
            q, k = x @ att.query.weight.T + att.query.bias, x @ att.key.weight.T + att.key.bias
        else:
            block = bundle.model.model.layers[layer]
            a = block.input_layernorm(x)
            q, k = a @ block.self_attn.q_proj.weight.T, a @ block.self_attn.k_proj.weight.T
        q, k = q.reshape(T, -1, d).transpose(0, 1)[None], k.reshape(T, -1, d).transpose(0, 1)[None]  # [1, head, T, d]
        if name != "minilm":
            from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

            cos, sin = bundle.model.model.rotary_emb(q, torch.arange(T)[None])
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
        kv = head // (q.shape[1] // k.shape[1])
        expected = (q[0, head, token] @ k[0, kv].T).numpy() * d ** -0.5
    np.testing.assert_allclose(w.raw_scores, expected, atol=1e-4)
    np.testing.assert_allclose(w.projected, expected, atol=1e-4)


@pytest.mark.parametrize("family", [*DECODER_FAMILIES, "gpt2", "t5", "bart", "marian"])
def test_causal_mask_is_minus_infinity_exactly_above_the_diagonal(load, family):
    bundle = load(f"tiny-{family}")
    target = "a b c d e" if bundle.kind == "encoder-decoder" else None
    n = len(inside(bundle, SHORT, target, stack="decoder", layer=0, token=0).cap.axis_tokens("decoder")[0])
    for token in (0, 1, n // 2, n - 1):
        mask = head_walk(inside(bundle, SHORT, target, stack="decoder", layer=0, token=token), 0).mask
        assert np.isneginf(mask[token + 1:]).all() and (mask[:token + 1] == 0).all(), (token, mask)


def test_sliding_window_masks_far_keys_too(load):
    """Mistral's window of 8: a query at 15 sees keys 8..15 only; the walk shows the model's own mask."""
    w = head_walk(inside(load("tiny-mistral"), " ".join(["word"] * 20), layer=0, token=15), 0)
    allowed = np.flatnonzero(np.isfinite(w.mask))
    assert allowed.tolist() == list(range(8, 16)) and w.weights[:8].sum() == 0


@pytest.mark.parametrize("family", GQA)
def test_query_heads_of_one_group_read_the_same_keys(load, family):
    run = inside(load(f"tiny-{family}"), TEXT, layer=1, token=-1)
    walks = [head_walk(run, h) for h in range(4)]
    assert [w.kv_head for w in walks] == [0, 0, 1, 1]
    for a, b in ((0, 1), (2, 3)):
        np.testing.assert_array_equal(walks[a].keys, walks[b].keys)
        np.testing.assert_array_equal(walks[a].values, walks[b].values)
    assert not np.allclose(walks[0].keys, walks[2].keys)
    assert not np.allclose(walks[0].query, walks[1].query)  # own queries, shared keys


def test_cross_attention_reads_the_encoder_and_decoder_positions_beyond_the_source(load):
    """A decoder position past the source's length is a valid query (capture's per-stack rows)."""
    bundle = load("tiny-bart")
    run = inside(bundle, SHORT, TARGET, stack="cross", layer=1, token=8)
    w = head_walk(run, 2)
    assert run.token == 8 > len(run.cap.tokens) - 1
    assert w.tokens == run.cap.tokens and w.query_token == run.cap.target_tokens[8]
    assert w.weight_error <= 1e-6 and run.layer_walk.recomposition_error <= 1e-4
    kinds = [s.sublayer for s in run.layer_walk.steps if s.kind == "attention"]
    assert kinds == ["masked self-attention", "cross-attention"]


def test_per_stack_selection_in_capture(load):
    bundle = load("tiny-t5")
    cap = capture(bundle, SHORT, TARGET, layers={"encoder": [], "decoder": [1], "cross": [1]},
                  rows={"decoder": [8], "cross": [8]}, details=True)
    assert cap.stacks == ["decoder", "cross"] and cap.layers["decoder"] == [1] and cap.rows["cross"] == [8]
    assert cap.attentions["cross"].shape[2:] == (1, len(cap.tokens))
    assert cap.hidden_states["encoder"].shape[1] == len(cap.tokens)  # the encoder keeps every row
    with pytest.raises(CaptureError, match="no position 8"):
        capture(bundle, SHORT, TARGET, layers=[1], rows=[8])  # one list for every stack: 8 is no source position


def test_a_family_missing_from_the_table_keeps_the_head_walk(load, monkeypatch):
    from viz.inside import recipes

    monkeypatch.delitem(recipes.RECIPES, "bert")
    run = inside(load("tiny-bert"), TEXT, layer=1, token=2)
    assert run.layer_walk is None and "not available for 'bert'" in run.layer_note
    assert run.projected is None and run.contributions is not None  # arch.py still knows the output projection
    w = head_walk(run, 1)
    assert w.weight_error <= 1e-6 and w.projection_error is None
    out = to_json(run, w)
    assert out["recomposition_error"] is None and "not available" in out["note"]


def test_a_recipe_that_does_not_fit_the_model_gives_a_note(load, monkeypatch):
    """A family variant whose modules differ from its recipe: a note instead of a traceback."""
    from dataclasses import replace

    from viz.inside import recipes

    good = recipes.RECIPES["bert"]["encoder"]
    wrong = replace(good.sublayers[0], add_norm="attention.output.Nope")
    monkeypatch.setitem(recipes.RECIPES, "bert", {"encoder": replace(good, sublayers=(wrong, good.sublayers[1]))})
    run = inside(load("tiny-bert"), TEXT, layer=0, token=1)
    assert run.layer_walk is None and "AttributeError" in run.layer_note and "viz/inside/recipes.py" in run.layer_note
    assert head_walk(run, 0).weight_error <= 1e-6


def test_bad_choices_get_a_message(load):
    bundle = load("tiny-bert")
    with pytest.raises(CaptureError, match="no layer 7"):
        inside(bundle, TEXT, layer=7)
    with pytest.raises(CaptureError, match="no decoder"):
        inside(bundle, TEXT, stack="decoder")
    with pytest.raises(CaptureError, match="no head 9"):
        head_walk(inside(bundle, TEXT), 9)


def test_pick_keys_keeps_a_long_input_legible():
    w = np.linspace(0, 1, 64)[::-1] ** 3
    w /= w.sum()
    idx, said = pick_keys(w, 40, "highest weights", 24)
    assert idx.tolist() == list(range(24)) and "24 keys of 64" in said
    idx, said = pick_keys(w, 60, "around the query", 24)
    assert idx.tolist() == list(range(40, 64)) and "nearest the query" in said
    idx, _ = pick_keys(w, 30, "around the query", 24)
    assert idx.tolist() == list(range(18, 42))
    idx, said = pick_keys(w, None, "around the query", 24)
    assert idx[0] == 0 and "most attended" in said
    assert pick_keys(w[:10] / w[:10].sum(), 3, "highest weights", 24)[0].tolist() == list(range(10))
    assert len(pick_keys(w, 3, "all", 24)[0]) == 64


def test_highest_weights_leaves_out_masked_keys(load):
    """An early decoder token: 'highest weights' listed 22 masked zeros in its 24 rows. On a real walk of
    tiny-llama's third token over a 30-word text, only the keys it may attend to are listed."""
    bundle = load("tiny-llama")
    text = " ".join(["word"] * 30)
    w = head_walk(inside(bundle, text, layer=0, token=2), 0)
    masked = ~np.isfinite(w.mask)
    assert masked.sum() > 24  # look-ahead: every key after position 2
    idx, said = pick_keys(w.weights, 2, "highest weights", 24, masked=masked)
    assert sorted(idx.tolist()) == [0, 1, 2] and f"{masked.sum()} masked keys" in said
    idx, _ = pick_keys(w.weights, 2, "around the query", 24, masked=masked)
    assert len(idx) == 24  # the window keeps its positions, masked ones included (it shows where the query is)


def test_the_layer_diagram_names_hidden_states_as_the_app_does(load):
    """The diagram said hidden_states[2] where every page and export says emb, L0, L1 (viz.core.names)."""
    run = inside(load("tiny-llama"), TEXT, layer=1, token=2)
    details = [s.detail for s in run.layer_walk.steps]
    assert not any("hidden_states" in d for d in details), details
    assert details[0] == "L0" and "ours, vs the model's L1" in details
    assert inside(load("tiny-llama"), TEXT, layer=0, token=2).layer_walk.steps[0].detail.startswith("emb")
