"""Real browser on the Masked LM and Compare masking pages (model chosen in the sidebar like a user would)."""

import re

from conftest import wait_for_chart


def choose_model(page, name: str):
    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=name, exact=True).click()


def test_mlm_page_in_the_browser(app_url, browser_page):
    page = browser_page
    page.goto(f"{app_url}/mlm")
    page.get_by_label("Text").wait_for()
    choose_model(page, "minilm-mlm")
    box = page.get_by_label("Text")
    box.fill("She poured a cup of [MASK].")
    box.press("Control+Enter")
    wait_for_chart(page)
    page.get_by_text("[MASK] at position 6").wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0
    # what the browser drew: the top-5 bars' token ticks and percentages, against the library's prediction
    from viz.tasks.mlm import predict
    from viz.core.models import load_model

    (pred,) = predict(load_model("minilm-mlm"), "She poured a cup of [MASK].", top_k=5).predictions
    bars = page.locator('[data-testid="stPlotlyChart"]').filter(has=page.locator(".gtitle", has_text="top 5")).first
    bars.locator(".bartext").first.wait_for()
    ticks = bars.locator(".ytick text").evaluate_all("els => els.map(e => e.textContent)")  # SVG: no innerText
    texts = bars.locator(".bartext").evaluate_all("els => els.map(e => e.textContent)")
    assert [re.sub(r" \(\d+\)$", "", t) for t in ticks][::-1] == [t for t, _ in pred.top]
    assert texts[::-1] == [f"{p:.1%}" for _, p in pred.top]


def test_compare_page_in_the_browser(app_url, browser_page):
    page = browser_page
    page.goto(f"{app_url}/compare")
    page.get_by_label("Text").wait_for()
    choose_model(page, "minilm-mlm")
    page.get_by_text("Bidirectional vs causal").click()
    wait_for_chart(page)
    page.get_by_text("Mean KL").wait_for()
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 3  # change grid, both runs + difference, KL
    assert page.locator('[data-testid="stException"]').count() == 0
