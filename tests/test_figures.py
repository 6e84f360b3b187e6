"""Figure builders: screen-sized payloads, labels that survive repeated tokens."""

import numpy as np

from viz.analysis.words import aggregate, drop_rows_cols, merge_pieces
from viz.figures.attention import figure_json_bytes, head_heatmap, model_view, pool


def test_pool_is_a_mean():
    a = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_allclose(pool(a, 2), [[2.5, 4.5], [10.5, 12.5]])
    assert pool(a, 8).shape == (4, 4)  # never upsampled


def test_model_view_stays_small_for_long_inputs():
    rng = np.random.default_rng(0)
    a = rng.random((12, 12, 512, 512), dtype=np.float32)
    fig = model_view(a)
    assert figure_json_bytes(fig) < 1_000_000
    cells = fig.data[1].customdata
    assert len(cells) == 144 and list(cells[-1]) == [11, 11]


def test_heatmap_keeps_repeated_tokens_apart():
    toks = ["the", "cat", "the", "mat"]
    fig = head_heatmap(np.eye(4), toks, toks)
    assert len(set(fig.data[0].x)) == 4
    assert list(fig.layout.xaxis.ticktext) == toks


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
