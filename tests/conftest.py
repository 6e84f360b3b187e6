"""Shared fixtures: offline environment, cached bundles, a real Streamlit server, a real browser."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in the tests reaches the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread in the tests and in the processes they start (a server, the CLI): the models are tiny, and
# two threads contending with a browser or a server on a 2-core machine made tiny matmuls ~1000x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from viz.core.env import quiet  # noqa: E402

torch.set_num_threads(1)
quiet()

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

_BUNDLES: dict = {}


@pytest.fixture(scope="session")
def load():
    """load(name) -> ModelBundle, cached for the whole test session."""
    from viz.core.models import load_model

    def _load(name: str):
        if name not in _BUNDLES:
            _BUNDLES[name] = load_model(name)
        return _BUNDLES[name]

    return _load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_LOGS: dict[str, Path] = {}  # url -> the server's log (what Streamlit printed: warnings included)


@contextlib.contextmanager
def streamlit_server(log_dir: Path, user_models: Path):
    """A real `streamlit run app.py` on loopback; yields its base URL and stops it afterwards."""
    port = _free_port()
    log = log_dir / "server.log"
    env = {**os.environ, "VIZ_USER_MODELS": str(user_models)}
    with open(log, "w") as out:
        # Popen on the interpreter itself: the PID we stop is the server's, not a shell's.
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    SERVER_LOGS[url] = log
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
            if proc.poll() is not None:
                raise RuntimeError("streamlit exited:\n" + log.read_text())
        else:
            raise RuntimeError("streamlit did not become healthy:\n" + log.read_text())
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """One real server for the whole test session."""
    with streamlit_server(tmp_path_factory.mktemp("streamlit"), tmp_path_factory.mktemp("user_models")) as url:
        yield url


@pytest.fixture(scope="session")
def _browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: `make test` installs it (apt-get install chromium).")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(_browser):
    """A fresh Playwright page (own browser context, so its own Streamlit session)."""
    context = _browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(120_000)
    yield page
    context.close()


def wait_for_chart(page, timeout: int = 120_000):
    """Wait until a Plotly chart has really drawn (its SVG exists), not just the placeholder."""
    page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=timeout)


def plotly_array(value):
    """A figure's array as numpy: Plotly 7 sends numeric arrays as {'dtype', 'bdata' (base64), 'shape'}."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            arr = arr.reshape([int(s) for s in str(shape).split(",")])
        return arr
    return np.asarray(value)


# ----------------------------------------------------------------------------- what a page shows and sends
def chart_spec(at, key: str) -> dict:
    """The figure one chart (by its key) sends to the browser, arrays decoded: what the user sees."""
    import json

    charts = [c for c in at.get("plotly_chart") if c.key == key]
    assert charts, f"no chart {key!r}; charts: {[c.key for c in at.get('plotly_chart')]}"
    return decode_figure(json.loads(charts[0].proto.spec))


def decode_figure(fig: dict) -> dict:
    """Plotly 7 base64 arrays (bdata) -> numpy, in every trace."""
    for trace in fig.get("data", []):
        for k, v in list(trace.items()):
            if isinstance(v, dict) and "bdata" in v:
                trace[k] = plotly_array(v)
    return fig


def figure_from_html(html: str) -> dict:
    """The figure inside an exported HTML page (the arguments of its first `Plotly.newPlot`)."""
    import json

    dec = json.JSONDecoder()
    i = html.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    args = []
    while len(args) < 3:
        while html[i] in " \n\t,":
            i += 1
        value, i = dec.raw_decode(html, i)
        args.append(value)
    return decode_figure({"data": args[1], "layout": args[2]})


class Downloads:
    """Every download button a page drew in its last run, by widget key: `label`, `file_name` and the bytes
    a click sends (the button's data, built as Streamlit builds it on a click when it is a callable)."""

    def __init__(self):
        self.buttons: dict[str, tuple[str, str, object]] = {}

    def clear(self) -> None:
        self.buttons.clear()

    def keys(self) -> set[str]:
        return set(self.buttons)

    def bytes(self, key: str) -> bytes:
        assert key in self.buttons, f"no download {key!r}; buttons: {sorted(self.buttons)}"
        data = self.buttons[key][2]
        data = data() if callable(data) else data
        return data.encode() if isinstance(data, str) else bytes(data)

    def file_name(self, key: str) -> str:
        return self.buttons[key][1]

    def csv(self, key: str, **kw):
        import io

        import pandas as pd

        return pd.read_csv(io.BytesIO(self.bytes(key)), **kw)

    def matrix(self, key: str):
        """A labelled matrix CSV (`DataFrame(M, index=..., columns=...).to_csv()`) -> (row labels, column labels,
        values), labels exactly as written (pandas would rename a repeated token 'the' to 'the.1')."""
        import csv
        import io

        import numpy as np

        rows = list(csv.reader(io.StringIO(self.bytes(key).decode())))
        return [r[0] for r in rows[1:]], rows[0][1:], np.array([[float(x) for x in r[1:]] for r in rows[1:]])

    def npz(self, key: str) -> dict:
        import io

        import numpy as np

        with np.load(io.BytesIO(self.bytes(key)), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def check_html(self, at) -> int:
        """Both HTML downloads of every chart on the page hold that chart's own data and title; -> charts checked."""
        import numpy as np

        n = 0
        for chart in at.get("plotly_chart"):
            shown = chart_spec(at, chart.key)
            for kind in ("small", "offline"):
                html = self.bytes(f"{chart.key}_html_{kind}").decode()
                saved = figure_from_html(html)
                assert len(saved["data"]) == len(shown["data"]), chart.key
                for a, b in zip(saved["data"], shown["data"]):
                    for k in ("type", "z", "x", "y", "text", "customdata"):
                        if k in a or k in b:
                            va, vb = a.get(k), b.get(k)
                            if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
                                assert np.array_equal(np.asarray(va), np.asarray(vb)), (chart.key, kind, k)
                            else:
                                assert va == vb, (chart.key, kind, k)
                assert saved["layout"].get("title") == shown["layout"].get("title"), chart.key
            n += 1
        return n


@pytest.fixture
def downloads(monkeypatch):
    """Records every `st.download_button` a page draws (AppTest runs the pages in this process)."""
    import streamlit as st

    seen = Downloads()
    real = st.download_button

    def spy(label, data, *args, **kwargs):
        seen.buttons[kwargs.get("key")] = (label, kwargs.get("file_name", args[0] if args else None), data)
        return real(label, data, *args, **kwargs)

    monkeypatch.setattr(st, "download_button", spy)
    return seen


@pytest.fixture
def held_at(monkeypatch):
    """held_at(step) -> (reached, release): a job (not a resumed one) stops inside its progress call after `step`
    until `release` is set; `reached` is set when it got there. Cancel while it is held: it stops after the
    next step, whatever the machine's speed."""
    def hold(step: int):
        reached, release = threading.Event(), threading.Event()
        from viz.train import studio as S

        real = S.TrainingJob._progress

        def progress(self, p, model, tok):
            real(self, p, model, tok)
            if p["step"] == step and not self.resume:
                reached.set()
                assert release.wait(300), "the test never released the job"

        monkeypatch.setattr(S.TrainingJob, "_progress", progress)
        return reached, release

    return hold
