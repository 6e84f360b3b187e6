"""Real browser against a real server: the Encoder–decoder page (Playwright drives Debian chromium)."""

import os
from pathlib import Path

from conftest import wait_for_chart

SHOTS = Path(os.environ["VIZ_SCREENSHOTS"]) if os.environ.get("VIZ_SCREENSHOTS") else None  # for looking, not asserting


def _goto_encdec(page, app_url):
    # Streamlit 1.67 serves a deep link to a fresh server from the pages/ folder, without app.py (no sidebar,
    # no navigation) until the entry page has run once: open the app first, like a visitor would.
    page.goto(app_url)
    wait_for_chart(page)
    page.goto(f"{app_url}/encdec")


def test_encdec_page_draws_and_steps(app_url, browser_page):
    page = browser_page
    _goto_encdec(page, app_url)
    # the default sidebar model is an encoder: the page says so, links to the Attention page, offers a switch
    page.get_by_text("encoder-only model").wait_for()
    page.get_by_role("link", name="Open the Attention page").wait_for()
    page.get_by_role("button", name="Use this model").wait_for()
    assert page.get_by_label("Model").count() >= 1  # the shared sidebar is there
    page.get_by_role("button", name="Use this model").click()
    wait_for_chart(page)
    page.get_by_text("decoding steps").first.wait_for()
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 4
    page.get_by_role("button", name="▶").click()  # step forward: the step label follows
    page.get_by_text("Step 1: cross-attention").wait_for()
    # type a new source: the step view follows
    box = page.get_by_label("Source text (encoder input)")
    box.fill("3 May 1999")
    box.press("Control+Enter")
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .xtick text')]
                 .some(t => t.textContent === 'may')""", timeout=120_000)
    if SHOTS:
        page.screenshot(path=str(SHOTS / "encdec-steps.png"), full_page=True)
    # the architecture tab draws its schematic
    page.get_by_role("tab", name="Architecture").click()
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')]
                 .some(t => t.textContent.includes('-LN ('))""", timeout=120_000)
    if SHOTS:
        page.screenshot(path=str(SHOTS / "encdec-architecture.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_encdec_empty_source_shows_a_message(app_url, browser_page):
    page = browser_page
    _goto_encdec(page, app_url)
    page.get_by_role("button", name="Use this model").click()
    wait_for_chart(page)
    box = page.get_by_label("Source text (encoder input)")
    box.fill("")
    box.press("Control+Enter")
    page.get_by_text("The source text is empty").wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_label("Text", exact=True).count() == 1  # the sidebar is still there
