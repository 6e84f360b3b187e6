"""Contributions of every sublayer's parts (viz.causal.contributions, viz.causal.routes_parts).

References written here, never the code under test:
- the model's own residual streams, read with plain forward hooks on the modules where each sum is
  materialised (the input of the norm that follows it, or the layer's output), in a forward of its own;
- the parts α_ij^h · v_j^h · W_O^h built with explicit loops from the capture's weights and values and the
  output projection's weight sliced here, per head;
- contributions max(ε, ‖y‖₁ − ‖y − z‖₁) / Σ computed part by part in float64 (Ferrando & Voita 2024).
Every tiny family (pre-LN decoders, post-LN encoders, encoder–decoders with cross-attention, GQA, Gemma 2's
norms after each sublayer, GPT-NeoX's parallel block) and the real MiniLM.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from viz.core.capture import capture
from viz.causal.contributions import EPS, attention_contributions
from viz.causal.routes import block_contributions, table
from viz.causal.routes_parts import Parts, stacks_of
from viz.inside.recipes import layer_module, recipe_for
from viz.core.models import TINY_FAMILIES

TEXT = "The cat sat on the mat because it was tired."
MODELS = [f"tiny-{f}" for f in TINY_FAMILIES] + ["minilm"]


# ----------------------------------------------------------------------------------------------- references
def model_residuals(bundle, cap, stack: str) -> dict[tuple[int, int], np.ndarray]:
    """(layer, sublayer index) -> the model's own y [T, D] (the stream right after that sublayer's residual add,
    before any post-LN norm), read with forward hooks in a forward of its own."""
    recipe = recipe_for(bundle.config, stack)
    n = bundle.stack_layers(stack)
    mods = [layer_module(bundle.model, recipe, l, n)[0] for l in range(n)]
    seen: dict[int, list] = {}
    handles = []

    def keep(m, where, value):
        value = value if value.dim() == 2 else value[0]  # OPT flattens [batch, T, D] to [batch * T, D] there
        seen.setdefault((id(m), where), []).append(value.detach().float().numpy().copy())

    def hook_in(m, args, kwargs=None):
        keep(m, "in", args[0] if args else next(iter(kwargs.values())))

    def hook_out(m, args, out):
        keep(m, "out", out[0] if isinstance(out, tuple) else out)

    plan = {}  # (layer, sub) -> (module, "in"|"out", plus) where plus = (module of a second term) for parallel
    for l, mod in enumerate(mods):
        for s, sub in enumerate(recipe.sublayers):
            if sub.add_norm:
                plan[(l, s)] = (mod.get_submodule(sub.add_norm), "in", None)
            elif recipe.parallel and s == 0:  # x + attn is never materialised: the layer input plus attn's output
                plan[(l, s)] = (mod, "in", mod.get_submodule(sub.attn.module))
            elif s < len(recipe.sublayers) - 1:
                plan[(l, s)] = (mod.get_submodule(recipe.sublayers[s + 1].pre_norm), "in", None)
            else:
                plan[(l, s)] = (mod, "out", None)
    hooked = set()
    for m, where, plus in plan.values():
        for mm, w in ((m, where), (plus, "out")):
            if mm is None or (id(mm), w) in hooked:
                continue
            hooked.add((id(mm), w))
            handles.append(mm.register_forward_pre_hook(hook_in, with_kwargs=True) if w == "in"
                           else mm.register_forward_hook(hook_out))
    try:
        inputs = {"input_ids": torch.as_tensor(cap.input_ids)[None]}
        if cap.target_ids is not None:
            inputs["decoder_input_ids"] = torch.as_tensor(cap.target_ids)[None]
        with torch.inference_mode():
            bundle.model(**inputs, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    calls: dict[int, int] = {}
    out = {}
    for (l, s), (m, where, plus) in sorted(plan.items()):
        # a shared module (ALBERT) is called once per layer: its l-th call; T5's self-attention also runs
        # under the encoder and decoder; only this stack's modules are hooked
        uses = [ll for ll, mm in enumerate(mods) if mm is mods[l]]
        k = uses.index(l)
        y = seen[(id(m), where)][k]
        if plus is not None:
            y = y + seen[(id(plus), "out")][k]
        out[(l, s)] = y
    return out


def slices_of_output_projection(bundle, stack: str, layer: int, attn, H: int) -> tuple[np.ndarray, np.ndarray]:
    """W_O^h [H, d, D] and b_O [D] read from the projection's weight here (Linear: [out, in]; Conv1D: [in, out])."""
    mod = layer_module(bundle.model, recipe_for(bundle.config, stack), layer, bundle.stack_layers(stack))[0]
    proj = mod.get_submodule(attn.out)
    w = proj.weight.detach().double().numpy()
    w = w if type(proj).__name__ == "Conv1D" else w.T  # [in, out]
    b = proj.bias.detach().double().numpy() if getattr(proj, "bias", None) is not None else np.zeros(w.shape[1])
    return np.stack([w[h * (w.shape[0] // H):(h + 1) * (w.shape[0] // H)] for h in range(H)]), b


def model_resid(bundle, p: Parts, own: dict, layer: int, s: int) -> np.ndarray:
    """The residual entering sublayer s, from the model's own numbers: the block input (hidden_states[l]), the
    previous y (pre-LN), the previous y through the model's own norm (post-LN), x + attn (parallel)."""
    if s == 0:
        return p.cap.hidden_states[p.stack][layer]
    if p.recipe.parallel:
        return own[(layer, 0)]
    prev = p.recipe.sublayers[s - 1]
    if not prev.add_norm:
        return own[(layer, s - 1)]
    mod = layer_module(bundle.model, p.recipe, layer, p.n_layers)[0]
    with torch.inference_mode():
        return mod.get_submodule(prev.add_norm)(torch.from_numpy(own[(layer, s - 1)])).numpy()


def loop_contributions(y: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    raw = np.array([max(EPS, np.abs(y).sum() - np.abs(y - z).sum()) for z in parts])
    return raw / raw.sum()


@pytest.fixture(scope="module", params=MODELS)
def decomposed(request, load):
    bundle = load(request.param)
    cap = capture(bundle, TEXT, qkv=True)
    return bundle, cap, {s: Parts(bundle, cap, s) for s in stacks_of(bundle)}


# ----------------------------------------------------------------------------------------------- tests
def test_parts_sum_to_the_models_own_residual(decomposed):
    """resid + Σ_h,j α v W_O (+ the output bias, after Gemma 2's norm gain) = the model's y, every sublayer."""
    bundle, cap, parts = decomposed
    for stack, p in parts.items():
        own = model_residuals(bundle, cap, stack)
        T = p.hidden.shape[1]
        for layer in range(p.n_layers):
            subs = p.block(layer, range(T))
            assert p.check(layer, subs) <= 1e-4, (stack, layer)  # the recomposed block = hidden_states[l + 1]
            for s, sub in enumerate(subs):
                y = own[(layer, s)]
                whole = sub.resid.double().numpy()
                if sub.kind == "ffn":
                    whole = whole + sub.out.double().numpy()
                else:
                    parts_sum = np.einsum("hik,hkd->id", sub.alpha.double().numpy(), sub.f.double().numpy())
                    if sub.gain is not None:
                        parts_sum = parts_sum * sub.gain.double().numpy()
                    whole = whole + parts_sum + sub.bias.double().numpy()
                scale = max(1.0, float(np.abs(y).max()))
                assert np.abs(whole - y).max() <= 1e-5 * scale, (bundle.name, stack, layer, sub.kind)
                assert np.abs(sub.whole.double().numpy() - y).max() <= 1e-5 * scale


def test_contributions_equal_explicit_loops_over_heads_and_keys(decomposed):
    """Every (query, head, key) part rebuilt here from α, v and the sliced W_O; y and the residual from hooks."""
    bundle, cap, parts = decomposed
    for stack, p in parts.items():
        own = model_residuals(bundle, cap, stack)
        T = p.hidden.shape[1]
        for layer in range(p.n_layers):
            c, subs = block_contributions(p, layer, range(T))
            for s, sub in enumerate(subs):
                y = own[(layer, s)].astype(np.float64)
                resid = model_resid(bundle, p, own, layer, s).astype(np.float64)
                if sub.kind == "ffn":
                    for i in range(T):
                        ref = loop_contributions(y[i], [y[i] - resid[i], resid[i]])
                        assert abs(float(c.ffn[i]) - ref[0]) <= 1e-5 and abs(float(c.residual["ffn"][i]) - ref[1]) <= 1e-5
                    continue
                attn_stack = "cross" if sub.kind == "cross" else stack
                alpha = cap.attentions[attn_stack][layer].astype(np.float64)  # [H, T, K]
                values = cap.head_values(attn_stack)[layer].astype(np.float64)  # [H, K, d]
                H, _, K = alpha.shape
                w_o, b_o = slices_of_output_projection(bundle, stack, layer, p.recipe.sublayers[s].attn, H)
                post = p.recipe.sublayers[s].post_norm
                for i in range(T):
                    gain = None
                    if post:  # Gemma 2's RMSNorm after the sublayer: x (1 + w) / sqrt(mean(x²) + eps)
                        o = sum(alpha[h, i, j] * (values[h, j] @ w_o[h]) for h in range(H) for j in range(K)) + b_o
                        norm = layer_module(bundle.model, p.recipe, layer, p.n_layers)[0].get_submodule(post)
                        assert type(norm).__name__ == "Gemma2RMSNorm"
                        gain = (1.0 + norm.weight.detach().double().numpy()) / np.sqrt((o ** 2).mean() + norm.eps)
                    zs = []
                    for h in range(H):
                        for j in range(K):
                            z = alpha[h, i, j] * (values[h, j] @ w_o[h])
                            zs.append(z if gain is None else z * gain[i])
                    ref = loop_contributions(y[i], zs + [resid[i]])
                    got = c.attention[sub.kind][i].numpy().T.reshape(-1)  # [K, H] -> h-major like `zs`
                    assert np.abs(got - ref[:-1]).max() <= 1e-5, (bundle.name, stack, layer, sub.kind, i)
                    assert abs(float(c.residual[sub.kind][i]) - ref[-1]) <= 1e-5


def test_contributions_sum_to_one_and_the_table_matches_the_blocks(decomposed):
    bundle, cap, parts = decomposed
    for stack, p in parts.items():
        t = table(p)
        kinds = [k for k in ("attention", "cross") if k in t]
        assert kinds == [k for k in p.kinds if k != "ffn"]
        for kind in kinds:
            np.testing.assert_allclose(t[kind].sum((2, 3)) + t[f"residual_{kind}"], 1.0, atol=1e-5)
        np.testing.assert_allclose(t["ffn"] + t["residual_ffn"], 1.0, atol=1e-6)
        # a route's rows are decomposed alone: the same numbers as the whole table's
        c, _ = block_contributions(p, 0, [1, 3])
        np.testing.assert_allclose(c.attention["attention"].numpy(), t["attention"][0, [1, 3]], atol=1e-6)


def test_keys_nobody_attends_to_get_epsilon_exactly_and_chunks_do_not_matter():
    """A causal row's later keys are skipped (α = 0 -> raw ε); chunking of rows changes nothing."""
    g = torch.Generator().manual_seed(0)
    H, T, D = 3, 9, 16
    f = torch.randn(H, T, D, generator=g)
    alpha = torch.rand(H, T, T, generator=g).tril()
    alpha = alpha / alpha.sum(-1, keepdim=True)
    resid = torch.randn(T, D, generator=g)
    y = resid + torch.einsum("hik,hkd->id", alpha, f)
    heads, res = attention_contributions(y, resid, alpha, f)
    tiny, _ = attention_contributions(y, resid, alpha, f, chunk_mb=1e-6)  # one row per chunk
    np.testing.assert_allclose(heads.numpy(), tiny.numpy(), atol=1e-7)
    for i in range(T):
        zs = [alpha[h, i, j].double().numpy() * f[h, j].double().numpy() for h in range(H) for j in range(T)]
        ref = loop_contributions(y[i].double().numpy(), zs + [resid[i].double().numpy()])
        np.testing.assert_allclose(heads[i].numpy().T.reshape(-1), ref[:-1], atol=1e-6)
        if i < T - 1:  # every later key: raw ε over the row's raw total, nothing computed for it
            y64 = y[i].double().numpy()
            total = sum(max(EPS, np.abs(y64).sum() - np.abs(y64 - z).sum()) for z in zs + [resid[i].double().numpy()])
            np.testing.assert_allclose(heads[i, i + 1:].numpy(), EPS / total, rtol=1e-5)
