"""Every page opens on every tiny family without an exception (AppTest): decoders of today's layout
(Llama, Qwen, Mistral, Gemma 2, Phi-3, GPT-NeoX, OPT), ModernBERT, and the older families."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamlit.testing.v1 import AppTest  # noqa: E402

from viz.core.models import TINY_FAMILIES  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ["attention", "inside", "flow", "routes", "mlm", "compare", "match", "encdec", "generate", "atlas", "studio",
         "patching"]
TEXT = "The cat sat on the mat because it was tired."


def open_page(page: str, model: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(f"pages/{page}.py")
    at.session_state["model_choice"] = model
    at.session_state["text"] = TEXT
    return at.run()


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("page", PAGES)
def test_page_opens_on_family(page, family):
    at = open_page(page, f"tiny-{family}")
    assert not at.exception, [e.value for e in at.exception]
    drawn = len(at.get("plotly_chart"))
    said = [m.value for m in (*at.error, *at.warning, *at.info)]
    assert drawn or said or page in ("atlas", "studio"), "the page drew nothing and said nothing"
    if page == "attention":
        assert drawn == 4
        assert any(f"tiny-{family}" in c.value for c in at.caption)
