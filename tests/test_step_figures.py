"""Generation figures (viz.figures.steps) on hand-computed arrays."""

import numpy as np

from viz.figures.steps import head_grid, lens_table, next_token_bars, rank_map


def test_head_grid_rows_are_heads_scaled_to_their_own_maximum():
    rows = np.array([[[0.5, 0.25, 0.25], [0.0, 0.2, 0.8]],
                     [[1.0, 0.0, 0.0], [0.1, 0.1, 0.8]]], dtype=np.float32)  # [layer, head, key]
    fig = head_grid(rows, ["<s>", "a", "b"], "t")
    heat, marks = fig.data
    assert list(heat.y) == ["L0 H0", "L0 H1", "L1 H0", "L1 H1"]
    np.testing.assert_allclose(heat.z, [[1, 0.5, 0.5], [0, 0.25, 1], [1, 0, 0], [0.125, 0.125, 1]])
    cd = np.asarray(marks.customdata).reshape(4, 3, -1, 4)  # [row, key, marker, (layer, head, weight, key)]
    np.testing.assert_allclose(cd[3, 2, 0], [1, 1, 0.8, 2])
    np.testing.assert_allclose(cd[1, 0, 0], [0, 1, 0, 0])
    alias = fig.layout.xaxis.labelalias  # tick labels read as the tokens; plotly reads text as HTML
    assert [alias[x] for x in heat.x] == ["&lt;s&gt;", "a", "b"]
    assert len(fig.layout.shapes) == 1  # one separator between the two layers


def test_head_grid_pools_long_contexts():
    rows = np.arange(12, dtype=np.float32).reshape(1, 2, 6)
    fig = head_grid(rows, list("abcdef"), max_keys=3)
    heat, marks = fig.data
    cd = np.asarray(marks.customdata).reshape(2, 3, -1, 4)
    np.testing.assert_allclose(cd[:, :, 0, 2], [[0.5, 2.5, 4.5], [6.5, 8.5, 10.5]])
    assert list(heat.x) == ["a… (0)", "c… (1)", "e… (2)"]


def test_lens_table_marks_the_chosen_token_and_its_rank():
    top = [[("cat", 0.5), ("dog", 0.25)], [("dog", 0.75), ("cat", 0.125)]]
    fig = lens_table(top, "dog", rank=np.array([2, 1]), prob=np.array([0.25, 0.75]), title="t")
    heat = fig.data[0]
    assert list(heat.y) == ["emb", "L0"]
    assert list(heat.x) == ["#1", "#2", "'dog'"]
    assert list(heat.text[0]) == ["cat", "<b>dog</b>", "<b>#2</b> · 25.0%"]
    assert heat.text[1][0] == "<b>dog</b>" and heat.text[1][2] == "<b>#1</b> · 75.0%"
    np.testing.assert_allclose(heat.z, [[0.5, 0.25, 0.25], [0.75, 0.125, 0.75]])


def test_rank_map_is_log_rank_per_layer_and_outlines_the_current_step():
    ranks = np.array([[100, 10, 1], [1000, 1, 1]])  # [step, layer + 1]
    fig = rank_map(ranks, ["x", "<y>"], current=1)
    heat = fig.data[0]
    assert list(heat.x) == ["0: x", "1: &lt;y&gt;"] and list(heat.y) == ["emb", "L0", "L1"]
    np.testing.assert_allclose(heat.z, [[2, 3], [1, 0], [0, 0]])
    assert np.asarray(heat.text).tolist() == [[100, 1000], [10, 1], [1, 1]]
    assert fig.layout.shapes[0].x0 == 0.5 and fig.layout.shapes[0].x1 == 1.5


def test_next_token_bars_fit_small_probabilities_and_mark_the_chosen_token():
    fig = next_token_bars([("sea", 0.026), ("sky", 0.022), ("<s>", 0.01)], "sea")
    bar = fig.data[0]
    assert list(bar.x) == [0.01, 0.022, 0.026] and list(bar.marker.color) == ["#9ecae1", "#9ecae1", "#F58518"]
    assert fig.layout.xaxis.range[1] == 0.026 * 1.15 and list(fig.layout.yaxis.ticktext)[0] == "&lt;s&gt;"


def test_every_cell_of_a_row_opens_its_head():
    """Only the leftmost column was clickable (one marker per row): markers tile every cell of every row, the
    whole width of each cell on a short context."""
    L, H, K = 2, 3, 5
    fig = head_grid(np.random.default_rng(0).random((L, H, K)).astype(np.float32), list("abcde"))
    marks = fig.data[1]
    x, y = np.asarray(marks.x), np.asarray(marks.y)
    cd = np.asarray(marks.customdata)
    for row in range(L * H):
        xs = np.sort(x[y == row])
        assert xs.min() < 0 and xs.max() > K - 1  # from the first cell's left half to the last cell's right half
        assert np.diff(xs).max() <= 0.2  # no gap of a fifth of a cell between two clickable points
        assert {tuple(c) for c in cd[y == row][:, :2].astype(int)} == {(row // H, row % H)}
