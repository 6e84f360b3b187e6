"""Attributions of one prediction (viz.causal.attribution*) against references the code under test did not compute:
gradient x input by plain autograd on the full model's logits, occlusion by an explicit loop of forwards,
integrated gradients by captum's IntegratedGradients and LayerIntegratedGradients called here, value zeroing by
plain forward hooks that zero one token's value projection, attention-based scores from an eager copy's
`output_attentions` with rollout by explicit loops. Tiny random models of three kinds (masked LM, decoder,
encoder–decoder) and the shipped minilm-mlm."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients

from viz.causal.attribution import METHODS, attribute
from viz.causal.attribution_attention import attention_scores
from viz.causal.attribution_methods import grad_x_input, integrated_gradients, occlusion
from viz.causal.attribution_target import AttributionError, prepare, token_id
from viz.causal.attribution_vz import value_zeroing
from viz.core.capture import hook_count
from viz.core.recorder import EDIT, RECORDER

CASES = [("tiny-bert-mlm", "the cat sat on the [MASK] near the old door ."),
         ("tiny-llama", "the cat sat on the warm mat by the"),
         ("tiny-bart", "the cat sat on the warm mat")]


# ----------------------------------------------------------------------------- the test's own references
def ref_logits(bundle, problem, ids=None, embeds=None) -> torch.Tensor:
    """Logits at the predicting position from the FULL model (every position's logits, plain forward)."""
    model = bundle.model
    src = {"input_ids": ids} if ids is not None else {"inputs_embeds": embeds}
    if bundle.kind == "encoder":
        return model(**src).logits[:, problem.position].float()
    if bundle.kind == "decoder":
        return model(**src).logits[:, -1].float()
    B = (ids if ids is not None else embeds).shape[0]
    return model(**src, decoder_input_ids=problem.decoder_ids[None].expand(B, -1)).logits[:, -1].float()


def ref_f(problem, lg: torch.Tensor) -> torch.Tensor:
    if problem.foil_id is None:
        return torch.log_softmax(lg, -1)[:, problem.target_id]
    return lg[:, problem.target_id] - lg[:, problem.foil_id]


def replacement(bundle) -> int:
    tok = bundle.tokenizer
    return tok.mask_token_id if bundle.kind == "encoder" else (
        tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


def ref_candidates(bundle, problem) -> list[int]:
    tok = bundle.tokenizer
    special = set(tok.all_special_ids) - {tok.mask_token_id, tok.unk_token_id}
    ids = problem.ids.tolist()
    return [i for i, t in enumerate(ids) if t not in special and t != replacement(bundle)
            and not (bundle.kind == "encoder" and i == problem.position)]


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def case(request, load):
    name, text = request.param
    bundle = load(name)
    return bundle, prepare(bundle, text)


# ----------------------------------------------------------------------------- the prediction
def test_problem_targets_the_models_own_prediction(case):
    bundle, p = case
    with torch.no_grad():
        lg = ref_logits(bundle, p, ids=p.ids[None])[0]
    assert p.target_id == p.predicted_id == int(lg.argmax())
    if bundle.kind == "encoder":
        assert p.ids[p.position] == bundle.tokenizer.mask_token_id
    elif bundle.kind == "decoder":
        assert p.position == p.n - 1
    else:  # the decoder prefix is the start token and model.generate's own greedy output before the step
        out = bundle.model.generate(input_ids=p.ids[None], attention_mask=torch.ones_like(p.ids)[None],
                                    max_new_tokens=20, do_sample=False, num_beams=1)[0, 1:-1].tolist()
        assert p.output_ids[:len(out)] == out  # (the last token: BART forces end-of-text at the length limit)
        assert p.decoder_ids.tolist() == [bundle.model.config.decoder_start_token_id]


def test_decoder_position_cuts_the_context(load):
    bundle = load("tiny-llama")
    full = prepare(bundle, "the cat sat on the mat")
    p = prepare(bundle, "the cat sat on the mat", position=3)
    assert p.position == 3 and p.ids.tolist() == full.ids[:4].tolist()


# ----------------------------------------------------------------------------- gradient x input
@pytest.mark.parametrize("contrast", [False, True])
def test_grad_x_input_equals_plain_autograd(case, contrast):
    bundle, p = case
    if contrast:
        p.foil_id = int(p.target_id + 7)
    ours = grad_x_input(p)
    e = bundle.model.get_input_embeddings()(p.ids[None]).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(ref_f(p, ref_logits(bundle, p, embeds=e)).sum(), e)
    np.testing.assert_allclose(ours, (g * e).sum(-1)[0].detach().double().numpy(), atol=1e-5)
    assert all(q.grad is None for q in bundle.model.parameters())


# ----------------------------------------------------------------------------- occlusion
def test_occlusion_equals_an_explicit_loop(case):
    bundle, p = case
    ours = occlusion(p)
    cands = ref_candidates(bundle, p)
    assert np.flatnonzero(p.candidates).tolist() == cands
    with torch.no_grad():
        fx = float(ref_f(p, ref_logits(bundle, p, ids=p.ids[None]))[0])
        for i in range(p.n):
            if i not in cands:
                assert ours[i] == 0.0
                continue
            ids = p.ids.clone()
            ids[i] = replacement(bundle)
            fi = float(ref_f(p, ref_logits(bundle, p, ids=ids[None]))[0])
            assert abs(ours[i] - (fx - fi)) <= 1e-5, (i, ours[i], fx - fi)


# ----------------------------------------------------------------------------- integrated gradients
def test_integrated_gradients_equal_captum(case):
    bundle, p = case
    steps = 16
    ours = integrated_gradients(p, steps=steps)
    model = bundle.model  # the source's lookup: an encoder–decoder's encoder has its own (tied) module
    emb = model.get_encoder().get_input_embeddings() if bundle.kind == "encoder-decoder" else model.get_input_embeddings()
    base = p.ids.clone()
    base[ref_candidates(bundle, p)] = replacement(bundle)

    def from_embeds(e):
        return ref_f(p, ref_logits(bundle, p, embeds=e))

    def from_ids(ids):
        return ref_f(p, ref_logits(bundle, p, ids=ids))

    ig = IntegratedGradients(from_embeds).attribute(emb(p.ids[None]).detach(), baselines=emb(base[None]).detach(),
                                                    n_steps=steps)
    np.testing.assert_allclose(ours.scores, ig.sum(-1)[0].detach().double().numpy(), atol=1e-5)
    lig = LayerIntegratedGradients(from_ids, emb).attribute(p.ids[None], baselines=base[None], n_steps=steps)
    np.testing.assert_allclose(ours.scores, lig.sum(-1)[0].detach().double().numpy(), atol=1e-5)
    with torch.no_grad():
        fx, fb = ref_f(p, ref_logits(bundle, p, ids=torch.stack([p.ids, base]))).tolist()
    assert ours.f_input == pytest.approx(fx, abs=1e-5) and ours.f_baseline == pytest.approx(fb, abs=1e-5)
    assert ours.gap == pytest.approx(abs(ours.scores.sum() - (fx - fb)), abs=1e-5)
    assert hook_count(bundle.model) == 0


def test_completeness_gap_under_five_percent_on_minilm_mlm(load):
    bundle = load("minilm-mlm")
    for text in ("The capital of France is [MASK].", "She poured a cup of [MASK] and sat down by the window.",
                 "The old fisherman walked slowly along the [MASK] bank of the river, looking for a place."):
        r = integrated_gradients(prepare(bundle, text))  # the default steps
        assert r.relative_gap < 0.05, (text, r.gap, r.f_input - r.f_baseline)


# ----------------------------------------------------------------------------- value zeroing
VALUE_SITES = {  # (module path of layer l's value projection, slice of its output that holds v)
    "tiny-bert-mlm": ("bert.encoder.layer.{l}.attention.self.value", None),
    "tiny-llama": ("model.layers.{l}.self_attn.v_proj", None),
    "tiny-gemma2": ("model.layers.{l}.self_attn.v_proj", None),
    "tiny-gpt2": ("transformer.h.{l}.attn.c_attn", (2, 3)),  # fused [q | k | v]
    "tiny-gpt_neox": ("gpt_neox.layers.{l}.attention.query_key_value", None),
    "tiny-bart": ("model.encoder.layers.{l}.self_attn.v_proj", None),
    "tiny-t5": ("encoder.block.{l}.layer.0.SelfAttention.v", None),
}
CROSS_SITES = {"tiny-bart": "model.decoder.layers.{l}.encoder_attn.v_proj",
               "tiny-t5": "decoder.block.{l}.layer.1.EncDecAttention.v"}
VZ_TEXT = {"tiny-bert-mlm": "the cat sat on the [MASK] near the door .", "tiny-bart": "the cat sat on the mat",
           "tiny-t5": "the cat sat on the mat"}


def zero_rows(j: int, part=None, heads: int = 4):
    """A forward hook zeroing sequence row j of a value projection's output (or the v part of a fused one)."""
    def hook(module, args, out):
        out = out.clone()
        if part is None:
            out[:, j] = 0.0
        elif part == "neox":  # per head [q | k | v]
            o = out.view(out.shape[0], out.shape[1], heads, 3, -1)
            o[:, j, :, 2] = 0.0
        else:
            w = out.shape[-1] // part[1]
            out[:, j, part[0] * w:(part[0] + 1) * w] = 0.0
        return out
    return hook


def cos_dist(a, b):
    return 1.0 - torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def ref_mixing(module, site, part, ids, n_layers, heads):
    """C_l [layer, T, T] by hooks: one forward per (layer, zeroed token), rows normalised."""
    T = ids.shape[1]
    with torch.no_grad():
        clean = module(input_ids=ids, output_hidden_states=True).hidden_states
        C = np.zeros((n_layers, T, T))
        for layer in range(n_layers):
            for j in range(T):
                h = module.get_submodule(site.format(l=layer)).register_forward_hook(zero_rows(j, part, heads))
                try:
                    hs = module(input_ids=ids, output_hidden_states=True).hidden_states
                finally:
                    h.remove()
                C[layer, :, j] = cos_dist(hs[layer + 1][0], clean[layer + 1][0]).numpy()
    return C / C.sum(-1, keepdims=True)


@pytest.mark.parametrize("name", list(VALUE_SITES))
@pytest.mark.parametrize("how", ["recompose", "forward"])
def test_value_zeroing_equals_hooks(load, name, how):
    bundle = load(name)
    p = prepare(bundle, VZ_TEXT.get(name, "the cat sat on the warm mat"))
    site, part = VALUE_SITES[name]
    part = "neox" if name == "tiny-gpt_neox" else part
    model = bundle.model
    module = model.get_encoder() if bundle.kind == "encoder-decoder" else model
    prefix = {"tiny-bart": "model.encoder.", "tiny-t5": "encoder."}.get(name, "")
    L = bundle.stack_layers("encoder" if bundle.kind != "decoder" else "decoder")
    C = ref_mixing(module, site[len(prefix):], part, p.ids[None], L, bundle.n_heads())
    R = np.eye(p.n)
    for layer in range(L):
        R = C[layer] @ R
    ours = value_zeroing(p, how=how)
    np.testing.assert_allclose(ours.mixing, C, atol=1e-5)
    if bundle.kind != "encoder-decoder":
        np.testing.assert_allclose(ours.scores, R[p.position], atol=1e-5)
        return
    with torch.no_grad():  # the step's decoder state with source token j's cross-attention values zeroed
        enc = module(input_ids=p.ids[None])
        dec = dict(encoder_outputs=enc, decoder_input_ids=p.decoder_ids[None], output_hidden_states=True)
        clean = model(**dec).decoder_hidden_states[-1][0, -1]
        c = np.zeros(p.n)
        for j in range(p.n):
            hooks = [model.get_submodule(CROSS_SITES[name].format(l=layer)).register_forward_hook(zero_rows(j))
                     for layer in range(bundle.stack_layers("decoder"))]
            try:
                c[j] = float(cos_dist(model(**dec).decoder_hidden_states[-1][0, -1], clean))
            finally:
                [h.remove() for h in hooks]
    np.testing.assert_allclose(ours.scores, (c / c.sum()) @ R, atol=1e-5)


# ----------------------------------------------------------------------------- attention-based
def eager_attentions(bundle, p):
    ref = copy.deepcopy(bundle.model)
    ref.set_attn_implementation("eager")
    kw = {"decoder_input_ids": p.decoder_ids[None]} if bundle.kind == "encoder-decoder" else {}
    with torch.no_grad():
        return ref(input_ids=p.ids[None], output_attentions=True, **kw)


def explicit_rollout(attns) -> np.ndarray:
    """Abnar & Zuidema: Â_l = renorm(0.5 mean_h A_l + 0.5 I), R = Â_{L-1} ... Â_0, by loops."""
    T = attns[0].shape[-1]
    R = np.eye(T)
    for a in attns:
        m = a[0].double().mean(0).numpy()
        hat = np.zeros((T, T))
        for i in range(T):
            row = 0.5 * m[i] + 0.5 * np.eye(T)[i]
            hat[i] = row / row.sum()
        R = hat @ R
    return R


def test_attention_scores_equal_eager_output_attentions(case):
    bundle, p = case
    ours, notes = attention_scores(p)
    out = eager_attentions(bundle, p)
    if bundle.kind == "encoder-decoder":  # the step's cross-attention row, then through the encoder's rollout
        c = out.cross_attentions[-1][0, :, -1].double().mean(0).numpy()
        rollout = c @ explicit_rollout(out.encoder_attentions)
    else:
        c = out.attentions[-1][0, :, p.position].double().mean(0).numpy()
        rollout = explicit_rollout(out.attentions)[p.position]
    np.testing.assert_allclose(ours["attention"], c, atol=1e-5)
    np.testing.assert_allclose(ours["rollout"], rollout, atol=1e-5)
    assert not notes and np.isfinite(ours["flow"]).all() and np.isfinite(ours["norm"]).all()


def test_norm_based_scores_equal_per_head_vectors(load):
    """‖Σ_h α_h,pj v_j^h W_O^h‖ of the last layer, from the value projection's output (a hook) and the output
    projection's columns, head by head."""
    bundle = load("tiny-bert-mlm")
    p = prepare(bundle, VZ_TEXT["tiny-bert-mlm"])
    ours = attention_scores(p, ["norm"])[0]["norm"]
    out = eager_attentions(bundle, p)
    layer = bundle.model.bert.encoder.layer[-1]
    seen = {}
    h = layer.attention.self.value.register_forward_hook(lambda m, a, o: seen.setdefault("v", o.detach()))
    try:
        with torch.no_grad():
            bundle.model(input_ids=p.ids[None])
    finally:
        h.remove()
    H = 4
    v = seen["v"][0].double()  # [T, H*d]
    d = v.shape[-1] // H
    W = layer.attention.output.dense.weight.detach().double()  # [out, in]
    alpha = out.attentions[-1][0].double()  # [H, T, T]
    ref = np.zeros(p.n)
    for j in range(p.n):
        total = torch.zeros(W.shape[0], dtype=torch.float64)
        for hd in range(H):
            total += alpha[hd, p.position, j] * (W[:, hd * d:(hd + 1) * d] @ v[j, hd * d:(hd + 1) * d])
        ref[j] = float(total.norm())
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- bad input: one sentence
def one_sentence(msg: str) -> bool:
    return "\n" not in msg and msg.endswith(".") and len(msg) < 400


@pytest.mark.parametrize("name, text, kw, says", [
    ("tiny-bert-mlm", "   ", {}, "empty"),
    ("tiny-bert-mlm", "the cat sat on the mat", {}, "No [MASK]"),
    ("tiny-bert-mlm", "the [MASK] sat on the [MASK]", {}, "2 masks"),
    ("tiny-bert-mlm", "the cat sat", {"position": 0}, "special token"),
    ("tiny-bert-mlm", "the cat sat", {"position": 40}, "no position 40"),
    ("tiny-bert-mlm", "the [MASK] sat", {"target": "unbelievableness"}, "split by this tokenizer"),
    ("tiny-bert-mlm", "the [MASK] sat", {"target": "cat", "foil": "cat"}, "the target itself"),
    ("minilm", "the [MASK] sat", {}, "no masked-LM head"),
    ("seq2seq-dates", "3 March 2021", {"position": 30}, "no output position 30"),
    ("seq2seq-dates", "3 March 2021", {"target": "zebra"}, "not in this model's vocabulary"),
    ("tiny-llama", "", {}, "empty"),
])
def test_bad_input_gets_one_sentence(load, name, text, kw, says):
    with pytest.raises(AttributionError) as e:
        prepare(load(name), text, **kw)
    assert says in str(e.value) and one_sentence(str(e.value)), str(e.value)


def test_unknown_method_is_one_sentence(load):
    with pytest.raises(AttributionError) as e:
        attribute(load("tiny-bert-mlm"), "the [MASK] sat", methods="occlusion,shap")
    assert "'shap'" in str(e.value) and "occlusion" in str(e.value) and one_sentence(str(e.value))


def test_targets_resolve_to_single_tokens(load):
    lm, mlm = load("atlas-lm"), load("minilm-mlm")
    vocab = lm.tokenizer.get_vocab()
    assert token_id(lm, "mat") == vocab["Ġmat"]  # a continuation: after a space
    assert token_id(lm, "Ġmat") == vocab["Ġmat"] and token_id(lm, " mat") == vocab["Ġmat"]
    assert token_id(mlm, "Paris") == mlm.tokenizer.convert_tokens_to_ids("paris")
    assert token_id(mlm, "##ing") == mlm.tokenizer.convert_tokens_to_ids("##ing")


# ----------------------------------------------------------------------------- the shared model stays clean
def test_nothing_left_behind_even_after_an_error(load):
    bundle = load("tiny-bert-mlm")
    text = "the cat sat on the [MASK] near the door ."
    before = hook_count(bundle.model)
    with torch.no_grad():
        clean = bundle.model(**bundle.tokenizer(text.replace("[MASK]", "mat"), return_tensors="pt")).logits
    res = attribute(bundle, text, with_faithfulness=True)
    assert list(res.scores) == list(METHODS) and hook_count(bundle.model) == before
    assert EDIT.get() is None and RECORDER.get() is None

    layer = bundle.model.bert.encoder.layer[1].intermediate
    calls = {"n": 0}
    original = layer.forward

    def failing(x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom inside the forward")
        return original(x)

    layer.forward = failing
    p = prepare(bundle, text)
    try:
        for fn in (lambda p: value_zeroing(p, how="forward"), integrated_gradients):
            calls["n"] = 0  # the second forward raises: inside the Edit / inside captum's hooked path
            with pytest.raises(RuntimeError, match="boom"):
                fn(p)
            assert EDIT.get() is None and RECORDER.get() is None and hook_count(bundle.model) == before
    finally:
        del layer.forward
    with torch.no_grad():
        again = bundle.model(**bundle.tokenizer(text.replace("[MASK]", "mat"), return_tensors="pt")).logits
    assert torch.equal(clean, again)
    assert all(q.grad is None for q in bundle.model.parameters())


def test_value_zeroing_edit_is_invisible_to_another_thread(load):
    """While one thread's forward runs with a value-zeroing Edit (held inside layer 0 by a barrier), another
    thread's forward through the same model, overlapping it, gets the unedited output."""
    bundle = load("tiny-bert-mlm")
    p = prepare(bundle, VZ_TEXT["tiny-bert-mlm"])
    barrier = threading.Barrier(2, timeout=30)

    def meet(module, args, output):  # returns None: the output stays
        barrier.wait()

    handle = bundle.model.bert.encoder.layer[0].register_forward_hook(meet)
    from viz.core.recorder import Edit, active

    zero = torch.zeros(1, p.n)
    out, errors = {}, []

    def work(name, edited):
        try:
            with torch.no_grad():
                if edited:
                    with active(EDIT, Edit(n_layers={"encoder": 2}, values={("encoder", 0): zero})):
                        out[name] = bundle.model.bert(input_ids=p.ids[None]).last_hidden_state
                else:
                    out[name] = bundle.model.bert(input_ids=p.ids[None]).last_hidden_state
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=("edited", True)), threading.Thread(target=work, args=("plain", False))]
    try:
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        handle.remove()
    assert not errors
    with torch.no_grad():
        alone = bundle.model.bert(input_ids=p.ids[None]).last_hidden_state
    assert torch.equal(out["plain"], alone) and not torch.allclose(out["edited"], alone)


# ----------------------------------------------------------------------------- the JSON contract
def test_json_holds_every_documented_key(load):
    res = attribute(load("tiny-llama"), "the cat sat on the", methods="grad_x_input,integrated_gradients,occlusion",
                    with_faithfulness=True, ig_steps=8)
    j = res.to_json()
    for key in ("tokens", "target", "foil", "position", "f", "scores", "completeness_gap", "faithfulness", "random",
                "agreement"):
        assert key in j
    assert all(len(v) == len(j["tokens"]) for v in j["scores"].values())
    assert set(j["faithfulness"]) == {"grad_x_input", "integrated_gradients", "occlusion"}
    assert set(j["random"]) >= {"comprehensiveness", "sufficiency"} and j["random"]["spread"]["comprehensiveness"]
    assert j["agreement"]["occlusion"]["occlusion"] == 1.0
    p = res.problem
    with torch.no_grad():
        assert j["f"] == pytest.approx(float(ref_f(p, ref_logits(p.bundle, p, ids=p.ids[None]))[0]), abs=1e-5)
