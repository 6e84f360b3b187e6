"""Real Chromium, real server: clicks that must do something, and exports that must produce real files."""

from __future__ import annotations

from conftest import wait_for_chart
from layout import settle


def _click_point(page, chart, n: int) -> None:
    """Click the nth invisible marker of a chart (heatmap cells and thumbnails carry one each)."""
    point = chart.locator(".scatterlayer .point").nth(n)
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def _inputs(page) -> list[str]:
    return page.locator('[data-testid="stNumberInput"] input').evaluate_all("els => els.map(e => e.value)")


def _model(page, name: str) -> None:
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=name, exact=True).click()
    settle(page)


def _open(page, app_url: str, title: str) -> None:
    """Through the app's own navigation, as a visitor does (one session from the first page on)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title).first.wait_for()
    settle(page)


def test_a_click_on_which_heads_changed_opens_that_head(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    _model(page, "minilm-mlm")
    _open(page, app_url, "Compare masking")
    page.get_by_text("Bidirectional vs causal").click()
    wait_for_chart(page)
    settle(page)
    grid = page.locator('[data-testid="stPlotlyChart"]').first
    _click_point(page, grid, 3 * 12 + 7)  # one marker per cell, in (layer, head) order: L3 H7
    page.wait_for_function(
        """() => { const v = [...document.querySelectorAll('[data-testid="stNumberInput"] input')].map(i => i.value);
                   return v[0] === '3' && v[1] === '7'; }""", timeout=60_000)
    settle(page)
    page.get_by_text("L3 H7 · JS").first.wait_for()  # the two runs and their difference follow
    assert page.locator('[data-testid="stException"]').count() == 0


def test_a_click_on_the_encoder_decoder_model_view_opens_that_head(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    _model(page, "seq2seq-reverse")
    _open(page, app_url, "Encoder–decoder")
    page.get_by_role("tab", name="Attention").click()
    settle(page)
    view = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Every layer × head")
    heads = view.locator(".scatterlayer .point").count()
    layer = page.locator('[data-testid="stNumberInput"]').filter(has_text="Layer").locator("input")
    head = page.locator('[data-testid="stNumberInput"]').filter(has_text="Head").locator("input")
    assert (layer.input_value(), head.input_value()) == ("1", "0")  # the page opens on the last layer, head 0
    _click_point(page, view, 1)  # layer 0, head 1
    page.wait_for_function(
        """() => { const v = Object.fromEntries([...document.querySelectorAll('[data-testid="stNumberInput"]')]
                       .map(n => [n.innerText.split('\\n')[0], n.querySelector('input').value]));
                   return v.Layer === '0' && v.Head === '1'; }""", timeout=60_000)
    settle(page)
    page.get_by_text("Encoder self-attention · L0 H1").first.wait_for()
    assert heads >= 2 and page.locator('[data-testid="stException"]').count() == 0


def test_the_camera_saves_svg_and_the_small_html_loads_plotly_from_its_cdn(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    settle(page)
    page.locator('[data-testid="stSidebar"]').get_by_text("SVG", exact=True).click()
    settle(page)
    chart = page.locator('.st-key-attn_head_fig [data-testid="stPlotlyChart"]')  # one head
    chart.hover()
    with page.expect_download() as got:
        chart.locator('.modebar-btn[data-title^="Download plot"]').click()
    svg = got.value
    assert svg.suggested_filename.endswith(".svg")
    assert open(svg.path(), encoding="utf-8").read(400).lstrip().startswith("<svg")

    page.get_by_role("button", name="Figure (HTML)").filter(visible=True).nth(1).click()  # the head's
    with page.expect_download() as got:
        page.get_by_role("button", name="Small HTML (loads plotly.js from the internet)").click()
    html = open(got.value.path(), encoding="utf-8").read()
    assert "cdn.plot.ly" in html and len(html.encode()) < 500_000  # the self-contained one is ~4.8 MB more
    assert "Download plot as SVG" in html  # the exported page has both camera buttons
