"""`python -m viz capture`: the command-line contract other tools rely on."""

import subprocess
import sys

import numpy as np

from conftest import ROOT


def run(*args):
    return subprocess.run([sys.executable, "-m", "viz", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_capture_writes_the_documented_keys(tmp_path):
    out = tmp_path / "c.npz"
    r = run("capture", "--model", "minilm", "--text", "The cat sat on the mat.", "--out", str(out))
    assert r.returncode == 0, r.stderr
    z = np.load(out)
    assert {"tokens", "encoder_attentions", "encoder_hidden_states"} <= set(z.files)
    assert z["encoder_attentions"].shape == (6, 12, len(z["tokens"]), len(z["tokens"]))
    assert z["encoder_hidden_states"].shape == (7, len(z["tokens"]), 384)


def test_capture_encoder_decoder_keys(tmp_path):
    out = tmp_path / "c.npz"
    r = run("capture", "--model", "tiny-t5", "--text", "a b c", "--target", "x y", "--out", str(out))
    assert r.returncode == 0, r.stderr
    z = np.load(out)
    n_src, n_tgt = len(z["tokens"]), len(z["target_tokens"])
    assert z["cross_attentions"].shape[2:] == (n_tgt, n_src)
    assert z["decoder_attentions"].shape[2:] == (n_tgt, n_tgt)
    assert "decoder_hidden_states" in z.files


def test_capture_errors_are_clear(tmp_path):
    r = run("capture", "--model", "minilm", "--text", "  ", "--out", str(tmp_path / "x.npz"))
    assert r.returncode == 2 and "empty" in r.stderr
    r = run("capture", "--model", "nope nope", "--text", "hi", "--out", str(tmp_path / "x.npz"))
    assert r.returncode == 2 and "minilm" in r.stderr


def test_help_documents_keys_and_shapes():
    r = run("capture", "--help")
    assert "encoder_attentions" in r.stdout and "[layer, head, target, token]" in r.stdout
