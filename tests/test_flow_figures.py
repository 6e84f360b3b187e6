"""Layer-flow figures: link selection by threshold/top-k, screen-sized output, journey figures."""

import numpy as np

from viz.figures.attention import figure_json_bytes
from viz.figures.flow import flow_view, into_token_bars, level_token_heatmap, pca_paths_figure, select_links


def test_select_links_threshold_and_top_k():
    m = np.array([[[.6, .3, .1], [0, 1, 0], [.2, .2, .6]]])
    assert select_links(m, 0.0, 1) == [(0, 0, 0, .6), (0, 1, 1, 1.0), (0, 2, 2, .6)]
    links = select_links(m, 0.25, 2)
    assert (0, 0, 1, .3) in links and all(w >= .25 for *_, w in links)
    assert all(w > 0 for *_, w in select_links(m, 0.0, 3))  # zero weights are never drawn


def test_flow_view_stays_small_at_128_tokens():
    rng = np.random.default_rng(0)
    mats = rng.dirichlet(np.ones(128) * .1, size=(12, 128))  # [layer, q, k]
    fig = flow_view(mats, [f"t{i}" for i in range(128)], threshold=0.05, top_k=3, selected=5, selected_level=7)
    assert len(fig.data) <= 8  # a few width buckets + nodes + the ring, not one trace per link
    assert figure_json_bytes(fig) < 1_500_000
    nodes = [t for t in fig.data if t.name == "tokens"][0]
    assert np.asarray(nodes.customdata).shape == (13 * 128, 2)


def test_journey_and_bar_figures_build():
    toks = ["a", "b", "c"]
    assert len(into_token_bars({"rollout": np.ones(3) / 3, "flow": np.ones(3)}, toks).data) == 2
    assert level_token_heatmap(np.zeros((2, 3)), toks, ["x", "y"]).data[0].z.shape == (3, 2)
    fig = pca_paths_figure(np.zeros((4, 3, 2)), toks, np.array([.6, .3]))
    assert "60%" in fig.layout.xaxis.title.text
