"""The Compare models page (AppTest, real MiniLM / minilm-mlm / atlas-lm): what it draws against references computed
here from one capture per model and scipy's Jensen-Shannon distance; its downloads; a studio run's lineage on a run
folder whose answer is known; and the Head atlas's queries-and-keys section against q and k read from captures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from sklearn.decomposition import PCA

from apptest import TEXT, open_page, rerun
from conftest import chart_spec
from viz.core.capture import capture


def js_sim(p_rows: np.ndarray, q_rows: np.ndarray) -> float:
    return 1 - float(np.mean([jensenshannon(p.astype(np.float64), q.astype(np.float64), base=2) ** 2
                              for p, q in zip(p_rows, q_rows)]))


def test_two_models_on_the_text_against_captures(load, downloads):
    at = open_page("match")
    assert not at.error, [e.value for e in at.error]
    assert "minilm-mlm: 6 × 12" in at.success[0].value and "13 rows" in at.success[0].value
    a = capture(load("minilm"), TEXT).attentions["encoder"]
    b = capture(load("minilm-mlm"), TEXT).attentions["encoder"]
    fig = chart_spec(at, "match_sim_fig")
    z = np.asarray(fig["data"][0]["z"], dtype=float)
    assert z.shape == (72, 72)
    for i, j in [(0, 0), (5, 17), (40, 41), (71, 60), (66, 66)]:  # rows: A heads, columns: B heads (layer * 12 + head)
        assert z[i, j] == pytest.approx(js_sim(a[i // 12, i % 12], b[j // 12, j % 12]), abs=2e-4)
    # the circles are the matching: one per A head, B heads all different, and the table download says the same
    circles = fig["data"][1]
    pairs = downloads.csv("match_pairs_csv")
    assert len(pairs) == len(set(zip(pairs.b_layer, pairs.b_head))) == 72
    got = sorted(map(tuple, np.asarray(circles["customdata"])[:, :4].astype(int).tolist()))
    assert got == sorted(map(tuple, pairs[["a_layer", "a_head", "b_layer", "b_head"]].to_numpy().tolist()))
    for r in pairs.itertuples():
        assert r.similarity == pytest.approx(z[r.a_layer * 12 + r.a_head, r.b_layer * 12 + r.b_head], abs=1e-4)
    npz = downloads.npz("match_npz")
    np.testing.assert_allclose(npz["similarity"], z, atol=1e-4)
    # the page opens on the least similar pair; its panels are those two heads' attention and their difference
    al, ah, bl, bh = (int(pairs.iloc[0][c]) for c in ("a_layer", "a_head", "b_layer", "b_head"))
    assert (at.number_input(key="match_layer").value, at.number_input(key="match_head").value) == (al, ah)
    pair = chart_spec(at, "match_pair_fig")["data"]
    np.testing.assert_allclose(pair[0]["z"], a[al, ah], atol=1e-6)
    np.testing.assert_allclose(pair[1]["z"], b[bl, bh], atol=1e-6)
    np.testing.assert_allclose(pair[2]["z"], b[bl, bh] - a[al, ah], atol=1e-6)
    # opening another head (what a click on a circle or a cell sets) shows that head and its own match
    at = rerun(at, match_layer=2, match_head=7)
    row = pairs[(pairs.a_layer == 2) & (pairs.a_head == 7)].iloc[0]
    bl, bh = int(row.b_layer), int(row.b_head)
    np.testing.assert_allclose(chart_spec(at, "match_pair_fig")["data"][1]["z"], b[bl, bh], atol=1e-6)
    assert f"L{bl} H{bh}" in json.dumps(chart_spec(at, "match_pair_fig")["layout"])


def test_different_tokenizers_compare_words_and_say_so(load):
    at = open_page("match", model_choice="atlas-lm", match_model_b="tiny-llama")
    assert not at.error, [e.value for e in at.error]
    assert any("over **words**" in i.value for i in at.info)
    z = np.asarray(chart_spec(at, "match_sim_fig")["data"][0]["z"])
    assert z.shape == (32, 8) and len(chart_spec(at, "match_sim_fig")["data"][1]["x"]) == 8  # 8 pairs: B is smaller
    labels = chart_spec(at, "match_pair_fig")["layout"]["xaxis"]["labelalias"]
    assert list(labels.values()) == TEXT.split()  # the pair is drawn over the words of the text


def test_corpus_run_has_progress_cancel_and_the_reference_numbers(load, monkeypatch, tmp_path):
    sents = ["The cat sat on the mat.", "Is this the way to the station?", "We walked along the river."]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(sents) + "\n")
    monkeypatch.setenv("VIZ_SAMPLE_CORPUS", str(corpus))
    at = open_page("match", match_over="sample sentences")
    assert any("Press **Run**" in i.value for i in at.info) and at.button(key="match_cancel_btn").disabled
    at.button(key="match_run").click()
    at = rerun(at, match_over="sample sentences")
    assert "3 sentences" in at.success[0].value
    z = np.asarray(chart_spec(at, "match_sim_fig")["data"][0]["z"], dtype=float)
    caps = [(capture(load("minilm"), s).attentions["encoder"], capture(load("minilm-mlm"), s).attentions["encoder"])
            for s in sents]
    for i, j in [(3, 3), (30, 45), (70, 2)]:
        rows_a = [row for a, _ in caps for row in a[i // 12, i % 12]]  # every row of every sentence
        rows_b = [row for _, b in caps for row in b[j // 12, j % 12]]
        assert z[i, j] == pytest.approx(js_sim(rows_a, rows_b), abs=2e-4)


def test_studio_run_heads_followed_back(monkeypatch, tmp_path):
    run = tmp_path / "models" / "my-run" / "training"
    run.mkdir(parents=True)
    rng = np.random.default_rng(0)
    final = rng.dirichlet(np.ones(5) * 0.2, size=(2, 2, 5)).astype(np.float32)  # [L, H, T, T]
    perm = [2, 0, 3, 1]  # at step 0, head n was doing what final head perm[n] does
    early = final.reshape(4, 5, 5)[perm].reshape(2, 2, 5, 5)
    np.savez(run / "snapshots.npz", steps=np.array([0, 50, 100]), eval_top1=np.full(3, np.nan),
             probe_attn=np.stack([early, early, final]))
    (run / "job.json").write_text(json.dumps({"probe_tokens": ["[CLS]", "a", "b", "c", "[SEP]"]}))
    monkeypatch.setenv("VIZ_USER_MODELS", str(tmp_path / "models"))
    at = open_page("match", match_mode="A Training-studio run through training")
    assert not at.error, [e.value for e in at.error]
    fig = chart_spec(at, "match_lineage_fig")
    text = np.asarray(fig["data"][0]["text"])  # [final head, step]: the head matched at that step
    assert text[:, 2].tolist() == ["L0H0", "L0H1", "L1H0", "L1H1"]
    assert text[:, 0].tolist() == [f"L{perm.index(n) // 2}H{perm.index(n) % 2}" for n in range(4)]
    at = rerun(at, match_mode="A Training-studio run through training", match_step=0, match_final=3)
    pair = chart_spec(at, "match_step_pair")["data"]
    np.testing.assert_allclose(pair[1]["z"], final[1, 1])
    np.testing.assert_allclose(pair[0]["z"], final[1, 1])  # step 0's head perm^-1(3) did exactly this


def test_atlas_queries_and_keys_section_against_captures(load, monkeypatch, tmp_path, downloads):
    sents = ["The cat sat on the mat.", "Is this the way to the station?"]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(sents) + "\n")
    monkeypatch.setenv("VIZ_SAMPLE_CORPUS", str(corpus))
    at = open_page("atlas", atlas_limit=2)
    at.button(key="atlas_run").click()
    at = rerun(at, atlas_limit=2)
    assert "qk_overview_fig" in [c.key for c in at.get("plotly_chart")]
    at.button(key="qk_gather_run").click()
    at = rerun(at, atlas_limit=2, atlas_layer=1, atlas_head=4)
    fig = chart_spec(at, "qk_scatter_fig")
    pts = {t["name"]: np.stack([t["x"], t["y"]], 1) for t in fig["data"]}
    # reference: q and k of L1 H4 from one capture per sentence, normalised by the documented recipe, sklearn's PCA
    bundle = load("minilm")
    q = np.concatenate([capture(bundle, s).queries["encoder"][1, 4] for s in sents])
    k = np.concatenate([capture(bundle, s).head_keys("encoder")[1, 4] for s in sents])
    from viz.analysis.qk import normalise

    n = normalise(q, k)
    assert np.linalg.norm(n.q, axis=1).mean() == pytest.approx(np.linalg.norm(n.k, axis=1).mean(), rel=1e-4)
    ref = PCA(n_components=2).fit_transform(np.concatenate([n.q, n.k]))
    got = np.concatenate([pts["queries"], pts["keys"]])
    np.testing.assert_allclose(np.abs(got), np.abs(ref), atol=2e-3)
    # the points download: the drawn coordinates, and vectors whose q·k·scaling softmax is the captured attention
    df = downloads.csv("qk_points_csv", keep_default_na=False)
    q_rows = df[df.kind == "query"]
    np.testing.assert_allclose(q_rows[["x", "y"]].to_numpy(), pts["queries"], atol=1e-4)
    dims = [c for c in df.columns if c.startswith("d")]
    s1q = q_rows[q_rows.sentence == 1].sort_values("position")[dims].to_numpy()
    s1k = df[(df.kind == "key") & (df.sentence == 1)].sort_values("position")[dims].to_numpy()
    scores = s1q @ s1k.T * 32 ** -0.5
    soft = np.exp(scores - scores.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    np.testing.assert_allclose(soft, capture(bundle, sents[1]).attentions["encoder"][1, 4], atol=1e-5)
    # a click on a point (its customdata) opens that sentence's attention for the head
    at = rerun(at, atlas_limit=2, atlas_layer=1, atlas_head=4, qk_s=1, qk_p=3, qk_k=0)
    shown = chart_spec(at, "qk_sentence_fig")
    np.testing.assert_allclose(shown["data"][0]["z"], capture(bundle, sents[1]).attentions["encoder"][1, 4], atol=1e-6)
    assert "the clicked query" in shown["layout"]["title"]["text"]
