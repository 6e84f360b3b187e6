"""Real browser: every page opens on today's decoder layout (Llama: RoPE, RMSNorm, grouped kv heads) and on
ModernBERT (local/global attention), chosen in the sidebar like a user would."""

import pytest

from conftest import wait_for_chart

PAGES = [("Attention", "Attention"), ("Layer flow", "Layer flow"), ("Routes", "Routes"), ("Masked LM", "Masked LM"),
         ("Compare masking", "Compare masking"), ("Encoder–decoder", "Encoder–decoder"),
         ("Training studio", "Training studio"), ("Head atlas", "Head atlas")]


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
    page.get_by_text(f"{model} · ").first.wait_for(timeout=120_000)  # the Attention caption names the model
    wait_for_chart(page)
    for link, title in PAGES:
        page.locator('[data-testid="stSidebarNav"]').get_by_text(link, exact=True).click()
        page.get_by_role("heading", name=title, exact=True).wait_for(timeout=120_000)
        page.wait_for_function("""() => !document.querySelector('[data-testid="stStatusWidgetRunningIcon"]')""",
                               timeout=120_000)  # the page's script run has finished
        assert page.locator('[data-testid="stException"]').count() == 0, (model, title)
        assert page.locator('[data-testid="stSidebar"] input[aria-label="Model"]').input_value() == model
