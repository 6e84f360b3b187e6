"""Real browser against a real server: Playwright drives Debian chromium."""

from conftest import wait_for_chart
from layout import settle


def test_type_a_sentence_and_see_the_heatmap(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    box = page.get_by_label("Text")
    box.fill("Colorless green ideas sleep furiously.")
    box.press("Control+Enter")  # commit the text area
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .xtick text')]
                 .some(t => t.textContent.includes('furious'))""", timeout=120_000)
    heatmaps = page.locator('[data-testid="stPlotlyChart"] .main-svg .heatmaplayer')
    assert heatmaps.count() >= 2
    assert page.locator('[data-testid="stException"]').count() == 0


def test_empty_text_shows_a_message_and_keeps_the_sidebar(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    box = page.get_by_label("Text")
    box.fill("")
    box.press("Control+Enter")
    page.get_by_text("The text is empty").wait_for()
    settle(page)  # the rerun has ended
    assert page.get_by_label("Text").count() == 1  # the sidebar is still there to fix the input
    assert page.locator('[data-testid="stSelectbox"]').count() >= 1


def test_click_a_model_view_thumbnail_opens_that_head(app_url, browser_page):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    settle(page)  # every chart drawn and nothing rerunning: the markers sit where they will stay
    # thumbnails carry an invisible marker each, in (layer, head) order: 12 heads per layer on MiniLM
    point = page.locator('[data-testid="stPlotlyChart"]').first.locator(".scatterlayer .point").nth(2 * 12 + 5)
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function(
        """() => { const v = [...document.querySelectorAll('[data-testid="stNumberInput"] input')].map(i => i.value);
                   return v[0] === '2' && v[1] === '5'; }""", timeout=60_000)
    page.get_by_text("L2 H5").first.wait_for()


def test_cold_deep_link_gets_navigation_and_sidebar(tmp_path, browser_page):
    """The first request to a fresh server is a deep link: the page must still come with app.py's
    navigation and sidebar (Streamlit would otherwise run pages/mlm.py on its own)."""
    from conftest import streamlit_server

    with streamlit_server(tmp_path, tmp_path) as url:
        page = browser_page
        page.goto(f"{url}/compare")
        page.get_by_label("Text").wait_for()
        nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Compare masking" in nav and "Masked LM" in nav and "app" not in nav.split()
        page.get_by_role("heading", name="Compare masking").wait_for()


def test_every_page_is_listed_in_the_sidebar_without_a_fold(app_url, browser_page):
    """Streamlit folds a nav list past 10 entries behind "View more": with 13 pages the last three could not be
    clicked (CI's failure). Every page of app.py is a visible link, under the three section headings."""
    import ast
    from pathlib import Path

    titles = [kw.value.value for node in ast.walk(ast.parse(Path("app.py").read_text()))
              if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Page"
              for kw in node.keywords if kw.arg == "title"]
    assert len(titles) == 13
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    nav = page.locator('[data-testid="stSidebarNav"]')
    for title in titles:
        assert nav.get_by_text(title, exact=True).is_visible(), title
    assert nav.get_by_text("View more").count() == 0 and nav.get_by_text("View less").count() == 0
    for heading in ("Where heads look", "What they cause", "What the model says"):
        assert nav.get_by_text(heading).is_visible()


def test_a_fresh_server_never_shows_the_file_name_navigation(tmp_path, browser_page):
    """The first visitor of a fresh server saw the pages/ folder's file names ('app, atlas, attention, ...')
    as navigation for the seconds app.py's imports take, then the real one."""
    from conftest import streamlit_server

    page = browser_page
    with streamlit_server(tmp_path, tmp_path / "models") as url:
        page.goto(url)
        # every navigation the sidebar shows, recorded in the page on each DOM change, until the real one is there
        seen = page.evaluate("""() => new Promise((resolve) => {
            const seen = [];
            const look = () => {
              const links = [...document.querySelectorAll('[data-testid="stSidebar"] a')].map(a => a.textContent.trim());
              const key = links.join(',');
              if (key && seen[seen.length - 1] !== key) seen.push(key);
              if (links.some(l => l.includes('Inside a layer'))) { observer.disconnect(); resolve(seen); }
            };
            const observer = new MutationObserver(look);
            observer.observe(document.body, {childList: true, subtree: true, characterData: true});
            look();
        })""")
    assert not any("attention,compare" in s for s in seen), seen
    assert "Attention" in seen[-1]
