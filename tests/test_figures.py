"""Figure builders: screen-sized payloads, labels that survive repeated and markup-like tokens, axes that say
what they show. The browser-side checks of the same figures are in test_browser_layout.py."""

import numpy as np
import pytest

from viz.analysis.words import aggregate, drop_rows_cols, merge_pieces
from viz.figures.attention import figure_json_bytes, head_heatmap, model_view, pool, sink_heatmap
from viz.figures.compare import head_change_grid, kl_bars, side_by_side
from viz.figures.flow import into_token_bars
from viz.figures.mlm import layer_rank_heatmap, original_by_layer, rank_ticks, topk_bars
from viz.figures.studio import probe_grid
from viz.core.names import level, levels


def test_pool_is_a_mean():
    a = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_allclose(pool(a, 2), [[2.5, 4.5], [10.5, 12.5]])
    assert pool(a, 8).shape == (4, 4)  # never upsampled


def test_model_view_image_is_the_thumbnails_in_the_colour_scale():
    """The PNG the browser draws holds each head's thumbnail, scaled to its own maximum, in COLORSCALE."""
    from viz.figures.attention import LUT, png_pixels

    a = np.zeros((2, 3, 4, 4))
    a[1, 2] = np.eye(4)  # layer 1, head 2: a diagonal
    a[0, 0, :, 0] = 0.5  # layer 0, head 0: the first column, at half weight (scaled to its own max)
    fig = model_view(a, tile=4)
    px = png_pixels(fig.data[0].source)
    assert px.shape == (4 * 2 + 2, 4 * 3 + 2 * 2, 3)
    top, darkest = LUT[0], LUT[255]
    assert (px[0:4, 0] == darkest).all() and (px[0:4, 1:4] == top).all()
    y, x = 6, 12  # layer 1 starts at row 4 + gap 2; head 2 at column 2 * (4 + 2)
    assert all((px[y + i, x + i] == darkest).all() for i in range(4)) and (px[y, x + 1] == top).all()
    assert list(fig.data[0].meta) == [10, 16, 255 * (4 + 4)]  # the checksum the load bench reads


def test_model_view_stays_small_for_long_inputs():
    rng = np.random.default_rng(0)
    a = rng.random((12, 12, 512, 512), dtype=np.float32)
    fig = model_view(a)
    assert figure_json_bytes(fig) < 1_000_000
    cells = fig.data[1].customdata
    assert len(cells) == 144 and list(cells[-1]) == [11, 11]


def test_model_view_fills_its_box_and_frames_the_open_head():
    a = np.random.default_rng(0).random((6, 12, 10, 10))
    fig = model_view(a, selected=(2, 5))
    # a locked aspect ratio (scaleanchor) left a ~100 px gap between the H0–H11 labels and the thumbnails
    assert fig.layout.yaxis.scaleanchor in (None, False) and fig.layout.width is None
    (frame,) = fig.layout.shapes
    marker = fig.data[1]
    i = list(map(tuple, marker.customdata)).index((2, 5))  # the open head's marker sits inside the frame
    assert frame.x0 < marker.x[i] < frame.x1 and frame.y0 < marker.y[i] < frame.y1
    assert not model_view(a).layout.shapes  # nothing framed when nothing is open


def test_heatmap_keeps_repeated_tokens_apart_and_labels_them_plainly():
    toks = ["the", "cat", "the", "mat"]
    fig = head_heatmap(np.eye(4), toks, toks)
    assert len(set(fig.data[0].x)) == 4  # unique categories: the two "the" stay two columns
    alias = fig.layout.xaxis.labelalias
    assert [alias[c] for c in fig.data[0].x] == toks  # ticks read as the bare tokens
    # the browser thins the ticks to what fits (tickmode auto), x labels turn upright only when they collide,
    # y labels never rotate (they were drawn at -60 degrees and overlapped)
    assert fig.layout.xaxis.tickmode == "auto" and fig.layout.yaxis.tickmode == "auto"
    assert fig.layout.yaxis.tickangle is None and list(fig.layout.yaxis.autotickangles) == [0, 90]
    assert fig.layout.xaxis.side != "top"  # a top axis's title ran into the chart title


def test_markup_like_tokens_are_escaped_everywhere():
    toks = ["<s>", "march", "</s>"]
    figs = [head_heatmap(np.eye(3), toks, toks), probe_grid(np.ones((2, 2, 3, 3)) / 3, toks),
            topk_bars([("</s>", 0.5), ("a", 0.2)])]
    for fig in figs:
        for ax in [fig.layout[k] for k in fig.layout if k.startswith(("xaxis", "yaxis"))]:
            for shown in (ax.labelalias or {}).values():
                assert "<" not in shown and ">" not in shown, shown  # plotly ate '</s>' as markup: a blank tick
    assert "&lt;/s&gt;" in head_heatmap(np.eye(3), toks, toks).layout.xaxis.labelalias.values()


def test_heatmap_axes_say_what_they_show():
    fig = head_heatmap(np.eye(2), ["a", "b"], ["a", "b"], x_title="token", y_title="token", value="cos", zmin=None)
    assert fig.layout.xaxis.title.text == "token" and fig.data[0].colorbar.title.text == "cos"
    assert fig.data[0].zmin is None  # a cosine can be negative: no forced 0


def test_layer_naming_is_one_convention():
    assert levels(4) == ["emb", "L0", "L1", "L2"] and level(0) == "emb" and level(6) == "L5"
    top = [[("a", 0.5), ("b", 0.2)]] * 7
    assert list(layer_rank_heatmap(top).data[0].x) == levels(7)
    assert list(original_by_layer([0.1] * 7, [3] * 7, "cat").data[0].x) == levels(7)


def test_prediction_table_grows_down_with_top_k():
    top5 = [[(f"t{k}", 0.1) for k in range(5)]] * 7
    top20 = [[(f"t{k}", 0.01) for k in range(20)]] * 7
    f5, f20 = layer_rank_heatmap(top5), layer_rank_heatmap(top20)
    assert np.asarray(f20.data[0].z).shape == (20, 7)  # ranks down, levels across: cells keep their width
    assert f20.layout.height > f5.layout.height


def test_small_probabilities_and_ranks_read_distinctly():
    fig = original_by_layer([0.0001, 0.0004, 0.0009], [1140, 35, 2], "cat")
    # ".0%" printed every tick under 0.5 % as "0%": three significant digits, trimmed
    assert fig.layout.yaxis.tickformat == ".3~p"
    assert list(fig.layout.yaxis2.tickvals) == [1, 10, 100, 1000, 10000]
    assert list(fig.layout.yaxis2.ticktext) == ["1", "10", "100", "1,000", "10,000"]
    lo, hi = fig.layout.yaxis2.range
    assert lo > np.log10(1140) and hi < 0  # reversed (1 on top) and every rank inside
    assert rank_ticks(1) == ([1], ["1"])


def test_kl_axis_follows_the_values():
    kl = np.array([0.001, 0.004, 2.5])
    fig = kl_bars(["a", "b", "c"], kl)
    assert fig.layout.yaxis.range is None  # a fixed [0, 1] range cut the 2.5 bar off
    assert fig.layout.yaxis.tickformat == ".3~g"  # ".2f" read "0.00" on every tick


def test_change_grid_is_clickable_and_never_centred_on_zero():
    fig = head_change_grid(np.zeros((2, 3)))
    heat, clicks = fig.data
    assert heat.zmin == 0 and heat.zmax > 0  # all zeros drew a −0.5…0.5 colour bar
    assert [tuple(c[:2]) for c in clicks.customdata][:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_side_by_side_shares_rows_and_colours():
    a, b = np.eye(3), np.full((3, 3), 1 / 3)
    fig = side_by_side(a, b, ["x", "cat", "y"], ["x", "[MASK]", "y"], ("first", "second", "difference"))
    assert len(fig.data) == 3 and fig.data[0].coloraxis == fig.data[1].coloraxis != fig.data[2].coloraxis
    assert "cat→[MASK]" in fig.layout.xaxis.labelalias.values()
    np.testing.assert_allclose(fig.data[2].z, b - a, atol=1e-6)
    assert fig.layout.coloraxis2.cmin == -fig.layout.coloraxis2.cmax


def test_flow_is_not_drawn_on_the_share_axis():
    shares = {"rollout": np.array([0.5, 0.5])}
    fig = into_token_bars(shares, ["a", "b"], flow=np.array([1.7, 0.3]))
    flow = [t for t in fig.data if t.name == "max-flow"][0]
    assert flow.yaxis != fig.data[0].yaxis
    assert fig.layout[flow.yaxis.replace("y", "yaxis")].title.text == "max-flow value"
    assert len(into_token_bars(shares, ["a", "b"]).data) == 1


def test_merge_pieces_hand_case():
    # tokens: [CLS] un ##believ ##able [SEP] -> words [CLS] unbelievable [SEP]
    a = np.full((5, 5), 0.2)
    a[1] = [0.1, 0.2, 0.3, 0.4, 0.0]
    spans = [(0, 1), (1, 4), (4, 5)]
    m = merge_pieces(a, spans, spans)
    assert m.shape == (3, 3)
    np.testing.assert_allclose(m.sum(-1), 1.0)
    # query word 1 = mean of rows 1..3; key word 1 = sum of cols 1..3
    np.testing.assert_allclose(m[1], [(0.1 + 0.2 + 0.2) / 3, (0.9 + 0.6 + 0.6) / 3, (0.0 + 0.2 + 0.2) / 3])


def test_drop_special_renormalises():
    a = np.array([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]])
    keep = np.array([False, True, True])
    out = drop_rows_cols(a, keep, keep)
    np.testing.assert_allclose(out, [[0.25, 0.75], [1 / 9, 8 / 9]])
    assert aggregate(np.ones((2, 3, 4, 4)), "max").shape == (4, 4)


def _sent(fig) -> dict:
    """What the browser receives for a figure: Streamlit sends `to_json(fig.to_dict(), validate=False)`."""
    import json

    import plotly.io as pio

    return json.loads(pio.to_json(fig.to_dict(), validate=False))


FAST_FIGURES = {  # every figure built with viz.figures.axes.figure (unvalidated on the server)
    "head_heatmap": lambda A, toks: head_heatmap(A[0, 1], toks, toks, "L0 H1", x_title="key"),
    "model_view": lambda A, toks: model_view(A, selected=(1, 2), kv_heads=np.array([0, 0, 1, 1]),
                                             first_share=A[:, :, 1:, 0].mean(-1), title="t"),
    "sink_heatmap": lambda A, toks: sink_heatmap(A[:, :, 1:, 0].mean(-1)),
}


@pytest.mark.parametrize("name", sorted(FAST_FIGURES))
def test_unvalidated_figures_send_what_validated_ones_send(name, monkeypatch):
    """The server builds figures without Plotly's per-property checks (25 ms -> 1.4 ms for a token heatmap):
    the JSON the browser gets must be the one the checked figure gives, property for property."""
    import viz.figures.axes as axes

    rng = np.random.default_rng(0)
    A = rng.random((3, 4, 7, 7)).astype(np.float32)
    toks = ["[CLS]", "<s>", "a&b", "the", "the", "ĠCat", "[SEP]"]
    monkeypatch.setattr(axes, "VALIDATE", False)
    fast = _sent(FAST_FIGURES[name](A, toks))
    monkeypatch.setattr(axes, "VALIDATE", True)
    checked = _sent(FAST_FIGURES[name](A, toks))
    assert fast == checked


def test_head_atlas_names_heads_as_the_app_does():
    """PCA point labels read '0.2' (a number) for layer 0 head 2, and grid axes counted 0-11: L0 H2 and L/H."""
    from viz.figures.atlas import head_scatter, stat_grid

    L, H = 2, 3
    fig = head_scatter(np.random.default_rng(0).random((L * H, 2)), np.zeros(L * H, dtype=int), L, H,
                       np.full((L, H), "mixed"))
    assert list(fig.data[0].text)[:3] == ["L0 H0", "L0 H1", "L0 H2"]
    grid = stat_grid(np.full((L, H), 0.01), "share", share=True)
    assert list(grid.layout.xaxis.ticktext) == ["H0", "H1", "H2"] and list(grid.layout.yaxis.ticktext) == ["L0", "L1"]
    assert (grid.data[0].zmin, grid.data[0].zmax) == (0, 1)


def test_the_most_attended_bar_is_a_darker_shade_and_the_title_says_so():
    """Generate's attention bars drew the largest one black, with no legend."""
    from viz.figures.encdec import COLORS, attention_bars, darker

    fig = attention_bars(np.array([0.1, 0.7, 0.2]), ["<s>", "cat", "sat"], "Layer 0", COLORS["decoder"], highlight=1)
    colors = list(fig.data[0].marker.color)
    assert colors[1] == darker(COLORS["decoder"]) != "#222222" and colors[0] == colors[2] == COLORS["decoder"]
    assert "darker: the most attended (“cat”, 0.70)" in fig.layout.title.text
    assert list(fig.data[0].text) == ["0.10", "0.70", "0.20"]
