"""Routes and what blocks write (viz.causal.routes, viz.causal.writes).

References: networkx's depth-first search over the full contribution table (llm-transparency-tool's own way of
following a graph back); a GPT-2 whose induction circuit is set by hand (the head `viz.tasks.heads` must score);
head patching by hand (a pre-hook zeroing one head's slice of the output projection's input at one token; issue
22's patching lands in parallel); interventions that zero one feed-forward output or one neuron at one token,
read through the model's own logits; the output head applied here with the model's own modules.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from viz.core.capture import capture
from viz.causal.routes import Node, block_contributions, route, table
from viz.causal.routes_parts import Parts, stacks_of
from viz.causal.writes import neuron_writes, writes, WritesUnavailable
from viz.core.models import TINY_FAMILIES

TEXT = "The cat sat on the mat because it was tired."


def parts_of(bundle, text=TEXT, target=None):
    cap = capture(bundle, text, target, qkv=True)
    return cap, {s: Parts(bundle, cap, s) for s in stacks_of(bundle)}


# ----------------------------------------------------------------------------------------------- routes
def reference_route(parts: dict, stack: str, token: int, tau: float) -> set:
    """llm-transparency-tool's recipe: the full graph from the whole table, edges over τ, a reverse DFS."""
    g = nx.DiGraph()

    def add(u, v, w):
        if w > tau:
            g.add_edge(u, v)

    for s, p in parts.items():
        t, T, L = table(p), p.hidden.shape[1], p.n_layers
        alpha = {k: p.cap.attentions[k if k == "cross" else s] for k in ("attention", "cross") if k in t}
        for l in range(L):
            kinds = [k for k in p.kinds if k != "ffn"]
            top = "cross" if "cross" in kinds else "attn"
            for i in range(T):
                add((s, l, i, top), (s, l, i, "ffn"), t["ffn"][l, i])
                add((s, l, i, "ffn"), (s, l + 1, i, "in"), t["ffn"][l, i])
                add((s, l, i, top), (s, l + 1, i, "in"), t["residual_ffn"][l, i])
                for k in kinds:
                    site = "cross" if k == "cross" else "attn"
                    prev = (s, l, i, "attn") if k == "cross" else (s, l, i, "in")
                    add(prev, (s, l, i, site), t[f"residual_{k}"][l, i])
                    for j in range(t[k].shape[2]):
                        if alpha[k][l, :, i, j].max() > 0:  # nothing taken from a masked key
                            src = ("encoder", parts["encoder"].n_layers, j, "in") if k == "cross" else (s, l, j, "in")
                            add(src, (s, l, i, site), t[k][l, i, j].sum())
    start = (stack, parts[stack].n_layers, token, "in")
    if start not in g:
        return set()
    return set(nx.edge_dfs(g.reverse(), start))


@pytest.mark.parametrize("name", ["minilm", "tiny-llama", "seq2seq-dates", "tiny-gpt_neox"])
def test_route_equals_a_depth_first_search_of_the_full_graph(name, load):
    cap, parts = parts_of(load(name))
    stack = "decoder" if "decoder" in parts else "encoder"
    T = parts[stack].hidden.shape[1]
    for tau in (0.02, 0.1, 0.6):  # 0.6: some residuals fall under it and cut the route
        r = route(parts, stack, T - 2, tau)
        got = {((e.dst.stack, e.dst.layer, e.dst.token, e.dst.site), (e.src.stack, e.src.layer, e.src.token, e.src.site))
               for e in r.edges}
        assert got == reference_route(parts, stack, T - 2, tau), (name, tau)
        # only the tokens the route reaches were decomposed: one row at the top block, never more than needed
        assert r.decomposed[stack][-1] == 1
        for layer in range(parts[stack].n_layers - 1):
            assert r.decomposed[stack][layer] == len(r.reached(stack, layer + 1))


def test_threshold_extremes_have_known_routes(load):
    """τ = 0: every earlier token of a causal model is reached at the embeddings, no later one; τ ≥ 0.5 keeps at
    most one edge into each node (shares sum to 1)."""
    cap, parts = parts_of(load("tiny-llama"))
    T = parts["decoder"].hidden.shape[1]
    r = route(parts, "decoder", 5, 0.0)
    assert r.reached("decoder", 0) == list(range(6))
    r = route(parts, "decoder", 5, 0.5)
    into = {}
    for e in r.edges:
        into.setdefault(e.dst, []).append(e)
    assert all(len(v) == 1 for v in into.values())
    with pytest.raises(ValueError, match="no token 99"):
        route(parts, "decoder", 99, 0.1)
    assert T < 99


def test_edge_weights_and_head_shares_come_from_the_table(load):
    cap, parts = parts_of(load("seq2seq-dates"), "the 3rd of march 2021")
    t = {s: table(p) for s, p in parts.items()}
    r = route(parts, "decoder", -1, 0.01)
    assert any(e.kind == "cross" for e in r.edges) and any(e.dst.stack == "encoder" for e in r.edges)
    for e in r.edges:
        tab = t[e.dst.stack]
        if e.kind in ("attention", "cross"):
            np.testing.assert_allclose(e.heads, tab[e.kind][e.dst.layer, e.dst.token, e.src.token], atol=1e-6)
            assert abs(e.weight - e.heads.sum()) < 1e-5
        elif e.kind.startswith("residual_"):
            kind = e.kind.split("_", 1)[1]
            assert abs(e.weight - tab[f"residual_{kind}"][e.dst.layer if kind != "ffn" else e.dst.layer - 1,
                                                         e.dst.token]) < 1e-6
    js = r.to_json()
    assert all({"from", "to", "weight", "kind", "stack"} <= set(e) for e in js)
    assert all(e["from_stack"] == "encoder" for e in js if e["kind"] == "cross")
    assert not any(e["to_site"] == "ffn" for e in js)  # a feed-forward's two edges are one in the JSON


# ----------------------------------------------------------------------------------------------- induction
def _copying_induction_gpt2(folder):
    """tests/test_heads.py's hand-built induction GPT-2, its induction head (L1 H0) given a value that copies the
    attended token into slots 128.. and an unembedding that reads them: it predicts the repeated sequence."""
    from transformers import GPT2LMHeadModel

    from tests.test_heads import D, T0, V, build_induction_gpt2

    build_induction_gpt2(folder)
    model = GPT2LMHeadModel.from_pretrained(folder)
    with torch.no_grad():
        l1 = model.transformer.h[1]
        for t in range(V):
            l1.attn.c_attn.weight[T0 + t, 2 * D + t] = 1.0  # head 0's value: the key's token
            l1.attn.c_proj.weight[t, 128 + t] = 1.0  # written to slot 128 + t
        model.lm_head.weight.zero_()
        model.lm_head.weight[torch.arange(V), 128 + torch.arange(V)] = 1.0
    model.save_pretrained(folder)
    return folder


def test_route_from_a_second_copy_token_goes_through_the_induction_head(tmp_path, monkeypatch):
    from viz.tasks.heads import head_scores
    from viz.core.models import load_model

    folder = _copying_induction_gpt2(tmp_path / "copy-induction")
    monkeypatch.setenv("VIZ_MODEL_ROOTS", str(tmp_path))
    bundle = load_model(str(folder))
    best_layer, best_head, score = head_scores(bundle, seed=3, length=20).best("induction")
    assert score > 0.9
    words = [f"w{i}" for i in (5, 17, 9, 22, 13, 30, 7, 11, 26, 19)]
    cap, parts = parts_of(bundle, " ".join(words + words))
    n = len(words)
    for i in range(n + 1, 2 * n - 1):  # second-copy tokens: the earlier occurrence's successor is i - n + 1
        r = route(parts, "decoder", i, 0.04)
        edges = [e for e in r.edges if e.kind == "attention" and e.dst.layer == best_layer and e.dst.token == i]
        assert [e.src.token for e in edges] == [i - n + 1]
        assert int(np.argmax(edges[0].heads)) == best_head and edges[0].heads[best_head] > 0.2
        assert cap.tokens[i - n + 1] == words[i - n + 1]


# ----------------------------------------------------------------------------------------------- patching
def test_head_ranking_by_contribution_follows_head_patching(load):
    """Each head's share in the last token's residual (Σ_j c_tj^h at its layer) vs the KL divergence of the
    next-token distribution when that head's output at the token is zeroed (by hand: a pre-hook on o_proj).
    Issue 22's exact patching lands in parallel; until then this explicit patch is the reference."""
    bundle = load("atlas-lm")
    text = "She poured a cup of coffee and read the morning"
    cap, parts = parts_of(bundle, text)
    p = parts["decoder"]
    t, L, H = p.hidden.shape[1] - 1, p.n_layers, p.n_heads
    share = np.stack([block_contributions(p, l, [t])[0].attention["attention"][0].sum(0).numpy() for l in range(L)])
    ids = torch.as_tensor(cap.input_ids)[None]
    with torch.inference_mode():
        base = torch.log_softmax(bundle.model(input_ids=ids).logits[0, t], -1)
    d = bundle.config.head_dim
    kl = np.zeros((L, H))
    for l in range(L):
        for h in range(H):
            def zero(m, args, h=h):
                x = args[0].clone()
                x[0, t, h * d:(h + 1) * d] = 0.0
                return (x,)

            handle = bundle.model.model.layers[l].self_attn.o_proj.register_forward_pre_hook(zero)
            try:
                with torch.inference_mode():
                    lp = torch.log_softmax(bundle.model(input_ids=ids).logits[0, t], -1)
            finally:
                handle.remove()
            kl[l, h] = float((base.exp() * (base - lp)).sum())
    rho = spearmanr(share.ravel(), kl.ravel())[0]
    print(f"\nSpearman correlation, head contribution vs zero-patching KL ({L * H} heads of atlas-lm): {rho:.3f}")
    assert rho > 0.3


def test_head_ranking_by_contribution_follows_exact_activation_patching(load):
    """The same comparison against issue 22's exact activation patching (viz.causal.patching, itself tested against
    TransformerLens): each head's share in the answer token's residual on the clean input vs |normalised effect| of
    patching that head's clean output into the corrupted run, on the Patching page's first shipped atlas-lm example."""
    from viz.causal.examples import SHIPPED
    from viz.causal.patching import sweep
    from viz.causal.task import make_task

    bundle = load("atlas-lm")
    ex = SHIPPED["atlas-lm"][0]
    task = make_task(bundle, ex.clean, ex.corrupt, ex.target, ex.foil)
    effect = sweep(bundle, task, "head").effect  # [L, H]
    cap, parts = parts_of(bundle, ex.clean)
    p, t = parts["decoder"], task.answer_position
    share = np.stack([block_contributions(p, l, [t])[0].attention["attention"][0].sum(0).numpy()
                      for l in range(p.n_layers)])
    rho = spearmanr(share.ravel(), np.abs(effect).ravel())[0]
    print(f"\nSpearman correlation, head contribution vs |exact patching effect| ({ex.label}, "
          f"{effect.size} heads of atlas-lm): {rho:.3f}")
    assert rho > 0.15


# ----------------------------------------------------------------------------------------------- writes
def _zeroed_logits(bundle, cap, module, token: int, column: int | None = None) -> torch.Tensor:
    """The model's own logits at `token` with `module`'s output at that token zeroed (column: zero only that
    input column of `module`, i.e. one neuron)."""
    def out_hook(m, args, out):
        out = out.clone()
        out[0, token] = 0.0
        return out

    def in_hook(m, args):
        x = args[0].clone()
        x[0, token, column] = 0.0
        return (x,)

    handle = module.register_forward_hook(out_hook) if column is None else module.register_forward_pre_hook(in_hook)
    inputs = {"input_ids": torch.as_tensor(cap.input_ids)[None]}
    if cap.target_ids is not None:
        inputs["decoder_input_ids"] = torch.as_tensor(cap.target_ids)[None]
    try:
        with torch.inference_mode():
            return bundle.model(**inputs).logits[0, token].float()
    finally:
        handle.remove()


LAST_FFN = {"atlas-lm": ("model.layers.3.mlp", "model.layers.3.mlp.down_proj"),
            "minilm-mlm": ("bert.encoder.layer.5.output.dense", "bert.encoder.layer.5.output.dense"),
            "seq2seq-dates": ("model.decoder.layers.1.fc2", "model.decoder.layers.1.fc2"),
            "tiny-t5": ("decoder.block.1.layer.2.DenseReluDense", "decoder.block.1.layer.2.DenseReluDense.wo")}


@pytest.mark.parametrize("name", list(LAST_FFN))
def test_last_feed_forward_writes_equal_zeroing_it_in_the_model(name, load):
    """At the last layer nothing comes after the feed-forward but the output head: what it writes (and what
    one of its neurons writes) must equal the change of the model's own logits when it is zeroed."""
    bundle = load(name)
    cap, parts = parts_of(bundle)
    stack = "encoder" if bundle.kind == "encoder" else "decoder"
    p = parts[stack]
    i = min(3, p.hidden.shape[1] - 1)
    w = writes(p, Node(stack, p.n_layers - 1, i, "ffn"), k=5, n_neurons=3)
    with torch.inference_mode():
        base = bundle.model(**({"input_ids": torch.as_tensor(cap.input_ids)[None]} | (
            {"decoder_input_ids": torch.as_tensor(cap.target_ids)[None]} if cap.target_ids is not None else {}))
        ).logits[0, i].float()
    ffn, out_proj = (bundle.model.get_submodule(m) for m in LAST_FFN[name])
    delta = base - _zeroed_logits(bundle, cap, ffn, i)
    tok = bundle.tokenizer
    ref = torch.topk(delta, 5)
    assert [t for t, _ in w.promoted] == tok.convert_ids_to_tokens(ref.indices.tolist())
    np.testing.assert_allclose([v for _, v in w.promoted], ref.values.numpy(), atol=2e-3)
    assert w.predicted[1] == int(base.argmax())
    for n in w.neurons:
        d = base - _zeroed_logits(bundle, cap, out_proj, i, column=n.index)
        top = torch.topk(d, 5)
        np.testing.assert_allclose([v for _, v in n.promoted], top.values.numpy(), atol=2e-3)


def test_head_logit_attribution_equals_the_head_read_by_hand(load):
    """atlas-lm, last layer's attention at one token: Head(y) − Head(y − z_h) with z_h = Σ_j α v W_O^h built here,
    y the model's own stream (hooked), Head = model.norm then lm_head."""
    bundle = load("atlas-lm")
    cap, parts = parts_of(bundle)
    p, l, i = parts["decoder"], 3, 6
    w = writes(p, Node("decoder", l, i, "attn"))
    seen = {}
    layer = bundle.model.model.layers[l]
    h1 = layer.post_attention_layernorm.register_forward_pre_hook(lambda m, a: seen.setdefault("y", a[0][0, i].clone()))
    try:
        with torch.inference_mode():
            bundle.model(input_ids=torch.as_tensor(cap.input_ids)[None])
    finally:
        h1.remove()
    H, d = bundle.config.num_attention_heads, bundle.config.head_dim
    alpha, values = cap.attentions["decoder"][l, :, i], cap.head_values("decoder")[l]
    W = layer.self_attn.o_proj.weight.detach().T  # [in, out]
    with torch.inference_mode():
        def head(x):
            return bundle.model.lm_head(bundle.model.model.norm(x))
        for h in range(H):
            z = torch.from_numpy(alpha[h] @ values[h]) @ W[h * d:(h + 1) * d]
            ref = (head(seen["y"]) - head(seen["y"] - z))[w.predicted[1]]
            assert abs(float(ref) - float(w.head_dla[h])) < 1e-3, h


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_neurons_sum_to_the_feed_forward_output(family, load):
    """Σ_n a_n W_out[n] + b_out = the feed-forward's output (before Gemma 2's norm after it), every family."""
    bundle = load(f"tiny-{family}")
    cap, parts = parts_of(bundle)
    for stack, p in parts.items():
        subs = p.block(1, [0, 2, 4])
        ffn = subs[-1]
        a, w_out, b_out = neuron_writes(p, 1, ffn)
        total = a @ w_out + b_out
        post = p.recipe.sublayers[-1].post_norm
        if post:
            mod = p._mods[1][0].get_submodule(post)
            with torch.inference_mode():
                total = mod(total)
        np.testing.assert_allclose(total.numpy(), ffn.out.numpy(), atol=2e-5 * max(1.0, float(ffn.out.abs().max())))


def test_an_encoder_without_an_output_head_says_what_to_pick(load):
    cap, parts = parts_of(load("minilm"))
    with pytest.raises(WritesUnavailable, match="minilm-mlm"):
        writes(parts["encoder"], Node("encoder", 2, 1, "attn"))


# ----------------------------------------------------------------------------------------------- CLI
def _cli(*args):
    import subprocess
    import sys

    from conftest import ROOT

    return subprocess.run([sys.executable, "-m", "viz", "routes", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_cli_json_has_the_documented_keys_and_the_librarys_numbers(load):
    import json

    r = _cli("--model", "seq2seq-dates", "--text", "the 3rd of march 2021", "--token", "-1", "--threshold", "0.05",
             "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    keys = {"tokens", "layers", "heads", "attention", "residual_attention", "ffn", "residual_ffn", "edges", "cross",
            "residual_cross", "encoder_tokens", "stack", "token", "threshold", "model", "decomposed"}
    assert set(out) == keys
    help_text = _cli("--help").stdout
    assert all(k in help_text for k in keys)
    cap, parts = parts_of(load("seq2seq-dates"), "the 3rd of march 2021")
    t = table(parts["decoder"])
    for k in ("attention", "residual_attention", "cross", "ffn", "residual_ffn"):
        np.testing.assert_allclose(np.array(out[k]), t[k], atol=1e-5)
    assert np.array(out["attention"]).shape == (out["layers"], len(out["tokens"]), len(out["tokens"]), out["heads"])
    assert out["edges"] == route(parts, "decoder", -1, 0.05).to_json()


@pytest.mark.parametrize("args,message", [
    (("--model", "minilm", "--text", "hi", "--token", "7"), "no token 7"),
    (("--model", "minilm", "--text", "hi", "--stack", "decoder"), "no decoder stack"),
    (("--model", "minilm", "--text", "hi", "--threshold", "1"), "must be below 1"),
    (("--model", "minilm", "--text", "   "), "empty"),
])
def test_cli_errors_are_one_line(args, message):
    r = _cli(*args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
