"""Real browser: the Attention page's NPZ buttons build their files after the page ran, from cache keys."""

import numpy as np

from conftest import wait_for_chart


def test_whole_capture_and_all_heads_download(app_url, browser_page, tmp_path):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    for label, key, shape in (("Whole capture (NPZ)", "encoder_attentions", (6, 12)),
                              ("All heads (NPZ)", "attentions", (6, 12))):
        with page.expect_download(timeout=120_000) as info:
            page.get_by_role("button", name=label).click()
        path = tmp_path / info.value.suggested_filename
        info.value.save_as(path)
        z = np.load(path)
        assert z[key].shape[:2] == shape and "[CLS]" in list(z["tokens" if key.startswith("encoder") else "key_tokens"])
    assert page.locator('[data-testid="stException"]').count() == 0
