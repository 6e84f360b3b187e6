"""Real browser against a real server: the Inside a layer page, opened from a clicked head of the Attention page
(MiniLM), and on the dates encoder-decoder's cross-attention (Playwright drives Debian chromium)."""

import os
from pathlib import Path

from conftest import SERVER_LOGS, wait_for_chart
from layout import cut_texts, settle
from test_browser_mlm import choose_model

SHOTS = Path(os.environ["VIZ_SCREENSHOTS"]) if os.environ.get("VIZ_SCREENSHOTS") else None  # for looking, not asserting


def wait_for_tick(page, text: str):
    """A chart has drawn an axis label containing `text` (the page's figures really rendered)."""
    page.wait_for_function(
        """(t) => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .yaxislayer-above text')]
                 .some(e => e.textContent.includes(t))""", arg=text, timeout=120_000)


def open_page(page, title: str):
    """Click a navigation link until its page is there: a click landing while the previous script run is
    still redrawing can be dropped by Streamlit (seen 1 time in 4 on a busy machine)."""
    for _ in range(3):
        page.get_by_role("link", name=title).click()
        try:
            page.get_by_role("heading", name=title, exact=True).wait_for(timeout=20_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: click again
            continue
    page.get_by_role("heading", name=title, exact=True).wait_for()


def test_click_a_head_then_open_it_inside(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    settle(page)  # every chart drawn and nothing rerunning: the markers sit where they will stay
    # thumbnails carry an invisible marker each, in (layer, head) order: 12 heads per layer on MiniLM
    point = page.locator('[data-testid="stPlotlyChart"]').first.locator(".scatterlayer .point").nth(2 * 12 + 5)
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    button = page.get_by_role("button", name="Inside L2 H5 →")
    button.wait_for()
    # the click set attn_layer/attn_head through session state: their widgets must not also pass a default
    log = SERVER_LOGS[app_url].read_text()
    assert "created with a default value but also had its value set" not in log, log[-2000:]
    button.click()
    page.get_by_role("heading", name="Inside a layer").wait_for()
    page.get_by_text("layer 2 · head 5").first.wait_for()
    wait_for_tick(page, "tired")  # the head's key rows
    page.get_by_text("Recomposition error").wait_for()
    inputs = [i.input_value() for i in page.locator('[data-testid="stNumberInput"] input').all()[:2]]
    assert inputs == ["2", "5"]
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.nth(2).locator(".main-svg").first.wait_for()  # the head, the layer diagram, the heads' contributions
    assert charts.first.locator(".heatmaplayer .hm").count() >= 6  # q, k, q⊙k, mask, v, w·v and the head output
    assert page.locator('[data-testid="stException"]').count() == 0
    if SHOTS:
        page.screenshot(path=str(SHOTS / "inside-minilm.png"), full_page=True)
    # another text with the query still at position 1: the token picker follows (it once kept "the (1)")
    box = page.get_by_label("Text", exact=True)
    box.fill("A dog barked loudly.")
    box.press("Control+Enter")
    page.get_by_role("heading", name="One head: encoder self-attention · layer 2 · head 5 · query “a”").wait_for()
    page.wait_for_function("""() => document.querySelector('input[aria-label="Query token"]').value === 'a (1)'""",
                           timeout=60_000)


def test_cross_attention_of_the_dates_model(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    choose_model(page, "seq2seq-dates")
    box = page.get_by_label("Text", exact=True)
    box.fill("3 March 2021")
    box.press("Control+Enter")
    page.wait_for_function(  # the text reached the server before we navigate (else the page may get the old one)
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .xtick text')]
                 .some(t => t.textContent === 'march')""", timeout=120_000)
    open_page(page, "Inside a layer")
    page.get_by_text("Cross-attention (decoder → encoder)").click()
    page.get_by_role("heading", name="One head: cross-attention (decoder → encoder) · layer 0").wait_for()
    wait_for_tick(page, "march")  # source tokens are the keys
    page.get_by_text("Recomposition error").wait_for()
    page.get_by_text("both attentions").wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0
    if SHOTS:
        page.screenshot(path=str(SHOTS / "inside-dates-cross.png"), full_page=True)


LONG = ("The old lighthouse keeper climbed the stairs every evening to light the lamp. Ships passing the rocky "
        "coast relied on its beam to find the harbour. One stormy night the lamp failed, and he carried a lantern "
        "to the top of the tower, waving it until dawn so that no sailor would be lost on the rocks below.")


def test_inside_keeps_the_model_and_the_typed_text(app_url, browser_page):
    """'Inside L0 H1 →' switches page from the server: Streamlit dropped every widget's value on such a switch,
    so Inside opened MiniLM on the default sentence while the sidebar still showed atlas-lm (4 tries of 4)."""
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    choose_model(page, "atlas-lm")
    box = page.get_by_label("Text", exact=True)
    box.fill(LONG)
    box.press("Control+Enter")
    page.get_by_text("atlas-lm · decoder").wait_for()
    settle(page)
    page.locator('[data-testid="stNumberInput"] input').nth(1).fill("1")  # Head
    page.locator('[data-testid="stNumberInput"] input').nth(1).press("Enter")
    page.get_by_role("button", name="Inside L0 H1 →").click()
    page.get_by_role("heading", name="One head: decoder masked self-attention · layer 0 · head 1").wait_for()
    settle(page)
    assert page.get_by_label("Text", exact=True).input_value() == LONG
    wait_for_tick(page, "▁")  # key rows in atlas-lm's byte-level tokens (a space shown as ▁), not MiniLM's
    rows = page.locator('[data-testid="stPlotlyChart"]').first.locator(".yaxislayer-above text").all_text_contents()
    words = [r.split(" (")[0].strip("▁▶ ") for r in rows]
    assert sum(len(w) > 2 and w in LONG for w in words) >= 5, rows  # ... of the typed text
    assert "(llama" in page.locator(".gtitle").all_text_contents()[1]  # the layer diagram is atlas-lm's recipe
    # the step table beside the diagram: every step and ‖v‖ whole (a data grid cut "masked self-att…" and ‖v‖)
    table = page.locator('[data-testid="stTable"]').first
    table.wait_for()
    assert not cut_texts(page), cut_texts(page)
    cells = table.locator("th, td").all_text_contents()
    assert "masked self-attention" in " ".join(cells) and "‖v‖" in cells
    box, col = table.bounding_box(), table.locator("xpath=ancestor::*[@data-testid='stColumn'][1]").bounding_box()
    assert box["x"] + box["width"] <= col["x"] + col["width"] + 1
    # the head figure: scores written on their bars, a colour scale under each strip
    head = page.locator('[data-testid="stPlotlyChart"]').first
    assert head.locator(".colorbar").count() == 4
    assert any(t in ("−∞",) or t.replace("-", "").replace(".", "").isdigit()
               for t in head.locator(".bartext").all_text_contents())
    assert not any("hidden_states" in t for t in page.locator('[data-testid="stPlotlyChart"]').nth(1)
                   .locator("text").all_text_contents())
    if SHOTS:
        page.screenshot(path=str(SHOTS / "inside-atlas-lm-long.png"), full_page=True)
