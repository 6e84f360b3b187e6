"""The installable package: `pip install .` from a clean copy of this tree, then `attention-atlas` from another
directory, using nothing but what the wheel installed (app.py, pages, models and data inside site-packages).

The fresh venv reuses this venv's installed dependencies through a .pth line, and pip builds with
`--no-deps --no-build-isolation`, so nothing is downloaded (a user's `v/bin/pip install .` fetches the same
pinned dependencies and setuptools from the index).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request

import numpy as np
import pytest

from conftest import ROOT, _free_port


def pins(path) -> list[str]:
    """The `name==version` lines of a requirements file, up to its test tools."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip().startswith("# test tools"):
            break
        line = line.split("#")[0].strip()
        if line:
            out.append(line)
    return out


def test_pyproject_pins_what_requirements_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(project["dependencies"]) == sorted(pins(ROOT / "requirements.txt") + pins(ROOT / "requirements-model.txt"))
    assert "torch==2.13.0" in project["dependencies"]
    assert project["optional-dependencies"]["ray"] == pins(ROOT / "requirements-ray.txt")
    assert project["scripts"] == {"attention-atlas": "viz.cli.main:console"}


def test_the_command_serves_alone_and_runs_subcommands_otherwise():
    from viz.cli.serve import is_serve

    assert is_serve([]) and is_serve(["--server.port", "8502"]) and is_serve(["serve", "--server.port", "1"])
    assert not is_serve(["--help"]) and not is_serve(["capture", "--help"]) and not is_serve(["serve", "--help"])


def clean_copy(dest):
    """What a fresh clone of this tree holds: tracked files as they are now, plus new files git does not ignore."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, a directory outside the tree, env): attention-atlas pip-installed into a new venv."""
    base = tmp_path_factory.mktemp("pkg")
    src, venv, elsewhere = base / "src", base / "v", base / "elsewhere"
    src.mkdir()
    elsewhere.mkdir()
    clean_copy(src)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing may come from this checkout
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", str(src)], cwd=elsewhere, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return venv, elsewhere, env


def test_installed_command_captures_masks_and_serves(installed, load, tmp_path):
    venv, elsewhere, env = installed
    cmd = str(venv / "bin" / "attention-atlas")
    r = subprocess.run([cmd, "--help"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: attention-atlas" in r.stdout and "capture" in r.stdout, r.stderr

    # what is imported is the installed copy, and it finds app.py, pages and models inside site-packages
    probe = ("import json, viz, viz.core.paths as p; print(json.dumps([viz.__file__, p.INSTALLED, str(p.APP), "
             "sorted(x.name for x in p.PAGES.glob('*.py')), p.MODELS.joinpath('atlas-lm', 'model.safetensors').is_file(), "
             "p.DATA.joinpath('sample_sentences.txt').is_file()]))")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=elsewhere, env=env, capture_output=True,
                       text=True, timeout=120)
    where, installed_flag, app, pages, lm, sample = json.loads(r.stdout)
    assert where.startswith(str(venv)) and installed_flag and app.startswith(str(venv)), (where, app)
    assert pages == sorted(p.name for p in (ROOT / "pages").glob("*.py")) and lm and sample

    text = "The cat sat on the mat."
    r = subprocess.run([cmd, "capture", "--model", "minilm", "--text", text, "--out", "x.npz"], cwd=elsewhere,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    from viz.core.capture import capture

    ref = capture(load("minilm"), text)
    with np.load(elsewhere / "x.npz") as z:
        assert list(z["tokens"]) == ref.tokens
        np.testing.assert_allclose(z["encoder_attentions"], ref.attentions["encoder"], atol=1e-6)

    # a shipped checkpoint read from the wheel's models/ (minilm-mlm: the delta on the MiniLM)
    r = subprocess.run([cmd, "mask", "--model", "minilm-mlm", "--text", "She poured a cup of [MASK].", "--top-k", "3",
                        "--json"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    from viz.tasks.mlm import predict

    (pred,) = predict(load("minilm-mlm"), "She poured a cup of [MASK].", top_k=3).predictions
    assert [t["token"] for t in json.loads(r.stdout)["masks"][0]["top_k"]] == [t for t, _ in pred.top]

    # bare: the dashboard, on the port Streamlit's own environment variable names; config.toml's 8501 yields
    port = _free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([cmd], cwd=elsewhere, env={**env, "STREAMLIT_SERVER_PORT": str(port)}, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline, ok = time.time() + 120, False
        while time.time() < deadline and not ok and proc.poll() is None:
            try:
                ok = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok"
            except OSError:
                time.sleep(0.5)
        assert ok, log.read_text()
        assert re.search(rf"127\.0\.0\.1:{port}", log.read_text())  # loopback, from the packaged config.toml
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_installed_app_runs_its_pages(installed):
    """The packaged app.py runs the Attention page on the bundled model (AppTest inside the new venv)."""
    venv, elsewhere, env = installed
    script = ("from streamlit.testing.v1 import AppTest\nfrom viz.core.paths import APP\n"
              "at = AppTest.from_file(str(APP), default_timeout=240).run()\n"
              "assert not at.exception, [e.value for e in at.exception]\n"
              "at.switch_page('pages/mlm.py').run()\nassert not at.exception, [e.value for e in at.exception]\n"
              "print([t.value for t in at.title])\n")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", script], cwd=elsewhere, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Masked LM" in r.stdout
