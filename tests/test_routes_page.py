"""AppTest for the Routes page: what it draws and offers for download, against the library run here on the shipped
models (the library itself is held to explicit loops, hooks and interventions in test_contributions/test_routes).
Every control (token, threshold, stack, a clicked edge, head and node) is set and its effect asserted."""

import re

import numpy as np
import pytest

from apptest import TEXT, open_page, rerun
from conftest import chart_spec
from viz.causal.routes import Node, block_contributions, route
from viz.causal.routes_parts import decompose
from viz.causal.writes import writes
from viz.core.models import load_model
from viz.figures.routes import KINDS, SITES, STACKS

PICK = ("routes_pick_what", "routes_pick_stack", "routes_pick_layer", "routes_pick_token", "routes_pick_c",
        "routes_pick_kind")


def edge_points(at) -> list[list[int]]:
    """customdata of the graph's clickable edge markers (what = 1)."""
    fig = chart_spec(at, "routes_graph")
    return [list(map(int, c)) for t in fig["data"] if t.get("name") == "edges" for c in t["customdata"]]


def shares_in_hover(at) -> list[float]:
    fig = chart_spec(at, "routes_graph")
    return [float(re.search(r"share ([0-9.]+)", s).group(1)) for t in fig["data"] if t.get("name") == "edges"
            for s in t["text"]]


def test_default_route_on_minilm_is_the_librarys(downloads):
    at = open_page("routes")
    parts = decompose(load_model("minilm"), TEXT)
    T = len(parts["encoder"].tokens)
    assert at.selectbox(key="routes_token").value == T - 2  # the last token that is not [SEP]
    r = route(parts, "encoder", T - 2, 0.04)
    want = sorted([1, 0, e.dst.layer, e.dst.token, e.src.token, KINDS.index(e.kind)] for e in r.edges
                  if e.kind == "attention")
    assert sorted(edge_points(at)) == want
    np.testing.assert_allclose(sorted(shares_in_hover(at)), sorted(round(e.weight, 3) for e in r.edges
                                                                   if e.kind == "attention"), atol=1e-3)
    assert "Route to '.' (11)" in chart_spec(at, "routes_graph")["layout"]["title"]["text"]
    csv = downloads.csv("routes_edges_csv")
    assert len(csv) == len(r.to_json())
    np.testing.assert_allclose(sorted(csv["weight"]), sorted(e["weight"] for e in r.to_json()), atol=1e-6)
    npz = downloads.npz("routes_table_npz")
    c, _ = block_contributions(parts["encoder"], 2, range(T))
    np.testing.assert_allclose(npz["attention"][2], c.attention["attention"].numpy(), atol=1e-6)
    assert npz["attention"].shape == (6, T, T, 12) and list(npz["tokens"]) == parts["encoder"].tokens
    assert downloads.check_html(at) == 1
    assert any("Click an edge" in i.value for i in at.info)


def test_token_and_threshold_change_the_route():
    at = open_page("routes", routes_token=3, routes_threshold=0.1)
    assert "Route to 'sat' (3), τ = 0.10" in chart_spec(at, "routes_graph")["layout"]["title"]["text"]
    shares = shares_in_hover(at)
    assert shares and min(shares) > 0.1
    at = rerun(at, routes_threshold=0.01)
    assert len(shares_in_hover(at)) > len(shares)


def test_a_clicked_edge_shows_its_heads_and_both_maps(downloads):
    at = open_page("routes")
    pick = edge_points(at)[0]
    _, _, layer, dst, src, kind = pick
    at = rerun(at, **dict(zip(PICK, pick)))
    parts = decompose(load_model("minilm"), TEXT)
    c, _ = block_contributions(parts["encoder"], layer, range(len(parts["encoder"].tokens)))
    want = c.attention["attention"][dst, src].numpy()
    bars = chart_spec(at, "routes_heads_fig")["data"][0]
    np.testing.assert_allclose(bars["y"], want, atol=1e-6)
    head = int(np.argmax(want))
    assert at.number_input(key="routes_head").value == head
    np.testing.assert_allclose(chart_spec(at, "routes_map_α")["data"][0]["z"],
                               parts["encoder"].cap.attentions["encoder"][layer, head], atol=1e-6)
    np.testing.assert_allclose(chart_spec(at, "routes_map_share")["data"][0]["z"],
                               c.attention["attention"][:, :, head].numpy(), atol=1e-6)
    np.testing.assert_allclose(downloads.matrix("routes_map_share_csv")[2], c.attention["attention"][:, :, head],
                               atol=1e-6)
    other = (head + 1) % 12
    at = rerun(at, routes_head=other)  # another head: both maps follow
    np.testing.assert_allclose(chart_spec(at, "routes_map_α")["data"][0]["z"],
                               parts["encoder"].cap.attentions["encoder"][layer, other], atol=1e-6)
    at.button(key="routes_open").click().run()
    assert at.session_state["attn_layer"] == layer and at.session_state["attn_head"] == other
    assert at.title[0].value == "Attention"


def test_a_clicked_node_shows_what_it_writes_on_a_decoder():
    at = open_page("routes", model_choice="atlas-lm")
    node = (0, STACKS.index("decoder"), 3, 5, SITES.index("attn"), 0)
    at = rerun(at, model_choice="atlas-lm", **dict(zip(PICK, node)))
    w = writes(decompose(load_model("atlas-lm"), TEXT)["decoder"], Node("decoder", 3, 5, "attn"))
    bars = chart_spec(at, "routes_writes_fig")["data"][0]
    np.testing.assert_allclose(bars["x"], [v for _, v in w.promoted] + [v for _, v in reversed(w.suppressed)],
                               atol=1e-4)
    np.testing.assert_allclose(chart_spec(at, "routes_dla_fig")["data"][0]["y"], w.head_dla, atol=1e-4)
    # shown as read: byte-level BPE's space Ġ as ▁ (written out here for a plain ASCII word)
    assert any(f"predicts {w.predicted[0].replace('Ġ', '▁')!r}" in c.value for c in at.caption)
    assert not any("Ġ" in c.value for c in list(at.caption) + list(at.subheader))
    ffn = (0, STACKS.index("decoder"), 2, 5, SITES.index("ffn"), 0)
    at = rerun(at, model_choice="atlas-lm", **dict(zip(PICK, ffn)))
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 10  # the top neurons
    top = (0, STACKS.index("decoder"), 4, 2, SITES.index("in"), 0)  # a token's top node: the route goes there
    at = rerun(at, model_choice="atlas-lm", **dict(zip(PICK, top)))
    assert at.selectbox(key="routes_token").value == 2
    assert "Route to '▁cat' (2)" in chart_spec(at, "routes_graph")["layout"]["title"]["text"]


def test_minilm_says_what_to_pick_for_writes_and_an_empty_text_warns():
    at = open_page("routes", **dict(zip(PICK, (0, 0, 2, 3, SITES.index("attn"), 0))))
    assert any("minilm-mlm" in i.value for i in at.info)
    at = rerun(at, text="   ")
    assert any("empty" in w.value for w in at.warning) and not at.get("plotly_chart")


@pytest.mark.parametrize("stack", ["decoder", "encoder"])
def test_encoder_decoder_routes_cross_into_the_encoder(stack):
    at = open_page("routes", model_choice="seq2seq-dates", text="the 3rd of march 2021", routes_stack=stack)
    fig = chart_spec(at, "routes_graph")
    names = {t.get("name") for t in fig["data"]}
    parts = decompose(load_model("seq2seq-dates"), "the 3rd of march 2021")
    T = len(parts[stack].tokens)
    r = route(parts, stack, T - 1 if stack == "decoder" else T - 2, 0.04)
    assert ("cross-attention (encoder → decoder)" in names) == any(e.kind == "cross" for e in r.edges)
    assert sorted(edge_points(at)) == sorted(
        [1, STACKS.index(e.dst.stack), e.dst.layer, e.dst.token, e.src.token, KINDS.index(e.kind)]
        for e in r.edges if e.kind in ("attention", "cross"))
    if stack == "decoder":
        assert any(e.kind == "cross" for e in r.edges)


def test_a_long_inputs_full_table_is_computed_on_request_then_downloads(downloads):
    long = " ".join(["The old keeper watched the storm roll in from the west over the grey water."] * 5)
    at = open_page("routes", text=long)
    assert "routes_table_npz" not in downloads.keys()
    at.button(key="routes_table_go").click()
    at = rerun(at, text=long)
    parts = decompose(load_model("minilm"), long)
    T = len(parts["encoder"].tokens)
    assert T > 64
    npz = downloads.npz("routes_table_npz")
    c, _ = block_contributions(parts["encoder"], 5, range(T))
    np.testing.assert_allclose(npz["attention"][5], c.attention["attention"].numpy(), atol=1e-6)
    np.testing.assert_allclose(npz["ffn"][5], c.ffn.numpy(), atol=1e-6)
    at = rerun(at, text=long)
    assert not any(b.key == "routes_table_go" for b in at.button)  # every layer is cached now
