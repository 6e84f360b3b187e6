"""Shared fixtures: offline environment, cached bundles, a real Streamlit server, a real browser."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
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

from viz import quiet  # noqa: E402

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
    from viz.models import load_model

    def _load(name: str):
        if name not in _BUNDLES:
            _BUNDLES[name] = load_model(name)
        return _BUNDLES[name]

    return _load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
