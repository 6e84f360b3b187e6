"""Real Chromium, real server: the Routes page's clicks do what they say, and what they open reads."""

from __future__ import annotations

import pytest

from conftest import wait_for_chart
from layout import measure, problems, settle
from test_browser_families import choose_model

LONG = ("The old lighthouse keeper, who had lived alone on the rocky island for nearly forty years, watched the storm "
        "roll in from the west while the fishing boats hurried back to the harbour before the waves grew too high.")


def _point(page, chart, want):
    """Click the point of `chart` whose customdata satisfies the JS predicate `want` (a function of it)."""
    found = chart.evaluate(f"""(el) => {{ const gd = el.querySelector('.js-plotly-plot');
        const ok = {want};
        for (let t = 0; t < gd._fullData.length; t++) {{ const cd = gd._fullData[t].customdata || [];
            for (let i = 0; i < cd.length; i++) if (ok(cd[i])) return [t, i]; }}
        return null; }}""")
    assert found, f"no point matches {want}"
    trace, i = found
    point = chart.locator(".scatterlayer .trace").nth(trace).locator(".point").nth(i)
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    settle(page)


def _read(page) -> list[str]:
    return [p for p in problems(measure(page))]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("text", ["The cat sat on the mat because it was tired.", LONG])
def test_clicks_on_a_route_open_its_heads_and_what_a_node_writes(app_url, browser_page, text):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    choose_model(page, "atlas-lm")
    box = page.locator('[data-testid="stSidebar"] textarea[aria-label="Text"]')
    box.fill(text)
    box.press("Control+Enter")
    settle(page)
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Routes", exact=True).click()
    page.get_by_role("heading", name="Routes").first.wait_for()
    wait_for_chart(page)
    settle(page)
    graph = page.locator('[data-testid="stPlotlyChart"]').first
    assert _read(page) == []

    # an attention edge: its heads, the chosen head's two maps; a bar opens another head
    _point(page, graph, "(c) => c[0] === 1")
    page.get_by_text("Which heads carried it").first.wait_for()
    heads = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="carried it (share")
    head_input = page.locator('[data-testid="stNumberInput"]').filter(has_text="Head").locator("input")
    shares = heads.evaluate("(el) => Array.from(el.querySelector('.js-plotly-plot')._fullData[0].y)")
    order = sorted(range(len(shares)), key=lambda h: -shares[h])
    assert head_input.input_value() == str(order[0])  # the edge opens on the head that carried most of it
    other = str(order[1])  # the runner-up: a bar tall enough to click
    bar = heads.locator(".barlayer .point").nth(int(other))
    bar.scroll_into_view_if_needed()
    b = bar.bounding_box()
    page.mouse.click(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    page.wait_for_function("""(v) => [...document.querySelectorAll('[data-testid="stNumberInput"]')]
        .some(n => n.innerText.startsWith('Head') && n.querySelector('input').value === v)""", arg=other,
                           timeout=60_000)
    settle(page)
    page.get_by_text(f"H{other} looks at (attention α)").first.wait_for()
    page.get_by_text(f"H{other} takes from (contribution share)").first.wait_for()
    assert _read(page) == []
    layer = page.locator("h3").filter(has_text="attention:").first.inner_text().split(" L")[1].split(" ")[0]
    page.get_by_role("button", name=f"Open L{layer} H{other} on the Attention page →").click()
    page.get_by_role("heading", name="Attention", exact=True).wait_for()
    settle(page)
    values = page.locator('[data-testid="stNumberInput"] input').evaluate_all("els => els.map(e => e.value)")
    assert values[:2] == [layer, other]

    # back on Routes: a feed-forward node says what it writes, with its top neurons
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Routes", exact=True).click()
    wait_for_chart(page)
    settle(page)
    graph = page.locator('[data-testid="stPlotlyChart"]').first
    _point(page, graph, "(c) => c[0] === 0 && c[4] === 3")  # site 3: a feed-forward
    page.get_by_text("What it promotes and suppresses").first.wait_for()
    assert page.locator('[data-testid="stDataFrame"]').count() == 1  # the top neurons
    assert _read(page) == []
    assert page.locator('[data-testid="stException"]').count() == 0
