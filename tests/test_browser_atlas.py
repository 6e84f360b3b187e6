"""The head-atlas page in a real Chromium against a real `streamlit run app.py` server.

Fixtures `app_url` (server base URL) and `browser_page` (Playwright page on /usr/bin/chromium) come
from tests/conftest.py. The corpus is uploaded through the page's file uploader, so the test does not
depend on the bundled sample being present.
"""

import pytest

from layout import settle

SENTENCES = ["The cat sat on the mat, and the dog slept.", "She poured a cup of coffee and read the paper.",
             "The keys to the cabinet are on the table.", "Is this the way to the station?",
             "We walked along the river; the water was cold.", "Birds sing in the early morning."]


@pytest.mark.timeout(600)
def test_atlas_in_browser(app_url, browser_page, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    page = browser_page
    page.goto(f"{app_url}/atlas")  # a deep link: the page enters through app.py (ui.through_app)
    page.get_by_role("heading", name="Head atlas").wait_for(timeout=120_000)
    page.get_by_text("Upload a file").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(corpus))
    run = page.get_by_role("button", name="Run atlas")
    run.wait_for(timeout=120_000)
    page.get_by_text(f"over {len(SENTENCES)} sentences").wait_for(timeout=120_000)
    run.click()
    page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for(timeout=300_000)
    assert page.get_by_text(f"{len(SENTENCES)} sentences ·").count() >= 1
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stSidebar"]').get_by_text("Model").count() >= 1  # app.py's sidebar ran

    # click head (layer 3, head 5) on the statistic grid: one invisible marker per head, in (layer, head) order
    settle(page)  # nothing rerunning: the markers sit where they will stay
    point = page.locator('[data-testid="stPlotlyChart"]').first.locator(".scatterlayer .point").nth(3 * 12 + 5)
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_text("L3 H5:").first.wait_for(timeout=120_000)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_weak_decoder_heads_are_drawn_pale(app_url, browser_page):
    """atlas-lm's best induction score is 0.015: scaled to its own maximum the grid drew it as the darkest red
    and it read as a strong induction head. What Chromium drew for that cell must be near white."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from test_browser_mlm import choose_model

    page = browser_page
    page.goto(f"{app_url}/atlas")
    page.get_by_label("Text").wait_for()
    choose_model(page, "atlas-lm")
    chart = page.locator(".st-key-atlas_heads_induction [data-testid='stPlotlyChart']")
    chart.locator(".heatmaplayer image").wait_for(timeout=180_000)
    href = chart.locator(".heatmaplayer image").get_attribute("href")
    px = np.asarray(Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))).convert("RGB"), dtype=int)
    assert px.min() >= 225, px.min()  # Reds at 0.015 of 0..1 is rgb(255, 243, 237); at its own maximum rgb(103, 0, 13)
    ticks = chart.locator(".xtick text").all_text_contents()
    assert ticks[:2] == ["H0", "H1"]
