"""Rollout, flow, norm-based attention and the hidden-state journey: hand-computed cases
(2 layers, 3 tokens) and invariants on tiny random models and the real MiniLM."""

import os
import re

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from viz.analysis.flow import (FlowTooLong, attention_flow, attention_rollout, path_mass,  # noqa: E402
                               residual_attention)
from viz.analysis.journey import consecutive_cosine, cosine_to_final, pca_paths, token_similarity  # noqa: E402
from viz.analysis.norms import (norm_attention, residual_norm_attention, summed_norm_attention,  # noqa: E402
                                transformed_values)

# ----------------------------------------------------------------------------- hand-computed cases
A0 = np.array([[1, 0, 0], [.5, .5, 0], [0, .5, .5]])  # layer 0, rows = query
A1 = np.array([[0, .5, .5], [1, 0, 0], [0, 0, 1]])    # layer 1


def test_rollout_hand_computed():
    a0 = np.array([[0, 1, 0], [0, 1, 0], [0, 0, 1]], float)
    a1 = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float)
    attn = np.stack([a0, a1])[:, None]  # [layer, 1 head, q, k]
    r = attention_rollout(attn)
    np.testing.assert_allclose(r[0], [[.5, .5, 0], [0, 1, 0], [0, 0, 1]])
    # R1 = Â1 · Â0 with Â1 = [[.5,0,.5],[.5,.5,0],[0,.5,.5]]
    np.testing.assert_allclose(r[1], [[.25, .25, .5], [.25, .75, 0], [0, .5, .5]])


def test_rollout_averages_heads():
    h0 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    h1 = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)
    attn = np.stack([h0, h1])[None]  # [1 layer, 2 heads, 3, 3]
    np.testing.assert_allclose(attention_rollout(attn)[0], 0.5 * (h0 + h1) / 2 + 0.5 * np.eye(3))


def test_flow_hand_computed_no_residual():
    attn = np.stack([A0, A1])  # [layer, q, k]
    f = attention_flow(attn, residual=0.0)
    # (2,0) -> (1,1) .5 and (1,2) .5; (1,1) reaches inputs 0 and 1 with .5 each, (1,2) inputs 1 and 2
    np.testing.assert_allclose(f, [[.5, 1, .5], [1, 0, 0], [0, .5, .5]], atol=1e-12)
    # rollout routes proportionally and gets less through the same graph
    np.testing.assert_allclose(attention_rollout(attn, residual=0.0)[1][0], [.25, .5, .25])
    # from the first layer's output there is one edge per pair: flow = the attention itself
    np.testing.assert_allclose(attention_flow(attn, layer=0, residual=0.0), A0, atol=1e-12)


def test_flow_hand_computed_bottleneck():
    # (2,0) sends .5 to each of (1,1), (1,2); each passes at most .3 on to input 0: .3 + .3 = .6,
    # while to inputs 1 and 2 the .5 coming in is the bottleneck
    a0 = np.array([[1, 0, 0], [.3, .7, 0], [.3, 0, .7]])
    a1 = np.array([[0, .5, .5], [0, 1, 0], [0, 0, 1]])
    f = attention_flow(np.stack([a0, a1]), queries=[0], residual=0.0)
    np.testing.assert_allclose(f, [[.6, .5, .5]], atol=1e-12)


def test_flow_queries_progress_and_guard():
    calls = []
    f = attention_flow(np.stack([A0, A1]), queries=[2], residual=0.0, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_allclose(f, [[0, .5, .5]], atol=1e-12)
    assert calls == [(1, 1)]
    with pytest.raises(FlowTooLong, match="rollout"):
        attention_flow(np.tile(np.eye(40), (2, 1, 1)), max_tokens=32)


def test_path_mass_sums_to_one_and_matches_rollout():
    mats = residual_attention(np.stack([A0, A1]))
    pm = path_mass(mats, token=0)
    np.testing.assert_allclose(pm.sum(axis=(1, 2)), [1, 1])
    np.testing.assert_allclose(pm[0].sum(axis=0), attention_rollout(np.stack([A0, A1]))[1][0])


def test_norm_attention_hand_computed():
    # 2 layers, 2 heads, 3 tokens, head_dim 1, dim 2
    w_o = np.zeros((2, 2, 1, 2))
    w_o[:, 0, 0] = [1, 0]
    w_o[:, 1, 0] = [0, 2]
    values = np.zeros((2, 2, 3, 1))
    values[:, 0, :, 0] = [1, 2, 3]
    values[:, 1, :, 0] = [1, 1, 0]
    attn = np.stack([np.full((2, 3, 3), 1 / 3), np.stack([np.eye(3), np.eye(3)])])
    n = norm_attention(attn, values, w_o)
    np.testing.assert_allclose(n[0, 0], np.tile([1, 2, 3], (3, 1)) / 3)   # ‖f0‖ = [1, 2, 3]
    np.testing.assert_allclose(n[0, 1], np.tile([2, 2, 0], (3, 1)) / 3)   # ‖f1‖ = [2, 2, 0]
    np.testing.assert_allclose(n[1, 0], np.diag([1, 2, 3]))
    s = summed_norm_attention(attn, values, w_o)
    # layer 0: (1/3)·(v0_j, 2·v1_j) -> j=0 (1,2)/3, j=1 (2,2)/3, j=2 (3,0)/3
    np.testing.assert_allclose(s[0], np.tile([np.sqrt(5) / 3, np.sqrt(8) / 3, 1], (3, 1)))
    np.testing.assert_allclose(s[1], np.diag([np.sqrt(5), np.sqrt(8), 3]))
    # residual-aware: x_i added on the diagonal
    x = np.tile(np.array([[1, 0], [0, 1], [1, 1]], float), (2, 1, 1))
    r = residual_norm_attention(attn, values, w_o, x)
    expect = s[0].copy()
    expect[0, 0] = np.linalg.norm(np.array([1, 2]) / 3 + [1, 0])
    expect[1, 1] = np.linalg.norm(np.array([2, 2]) / 3 + [0, 1])
    expect[2, 2] = np.linalg.norm(np.array([3, 0]) / 3 + [1, 1])
    np.testing.assert_allclose(r[0], expect)


def test_journey_hand_computed():
    h = np.array([[[1, 0], [0, 1]], [[1, 1], [0, 1]], [[0, 1], [0, 2]]], float)  # [3 levels, 2 tokens, 2]
    np.testing.assert_allclose(consecutive_cosine(h), [[np.sqrt(.5), 1], [np.sqrt(.5), 1]])
    np.testing.assert_allclose(cosine_to_final(h), [[0, 1], [np.sqrt(.5), 1], [1, 1]])
    np.testing.assert_allclose(token_similarity(h)[0], np.eye(2), atol=1e-12)
    paths, ratio = pca_paths(np.arange(12, dtype=float).reshape(3, 2, 2), normalise=False)
    assert paths.shape == (3, 2, 2) and ratio[0] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- invariants on models
@pytest.fixture(scope="module")
def captured():
    import torch

    import viz
    from viz.core.capture import capture
    from viz.core.models import load_model

    torch.set_num_threads(1)
    viz.quiet()
    out = {}
    for name in ("tiny-bert", "tiny-gpt2", "tiny-albert", "tiny-t5", "tiny-bart", "minilm"):
        b = load_model(name)
        out[name] = (b, capture(b, "The cat sat on the mat because it was tired.",
                                target="Le chat." if b.kind == "encoder-decoder" else None))
    return out


def rollout_by_loops(attn):
    """Abnar & Zuidema 2020 §3 written out element by element, independent of viz.analysis.flow:
    Â_l[i, j] = (0.5 · (1/H) Σ_h A_l[h, i, j] + 0.5 · [i == j]) / Σ_j' (same);
    R_0 = Â_0,  R_l[i, j] = Σ_k Â_l[i, k] · R_{l-1}[k, j]."""
    L, H, T, _ = attn.shape
    hat = [[[0.0] * T for _ in range(T)] for _ in range(L)]
    for lv in range(L):
        for i in range(T):
            row = [0.5 * sum(float(attn[lv, h, i, j]) for h in range(H)) / H + (0.5 if i == j else 0.0)
                   for j in range(T)]
            total = sum(row)
            hat[lv][i] = [x / total for x in row]
    rolled, prev = [], None
    for lv in range(L):
        cur = [row[:] for row in hat[lv]] if prev is None else \
            [[sum(hat[lv][i][k] * prev[k][j] for k in range(T)) for j in range(T)] for i in range(T)]
        rolled.append(cur)
        prev = cur
    return np.array(rolled)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2", "tiny-albert", "tiny-t5", "tiny-bart", "minilm"])
def test_rollout_equals_the_papers_definition_and_bounds_flow(captured, name):
    _, cap = captured[name]
    for stack in (s for s in cap.stacks if s != "cross"):
        attn = cap.attentions[stack]
        r = attention_rollout(attn)
        np.testing.assert_allclose(r, rollout_by_loops(attn), atol=1e-9)
        np.testing.assert_allclose(r.sum(-1), 1, atol=1e-5)
        q = [0, attn.shape[-1] - 1]
        f = attention_flow(attn, queries=q, max_tokens=None)
        assert (f <= 1 + 1e-9).all() and (f >= r[-1][q] - 1e-6).all()  # rollout is one feasible flow


def _site_outputs(bundle, pattern):
    outs = []
    mods = [m for n, m in bundle.model.named_modules() if re.search(r"(^|\.)" + pattern + "$", n)]
    return outs, [m.register_forward_hook(lambda m, a, o: outs.append(o[0].detach().float().numpy()))
                  for m in mods]


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2", "tiny-albert", "tiny-t5", "tiny-bart", "minilm"])
def test_output_projection_slices_reconstruct_the_block(captured, name):
    """sum_h α f_h(x_j) + b_O equals the output projection's own output (checks W_O slicing,
    GPT-2's transposed Conv1D and ALBERT's shared module)."""
    from viz.core.capture import capture
    from viz.core.weights import output_biases, output_projections

    bundle, _ = captured[name]
    for stack, site in bundle.arch.sites.items():
        outs, handles = _site_outputs(bundle, site.output)
        try:
            cap = capture(bundle, "The cat sat on the mat.", target="Le chat." if bundle.kind == "encoder-decoder" else None)
        finally:
            for h in handles:
                h.remove()
        attn = cap.attentions[stack]
        L, H = attn.shape[:2]
        f = transformed_values(cap.values[stack], output_projections(bundle, stack, L, H))
        rec = np.einsum("lhij,lhjd->lid", attn, f) + output_biases(bundle, stack, L)[:, None]
        np.testing.assert_allclose(rec, np.stack(outs), atol=1e-4)
        n = norm_attention(attn, cap.values[stack], output_projections(bundle, stack, L, H))
        assert (n >= 0).all() and (n[attn == 0] == 0).all()
        summed = summed_norm_attention(attn, cap.values[stack], output_projections(bundle, stack, L, H))
        assert (summed <= n.sum(1) + 1e-5).all()  # triangle inequality


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-albert", "minilm"])
def test_layernorm_aware_norms_decompose_the_layernorm_output(captured, name):
    """sum_j g_i(z_ij) + gamma·(b - mean b)/s + beta equals the post-attention LayerNorm's output,
    and the function's norms are the norms of those g_i(z_ij)."""
    from viz.core.capture import capture
    from viz.core.weights import POST_LN, attention_layernorm, output_biases, output_projections

    bundle, _ = captured[name]
    outs, handles = _site_outputs(bundle, POST_LN[bundle.config.model_type]["encoder"])
    try:
        cap = capture(bundle, "The cat sat on the mat.")
    finally:
        for h in handles:
            h.remove()
    attn, values, x = cap.attentions["encoder"], cap.values["encoder"], cap.hidden_states["encoder"][:-1]
    L, H, T, _ = attn.shape
    w_o, b = output_projections(bundle, "encoder", L, H), output_biases(bundle, "encoder", L)
    gamma, beta, eps = attention_layernorm(bundle, "encoder", L)
    got = residual_norm_attention(attn, values, w_o, x, b, (gamma, beta, eps))
    f = transformed_values(values, w_o)
    for lv in range(L):
        z = np.einsum("hij,hjd->ijd", attn[lv], f[lv]) + np.eye(T)[:, :, None] * x[lv][:, None, :]
        y = z.sum(1) + b[lv]
        s = np.sqrt(y.var(-1) + eps)
        g = gamma[lv] * (z - z.mean(-1, keepdims=True)) / s[:, None, None]
        ln = g.sum(1) + gamma[lv] * (b[lv] - b[lv].mean()) / s[:, None] + beta[lv]
        np.testing.assert_allclose(ln, outs[lv], atol=1e-4)
        np.testing.assert_allclose(got[lv], np.linalg.norm(g, axis=-1), rtol=1e-6, atol=1e-8)


def test_journey_on_minilm(captured):
    _, cap = captured["minilm"]
    h = cap.hidden_states["encoder"]
    c = consecutive_cosine(h)
    assert c.shape == (h.shape[0] - 1, h.shape[1]) and (c <= 1 + 1e-6).all()
    np.testing.assert_allclose(cosine_to_final(h)[-1], 1, atol=1e-6)
    np.testing.assert_allclose(np.diagonal(token_similarity(h), axis1=1, axis2=2), 1, atol=1e-6)
    paths, ratio = pca_paths(h)
    assert paths.shape == (h.shape[0], h.shape[1], 2) and 0 < ratio.sum() <= 1


def test_flow_matches_plain_networkx_on_the_full_graph():
    """The reduced, reused graph gives the same values as max-flow on the paper's full layered graph."""
    import networkx as nx

    from viz.analysis.flow import flow_graph

    rng = np.random.default_rng(0)
    dense = rng.dirichlet(np.ones(5) * 0.4, size=(3, 2, 5))  # [layer, head, q, k]
    causal = np.tril(rng.random((4, 2, 5, 5)) ** 3)  # decoder-style: nodes a source cannot reach
    causal /= causal.sum(-1, keepdims=True)
    for attn, layer in [(dense, 0), (dense, 1), (dense, 2), (causal, 3)]:
        g = flow_graph(attn, layer)
        ref = [[nx.maximum_flow_value(g, (layer + 1, i), (0, j)) for j in range(5)] for i in range(5)]
        np.testing.assert_allclose(attention_flow(attn, layer=layer), ref, atol=1e-9)
        np.testing.assert_allclose(attention_flow(attn, layer=layer, solver="networkx"), ref, atol=1e-9)


def test_dinic_matches_networkx_on_minilm(captured):
    attn = captured["minilm"][1].attentions["encoder"]
    q = [0, 3, attn.shape[-1] - 1]
    np.testing.assert_allclose(attention_flow(attn, queries=q, max_tokens=None),
                               attention_flow(attn, queries=q, max_tokens=None, solver="networkx"), atol=1e-9)
