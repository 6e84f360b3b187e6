"""Real browser: every page opens on today's decoder layout (Llama: RoPE, RMSNorm, grouped kv heads) and on
ModernBERT (local/global attention), chosen in the sidebar like a user would."""

import pytest

from conftest import wait_for_chart

PAGES = [(t, t) for t in ("Attention", "Inside a layer", "Layer flow", "Head atlas", "Compare models", "Routes",
                          "Patching", "Does attention explain?", "Compare masking", "Masked LM", "Encoder–decoder",
                          "Generate", "Training studio")]  # every page of app.py


def choose_model(page, name: str) -> None:
    page.locator('[data-testid="stSidebar"] input[aria-label="Model"]').click()
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function("""(m) => document.querySelector('[data-testid="stSidebar"] input[aria-label="Model"]')
                                        .value === m""", arg=name, timeout=60_000)


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-modernbert"])
def test_every_page_opens_in_chromium(app_url, browser_page, model):
    page = browser_page
    page.goto(app_url)
    wait_for_chart(page)
    choose_model(page, model)
    # the Attention caption names the model, and says a tiny model's weights are random
    page.get_by_text(f"{model} (random weights) · ").first.wait_for(timeout=120_000)
    wait_for_chart(page)
    for link, title in PAGES:
        page.locator('[data-testid="stSidebarNav"]').get_by_text(link, exact=True).click()
        page.get_by_role("heading", name=title, exact=True).wait_for(timeout=120_000)
        page.wait_for_function("""() => !document.querySelector('[data-testid="stStatusWidgetRunningIcon"]')""",
                               timeout=120_000)  # the page's script run has finished
        assert page.locator('[data-testid="stException"]').count() == 0, (model, title)
        assert page.locator('[data-testid="stSidebar"] input[aria-label="Model"]').input_value() == model
