"""Links that reopen a view, in a real Chromium against a real server: a user sets a view up, presses the sidebar's
Copy link and its copy button (the link is read back from the clipboard), and a fresh browser context (a new
session, nothing shared but the server) opens the link and shows that view. A tampered link gets one line and
the defaults."""

import os
from pathlib import Path

import pytest

from conftest import wait_for_chart
from layout import settle

SHOTS = Path(os.environ["VIZ_SCREENSHOTS"]) if os.environ.get("VIZ_SCREENSHOTS") else None  # for looking, not asserting
TITLE = """(t) => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')].some(e => e.textContent.startsWith(t))"""


def copy_link(page) -> str:
    """The link the sidebar's Copy link puts on the clipboard (after the page has settled)."""
    settle(page)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy link").click()
    body = page.locator('[data-testid="stPopoverBody"]').filter(has=page.locator("pre"))
    body.locator("pre").hover()
    body.get_by_role("button", name="Copy to clipboard").click()
    link = page.wait_for_function("() => navigator.clipboard.readText().then(t => t.startsWith('http') && t)").json_value()
    assert link.replace("/?", "?") == page.url.replace("/?", "?")  # the address bar holds the same view
    page.keyboard.press("Escape")
    return link


def open_fresh(page, link: str):
    """A new browser context (a new Streamlit session) on `link`."""
    fresh = page.context.browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
    fresh.set_default_timeout(180_000)
    fresh.goto(link)
    wait_for_chart(fresh)
    settle(fresh)
    return fresh


def number(page, label: str, value: int) -> None:
    box = page.locator('[data-testid="stNumberInput"]').filter(has_text=label).locator("input").first
    box.fill(str(value))
    box.press("Enter")
    settle(page)


def ticks(page, title: str) -> list[str]:
    chart = page.locator('[data-testid="stPlotlyChart"]').filter(has=page.locator(".gtitle", has_text=title)).first
    return chart.locator(".ytick text").evaluate_all("els => els.map(e => e.textContent)")


def choose(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")  # a multiselect's list stays open after a pick
    settle(page)


def test_attention_link_reopens_the_head_and_the_toggle(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    box = page.get_by_label("Text")
    box.fill("Tokenization splits unfamiliar words.")
    box.press("Control+Enter")
    settle(page)
    number(page, "Layer", 3)
    number(page, "Head", 5)
    page.get_by_text("Merge word pieces").click()
    settle(page)
    link = copy_link(page)
    assert "layer=3" in link and "head=5" in link and "words=1" in link

    fresh = open_fresh(page, link)
    fresh.wait_for_function(TITLE, arg="Encoder self-attention · L3 H5")
    assert fresh.get_by_role("switch", name="Merge word pieces").is_checked()
    assert fresh.get_by_label("Text").input_value() == "Tokenization splits unfamiliar words."
    words = ticks(fresh, "L3 H5")
    assert "tokenization" in words and not any(t.startswith("##") for t in words)  # merged, as linked
    assert fresh.locator('[data-testid="stException"]').count() == 0
    if SHOTS:
        fresh.screenshot(path=str(SHOTS / "link-attention.png"))


def test_masked_lm_link(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    page.goto(f"{app_url}/mlm")
    choose(page, "Model", "minilm-mlm")
    box = page.get_by_label("Text")
    box.fill("She poured a cup of [MASK] and read the paper.")
    box.press("Control+Enter")
    page.get_by_text("[MASK] at position 6").wait_for()
    choose(page, "Tokens to mask", "paper (10)")
    page.get_by_text("[MASK] at position 10 (was 'paper')").wait_for()
    before = ticks(page, "top 5")
    link = copy_link(page)

    fresh = open_fresh(page, link)
    fresh.get_by_text("[MASK] at position 10 (was 'paper')").wait_for()
    fresh.get_by_text("[MASK] at position 6").wait_for()
    assert ticks(fresh, "top 5") == before
    assert fresh.locator('[data-testid="stException"]').count() == 0


def test_generate_link(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    page.goto(f"{app_url}/generate")
    page.get_by_text("decoder-only language model").wait_for()
    choose(page, "Decoder models", "atlas-lm")
    page.get_by_role("button", name="Use this model").click()
    wait_for_chart(page)
    box = page.get_by_label("Prompt", exact=True)
    box.fill("The cat sat on the mat and the dog")
    box.press("Control+Enter")
    page.wait_for_function(TITLE, arg="Step 0: every layer × head")
    for step in (1, 2):
        page.get_by_role("button", name="▶").click()
        page.wait_for_function(TITLE, arg=f"Step {step}: every layer × head")
    settle(page)
    grid = page.locator('[data-testid="stPlotlyChart"]').first
    grid.scroll_into_view_if_needed()
    settle(page)
    plot = grid.locator(".nsewdrag").first.bounding_box()
    rows = len(grid.locator(".ytick text").all_text_contents())  # every head labelled: 4 layers x 8 heads
    x, y = plot["x"] + 0.5 * plot["width"], plot["y"] + ((8 + 3 + 0.5) / rows) * plot["height"]  # row L1 H3
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    page.wait_for_function(TITLE, arg="Layer 1 · head 3, over the context")
    link = copy_link(page)
    assert "step=2" in link and "model=atlas-lm" in link and "the+dog" in link

    fresh = open_fresh(page, link)
    fresh.wait_for_function(TITLE, arg="Step 2: every layer × head")
    fresh.wait_for_function(TITLE, arg="Layer 1 · head 3, over the context")
    assert fresh.locator('[data-testid="stException"]').count() == 0


@pytest.mark.timeout(900)
def test_head_atlas_link_reopens_the_opened_head(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    page.goto(f"{app_url}/atlas")
    number(page, "Sentences to use", 12)
    page.get_by_role("button", name="Run atlas").click()
    page.get_by_text("12 sentences ·").wait_for(timeout=600_000)
    number(page, "Layer", 3)
    number(page, "Head", 5)
    page.get_by_text("L3 H5:").first.wait_for()
    page.wait_for_function(TITLE, arg="L3 H5 ·")
    link = copy_link(page)
    assert "limit=12" in link and "layer=3" in link

    fresh = open_fresh(page, link)  # the server kept the run (shared, byte-bounded cache): no second run
    fresh.get_by_text("L3 H5:").first.wait_for()
    fresh.wait_for_function(TITLE, arg="L3 H5 ·")
    assert fresh.locator('[data-testid="stException"]').count() == 0


def test_a_tampered_link_gets_one_line_and_the_defaults(app_url, browser_page):
    page = browser_page
    page.goto(f"{app_url}/?model=not-a-model&layer=99&head=5&words=maybe")
    wait_for_chart(page)
    settle(page)
    notice = page.locator('[data-testid="stAlert"]').filter(has_text="this link")
    assert notice.count() == 1
    text = notice.inner_text()
    assert "model 'not-a-model'" in text and "layer=99" in text and "words=maybe" in text
    page.wait_for_function(TITLE, arg="Encoder self-attention · L0 H5")
    assert not page.get_by_role("switch", name="Merge word pieces").is_checked()
    assert "layer=0" in page.url and "not-a-model" not in page.url
    assert page.locator('[data-testid="stException"]').count() == 0
    if SHOTS:
        page.screenshot(path=str(SHOTS / "link-tampered.png"))
