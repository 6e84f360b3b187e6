"""Exact patching and path patching against TransformerLens (transformer-lens 4.3, test-only) on the same
weights: a tiny GPT-2 and a tiny Llama (grouped key/value heads) saved to a folder, loaded once by us and once
by `TransformerBridge.boot_transformers` (TL v4 has no HookedTransformer; the bridge wraps the Hugging Face
model with raw weights, no LayerNorm folding, so its numbers are the model's own). TL's own sweeps
(`get_act_patch_resid_pre`, `…_attn_out`, `…_mlp_out`, `…_attn_head_out_all_pos`, `…_attn_head_out_by_pos`,
`…_attn_head_pattern_all_pos`, `get_act_patch_direct_path`) are normalised with TL's own clean and corrupted
metrics. TL refuses key/value direct paths on grouped heads; there an explicit-hook reference stands in.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf

from viz.core.arch import arch_for
from viz.causal.patching import sweep
from viz.causal.path_patching import path_patch
from viz.causal.task import make_task
from viz.core.models import ModelBundle, minilm_dir

import transformer_lens.patching as P  # requirements-test.txt: a missing reference fails, it does not skip
from transformer_lens.model_bridge import TransformerBridge

CONFIGS = {
    "gpt2": (tf.GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=128, vocab_size=30522, initializer_range=0.3),
             tf.GPT2LMHeadModel),
    "llama": (tf.LlamaConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=128, max_position_embeddings=256, vocab_size=30522,
                             initializer_range=0.3), tf.LlamaForCausalLM),
}
TL_SWEEPS = {"resid_pre": "get_act_patch_resid_pre", "attn_out": "get_act_patch_attn_out",
             "mlp_out": "get_act_patch_mlp_out", "head": "get_act_patch_attn_head_out_all_pos",
             "head_pos": "get_act_patch_attn_head_out_by_pos", "pattern": "get_act_patch_attn_head_pattern_all_pos"}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    cfg, cls = CONFIGS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    cls(cfg).eval().save_pretrained(folder)
    tok = tf.AutoTokenizer.from_pretrained(minilm_dir())
    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu", dtype=torch.float32, tokenizer=tok)
    bridge.eval()
    ours = cls.from_pretrained(folder, attn_implementation="eager").eval()
    bundle = ModelBundle(f"tl-{request.param}", ours, tok, arch_for(cfg.model_type))
    task = make_task(bundle, "the cat sat on the mat", "the dog sat on the mat")
    clean, corrupt = torch.tensor([task.clean_ids]), torch.tensor([task.corrupt_ids])
    _, clean_cache = bridge.run_with_cache(clean)
    _, corrupt_cache = bridge.run_with_cache(corrupt)

    def metric(logits):
        return logits[0, -1, task.target] - logits[0, -1, task.foil]

    with torch.inference_mode():
        m_clean, m_corrupt = float(metric(bridge(clean))), float(metric(bridge(corrupt)))
    assert abs(m_clean - task.metric_clean) < 1e-4 and abs(m_corrupt - task.metric_corrupt) < 1e-4
    assert abs(m_clean - m_corrupt) > 0.25  # a real difference to restore (the normalisation divides by it)

    def norm(x):
        return (np.asarray(x, dtype=np.float64) - m_corrupt) / (m_clean - m_corrupt)

    return dict(name=request.param, bundle=bundle, task=task, bridge=bridge, clean_cache=clean_cache,
                corrupt_cache=corrupt_cache, corrupt=corrupt, metric=metric, norm=norm, ours=ours)


@pytest.mark.parametrize("site", sorted(TL_SWEEPS))
def test_sweeps_match_transformer_lens(pair, site):
    ref = getattr(P, TL_SWEEPS[site])(pair["bridge"], pair["corrupt"], pair["clean_cache"], pair["metric"])
    want = pair["norm"](ref.detach().numpy())
    if site == "head_pos":  # TL: [layer, pos, head]; ours [layer, head, pos]
        want = want.transpose(0, 2, 1)
    got = sweep(pair["bundle"], pair["task"], site).effect
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()
    assert np.abs(want).max() > 0.1  # the sweep found something to compare
    if site == "resid_pre":  # every position of layer 0 carries the whole input: position by position
        changed = [i for i, (a, b) in enumerate(zip(pair["task"].clean_ids, pair["task"].corrupt_ids)) if a != b]
        assert np.allclose(got[0, changed], 1.0, atol=1e-5) and np.abs(np.delete(got[0], changed)).max() < 1e-5


@pytest.mark.parametrize("component", ["q", "k", "v"])
def test_path_patching_matches_transformer_lens(pair, component):
    grouped = pair["name"] == "llama" and component != "q"
    res = path_patch(pair["bundle"], pair["task"], component)
    L = pair["bundle"].stack_layers("decoder")
    checked = 0
    for i, (sl, sh) in enumerate(res.senders):
        if grouped:
            want = {(rl, g): explicit_kv_path(pair, component, sl, sh, rl, g) for rl, g in res.receivers if rl > sl}
        else:
            ref = P.get_act_patch_direct_path(pair["bridge"], pair["corrupt"], pair["clean_cache"], pair["corrupt_cache"],
                                              pair["metric"], sl, sh, component, verbose=False)
            want = {(rl, rh): float(ref[rl, rh]) for rl, rh in res.receivers if rl > sl}
        for j, cell in enumerate(res.receivers):
            if cell in want:
                assert abs(res.effect[i, j] - pair["norm"](want[cell])) <= 1e-4, (cell, (sl, sh))
                checked += 1
            else:
                assert np.isnan(res.effect[i, j])  # no path from a later or equal layer
    assert checked == sum(1 for sl, _ in res.senders for rl, _ in res.receivers if rl > sl) > 0
    assert np.nanmax(np.abs(res.effect)) > 0.01
    assert L == 3


def explicit_kv_path(pair, component, sl, sh, rl, g):
    """Llama, grouped heads (TL refuses): sender (sl, sh) into key/value head g of layer rl, with plain hooks on a
    second copy of the weights: δ = o_proj(z with only head sh's clean−corrupted change) − o_proj(0), then
    {k,v}_proj(input_layernorm(resid_corrupt[rl] + δ)) replaces head g's slice of that projection's output."""
    import copy

    model = copy.deepcopy(pair["ours"])
    model.set_attn_implementation("eager")
    layers, task = model.model.layers, pair["task"]
    H = model.config.num_attention_heads

    def run(ids, hooks):
        handles = [h() for h in hooks]
        try:
            with torch.inference_mode():
                return model(input_ids=torch.tensor([ids])).logits[0, -1]
        finally:
            for h in handles:
                h.remove()

    kept = {}
    z_hook = lambda key: (lambda: layers[sl].self_attn.o_proj.register_forward_pre_hook(
        lambda m, a: kept.__setitem__(key, a[0][0].clone())))
    r_hook = lambda: layers[rl].register_forward_pre_hook(lambda m, a, kw: kept.__setitem__("resid", (
        a[0] if a else kw["hidden_states"])[0].clone()), with_kwargs=True)
    run(task.clean_ids, [z_hook("clean")])
    run(task.corrupt_ids, [z_hook("corrupt"), r_hook])
    with torch.inference_mode():
        T, d = kept["clean"].shape[0], kept["clean"].shape[1] // H
        delta = torch.zeros_like(kept["clean"])
        cols = slice(sh * d, (sh + 1) * d)
        delta[:, cols] = kept["clean"][:, cols] - kept["corrupt"][:, cols]
        o = layers[sl].self_attn.o_proj
        write = o(delta) - o(torch.zeros_like(delta))
        proj = getattr(layers[rl].self_attn, f"{component}_proj")
        new = proj(layers[rl].input_layernorm(kept["resid"] + write))  # [T, KV * d]

    def put(m, a, out):
        out = out.clone()
        out[0, :, g * d:(g + 1) * d] = new[:, g * d:(g + 1) * d]
        return out

    logits = run(task.corrupt_ids, [lambda: proj.register_forward_hook(put)])
    return float(logits[task.target] - logits[task.foil])
