"""Patching figures: one colour scale that reads the same on every grid, clicks that carry their cell, no '-0.00'."""

import numpy as np

from viz.figures.patching import atp_scatter, head_grid, largest_gaps, path_matrix, position_labels, stream_heatmap


def test_one_symmetric_scale_never_narrower_than_minus_one_to_one():
    small = stream_heatmap(np.array([[0.0, 0.2], [-0.1, 0.05]]), ["a", "b"], "t")
    big = head_grid(np.array([[1.6, -0.3]]), "t")
    for fig, m in ((small, 1.0), (big, 1.6)):
        heat = fig.data[0]
        assert (heat.zmin, heat.zmax, heat.zmid) == (-m, m, 0.0)  # 1 is the same red on both: "all restored"
        assert heat.colorscale[0][1] != heat.colorscale[-1][1]


def test_every_cell_has_a_click_marker_with_its_indices():
    fig = stream_heatmap(np.zeros((3, 4)), list("abcd"), "t")
    data = np.asarray(fig.data[1].customdata)
    assert data.tolist() == [[l, p] for l in range(3) for p in range(4)]  # row-major: the browser test relies on it
    fig = head_grid(np.zeros((2, 5)), "t")
    assert np.asarray(fig.data[1].customdata).tolist() == [[l, h] for l in range(2) for h in range(5)]


def test_cell_texts_and_labels():
    fig = stream_heatmap(np.array([[-0.0001, 0.5]]), ["x", "y"], "t")
    assert list(fig.data[0].text[0]) == ["0.00", "0.50"]
    assert position_labels(["the", "cat"], ["the", "dog"]) == ["the", "cat→dog"]
    fig = path_matrix(np.array([[np.nan, 0.3]]), ["L0 H0"], ["L0 H1", "L1 H1"], "t")
    assert list(fig.data[0].text[0]) == ["", "0.30"]


def test_largest_gaps_are_ringed_and_listed():
    points = {"head": (np.array([1.0, 0.0, 0.5]), np.array([0.9, 0.0, -0.5]), ["L0 H0", "L0 H1", "L0 H2"]),
              "resid_pre": (np.array([0.2]), np.array([0.7]), ["L0 cat (1)"])}
    assert largest_gaps(points, 2) == [("head", "L0 H2", 0.5, -0.5), ("resid_pre", "L0 cat (1)", 0.2, 0.7)]
    fig = atp_scatter(points, "t")
    ring = next(t for t in fig.data if t.name == "largest disagreements")
    assert list(ring.x)[:2] == [0.5, 0.2] and list(ring.y)[:2] == [-0.5, 0.7]
