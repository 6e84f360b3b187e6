"""Real Chromium, real server: the attribution page on the shipped models, as a visitor uses it (model and text in
the sidebar, a click on a token), read from what the browser drew."""

from __future__ import annotations

import re

from conftest import wait_for_chart
from layout import measure, problems, settle
from viz.causal.attribution_target import prepare
from viz.core.models import load_model


def _start(page, app_url: str, model: str, text: str) -> None:
    page.goto(app_url)
    wait_for_chart(page)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=model, exact=True).click()
    settle(page)
    box = page.get_by_label("Text", exact=True)
    box.fill(text)
    box.press("Control+Enter")
    settle(page)
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Does attention explain?", exact=True).click()
    page.get_by_role("heading", name="Does attention explain?").first.wait_for()
    settle(page, 600_000)


def _chart(page, title: str):
    return page.locator('[data-testid="stPlotlyChart"]').filter(has=page.locator(".gtitle", has_text=title)).first


def _ticks(chart, axis: str = "x") -> list[str]:
    return chart.locator(f".{axis}tick text").evaluate_all("els => els.map(e => e.textContent)")


def test_minilm_mlm_strips_and_a_click_on_a_token(app_url, browser_page):
    page = browser_page
    text = "The capital of France is [MASK]."
    _start(page, app_url, "minilm-mlm", text)
    p = prepare(load_model("minilm-mlm"), text)
    page.get_by_text(f"Explaining {p.target} at position {p.position}").wait_for()
    strips = _chart(page, "Scores per method")
    assert _ticks(strips) == p.tokens  # every token labelled, in order
    assert len(_ticks(strips, "y")) == 8  # one strip per method
    assert not problems(measure(page)), problems(measure(page))
    point = strips.locator(".scatterlayer .point").nth(2 * 0 + 2)  # row 0, token 2 ("capital")
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("() => [...document.querySelectorAll('.gtitle')].some(t => t.textContent.startsWith("
                           "\"Token 2 'capital'\"))", timeout=120_000)
    settle(page)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_decoder_and_encoder_decoder_draw_every_chart(app_url, browser_page):
    page = browser_page
    for model, text, says in (("atlas-lm", "The cat sat on the", r"Explaining ▁\w+ at position 5"),
                              ("seq2seq-dates", "3 March 2021", r"Explaining 2021 at position 0 of the output")):
        _start(page, app_url, model, text)
        page.get_by_text(re.compile(says)).wait_for()
        titles = page.locator(".gtitle").evaluate_all("els => els.map(e => e.textContent)")
        assert any(t.startswith("Scores per method") for t in titles)
        assert any(t.startswith("Rank agreement") for t in titles)
        assert any(t.startswith("Faithfulness") for t in titles)
        assert not problems(measure(page)), (model, problems(measure(page)))
        assert page.locator('[data-testid="stException"]').count() == 0


def test_an_empty_text_gets_one_sentence(app_url, browser_page):
    page = browser_page
    _start(page, app_url, "minilm-mlm", " ")
    page.get_by_text("The text is empty: type a sentence first.").wait_for()
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0
