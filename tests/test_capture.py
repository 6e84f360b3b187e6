"""Capture against an independent reference, for every family (tiny random models) and the real MiniLM.

The reference is a deep copy of the same model switched to transformers' own `eager` attention and run
with `output_attentions=True`: it never calls our attention function. Hidden states of the reference come
from forward hooks on the copy's layers (not from `output_hidden_states`, which is what our run reads), and
selective captures are compared with the same slice of a full one.
"""

import copy
import threading

import numpy as np
import pytest
import torch

from viz.core.capture import CaptureError, CaptureTooLarge, capture, hook_count, recording
from viz.core.models import TINY_FAMILIES
from viz.core.recorder import EDIT, RECORDER

TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat by the door."
FAMILIES = [f"tiny-{f}" for f in TINY_FAMILIES] + ["minilm"]
TARGET = "Der schnelle braune Fuchs springt."


# Where each family keeps its layers (called in order; ALBERT calls its one shared layer once per layer) and
# the norm its last hidden state goes through (pre-LN families report the final norm's output last), per stack.
# Written out here from the module trees, not taken from viz.core.arch.
LAYERS = {"bert": "encoder.layer", "roberta": "encoder.layer", "electra": "encoder.layer",
          "albert": "encoder.albert_layer_groups.0.albert_layers.0", "distilbert": "transformer.layer",
          "modernbert": "layers", "gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers", "opt": "model.decoder.layers",
          "t5": {"encoder": "encoder.block", "decoder": "decoder.block"},
          "bart": {"encoder": "model.encoder.layers", "decoder": "model.decoder.layers"},
          "marian": {"encoder": "model.encoder.layers", "decoder": "model.decoder.layers"}}
FINAL_NORM = {"modernbert": "final_norm", "gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm",
              "opt": "model.decoder.final_layer_norm", "t5": {"encoder": "encoder.final_layer_norm",
                                                             "decoder": "decoder.final_layer_norm"}}
for _family in ("llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3"):
    LAYERS[_family], FINAL_NORM[_family] = "model.layers", "model.norm"


def _per_stack(table, model_type, stack):
    entry = table.get(model_type)
    return entry.get(stack) if isinstance(entry, dict) else entry


def eager_reference(bundle, cap):
    """(attentions, hidden states) by stack from transformers' eager attention on a copy of the model.
    Hidden states come from forward hooks on the copy's layers: the first layer's input, then each layer's
    output, the last one through the final norm where the family has one."""
    model = copy.deepcopy(bundle.model)
    model.set_attn_implementation("eager")
    inputs = {"input_ids": torch.tensor(cap.input_ids)[None]}
    if bundle.kind == "encoder-decoder":
        inputs["decoder_input_ids"] = torch.tensor(cap.target_ids)[None]
    modules = dict(model.named_modules())
    seen, handles = {}, []

    def keep(stack, what):
        def hook(module, args, kwargs, out=None):
            x = out if what != "in" else (args[0] if args else kwargs["hidden_states"])
            seen.setdefault((stack, what), []).append((x[0] if isinstance(x, tuple) else x)[0].detach().clone())
        return hook

    for stack in cap.hidden_states:
        path = _per_stack(LAYERS, bundle.config.model_type, stack)
        layers = modules[path]
        layers = list(layers) if isinstance(layers, torch.nn.ModuleList) else [layers]
        for layer in layers:
            handles.append(layer.register_forward_pre_hook(keep(stack, "in"), with_kwargs=True))
            handles.append(layer.register_forward_hook(keep(stack, "out"), with_kwargs=True))
        norm = _per_stack(FINAL_NORM, bundle.config.model_type, stack)
        if norm:
            handles.append(modules[norm].register_forward_hook(keep(stack, "norm"), with_kwargs=True))
    try:
        with torch.inference_mode():
            out = model(**inputs, output_attentions=True, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    hid = {}
    for stack in cap.hidden_states:
        states = [seen[(stack, "in")][0]] + seen[(stack, "out")]
        if (stack, "norm") in seen:
            states[-1] = seen[(stack, "norm")][-1]
        hid[stack] = torch.stack(states).float().numpy()
    if bundle.kind == "encoder-decoder":
        att = {"encoder": out.encoder_attentions, "decoder": out.decoder_attentions, "cross": out.cross_attentions}
    else:
        att = {bundle.arch.stacks[0]: out.attentions}
    return {k: torch.stack([t[0] for t in v]).float().numpy() for k, v in att.items()}, hid


@pytest.mark.parametrize("name", FAMILIES)
def test_capture_equals_transformers_eager(load, name):
    bundle = load(name)
    cap = capture(bundle, TEXT, TARGET if bundle.kind == "encoder-decoder" else None)
    ref_att, ref_hid = eager_reference(bundle, cap)
    assert set(cap.attentions) == set(ref_att)
    for stack, a in cap.attentions.items():
        np.testing.assert_allclose(a, ref_att[stack], atol=1e-5)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)  # every row is a distribution
        L, H, Q, K = a.shape
        assert L == bundle.stack_layers(stack) and H == bundle.n_heads(stack)
        q_tok, k_tok = cap.axis_tokens(stack)
        assert (Q, K) == (len(q_tok), len(k_tok))
        assert cap.layers[stack] == list(range(L)) and cap.rows[stack] == list(range(Q))
        assert cap.queries[stack].shape[:3] == (L, H, Q)
        kv = cap.keys[stack].shape[1]
        assert cap.keys[stack].shape[:3] == (L, kv, K) and H % kv == 0
        np.testing.assert_array_equal(cap.kv_heads[stack], np.arange(H) // (H // kv))
    for stack, h in cap.hidden_states.items():
        np.testing.assert_allclose(h, ref_hid[stack], atol=1e-4)
        assert h.shape[0] == bundle.stack_layers(stack) + 1


@pytest.mark.parametrize("name", FAMILIES)
def test_selected_layers_and_rows_equal_the_slice_of_a_full_capture(load, name):
    bundle = load(name)
    target = TARGET if bundle.kind == "encoder-decoder" else None
    full = capture(bundle, TEXT, target, with_logits=True)
    part = capture(bundle, TEXT, target, layers=[-1, 0], rows=[-1, 3], with_logits=True)
    for stack in full.attentions:
        L, Q = full.attentions[stack].shape[0], full.attentions[stack].shape[2]
        assert part.layers[stack] == sorted({0, L - 1}) and part.rows[stack] == [3, Q - 1]
        want = full.attentions[stack][part.layers[stack]][:, :, part.rows[stack]]
        assert part.attentions[stack].shape == want.shape
        np.testing.assert_allclose(part.attentions[stack], want, atol=1e-5)
        np.testing.assert_allclose(part.queries[stack], full.queries[stack][part.layers[stack]][:, :, part.rows[stack]],
                                   atol=1e-5)
        np.testing.assert_allclose(part.keys[stack], full.keys[stack][part.layers[stack]], atol=1e-5)
        np.testing.assert_allclose(part.first_share[stack], want[..., 0].mean(-1), atol=1e-5)  # over the kept rows
    for stack, h in full.hidden_states.items():
        np.testing.assert_allclose(part.hidden_states[stack], h[:, part.rows[stack]], atol=1e-4)
    if full.logits is not None:
        out_stack = "encoder" if bundle.kind == "encoder" else "decoder"
        np.testing.assert_allclose(part.logits, full.logits[part.rows[out_stack]], atol=1e-4)


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-bart", "tiny-marian", "tiny-gpt2", "tiny-llama", "tiny-opt",
                                  "tiny-gpt_neox"])
def test_decoder_self_attention_is_causal(load, name):
    bundle = load(name)
    cap = capture(bundle, TEXT, "eins zwei drei vier" if bundle.kind == "encoder-decoder" else None)
    a = cap.attentions["decoder"]
    assert np.abs(np.triu(a, k=1)).max() == 0.0  # no position looks ahead


@pytest.mark.parametrize("name,window,layers", [("tiny-mistral", 8, [0, 1]), ("tiny-gemma2", 8, [0]),
                                                ("tiny-modernbert", 8, [1])])
def test_sliding_window_layers_see_only_their_window(load, name, window, layers):
    """Mistral (every layer), Gemma 2 (even layers) and ModernBERT (local layers) mask keys outside the window,
    and the other layers do not: the window is really on, and really per layer."""
    bundle = load(name)
    a = capture(bundle, TEXT).attentions[bundle.arch.stacks[0]]
    T = a.shape[-1]
    assert T > window + 4
    q, k = np.indices((T, T))
    far = (q - k >= window) if bundle.kind == "decoder" else (np.abs(q - k) > window // 2)
    for layer in range(a.shape[0]):
        outside = a[layer][:, far].max()
        assert (outside == 0.0) == (layer in layers), (layer, outside)


def test_gemma2_soft_capping_is_applied(load):
    """With a tight cap (0.05) the capped scores differ from uncapped ones: our capture equals eager with
    the cap, and not eager without it — the family's own eager math (its soft-capping) is what runs."""
    from viz.core.models import ModelBundle

    base = load("tiny-gemma2")

    def with_cap(model, cap):
        model = copy.deepcopy(model)
        for m in model.modules():
            if hasattr(m, "attn_logit_softcapping"):
                m.attn_logit_softcapping = cap
        return model

    bundle = ModelBundle("capped", with_cap(base.model, 0.05), base.tokenizer, base.arch)
    cap = capture(bundle, TEXT)
    ids = torch.tensor(cap.input_ids)[None]

    def eager(model):
        model.set_attn_implementation("eager")
        with torch.inference_mode():
            return torch.stack([a[0] for a in model(input_ids=ids, output_attentions=True).attentions]).numpy()

    np.testing.assert_allclose(cap.attentions["decoder"], eager(with_cap(base.model, 0.05)), atol=1e-5)
    assert np.abs(cap.attentions["decoder"] - eager(with_cap(base.model, None))).max() > 1e-3  # 100x the tolerance above


def test_gqa_query_heads_of_one_group_read_the_same_keys(load):
    bundle = load("tiny-llama")  # 4 query heads over 2 key/value heads
    cap = capture(bundle, TEXT, layers=[0])
    assert cap.keys["decoder"].shape[1] == 2 and list(cap.kv_heads["decoder"]) == [0, 0, 1, 1]
    q, k = cap.queries["decoder"][0], cap.keys["decoder"][0]  # [head, T, d], [kv, T, d]
    T, d = q.shape[1], q.shape[2]
    for h in range(4):
        scores = q[h] @ k[cap.kv_heads["decoder"][h]].T / np.sqrt(d) + np.triu(np.full((T, T), -np.inf), 1)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        np.testing.assert_allclose(p / p.sum(-1, keepdims=True), cap.attentions["decoder"][0, h], atol=1e-5)


def test_first_share_and_thumbnails_are_what_the_weights_say(load):
    bundle = load("minilm")
    cap = capture(bundle, TEXT, pool=8)
    a = cap.attentions["encoder"]
    np.testing.assert_allclose(cap.first_share["encoder"], a[:, :, 1:, 0].mean(-1), atol=1e-6)
    T = a.shape[-1]
    edges = [(i * T) // 8 for i in range(9)]  # adaptive pooling bins (start floor, end ceil)
    ends = [-(-((i + 1) * T) // 8) for i in range(8)]
    for i in range(8):
        for j in range(8):
            want = a[:, :, edges[i]:ends[i], edges[j]:ends[j]].mean((-1, -2))
            np.testing.assert_allclose(cap.thumbnails["encoder"][:, :, i, j], want, atol=1e-6)
    slim = capture(bundle, TEXT, pool=8, weights=False, qkv=False)
    assert not slim.attentions and not slim.queries
    np.testing.assert_allclose(slim.thumbnails["encoder"], cap.thumbnails["encoder"], atol=1e-6)
    np.testing.assert_allclose(slim.first_share["encoder"], a[:, :, 1:, 0].mean(-1), atol=1e-6)  # per layer


def test_queries_and_keys_reproduce_bert_attention(load):
    """softmax(q·k / sqrt(d)) from the captured q and k equals the captured weights."""
    cap = capture(load("minilm"), TEXT)
    q, k = cap.queries["encoder"], cap.keys["encoder"]
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(-1, keepdims=True), cap.attentions["encoder"], atol=1e-5)


def test_unknown_words_are_content_not_special(load):
    """An emoji becomes [UNK]: it stands for a word the user typed, so "hide special tokens" must keep it."""
    cap = capture(load("minilm"), "I love 🦜 parrots")
    assert "[UNK]" in cap.tokens
    special = dict(zip(cap.tokens, cap.special))
    assert special["[CLS]"] and special["[SEP]"] and not special["[UNK]"]


def test_word_spans_merge_pieces(load):
    cap = capture(load("minilm"), "Tokenization is unbelievable")
    words = [cap.tokens[s:e] for s, e in cap.word_spans]
    assert words[0] == ["[CLS]"] and words[-1] == ["[SEP]"]
    assert any(len(w) > 1 and w[1].startswith("##") for w in words)
    assert sum(e - s for s, e in cap.word_spans) == len(cap.tokens)


def test_overlapping_forwards_in_two_threads_get_their_own_tensors(load):
    """No bundle lock here: a barrier inside layer 0 holds both forwards mid-way until the other has
    started, so they truly overlap. A process-global recorder would mix the two texts' tensors."""
    bundle = load("tiny-bert")
    texts = ["A short one.", "An entirely different and somewhat longer sentence about ships at sea."]
    inputs = [bundle.tokenizer(t, return_tensors="pt") for t in texts]
    barrier = threading.Barrier(2, timeout=30)
    met = []

    def wait_for_other(module, args, output):
        met.append(barrier.wait())

    handle = bundle.model.encoder.layer[0].register_forward_hook(wait_for_other)
    results, errors = {}, []

    def work(i):
        try:
            with torch.inference_mode(), recording(bundle) as rec:
                bundle.model(input_ids=inputs[i]["input_ids"])
            results[i] = rec
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    try:
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        handle.remove()
    assert not errors and len(met) == 2  # both forwards were inside layer 0 at once
    for i in (0, 1):
        T = inputs[i]["input_ids"].shape[1]
        attn = results[i].data[("encoder", "attn")]
        assert len(attn) == 2 and all(a.shape == (1, 4, T, T) for a in attn)
        assert results[i].recorded["encoder"] == [0, 1]
    alone = capture(bundle, texts[1]).attentions["encoder"]
    np.testing.assert_allclose(torch.stack([a[0] for a in results[1].data[("encoder", "attn")]]).numpy(), alone,
                               atol=1e-6)


def test_no_recording_outside_capture(load):
    """A plain forward (another session, or transformers itself) records nothing."""
    bundle = load("tiny-bert")
    with recording(bundle) as rec:
        pass
    bundle.model(**bundle.tokenizer(TEXT, return_tensors="pt"))
    assert not rec.data and RECORDER.get() is None


def test_nothing_left_behind_after_errors_inside_the_forward(load):
    """Captum's hook-removal test, for ContextVars: errors raised inside the forward reset everything."""
    from viz.core.interventions import Intervention, applied

    bundle = load("tiny-bert")
    capture(bundle, TEXT)
    before = hook_count(bundle.model)

    def boom(*_):
        raise RuntimeError("forced failure inside the forward")

    handle = bundle.model.encoder.layer[1].register_forward_hook(boom)
    try:
        for iv in (None, Intervention(ablate=frozenset({(0, 1)})), Intervention(causal=True)):
            with pytest.raises(RuntimeError, match="forced failure"):
                capture(bundle, TEXT, intervention=iv)
            assert RECORDER.get() is None and EDIT.get() is None
        with pytest.raises(RuntimeError, match="forced failure"), applied(bundle, Intervention(causal=True)):
            bundle.model(**bundle.tokenizer(TEXT, return_tensors="pt"))
    finally:
        handle.remove()
    assert RECORDER.get() is None and EDIT.get() is None
    for bad in ("", "   "):
        with pytest.raises(CaptureError):
            capture(bundle, bad)
    assert hook_count(bundle.model) == before  # capture adds no hooks at all
    plain = capture(bundle, TEXT).attentions["encoder"]  # and the bundle still works, with no edit left over
    assert np.abs(np.triu(plain[0], 1)).max() > 0


def test_bad_layers_and_rows_get_a_message(load):
    bundle = load("tiny-bert")
    with pytest.raises(CaptureError, match="no layer 5"):
        capture(bundle, TEXT, layers=[5])
    with pytest.raises(CaptureError, match="no position -99"):
        capture(bundle, TEXT, rows=[-99])
    with pytest.raises(CaptureError, match="No layer chosen"):
        capture(bundle, TEXT, layers=[])


def test_memory_guard_refuses_with_advice_and_lets_a_narrow_request_through(load, monkeypatch):
    bundle = load("tiny-llama")
    text = "word " * 200
    full = capture(bundle, text)
    full_bytes = sum(a.nbytes for a in full.attentions.values())
    monkeypatch.setenv("VIZ_CAPTURE_MB", str(full_bytes / 2**20 / 4))
    with pytest.raises(CaptureTooLarge) as e:
        capture(bundle, text)
    msg = str(e.value)
    assert "--layers" in msg and "--rows -1" in msg and "VIZ_CAPTURE_MB" in msg
    narrow = capture(bundle, text, layers=[-1], rows=[-1], qkv=False)
    np.testing.assert_allclose(narrow.attentions["decoder"][0, :, 0], full.attentions["decoder"][-1, :, -1], atol=1e-5)


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


@pytest.mark.parametrize("name", ["minilm", "tiny-t5", "tiny-gemma2", "tiny-llama", "tiny-mistral", "tiny-modernbert",
                                  "tiny-gpt2", "tiny-bart", "tiny-gpt_neox"])
def test_details_recompose_the_weights_from_q_and_k(load, name):
    """softmax(cap(q·k·scaling) + bias + mask) from what `details=True` keeps equals the captured weights:
    scaling (T5: none), soft-capping (Gemma 2), relative bias (T5), sliding windows and causal masks."""
    bundle = load(name)
    cap = capture(bundle, TEXT, details=True, rows=[0, 5, -1])
    for stack, a in cap.attentions.items():
        s = np.einsum("lhqd,lhkd->lhqk", cap.queries[stack].astype(np.float64), cap.head_keys(stack).astype(np.float64))
        s *= cap.scaling[stack][:, None, None, None]
        for layer, c in enumerate(cap.softcap[stack]):
            if not np.isnan(c):
                s[layer] = np.tanh(s[layer] / c) * c
        s = s + cap.score_bias.get(stack, 0.0) + cap.masks[stack][:, None]
        p = np.exp(s - s.max(-1, keepdims=True))
        np.testing.assert_allclose(p / p.sum(-1, keepdims=True), a, atol=1e-5)
        if bundle.kind != "encoder" and stack == "decoder":  # the causal mask is there, exactly above the diagonal
            rows = np.array(cap.rows[stack])
            ahead = np.arange(a.shape[-1])[None, :] > rows[:, None]
            assert np.isneginf(cap.masks[stack][:, ahead]).all()
