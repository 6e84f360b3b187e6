"""Every head statistic against hand-computed values on hand-built attention tensors."""

import math

import numpy as np
import pytest
import torch

from viz.analysis.head_map import head_map, kmeans, standardize
from viz.analysis.head_stats import (STATS, HeadStatsAccumulator, head_roles, merge_words, row_stats,
                                     row_weights)


def one(matrix, mask=None, groups=None):
    """A single sentence, one layer, one head: [T, T] -> [1, 1, 1, T, T] + masks."""
    a = torch.tensor(matrix, dtype=torch.float32)[None, None, None]
    T = a.shape[-1]
    m = torch.ones(1, T, dtype=torch.bool) if mask is None else torch.tensor([mask])
    g = torch.zeros(1, T, 3, dtype=torch.bool) if groups is None else torch.tensor([groups])
    return a, m, g


# tokens: [CLS] the cat , [SEP]   (cls=0, punct=3, sep=4)
GROUPS5 = [[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0]]
PREV5 = [[1, 0, 0, 0, 0],
         [1, 0, 0, 0, 0],
         [0, 1, 0, 0, 0],
         [0, 0, 1, 0, 0],
         [0, 0, 0, 1, 0]]


def acc_of(a, m, g, rows=None):
    acc = HeadStatsAccumulator(a.shape[1], a.shape[2], top_k=2)
    rows = m.clone() if rows is None else torch.tensor([rows])
    acc.add(a, m, rows, g, torch.arange(a.shape[0]))
    return acc, acc.means()


def test_previous_token_head():
    a, m, g = one(PREV5, groups=GROUPS5)
    _, s = acc_of(a, m, g)
    # rows 1..4 have a previous token and put all weight on it
    assert s["prev"][0, 0] == pytest.approx(1.0)
    assert s["next"][0, 0] == pytest.approx(0.0)
    assert s["self"][0, 0] == pytest.approx(1 / 5)  # only the [CLS] row attends to itself
    assert s["entropy"][0, 0] == pytest.approx(0.0, abs=1e-6)
    assert s["distance"][0, 0] == pytest.approx(4 / 5)  # rows 1..4 at distance 1, row 0 at 0
    assert s["cls"][0, 0] == pytest.approx(2 / 5)  # rows 0 and 1 land on [CLS]
    assert s["punct"][0, 0] == pytest.approx(1 / 5)  # row 4 lands on ','
    assert s["sep"][0, 0] == pytest.approx(0.0)


def test_uniform_head_entropy_distance():
    T = 4
    a, m, g = one(np.full((T, T), 1 / T), groups=[[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0]])
    _, s = acc_of(a, m, g)
    assert s["entropy"][0, 0] == pytest.approx(math.log(T))
    # mean |i-j| over a 4x4 grid: (0+1+2+3 + 1+0+1+2 + 2+1+0+1 + 3+2+1+0)/16
    assert s["distance"][0, 0] == pytest.approx(20 / 16)
    for stat in ("cls", "sep", "punct", "self", "prev", "next"):
        assert s[stat][0, 0] == pytest.approx(1 / T), stat


def test_next_and_self_and_sep():
    nxt = np.eye(4, k=1)
    nxt[3, 3] = 1.0  # last row has no next token: it attends to itself
    a, m, g = one(nxt, groups=[[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]])
    _, s = acc_of(a, m, g)
    assert s["next"][0, 0] == pytest.approx(1.0)  # rows 0..2 (row 3 has no next, not counted)
    assert s["self"][0, 0] == pytest.approx(1 / 4)
    assert s["sep"][0, 0] == pytest.approx(2 / 4)  # row 2 -> [SEP] and row 3 -> itself ([SEP])


def test_special_query_rows_excluded():
    a, m, g = one(PREV5, groups=GROUPS5)
    rows = [False, True, True, True, False]  # [CLS] and [SEP] rows are not counted
    _, s = acc_of(a, m, g, rows)
    assert s["cls"][0, 0] == pytest.approx(1 / 3)
    assert s["punct"][0, 0] == pytest.approx(0.0)  # only the [SEP] row looked at ','
    assert s["self"][0, 0] == pytest.approx(0.0)


def test_padding_excluded_from_every_statistic():
    """The same sentence alone, and padded in a batch beside a longer one (with junk weight on
    padded keys and junk padded rows), gives identical statistics."""
    base = np.array(PREV5, dtype=np.float32) * 0.6 + 0.4 / 5
    a1, m1, g1 = one(base, groups=GROUPS5)
    _, alone = acc_of(a1, m1, g1)

    T = 7
    padded = np.full((T, T), 0.3, dtype=np.float32)  # junk rows and junk padded-key weight
    padded[:5, :5] = base * 0.5  # half the mass on real keys, half on padding: renormalised away
    other = np.full((T, T), 1 / T, dtype=np.float32)
    a = torch.tensor(np.stack([padded, other]))[:, None, None]
    m = torch.tensor([[1] * 5 + [0] * 2, [1] * T], dtype=torch.bool)
    g = torch.zeros(2, T, 3, dtype=torch.bool)
    g[0, :5] = torch.tensor(GROUPS5, dtype=torch.bool)
    acc = HeadStatsAccumulator(1, 1)
    # only the first sentence's rows count: the second is there to force padding
    acc.add(a, m, torch.tensor([[1] * 5 + [1] * 2, [0] * T], dtype=torch.bool), g, torch.arange(2))
    both = acc.means()
    for stat in STATS:
        assert both[stat][0, 0] == pytest.approx(alone[stat][0, 0], abs=1e-6), stat
    # sentence 0's "next": row 4 ([SEP]) is the last real token, so padding at 5 must not count as next
    w = row_weights(m, torch.ones_like(m))
    assert w["next"][0].tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert w["prev"][0].tolist() == [0, 1, 1, 1, 1, 0, 0]


def test_means_are_token_weighted_across_batches():
    a1, m1, g1 = one(PREV5, groups=GROUPS5)  # 4 prev rows, all 1.0
    a2, m2, g2 = one(np.full((3, 3), 1 / 3))  # 2 prev rows at 1/3
    acc = HeadStatsAccumulator(1, 1)
    acc.add(a1, m1, m1, g1, torch.tensor([0]))
    acc.add(a2, m2, m2, g2, torch.tensor([1]))
    assert acc.means()["prev"][0, 0] == pytest.approx((4 * 1 + 2 / 3) / 6)


def test_top_k_keeps_strongest_sentences():
    acc = HeadStatsAccumulator(1, 1, top_k=2)
    for sid, w in enumerate([0.2, 0.9, 0.5]):
        prev = np.array(PREV5, dtype=np.float32) * w + (1 - w) / 5
        a, m, g = one(prev, groups=GROUPS5)
        acc.add(a, m, m, g, torch.tensor([sid]))
    p = STATS.index("prev")
    assert acc.top_ids[p, 0, 0].tolist() == [1, 2]
    tiny, mt, gt = one(np.eye(2))  # 1 prev row < TOP_MIN_ROWS: never enters the top-k
    acc.add(tiny, mt, mt, gt, torch.tensor([9]))
    assert 9 not in acc.top_ids[STATS.index("self"), 0, 0].tolist()


def test_merge_words_sum_keys_mean_queries():
    # tokens: a b1 b2 -> words: a, b ; b = pieces 1,2
    attn = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.0, 1.0, 0.0]])[None, None, None]
    out = merge_words(attn, torch.tensor([[0, 1, 1]]), 2)[0, 0, 0]
    expected = torch.tensor([[0.5, 0.5], [(0.2 + 0.0) / 2, (0.8 + 1.0) / 2]])
    assert torch.allclose(out, expected)
    assert torch.allclose(out.sum(-1), torch.ones(2))


def test_row_stats_shapes():
    a = torch.softmax(torch.randn(2, 3, 4, 6, 6), -1)
    rs = row_stats(a, torch.ones(2, 6, dtype=torch.bool), torch.zeros(2, 6, 3, dtype=torch.bool))
    assert set(rs) == set(STATS)
    assert all(v.shape == (2, 3, 4, 6) for v in rs.values())


def test_roles_from_thresholds():
    means = {s: np.zeros((1, 4)) for s in STATS}
    means["prev"][0, 0] = 0.7  # > 0.5: previous-token
    means["sep"][0, 1] = 0.9
    means["prev"][0, 1] = 0.6  # sep wins: 0.9/0.5 > 0.6/0.5
    means["entropy"][0, 2] = 2.0  # >= 0.8 * 2.3: broad
    means["entropy"][0, 3] = 1.0
    roles = head_roles(means, max_entropy=2.3)
    assert roles.tolist() == [["previous-token", "[SEP]/end (no-op)", "broad", "mixed"]]


def test_head_map_clusters_separate_groups():
    rng = np.random.default_rng(0)
    feats = np.vstack([rng.normal(0, 0.05, (6, 8)), rng.normal(3, 0.05, (6, 8))])
    coords, labels, ratio = head_map(feats, k=2)
    assert coords.shape == (12, 2)
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1 and labels[0] != labels[6]
    assert ratio[0] > 0.9
    assert np.allclose(standardize(np.ones((3, 2))), 0)
    assert kmeans(np.zeros((4, 2)), 3).tolist() == [0, 0, 0, 0]


def test_first_token_share_counts_rows_after_the_first_real_token():
    """`first`: the share on the first real key over the rows after it, hand-computed; with left padding the
    first real token is not position 0, and its own row (always 1 in a causal model) never counts."""
    rows = [[1, 0, 0, 0],
            [0.25, 0.75, 0, 0],
            [0.5, 0.25, 0.25, 0],
            [0.75, 0, 0, 0.25]]
    a, m, g = one(rows)
    _, s = acc_of(a, m, g)
    assert s["first"][0, 0] == pytest.approx((0.25 + 0.5 + 0.75) / 3)
    # the same sentence left-padded by one: position 0 is padding (its column must not count either)
    padded = np.zeros((5, 5))
    padded[1:, 1:] = rows
    padded[1:, 0] = 0.3  # weight on the padded key: renormalised away
    a, m, g = one(padded, mask=[0, 1, 1, 1, 1])
    _, s = acc_of(a, m, g)
    assert s["first"][0, 0] == pytest.approx((0.25 + 0.5 + 0.75) / 3)


def test_first_equals_cls_on_a_bert_sentence():
    a, m, g = one(PREV5, groups=GROUPS5)
    acc, s = acc_of(a, m, g, rows=[0, 1, 1, 1, 0])  # special rows ([CLS], [SEP]) never count
    assert s["first"][0, 0] == pytest.approx(s["cls"][0, 0]) == pytest.approx(1 / 3)


def test_a_checkpoint_of_other_statistics_is_refused():
    acc, _ = acc_of(*one(PREV5, groups=GROUPS5))
    old = acc.to_arrays()
    old = {k: (v[:-1] if k in ("sums", "counts", "top_scores", "top_ids") else v) for k, v in old.items()}
    with pytest.raises(ValueError, match="this version keeps"):
        HeadStatsAccumulator.from_arrays(old)
