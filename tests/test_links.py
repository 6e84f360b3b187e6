"""Links that reopen a view (viz/app/links.py): the URL follows the view, a new session opened on it gets the same
view back, and what does not fit gives way to the defaults with one line. AppTest runs the real app.py and pages;
the browser side (copying the link, a fresh browser context) is tests/test_browser_links.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from apptest import TEXT, tokens_of
from conftest import APP, ROOT, chart_spec
from viz.app import links


def open_link(page: str | None, query: dict) -> AppTest:
    """A new session (AppTest) whose URL carries `query`, on `page` (None: the default page)."""
    at = AppTest.from_file(APP, default_timeout=240)
    if page:
        at.switch_page(f"pages/{page}.py")
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def notices(at) -> list[str]:
    return [w.value for w in at.warning if "this link" in w.value]


@pytest.mark.parametrize("kind, value", [("bool", True), ("bool", False), ("int", -3), ("float", 0.05),
                                         ("str", "all layers"), ("text", "a b\nc & d = e?"), ("ints", [2, 7]),
                                         ("pair", (3, 5)), ("pairs", [(0, 1), (2, 11)]), ("intstr", "mean"),
                                         ("intstr", 4)])
def test_values_survive_the_url(kind, value):
    from urllib.parse import parse_qs, urlencode

    query = urlencode({"v": links.encode(value, kind)}, safe=",")
    assert links.decode(parse_qs(query)["v"][0], kind) == value


@pytest.mark.parametrize("kind, raw", [("bool", "maybe"), ("int", "3.5"), ("float", "nan"), ("ints", "1,x"),
                                       ("pair", "3"), ("pair", "1.2,3.4"), ("pairs", "1.2.3"), ("str", "x" * 201)])
def test_a_value_that_is_not_one_is_refused(kind, raw):
    with pytest.raises(ValueError):
        links.decode(raw, kind)


def test_every_page_declares_what_its_links_carry():
    """Each page of app.py's navigation has its entry in links.PAGES, and every key listed there is a key that
    page (or the viz.app part it calls) really uses: a renamed widget would otherwise drop out of links unseen."""
    nav = re.findall(r'st\.Page\("pages/(\w+)\.py"', (ROOT / "app.py").read_text())
    missing = [p for p in nav if p not in links.PAGES and p not in links.NOT_SHARED]
    assert not missing, f"add the pages' shareable widget keys to viz/app/links.py PAGES (or NOT_SHARED): {missing}"
    helpers = "".join(p.read_text() for p in (ROOT / "viz" / "app").glob("*.py"))
    for page, table in links.PAGES.items():
        source = (ROOT / "pages" / f"{page}.py").read_text() + helpers
        prefix = next(iter(table.values()))[0].split("_")[0]
        for url, (key, _) in table.items():
            assert f'"{key}"' in source or f".{key}" in source or (url == "target" and f'page_input("{prefix}")' in source), \
                (page, key)


def test_a_link_opens_the_attention_page_on_that_head_with_that_toggle():
    at = open_link(None, {"model": "minilm", "text": TEXT, "layer": "3", "head": "5", "words": "1"})
    assert (at.session_state["attn_layer"], at.session_state["attn_head"], at.session_state["attn_words"]) == (3, 5, True)
    spec = chart_spec(at, "attn_head_fig")
    assert spec["layout"]["title"]["text"].endswith("L3 H5")
    # merged words: the text's words, not its pieces (MiniLM is uncased)
    assert tokens_of(spec["data"][0]["y"]) == ["[CLS]"] + re.findall(r"\w+|\.", TEXT.lower()) + ["[SEP]"]
    assert not notices(at)


def test_the_url_and_the_copy_link_follow_the_view():
    at = open_link(None, {})
    assert at.query_params["model"] == "minilm" and at.query_params["layer"] == "0"
    at.number_input(key="attn_layer").set_value(2).run()
    at.toggle(key="attn_sink").set_value(True).run()
    assert at.query_params["layer"] == "2" and at.query_params["sink"] == "1"
    (code,) = [c.value for c in at.code]  # the sidebar's Copy link
    assert "layer=2" in code and "sink=1" in code and "model=minilm" in code
    # that link, opened by a new session, gives the same view
    query = dict(re.findall(r"([a-z_]+)=([^&]*)", code.split("?", 1)[1]))
    from urllib.parse import unquote_plus

    again = open_link(None, {k: unquote_plus(v) for k, v in query.items()})
    assert (again.session_state["attn_layer"], again.session_state["attn_sink"]) == (2, True)
    assert again.session_state["text"] == at.session_state["text"]


def test_a_tampered_link_gets_one_line_and_the_defaults():
    at = open_link(None, {"model": "nope-not-a-model", "text": TEXT, "layer": "99", "head": "5", "words": "maybe",
                          "foo": "1"})
    (line,) = notices(at)
    for part in ("model 'nope-not-a-model'", "layer=99", "words=maybe", "'foo'"):
        assert part in line, line
    assert at.session_state["model_choice"] == "minilm" and at.session_state["attn_layer"] == 0
    assert at.session_state["attn_words"] is False and at.session_state["attn_head"] == 5  # the valid one stays
    assert "foo" not in at.query_params and at.query_params["layer"] == "0"  # the URL now says what is shown
    at.number_input(key="attn_head").set_value(4).run()
    assert not notices(at)  # said once; the user's own changes are theirs


def test_an_error_the_links_values_cause_gives_the_defaults(monkeypatch):
    """Whatever a page makes of a link's values, the result is the defaults and one line, never a traceback."""
    import viz.figures.attention as figs

    real = figs.head_heatmap

    def fragile(M, q, k, title="", **kw):
        if title.endswith("L3 H5"):
            raise IndexError("a value this page cannot draw")
        return real(M, q, k, title, **kw)

    monkeypatch.setattr(figs, "head_heatmap", fragile)
    at = open_link(None, {"model": "minilm", "text": TEXT, "layer": "3", "head": "5"})
    (line,) = notices(at)
    assert "IndexError" in line
    assert chart_spec(at, "attn_head_fig")["layout"]["title"]["text"].endswith("L0 H0")


def test_a_long_text_travels_as_a_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZ_LINK_DIR", str(tmp_path))
    long = " ".join(["The cat sat on the mat because it was tired."] * 60)  # 2,699 characters
    at = open_link(None, {})
    at.session_state["text"] = long
    at.run()
    assert "text" not in at.query_params
    key = at.query_params["text_id"]
    assert len(key) == 16 and (tmp_path / f"{key}.txt").read_text() == long
    assert any("(2,699 characters) is kept on this server: this link opens here only" in c.value for c in at.caption)
    again = open_link(None, {"text_id": key, "layer": "1"})
    assert again.session_state["text"] == long and not notices(again)
    stale = open_link(None, {"text_id": "0123456789abcdef", "layer": "1"})
    (line,) = notices(stale)
    assert "text" in line and "no longer kept" in line
    assert stale.session_state["text"] != long and stale.session_state["attn_layer"] == 1
    monkeypatch.setattr(links, "KEEP_CHARS", 2500)  # longer than links keep: left out, and said
    at.run()
    assert "text" not in at.query_params and "text_id" not in at.query_params
    assert any("longer than a link keeps: it is left out" in c.value for c in at.caption)


def test_masked_lm_link(load):
    from viz.tasks.mlm import predict

    text = "She poured a cup of [MASK] and read the paper."
    at = open_link("mlm", {"model": "minilm-mlm", "text": text, "topk": "3", "positions": "9", "layers": "0"})
    assert at.session_state["mlm_positions"] == [9] and at.session_state["mlm_topk"] == 3
    preds = predict(load("minilm-mlm"), text, positions=(9,), top_k=3).predictions
    assert [p.position for p in preds] == [6, 9]
    for p in preds:
        bars = chart_spec(at, f"mlm_top_{p.position}")["data"][0]
        assert tokens_of(bars["y"])[::-1] == [t for t, _ in p.top]
    assert not [c for c in at.get("plotly_chart") if c.key.startswith("mlm_layers_")]  # per-layer off, as linked
    assert not notices(at)


def test_generate_link(load):
    query = {"model": "atlas-lm", "text": "The cat sat on the mat", "prompt": "The cat sat on the", "max_new": "4",
             "step": "2", "layer": "1", "head": "3"}
    at = open_link("generate", query)
    assert at.session_state["gen_step"] == 2 and at.session_state["gen_prompt"] == "The cat sat on the"
    assert (at.session_state["gen_layer"], at.session_state["gen_head"]) == (1, 3)
    assert chart_spec(at, "gen_head_fig")["layout"]["title"]["text"].startswith("Layer 1 · head 3")
    assert not notices(at)
    bad = open_link("generate", {**query, "head": "77", "method": "telepathy"})
    (line,) = notices(bad)
    assert "head=77" in line and "method=telepathy" in line
    assert bad.session_state["gen_head"] == "mean" and bad.session_state["gen_method"] == "greedy"


def test_every_page_runs_from_a_link_of_its_own():
    """Each page's own link (its URL after a default run) opens that page again with no line and no traceback."""
    for page in links.PAGES:
        if page == "atlas":
            continue  # its opened head needs a corpus run: tests/test_browser_links.py
        at = AppTest.from_file(APP, default_timeout=240)
        at.switch_page(f"pages/{page}.py")
        at.session_state["model_choice"] = {"mlm": "minilm-mlm", "generate": "atlas-lm", "encdec": "seq2seq-dates"}.get(page, "minilm")
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        query = dict(at.query_params)
        again = open_link(page, query)
        assert not notices(again), (page, notices(again))
        for url, (key, _) in links.spec(page).items():
            if url in query and key in at.session_state:
                assert again.session_state[key] == at.session_state[key], (page, key)


def test_kept_texts_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZ_LINK_DIR", str(tmp_path))
    monkeypatch.setattr(links, "KEEP_FILES", 3)
    keys = [links.keep_text(f"text number {i}") for i in range(5)]
    assert len(list(Path(tmp_path).glob("*.txt"))) == 3
    assert links.kept_text(keys[-1]) == "text number 4"
    assert links.kept_text("../../etc/passwd") is None and links.kept_text("zz" * 8) is None
    assert np.all([len(k) == 16 for k in keys])
