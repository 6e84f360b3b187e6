"""Real Chromium, real server: the Patching page on each shipped model, read by tests/layout.py (nothing
collapsed, overlapping or cut), and its clicks: a head opens on the Attention page, a stream cell opens Inside a
layer at that layer and token, both for the same model and text. Set VIZ_SCREENSHOTS=dir to keep the pictures."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import wait_for_chart
from layout import measure, problems, settle

SHOTS = Path(os.environ["VIZ_SCREENSHOTS"]) if os.environ.get("VIZ_SCREENSHOTS") else None


def choose_model(page, name: str) -> None:
    page.locator('[data-testid="stSidebar"] input[aria-label="Model"]').click()
    page.get_by_role("option", name=name, exact=True).click()
    settle(page)


def open_patching(page, app_url: str, model: str) -> None:
    page.goto(app_url)
    wait_for_chart(page)
    choose_model(page, model)
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Patching", exact=True).click()
    page.get_by_role("heading", name="Patching").first.wait_for()
    settle(page)


def run_and_read(page, name: str) -> None:
    page.get_by_role("button", name="Run patching").click()
    page.get_by_text("Where the answer lives").wait_for()
    wait_for_chart(page)
    settle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert problems(measure(page)) == [], name
    if SHOTS:
        from test_browser_layout import shoot

        shoot(page, SHOTS / f"patching-{name}.png")


def chart(page, title: str):
    return page.locator('[data-testid="stPlotlyChart"]').filter(has=page.locator(".gtitle", has_text=title)).first


def click_cell(page, chart_locator, n: int) -> None:
    """The nth invisible marker (one per cell, row-major: layer, then position or head)."""
    point = chart_locator.locator(".scatterlayer .point").nth(n)
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def number_inputs(page) -> list[str]:
    return page.locator('[data-testid="stNumberInput"] input').evaluate_all("els => els.map(e => e.value)")


def test_atlas_lm_a_clicked_head_opens_on_the_attention_page(app_url, browser_page):
    page = browser_page
    open_patching(page, app_url, "atlas-lm")
    run_and_read(page, "atlas-lm")
    click_cell(page, chart(page, "Each head's output"), 3 * 8 + 6)  # L3 H6
    page.get_by_role("heading", name="Attention").first.wait_for()
    page.wait_for_function("""() => { const v = [...document.querySelectorAll('[data-testid="stNumberInput"] input')]
                                        .map(i => i.value); return v[0] === '3' && v[1] === '6'; }""", timeout=120_000)
    settle(page)
    assert page.locator('[data-testid="stSidebar"] textarea').input_value() == "The keys to the cabinet"
    assert page.locator('[data-testid="stSidebar"] input[aria-label="Model"]').input_value() == "atlas-lm"
    page.locator(".gtitle", has_text="Decoder masked self-attention · L3 H6").first.wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0


def test_minilm_mlm_a_clicked_stream_cell_opens_inside_a_layer(app_url, browser_page):
    page = browser_page
    open_patching(page, app_url, "minilm-mlm")
    run_and_read(page, "minilm-mlm")
    click_cell(page, chart(page, "Attention output (attn_out)"), 5 * 13 + 6)  # L5 at [MASK] (position 6)
    page.get_by_role("heading", name="Inside a layer").first.wait_for()
    page.get_by_text("layer 5", exact=False).first.wait_for(timeout=120_000)
    settle(page)
    assert number_inputs(page)[0] == "5"
    assert page.locator('input[aria-label="Query token"]').input_value() == "[MASK] (6)"
    assert "[MASK]" in page.locator('[data-testid="stSidebar"] textarea').input_value()
    assert page.locator('[data-testid="stException"]').count() == 0


def test_seq2seq_dates_says_why_not_then_patches_the_cross_attention(app_url, browser_page):
    page = browser_page
    open_patching(page, app_url, "seq2seq-dates")
    box = page.get_by_label("Corrupted input (the same number of tokens)")
    box.fill("3 April in 2021")
    box.press("Enter")
    page.get_by_text("The clean input has 4 tokens and the corrupted one 5").wait_for()
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 0
    box.fill("3 April 2021")
    box.press("Enter")
    page.get_by_text("Both inputs have 4 tokens").wait_for()
    settle(page)
    run_and_read(page, "seq2seq-dates")
    assert chart(page, "Cross-attention output").count() == 1
    click_cell(page, chart(page, "Each head's output"), 1 * 4 + 3)  # cross-attention L1 H3
    page.get_by_role("heading", name="Attention").first.wait_for()
    page.wait_for_function("""() => { const v = [...document.querySelectorAll('[data-testid="stNumberInput"] input')]
                                        .map(i => i.value); return v[0] === '1' && v[1] === '3'; }""", timeout=120_000)
    settle(page)
    page.locator(".gtitle", has_text="Cross-attention (decoder → encoder) · L1 H3").first.wait_for()  # that head
    assert page.locator('[data-testid="stException"]').count() == 0
