"""Real browser against a real server: the Generate page (Playwright drives Debian chromium).

Generate from the shipped decoder atlas-lm, step
to a later token, and find the model view (every layer x head) and the logit-lens table of that step."""

import os
from pathlib import Path

from conftest import wait_for_chart
from layout import settle

SHOTS = Path(os.environ["VIZ_SCREENSHOTS"]) if os.environ.get("VIZ_SCREENSHOTS") else None  # for looking, not asserting
DECODER = "atlas-lm"  # the shipped decoder: a missing folder fails the test, it does not shrink it
TITLES = """(prefix) => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')]
                        .some(t => t.textContent.startsWith(prefix))"""


def test_generate_and_step_to_a_later_token(app_url, browser_page):
    page = browser_page
    # open the app first (a deep link to a fresh server runs the page without app.py: see test_browser_encdec)
    page.goto(app_url)
    wait_for_chart(page)
    page.goto(f"{app_url}/generate")
    # the default sidebar model is an encoder: the page offers a decoder instead
    page.get_by_text("decoder-only language model").wait_for()
    page.get_by_label("Decoder models").click()
    page.get_by_role("option", name=DECODER, exact=True).click()
    page.get_by_role("button", name="Use this model").click()
    wait_for_chart(page)
    box = page.get_by_label("Prompt", exact=True)
    box.fill("The cat sat on the mat and the dog")
    box.press("Control+Enter")
    page.wait_for_function("""() => [...document.querySelectorAll('p')]
                              .some(p => p.innerText.startsWith('Context:') && p.innerText.includes('dog'))""")
    page.wait_for_function(TITLES, arg="Step 0: every layer × head")
    for step in (1, 2):  # step forward twice; wait for each rerun before the next click
        page.get_by_role("button", name="▶").click()
        page.wait_for_function(TITLES, arg=f"Step {step}: every layer × head")
    # the model view and the lens table of step 2
    page.wait_for_function(TITLES, arg="Step 2: top-5 by layer")
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .ytick text')]
                 .some(t => t.textContent === 'emb')""")
    assert page.get_by_text("What it predicted", exact=True).count() == 1
    # a click anywhere on a row of the model view opens that head below it (only the leftmost column did):
    # row 1 (L0 H1) clicked at 70 % of the plot's width
    settle(page)
    grid = page.locator('[data-testid="stPlotlyChart"]').first
    plot = grid.locator(".nsewdrag").first.bounding_box()
    rows = len(grid.locator(".ytick text").all_text_contents())  # every head labelled on a small model
    x, y = plot["x"] + 0.7 * plot["width"], plot["y"] + (1.5 / rows) * plot["height"]
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    page.wait_for_function(TITLES, arg="Layer 0 · head 1, over the context")
    if SHOTS:
        page.screenshot(path=str(SHOTS / "generate-step-2.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_beam_table_shows_its_scores(app_url, browser_page):
    """The beam table's score column was off-screen, right of the beams' texts."""
    from layout import tables_scrolling_sideways
    from test_browser_mlm import choose_model

    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    choose_model(page, DECODER)
    box = page.get_by_label("Text", exact=True)
    box.fill("The old lighthouse keeper climbed the stairs every evening to light the lamp, and the ships "
             "passing the rocky coast relied on its beam to find the harbour on the darkest winter nights")
    box.press("Control+Enter")
    page.get_by_text(f"{DECODER} · decoder").wait_for()
    page.get_by_role("link", name="Generate").click()
    page.get_by_text("Beam search").click()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    settle(page)
    assert tables_scrolling_sideways(page) == 0
    # the header row, as the grid drew it: score second, right after the beam number
    headers = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"] [role="columnheader"]')]
        .map(h => h.textContent.trim())""")
    assert headers[:3] == ["beam", "score", "log p"], headers
    if SHOTS:
        page.screenshot(path=str(SHOTS / "generate-beams.png"), full_page=True)
