"""Every page, as drawn by a real Chromium, reads: charts fill their boxes, token ticks do not collide, titles do not
overlap, no tick is blank where its token is not (tests/layout.py says exactly what is checked and why).

One server and one browser for the whole run (conftest's `app_url` and `_browser`); each text gets one browser
context, so one Streamlit session walks through the pages through the sidebar like a visitor, on a short text and
on a ~60-token one. The Training studio's replay is checked where its jobs already run (test_browser_studio.py).
Set VIZ_SCREENSHOTS=/some/dir to keep a full-page screenshot of every state checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import wait_for_chart
from layout import cut_texts, measure, problems, settle, tables_with_hidden_rows

SHORT = "The cat sat on the [MASK] because it was tired."
LONG = ("The old lighthouse keeper, who had lived alone on the rocky island for nearly forty years, watched the storm "
        "roll in from the west while the fishing boats hurried back to the harbour before the waves grew too high, and "
        "the gulls screamed above the cold grey [MASK] water near the cliffs.")  # 59 tokens on MiniLM
SOURCES = {"short": "the old man said that we would find the way home",  # seq2seq-reverse: 3-12 known words
           "long": "the old man said that we would find the way home before the night and the cold rain came down"}
SHOTS = Path(os.environ["VIZ_SCREENSHOTS"]) if os.environ.get("VIZ_SCREENSHOTS") else None


class Walk:
    """One visitor's session: moves through the app and collects every layout problem it sees."""

    def __init__(self, page, label: str):
        self.page, self.label, self.found, self.checked = page, label, [], 0

    def check(self, state: str, min_charts: int = 1) -> None:
        settle(self.page)
        charts = measure(self.page)
        if SHOTS:
            shoot(self.page, SHOTS / f"{state}-{self.label}.png")
        if len(charts) < min_charts:
            self.found.append(f"[{state}] {len(charts)} charts drawn, expected at least {min_charts}")
        self.found += [f"[{state}] {p}" for p in problems(charts)]
        self.found += [f"[{state}] '{t}' is cut off" for t in cut_texts(self.page)]
        if self.page.locator('[data-testid="stException"]').count():
            self.found.append(f"[{state}] an exception is shown")
        self.checked += len(charts)

    def nav(self, title: str) -> None:
        self.page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
        self.page.get_by_role("heading", name=title).first.wait_for()
        settle(self.page)

    def model(self, name: str) -> None:
        self.page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
        self.page.get_by_role("option", name=name, exact=True).click()
        settle(self.page)

    def fill(self, label: str, text: str) -> None:
        box = self.page.get_by_label(label, exact=True)
        box.fill(text)
        box.press("Control+Enter")
        settle(self.page)

    def choose(self, label: str, nth: int) -> None:
        """Pick the nth option of a multiselect."""
        self.page.get_by_label(label, exact=True).click()
        self.page.get_by_role("option").nth(nth).click()
        self.page.keyboard.press("Escape")
        settle(self.page)

    def click_text(self, text: str) -> None:
        self.page.get_by_text(text, exact=True).first.click()
        settle(self.page)


def shoot(page, path: Path) -> None:
    """A screenshot of the whole page (Streamlit scrolls inside its own container, not the document)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').offsetHeight")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(16000, max(size["height"], height + 150))})
    settle(page)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
    settle(page)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("label,text", [("short", SHORT), ("long", LONG)])
def test_every_page_reads(app_url, _browser, tmp_path, label, text):
    context = _browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(180_000)
    w = Walk(page, label)
    try:
        page.goto(app_url)
        wait_for_chart(page)
        w.fill("Text", text)
        w.check("attention", 3)
        w.click_text("Merge word pieces")
        w.click_text("Hide special tokens")
        w.check("attention-words", 3)

        w.nav("Layer flow")
        w.check("flow", 8)
        if label == "short":  # follow a token: its bars (flow on its own axis); the long text's flow row is slow
            w.choose("Follow token", 3)
            w.check("flow-follow", 10)

        w.nav("Routes")
        w.check("routes", 1)

        w.model("minilm-mlm")
        w.nav("Masked LM")
        w.choose("Tokens to mask", 1)  # a masked real token: its probability and rank through the levels
        w.page.get_by_role("button", name="Run the mask sweep").click()
        w.check("mlm", 4)
        w.page.get_by_role("slider", name="Top k").press("End")  # top-20: the table's cells shrank to dashes
        w.check("mlm-top20", 4)

        w.nav("Compare masking")
        w.choose("Tokens to mask in the second run", 2)
        w.check("compare-mask", 3)
        w.click_text("Full model vs heads ablated")
        w.choose("Heads to ablate (their output is zeroed)", 5)
        w.check("compare-ablate", 3)

        w.nav("Compare models")  # minilm-mlm (the sidebar's) against minilm: both model views, the matching, a pair
        w.page.get_by_text("Matched pair · similarity").first.wait_for()
        w.check("match", 5)

        w.model("seq2seq-reverse")
        w.nav("Encoder–decoder")
        w.fill("Source text (encoder input)", SOURCES[label])
        w.check("encdec-steps", 3)
        for tab, n in (("Attention", 3), ("Architecture", 1)):
            w.page.get_by_role("tab", name=tab).click()
            w.check(f"encdec-{tab.lower()}", n)
        if tables_with_hidden_rows(page):  # the architecture table kept 18 rows in a 400 px scroll box
            w.found.append("[encdec-architecture] a table hides rows below its fold")
        w.page.get_by_role("tab", name="Step by step").click()
        w.click_text("Generate: beam search")
        w.check("encdec-beam", 4)

        if label == "long":
            return  # the atlas measures a corpus, not the sidebar text: once is enough
        w.model("minilm-mlm")
        w.nav("Head atlas")
        corpus = tmp_path / "corpus.txt"
        corpus.write_text(f"{SHORT}\n{LONG}\nThe keys to the cabinet are on the table.\n")
        w.click_text("Upload a file")
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(corpus))
        settle(page)
        page.get_by_role("button", name="Run atlas").click()
        page.get_by_text("3 sentences ·").wait_for()
        w.check("atlas", 4)
        page.get_by_role("button", name="Gather layer 0's q and k").click()  # queries and keys of L0 H0
        page.get_by_text("scores = q·k").wait_for()
        w.check("atlas-qk", 6)
    finally:
        context.close()
        assert not w.found, "\n".join(w.found)
        assert w.checked >= 25
