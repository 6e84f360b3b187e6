"""Step-by-step decoding, the decoder's causal mask, the architecture panel and `python -m viz generate`."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from viz.tasks.config_summary import describe, sublayer_rows, table_rows
from viz.core.capture import CaptureError, capture
from viz.figures.encdec import architecture_figure, lookahead_mask, mask_figure
from viz.tasks.encdec import encoder_decoder_names, example_source, generate, max_new_tokens_limit
from viz.core.models import builtin_names

TINY = ["tiny-t5", "tiny-bart", "tiny-marian"]
SHIPPED = ["seq2seq-dates", "seq2seq-reverse"]  # shipped in models/: a missing one fails, never shrinks the suite
SRC = "The cat sat on the mat."


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", TINY)
def test_decoder_self_attention_is_causal(load, name):
    """Upper triangle (future positions) exactly zero in every layer and head; rows still sum to 1."""
    cap = capture(load(name), SRC, "a longer target sentence with several words")
    A = cap.attentions["decoder"]  # [layer, head, target, target]
    assert A.shape[-1] == A.shape[-2] > 3
    assert np.triu(A, k=1).max() == 0.0
    np.testing.assert_allclose(A.sum(-1), 1.0, atol=1e-5)
    assert np.tril(A).min() >= 0 and (np.tril(A, k=-1) > 0).any()  # the past is really attended to


@pytest.mark.parametrize("name", TINY + SHIPPED)
def test_step_by_step_equals_model_generate(load, name):
    bundle = load(name)
    text = example_source(name) or SRC
    gen = generate(bundle, text, "greedy", max_new_tokens=12)
    enc = bundle.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        ref = bundle.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                    max_new_tokens=12, num_beams=1, do_sample=False)
    assert [s.token_id for s in gen.steps] == ref[0, 1:].tolist()
    assert gen.decoder_ids[0] == bundle.model.config.decoder_start_token_id


@pytest.mark.parametrize("name", ["tiny-bart", "tiny-t5"])
def test_step_rows_equal_one_teacher_forced_pass(load, name):
    """Each step's attention (prefix-only forward) == that row of one forward over the whole output."""
    bundle = load(name)
    gen = generate(bundle, SRC, "greedy", max_new_tokens=6)
    a = gen.attentions()
    out_ids = gen.decoder_ids + [gen.steps[-1].token_id]
    with torch.inference_mode():
        from viz.tasks.encdec import _source, _teacher_forced
        inputs, info = _source(bundle, SRC)
        ids = torch.tensor([out_ids])
        ref = _teacher_forced(bundle, inputs, ids[:, :-1], ids[:, 1:], 5, "x", info, False).attentions()
    for stack in ("encoder", "decoder", "cross"):
        np.testing.assert_allclose(a[stack], ref[stack], atol=1e-5)
    assert a["cross"].shape == (2, 4, len(gen.steps), len(gen.source_tokens))


def test_step_fields_and_capture_contract(load):
    gen = generate(load("tiny-marian"), SRC, "greedy", max_new_tokens=5, top_k=3)
    for s in gen.steps:
        assert s.cross.shape == (2, 4, len(gen.source_tokens))
        assert s.self_attn.shape == (2, 4, s.index + 1)
        np.testing.assert_allclose(s.cross.sum(-1), 1.0, atol=1e-5)
        assert len(s.top_k) == 3 and s.top_k[0][1] >= s.top_k[-1][1]
        assert s.forced or s.token == s.top_k[0][0]
    cap = gen.to_capture()
    assert cap.stacks == ["encoder", "decoder", "cross"]
    assert cap.axis_tokens("cross") == (gen.decoder_tokens, gen.source_tokens)


@pytest.mark.parametrize("name,text", [("tiny-t5", SRC), ("seq2seq-dates", "3 March 2021")])
def test_beam_scores_recomputed_from_the_models_log_probabilities(load, name, text):
    """Every hypothesis re-scored by one teacher-forced forward of an eager copy (no generate, no recorder):
    log p of each token from log_softmax of the logits, the score = Σ log p / length ** length_penalty, the
    order best first, and the steps shown are the best beam's tokens with their softmax probabilities."""
    bundle = load(name)
    model = copy.deepcopy(bundle.model)
    model.set_attn_implementation("eager")
    enc = bundle.tokenizer(text, return_tensors="pt")
    gen = generate(bundle, text, "beam", num_beams=3, max_new_tokens=6)
    start = model.config.decoder_start_token_id
    rescored = []
    for b in gen.beams:
        ids = bundle.tokenizer.convert_tokens_to_ids(b.tokens)
        with torch.inference_mode():
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           decoder_input_ids=torch.tensor([[start] + ids[:-1]]), use_cache=False).logits[0]
        logp = logits.double().log_softmax(-1)[torch.arange(len(ids)), torch.tensor(ids)].tolist()
        np.testing.assert_allclose(b.token_logprobs, logp, atol=2e-4)
        score = sum(logp) / len(ids) ** gen.length_penalty
        assert b.score == pytest.approx(score, abs=2e-4)
        rescored.append(score)
    assert len(gen.beams) == 3 and rescored == sorted(rescored, reverse=True)
    best = gen.beams[0]
    assert [s.token for s in gen.steps] == best.tokens
    np.testing.assert_allclose([np.log(s.prob) for s in gen.steps], best.token_logprobs, atol=2e-4)
    if name == "seq2seq-dates":  # a trained model: its beams end on </s>, and the best one is the right date
        assert best.tokens == ["2021", "-", "03", "-", "03", "</s>"] and all(b.tokens[-1] == "</s>" for b in gen.beams)


def test_teacher_forcing_reads_the_target(load):
    tf = generate(load("tiny-t5"), SRC, "teacher", target="the dog")
    assert tf.output_tokens == ["[CLS]", "the", "dog", "[SEP]"]
    assert tf.decoder_tokens[1:] == ["[CLS]", "the", "dog"]


def test_beam_search_shows_every_beam_with_its_scores(load):
    """Beam search returned only its winner; now every hypothesis comes with per-token log p and its score."""
    bundle = load("tiny-t5")
    gen = generate(bundle, SRC, "beam", num_beams=3, max_new_tokens=6)
    assert len(gen.beams) == 3
    assert gen.beams[0].tokens == gen.output_tokens  # the steps follow the best beam
    scores = [b.score for b in gen.beams]
    assert scores == sorted(scores, reverse=True)
    for b in gen.beams:  # beam search's ranking score = Σ log p / length ** length_penalty
        assert b.score == pytest.approx(b.log_prob / len(b.tokens) ** gen.length_penalty, abs=1e-4)
        assert all(lp <= 1e-6 for lp in b.token_logprobs)
    out = gen.to_json()
    assert [x["tokens"] for x in out["beams"]] == [b.tokens for b in gen.beams]
    assert "beams" not in generate(bundle, SRC, "greedy", max_new_tokens=3).to_json()


def test_bad_input_messages(load):
    with pytest.raises(CaptureError, match="source text is empty"):
        generate(load("tiny-bart"), "   ")
    with pytest.raises(CaptureError, match="target text is empty"):
        generate(load("tiny-bart"), SRC, "teacher", target=" ")
    with pytest.raises(CaptureError, match=r"target has \d+ tokens; this model takes at most 128"):
        generate(load("tiny-bart"), SRC, "teacher", target="word " * 200)
    with pytest.raises(CaptureError, match="Attention page"):
        generate(load("tiny-bert"), SRC)
    gen = generate(load("tiny-bart"), SRC, max_new_tokens=10_000)  # clamped to the position table
    assert len(gen.steps) <= max_new_tokens_limit(load("tiny-bart"))


def test_lookahead_mask():
    m = lookahead_mask(4)
    assert m.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert mask_figure(["a", "b", "c"]).data[0].z.shape == (3, 3)


@pytest.mark.parametrize("name,norm,positions", [
    ("tiny-t5", "pre", "relative"), ("tiny-bart", "post", "learned"), ("tiny-marian", "post", "sinusoidal")])
def test_architecture_from_config(load, name, norm, positions):
    bundle = load(name)
    d = describe(bundle.config)
    assert (d["encoder_layers"], d["decoder_layers"], d["d_model"], d["encoder_heads"], d["encoder_ffn"]) == \
        (2, 2, 32, 4, 64)
    assert d["norm"] == norm and positions in d["positions"]
    subs = sublayer_rows(bundle.arch, bundle.model)
    assert [r["attention view"] for r in subs if r["attention view"] != "—"] == [
        "Encoder self-attention", "Decoder masked self-attention", "Cross-attention (decoder → encoder)"]
    assert all(r["module"] in dict(bundle.model.named_modules()) for r in subs if r["module"] != "—")
    assert len(table_rows(d)) == len(d)
    assert len(architecture_figure(d, subs).layout.shapes) >= 7


@pytest.mark.parametrize("name", ["tiny-bart", "tiny-t5"])
def test_norm_placement_matches_the_running_model(load, name):
    """Post-LN: an encoder layer's output *is* its last LayerNorm's output. Pre-LN: it is not."""
    bundle = load(name)
    layer = bundle.model.get_encoder().layers[0] if name != "tiny-t5" else bundle.model.get_encoder().block[0]
    norms = [m for n, m in layer.named_modules() if "norm" in n.lower() or "layer_norm" in n.lower()]
    seen = {}
    h1 = norms[-1].register_forward_hook(lambda m, a, o: seen.__setitem__("norm", o))
    h2 = layer.register_forward_hook(lambda m, a, o: seen.__setitem__("layer", o[0] if isinstance(o, tuple) else o))
    try:
        capture(bundle, SRC)
    finally:
        h1.remove()
        h2.remove()
    same = torch.allclose(seen["norm"], seen["layer"])
    assert same == (describe(bundle.config)["norm"] == "post")


def test_describe_refuses_encoder_only(load):
    with pytest.raises(ValueError, match="not an encoder–decoder"):
        describe(load("tiny-bert").config)


def test_encoder_decoder_names_and_examples():
    names = encoder_decoder_names(builtin_names())
    assert {"tiny-t5", "tiny-bart", "tiny-marian"} <= set(names)
    assert "minilm" not in names and "tiny-bert" not in names and "tiny-gpt2" not in names
    assert set(SHIPPED) <= set(names) and example_source("seq2seq-dates") == "3 March 2021"
    assert example_source("tiny-bart") is None


def run(*args):
    return subprocess.run([sys.executable, "-m", "viz", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_generate_json(load):
    r = run("generate", "--model", "tiny-bart", "--text", "a b c", "--max-new-tokens", "4", "--top-k", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"source_tokens", "output_tokens", "steps"} <= set(out)
    assert out["source_tokens"] == ["[CLS]", "a", "b", "c", "[SEP]"]
    assert len(out["steps"]) == len(out["output_tokens"]) <= 4
    for step in out["steps"]:
        assert {"token", "cross_attention", "top_k"} <= set(step)
        assert len(step["cross_attention"]) == 5 and abs(sum(step["cross_attention"]) - 1) < 1e-3
        assert len(step["top_k"]) == 3 and {"token", "prob"} == set(step["top_k"][0])
    ref = generate(load("tiny-bart"), "a b c", max_new_tokens=4)
    assert out["output_tokens"] == ref.output_tokens


def test_cli_generate_errors():
    r = run("generate", "--model", "minilm", "--text", "hello")
    assert r.returncode == 2 and "Attention page" in r.stderr
    r = run("generate", "--model", "tiny-t5", "--text", " ")
    assert r.returncode == 2 and "empty" in r.stderr


def test_special_tokens_are_escaped_for_plotly():
    """`<s>` would strike through the rest of the axis and `</s>` vanish: plotly reads text as HTML."""
    fig = mask_figure(["<s>", "2021", "</s>"])
    assert list(fig.layout.xaxis.labelalias.values()) == ["&lt;s&gt;", "2021", "&lt;/s&gt;"]


def test_too_long_source_is_truncated_with_a_flag(load):
    bundle = load("seq2seq-dates")
    gen = generate(bundle, "march " * 400, max_new_tokens=3)
    assert gen.truncated and len(gen.source_tokens) == bundle.max_tokens < gen.n_source_tokens


def test_dates_cross_attention_points_at_the_aligned_source_word(load):
    """Step-by-step cross-attention (last layer, mean over heads) on the trained model: the year attends to the
    year, the month number to the month name, the day to the day (the task's known alignment)."""
    gen = generate(load("seq2seq-dates"), "3 March 2021")
    assert gen.output_tokens == ["2021", "-", "03", "-", "03", "</s>"] and gen.finished
    looked_at = [gen.source_tokens[int(s.cross[-1].mean(0).argmax())] for s in gen.steps]
    assert [looked_at[i] for i in (0, 2, 4)] == ["2021", "march", "3"]
