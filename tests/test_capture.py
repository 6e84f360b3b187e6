"""Capture invariants for every supported family (tiny random models) and the real MiniLM."""

import threading

import numpy as np
import pytest
import torch

from viz.capture import CaptureError, capture, hook_count, recording, remove_hooks, install_hooks
from viz.models import TINY_FAMILIES

TEXT = "The quick brown fox jumps over the lazy dog."
FAMILIES = [f"tiny-{f}" for f in TINY_FAMILIES] + ["minilm"]


def reference(bundle, cap):
    """transformers' own eager outputs for the same inputs."""
    inputs = {k: v for k, v in bundle.tokenizer(TEXT, return_tensors="pt").items() if k != "token_type_ids"}
    if bundle.kind == "encoder-decoder":
        inputs["decoder_input_ids"] = torch.tensor(cap.target_ids)[None]
    with torch.inference_mode():
        out = bundle.model(**inputs, output_attentions=True, output_hidden_states=True, use_cache=False)
    if bundle.kind == "encoder-decoder":
        att = {"encoder": out.encoder_attentions, "decoder": out.decoder_attentions, "cross": out.cross_attentions}
        hid = {"encoder": out.encoder_hidden_states, "decoder": out.decoder_hidden_states}
    else:
        stack = bundle.arch.stacks[0]
        att, hid = {stack: out.attentions}, {stack: out.hidden_states}
    stack_np = lambda ts: torch.stack([t[0] for t in ts]).numpy()  # noqa: E731
    return {k: stack_np(v) for k, v in att.items()}, {k: stack_np(v) for k, v in hid.items()}


@pytest.mark.parametrize("name", FAMILIES)
def test_capture_equals_eager_output_attentions(load, name):
    bundle = load(name)
    target = "Der schnelle braune Fuchs." if bundle.kind == "encoder-decoder" else None
    cap = capture(bundle, TEXT, target)
    ref_att, ref_hid = reference(bundle, cap)
    assert set(cap.attentions) == set(ref_att)
    for stack, a in cap.attentions.items():
        np.testing.assert_allclose(a, ref_att[stack], atol=1e-6)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)  # every row is a distribution
        L, H, Q, K = a.shape
        assert L == bundle.n_layers
        q_tok, k_tok = cap.axis_tokens(stack)
        assert (Q, K) == (len(q_tok), len(k_tok))
        assert cap.queries[stack].shape[:3] == (L, H, Q)
        assert cap.keys[stack].shape[:3] == (L, H, K)
    for stack, h in cap.hidden_states.items():
        np.testing.assert_allclose(h, ref_hid[stack], atol=1e-5)
        assert h.shape[0] == bundle.n_layers + 1


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-bart", "tiny-marian", "tiny-gpt2"])
def test_decoder_self_attention_is_causal(load, name):
    bundle = load(name)
    cap = capture(bundle, TEXT, "eins zwei drei vier" if bundle.kind == "encoder-decoder" else None)
    a = cap.attentions["decoder"]
    assert np.abs(np.triu(a, k=1)).max() == 0.0  # no position looks ahead


def test_queries_and_keys_reproduce_bert_attention(load):
    """softmax(q·k / sqrt(d)) from the hooked projections equals the captured weights."""
    bundle = load("minilm")
    cap = capture(bundle, TEXT)
    q, k = cap.queries["encoder"], cap.keys["encoder"]
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, cap.attentions["encoder"], atol=1e-5)


def test_word_spans_merge_pieces(load):
    cap = capture(load("minilm"), "Tokenization is unbelievable")
    words = [cap.tokens[s:e] for s, e in cap.word_spans]
    assert words[0] == ["[CLS]"] and words[-1] == ["[SEP]"]
    assert any(len(w) > 1 and w[1].startswith("##") for w in words)
    assert sum(e - s for s, e in cap.word_spans) == len(cap.tokens)


def test_two_threads_get_their_own_results(load):
    bundle = load("minilm")
    texts = ["A short sentence about cats.", "An entirely different and somewhat longer sentence about ships at sea."]
    expected = [capture(bundle, t).attentions["encoder"] for t in texts]
    results: dict[int, list] = {0: [], 1: []}
    errors = []

    def work(i):
        try:
            for _ in range(6):
                results[i].append(capture(bundle, texts[i]).attentions["encoder"])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    for i in (0, 1):
        assert len(results[i]) == 6
        for got in results[i]:
            np.testing.assert_array_equal(got, expected[i])


def test_no_recording_outside_capture(load):
    """A plain forward (another session, or transformers itself) records nothing."""
    bundle = load("tiny-bert")
    install_hooks(bundle)
    with recording(bundle) as rec:
        pass
    bundle.model(**bundle.tokenizer(TEXT, return_tensors="pt"))
    assert not rec.data


def test_no_hook_left_behind_after_errors(load):
    bundle = load("tiny-bert")
    capture(bundle, TEXT)
    before = hook_count(bundle.model)

    def boom(*_):
        raise RuntimeError("forced failure inside the forward")

    layer = bundle.model.encoder.layer[1]
    handle = layer.register_forward_hook(boom)
    try:
        for _ in range(3):
            with pytest.raises(RuntimeError, match="forced failure"):
                capture(bundle, TEXT)
    finally:
        handle.remove()
    for bad in ("", "   "):
        with pytest.raises(CaptureError):
            capture(bundle, bad)
    assert hook_count(bundle.model) == before  # nothing added per call, nothing stranded
    from viz.capture import _ACTIVE

    assert _ACTIVE.get() is None  # the recorder was reset despite the errors
    assert capture(bundle, TEXT).attentions["encoder"].shape[0] == 2  # and the bundle still works
    remove_hooks(bundle)
    assert hook_count(bundle.model) == 0
    install_hooks(bundle)


def test_long_text_is_truncated_with_notice(load):
    bundle = load("tiny-bert")  # 128 positions
    cap = capture(bundle, "word " * 400)
    assert cap.truncated and cap.n_input_tokens > 128
    assert len(cap.tokens) == bundle.max_tokens == 128
    assert cap.tokens[-1] == "[SEP]"


def test_roberta_limit_respects_position_offset(load):
    bundle = load("tiny-roberta")
    cap = capture(bundle, "word " * 400)
    assert len(cap.tokens) == bundle.max_tokens == 128


def test_encoder_decoder_without_target_uses_own_output(load):
    cap = capture(load("tiny-bart"), TEXT)
    assert cap.target_tokens and cap.attentions["cross"].shape[2:] == (len(cap.target_tokens), len(cap.tokens))
