"""Real Chromium, real server: the Compare models page draws, a click on a matched pair opens that pair, and the
layout has no collapsed chart or overlapping ticks (tests/layout.py)."""

from __future__ import annotations

import layout
from conftest import wait_for_chart
from layout import settle


def _open(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title).first.wait_for()
    settle(page)


def test_compare_models_draws_and_a_click_on_the_grid_opens_that_pair(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    _open(page, "Compare models")
    page.get_by_text("Matched pair · similarity").first.wait_for()
    grid = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="the B head each is matched to")
    point = grid.locator(".scatterlayer .point").nth(2 * 12 + 5)  # A's grid: one marker per matched head, L2 H5
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function(
        """() => { const v = Object.fromEntries([...document.querySelectorAll('[data-testid="stNumberInput"]')]
                       .map(n => [n.innerText.split('\\n')[0], n.querySelector('input').value]));
                   return v['A layer'] === '2' && v['A head'] === '5'; }""", timeout=60_000)
    settle(page)
    page.get_by_text("A: minilm L2 H5").first.wait_for()  # the pair's panels follow the click
    assert page.locator('[data-testid="stException"]').count() == 0
    assert not layout.problems(layout.measure(page)), layout.problems(layout.measure(page))
