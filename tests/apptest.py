"""AppTest helpers shared by the page tests that read displayed values (test_page_controls, test_page_downloads)."""

import html
import re

from streamlit.testing.v1 import AppTest

from conftest import APP
from viz.app.ui import EXAMPLES

TEXT = EXAMPLES[0]  # "The cat sat on the mat because it was tired."


def open_page(page: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.switch_page(f"pages/{page}.py")
    return rerun(at, **state)


def rerun(at: AppTest, **state) -> AppTest:
    """AppTest drops the shared sidebar's widgets from session_state after a run: seed them every time."""
    state = {"text": TEXT, "model_choice": "minilm", **state}
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def tokens_of(labels) -> list[str]:
    """Axis labels 'the (3)' back to the tokens."""
    return [html.unescape(re.sub(r" \(\d+\)$", "", str(x))) for x in labels]
