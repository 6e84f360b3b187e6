"""The attribution page (pages/attribution.py) through AppTest on the shipped models: what it draws and offers for
download against the library (`attribute`, `run_corpus`, themselves checked against independent references in
test_attribution.py / test_faithfulness.py) and against an explicit normalisation written here; bad input
answered with one sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP, chart_spec
from viz.causal.attribution import attribute
from viz.causal.attribution_catalog import METHODS
from viz.causal.attribution_corpus import run_corpus
from viz.core.models import TINY_FAMILIES, TINY_MLM
from viz.tasks.corpus import sample_corpus

NO_PREDICTION = {f"tiny-{f}" for f in TINY_MLM}  # encoders without their masked-LM head
FAST = ["grad_x_input", "occlusion", "attention", "rollout"]
MLM_TEXT = "The capital of France is [MASK]."


def open_page(model: str, text: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    at.switch_page("pages/attribution.py")
    return rerun(at, model, text, **state)


def rerun(at: AppTest, model: str, text: str, **state) -> AppTest:
    for k, v in {"model_choice": model, "text": text, **state}.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(at) -> list[str]:
    return [m.value for m in at.markdown] + [c.value for c in at.caption] + [w.value for w in at.warning] + \
        [e.value for e in at.error] + [i.value for i in at.info]


def test_one_example_shows_the_librarys_numbers(load, downloads):
    at = open_page("minilm-mlm", MLM_TEXT, attr_methods=FAST, attr_seeds=4)
    lib = attribute(load("minilm-mlm"), MLM_TEXT, methods=FAST, with_faithfulness=True, seeds=4)
    p = lib.problem
    assert any(f"Explaining **{p.target}** at position {p.position}" in s for s in shown(at))
    strips = chart_spec(at, "attr_strips")["data"][0]
    raw = np.array([lib.scores[m] for m in FAST])
    cand = p.candidates
    for r, m in enumerate(FAST):  # colour: the score over the method's largest |score| among the candidates
        top = max(abs(raw[r][i]) for i in range(p.n) if cand[i])
        for i in range(p.n):
            z = strips["z"][r][i]
            if cand[i]:
                assert z == pytest.approx(raw[r][i] / top, abs=1e-4)
            else:
                assert z is None or np.isnan(z)
            assert strips["text"][r][i] == f"{raw[r][i]:.3g}"
    assert list(strips["y"]) == [METHODS[m].label for m in FAST]
    assert strips["zmid"] == 0 and strips["zmin"] == -1 and strips["zmax"] == 1
    agree = chart_spec(at, "attr_agreement")["data"][0]
    for a, ma in enumerate(FAST):
        for b, mb in enumerate(FAST):
            assert agree["z"][a][b] == pytest.approx(lib.agreement[ma][mb], abs=1e-3)
    board = chart_spec(at, "attr_scoreboard")
    comp, suff = board["data"][0]["x"], board["data"][1]["x"]
    for i, m in enumerate(FAST):
        assert comp[i] == pytest.approx(lib.faithfulness.methods[m].comprehensiveness, abs=1e-6)
        assert suff[i] == pytest.approx(lib.faithfulness.methods[m].sufficiency, abs=1e-6)
    lines = [s for s in board["layout"]["shapes"] if s["type"] == "line"]
    assert lines[0]["x0"] == pytest.approx(lib.faithfulness.random.comprehensiveness, abs=1e-6)
    assert lines[1]["x0"] == pytest.approx(lib.faithfulness.random.sufficiency, abs=1e-6)
    spread = lib.faithfulness.random_spread("comprehensiveness")
    band = [s for s in board["layout"]["shapes"] if s["type"] == "rect"][0]
    assert band["x0"] == pytest.approx(spread["mean"] - spread["std"], abs=1e-6)
    # downloads: the scores, the agreement, the faithfulness table and everything as JSON
    scores = downloads.csv("attr_scores_csv")
    for m in FAST:
        np.testing.assert_allclose(scores[m], lib.scores[m], atol=1e-6)
    assert list(scores.token) == p.tokens
    faith = downloads.csv("attr_faith_csv", index_col=0)
    assert faith.loc["occlusion", "comprehensiveness"] == pytest.approx(
        lib.faithfulness.methods["occlusion"].comprehensiveness, abs=1e-6)
    everything = json.loads(downloads.bytes("attr_json"))
    assert everything["tokens"] == p.tokens and set(everything["scores"]) == set(FAST)
    assert {"attr_agree_csv"} | {f"{c.key}_html_{k}" for c in at.get("plotly_chart") for k in ("small", "offline")} \
        <= downloads.keys()


def test_a_clicked_token_shows_its_score_under_every_method(load):
    at = open_page("minilm-mlm", MLM_TEXT, attr_methods=FAST, attr_faithful=False)
    lib = attribute(load("minilm-mlm"), MLM_TEXT, methods=FAST)
    p = lib.problem
    at = rerun(at, "minilm-mlm", MLM_TEXT, attr_token=2)  # what a click on a cell of column 2 sets
    detail = chart_spec(at, "attr_token_fig")
    assert f"Token 2 '{p.tokens[2]}'" in detail["layout"]["title"]["text"]
    for r, m in enumerate(FAST):
        s = lib.scores[m]
        top = max(abs(s[i]) for i in range(p.n) if p.candidates[i])
        assert detail["data"][0]["x"][r] == pytest.approx(s[2] / top, abs=1e-4)
    strips = chart_spec(at, "attr_strips")["data"][1]  # the click layer: [token, method row] per cell
    assert sorted({int(c[0]) for c in strips["customdata"]}) == list(range(p.n))


@pytest.mark.parametrize("model, text, state, says", [
    ("atlas-lm", "The cat sat on the", {}, "Explaining **▁"),
    ("seq2seq-dates", "3 March 2021", {"attr_position": 2}, "Explaining **03** at position 2 of the output"),
    ("minilm-mlm", "The capital of France is [MASK].", {"attr_target": "paris", "attr_foil": "lyon"},
     "Explaining **paris** against foil **lyon**"),
])
def test_every_kind_of_model(model, text, state, says):
    at = open_page(model, text, attr_methods=FAST, attr_faithful=False)
    if state:
        at = rerun(at, model, text, attr_methods=FAST, attr_faithful=False, **state)
    assert any(says in s for s in shown(at)), shown(at)
    assert {"attr_strips", "attr_token_fig", "attr_agreement"} <= {c.key for c in at.get("plotly_chart")}


@pytest.mark.parametrize("model, text, state, says", [
    ("minilm-mlm", "   ", {}, "The text is empty: type a sentence first."),
    ("minilm-mlm", "The cat sat on the mat.", {}, "No [MASK] in the text and no position given"),
    ("minilm-mlm", MLM_TEXT, {"attr_target": "unbelievableness"}, "is split by this tokenizer into"),
    ("seq2seq-dates", "3 March 2021", {"attr_target": "zebra"}, "is not in this model's vocabulary"),
])
def test_bad_input_gets_one_sentence(model, text, state, says):
    at = open_page(model, text, attr_methods=FAST)
    if state:
        at = rerun(at, model, text, attr_methods=FAST, **state)
    msgs = [w.value for w in at.warning]
    assert len(msgs) == 1 and says in msgs[0] and msgs[0].count(". ") <= 1 and "\n" not in msgs[0], msgs
    assert not at.get("plotly_chart")


def test_a_model_without_a_prediction_head_is_refused():
    at = open_page("minilm", "The capital of France is [MASK].")
    assert any("no masked-LM head" in e.value for e in at.error)


def test_corpus_mode_runs_the_job_and_reports_the_librarys_summary(load, downloads):
    state = dict(attr_methods=["occlusion", "attention"], attr_mode="Corpus", attr_limit=3, attr_seeds=3)
    at = open_page("minilm-mlm", MLM_TEXT, **state)
    assert any("Press **Run**" in i.value for i in at.info)
    at.button(key="attr_run").click()
    at = rerun(at, "minilm-mlm", MLM_TEXT, **state)
    lib = run_corpus(load("minilm-mlm"), sample_corpus().sentences[:3], ["occlusion", "attention"], seeds=3)
    (verdict,) = at.success
    assert verdict.value.startswith(lib.verdict()[:-1])
    board = chart_spec(at, "attr_corpus_board")
    s = lib.summary().set_index("method")
    np.testing.assert_allclose(board["data"][0]["x"], s.loc[["occlusion", "attention"], "comprehensiveness"], atol=1e-9)
    np.testing.assert_allclose(board["data"][1]["x"], s.loc[["occlusion", "attention"], "sufficiency"], atol=1e-9)
    table = downloads.csv("attr_corpus_csv", index_col=0)
    assert table.loc["random", "comprehensiveness"] == pytest.approx(s.loc["random", "comprehensiveness"])
    rows = downloads.csv("attr_corpus_rows")
    assert len(rows) == 2 * len(lib.examples) and set(rows.method) == {"occlusion", "attention"}


def test_corpus_cancel_keeps_nothing():
    """A run whose Cancel was pressed (the callback's state) stops before the first sentence and says so."""
    state = dict(attr_methods=["occlusion"], attr_mode="Corpus", attr_limit=3)
    at = open_page("minilm-mlm", MLM_TEXT, **state)
    at = rerun(at, "minilm-mlm", MLM_TEXT, attr_running=True, attr_cancel=("pressed",), **state)
    assert any("Cancelled: nothing was kept" in w.value for w in at.warning)
    assert not at.get("plotly_chart") and not at.success


FAMILIES = [f"tiny-{f}" for f in TINY_FAMILIES] + ["tiny-bert-mlm"]  # the picker's tiny masked LM


@pytest.mark.parametrize("model", FAMILIES)
def test_every_tiny_family_attributes_or_says_why_not(model):
    """Every method on every tiny family: a chart per part, or (an encoder without a masked-LM head) one error."""
    text = "the cat sat on the [MASK] ." if model.endswith("-mlm") else "the cat sat on the mat"
    at = open_page(model, text, attr_steps=8, attr_seeds=2)
    charts = {c.key for c in at.get("plotly_chart")}
    if model in NO_PREDICTION:
        assert any("no masked-LM head" in e.value for e in at.error) and not charts
        return
    assert {"attr_strips", "attr_token_fig", "attr_agreement", "attr_scoreboard"} <= charts, shown(at)
    strips = chart_spec(at, "attr_strips")["data"][0]
    assert len(strips["y"]) == len(METHODS)


def test_the_position_follows_the_text_survives_the_corpus_mode_and_a_link():
    at = open_page("minilm-mlm", MLM_TEXT, attr_methods=FAST, attr_faithful=False)
    assert any("at position 6" in s for s in shown(at))
    at = rerun(at, "minilm-mlm", MLM_TEXT, attr_methods=FAST, attr_mode="Corpus")
    del at.session_state["attr_position"]  # a live server drops the state of a widget a run did not draw
    at = rerun(at, "minilm-mlm", MLM_TEXT, attr_methods=FAST, attr_mode="One example")
    assert at.selectbox(key="attr_position").value == 6  # the picker came back on the typed mask
    at = rerun(at, "minilm-mlm", "The [MASK] of France is Paris.", attr_methods=FAST)
    assert at.selectbox(key="attr_position").value == 2 and any("at position 2" in s for s in shown(at))
    linked = open_page("minilm-mlm", "The capital of France is Paris.", attr_methods=FAST, attr_faithful=False,
                       attr_position=2)  # what a link to this view puts in the state before the page runs
    assert any("at position 2" in s for s in shown(linked)), shown(linked)
