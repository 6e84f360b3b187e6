"""Real browser against a real server: the Layer flow page draws, and switching to attention flow works."""

from conftest import wait_for_chart
from layout import settle


def test_flow_page_draws_and_switches_to_flow(app_url, browser_page):
    page = browser_page
    page.goto(f"{app_url}/flow")  # a deep link: ui.through_app() makes it run through app.py
    wait_for_chart(page)
    page.get_by_role("heading", name="Layer flow").wait_for()
    assert "Layer flow" in page.locator('[data-testid="stSidebarNav"]').inner_text()
    # flow view, rollout heatmap, raw/norm heads, journey: wait until they have all drawn
    page.wait_for_function(
        """() => document.querySelectorAll('[data-testid="stPlotlyChart"] .main-svg .heatmaplayer').length >= 6""",
        timeout=120_000)
    settle(page)  # nothing rerunning: the nodes sit where they will stay
    assert page.locator('[data-testid="stException"]').count() == 0

    # click the third-from-last node of the flow view (last column = last layer): its flow bars appear
    nodes = page.locator('[data-testid="stPlotlyChart"]').first.locator(".scatterlayer .point")
    box = nodes.nth(nodes.count() - 3).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')]
                 .some(t => t.textContent.includes('What flows into'))""", timeout=120_000)
    assert page.locator('[data-testid="stException"]').count() == 0

    page.locator('[data-testid="stRadio"]').filter(has_text="rollout").get_by_text("flow", exact=True).click()
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')]
                 .some(t => t.textContent.includes('Attention flow'))""", timeout=120_000)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_follow_token_box_starts_over_when_the_text_changes(app_url, browser_page):
    """The box kept showing the old text's token after the text changed."""
    page = browser_page
    page.goto(f"{app_url}/flow")
    wait_for_chart(page)
    settle(page)
    box = page.get_by_label("Follow token")
    box.click()
    page.get_by_role("option", name="cat (2)").click()
    settle(page)
    assert box.input_value() == "cat (2)"
    text = page.get_by_label("Text")
    text.fill("Colorless green ideas sleep furiously.")
    text.press("Control+Enter")
    settle(page)
    assert box.input_value() == "— all links —"
    assert page.locator('[data-testid="stException"]').count() == 0
