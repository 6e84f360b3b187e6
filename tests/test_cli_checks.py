"""`python -m viz capture|mask|generate|train`: bad input gets one line naming the problem, never a traceback."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from viz.cli.main import main


def one_line_error(capsys, argv) -> str:
    """Run the CLI in-process; it must stop with status 2 and print exactly one line, no traceback."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv,flag,expected", [
    (["mask", "--text", "a [MASK]", "--top-k", "0"], "--top-k", "at least 1 (got 0)"),
    (["mask", "--text", "a [MASK]", "--top-k", "-3"], "--top-k", "at least 1 (got -3)"),
    (["mask", "--text", "a [MASK]", "--top-k", "five"], "--top-k", "must be an integer"),
    (["generate", "--text", "hi", "--num-beams", "0"], "--num-beams", "at least 1"),
    (["generate", "--text", "hi", "--max-new-tokens", "-1"], "--max-new-tokens", "at least 1"),
    (["generate", "--text", "hi", "--top-k", "0"], "--top-k", "at least 1"),
    (["train", "mlm", "--batch-size", "0"], "--batch-size", "at least 1"),
    (["train", "mlm", "--steps", "-5"], "--steps", "at least 0"),
    (["train", "mlm", "--minutes", "0"], "--minutes", "above 0"),
    (["train", "mlm", "--minutes", "nan"], "--minutes", "finite"),
    (["train", "mlm", "--lr-head=-1e-3"], "--lr-head", "at least 0"),
    (["train", "mlm", "--dropout", "1.5"], "--dropout", "below 1"),
    (["train", "mlm", "--threads", "0"], "--threads", "at least 1"),
    (["train", "mlm", "--eval-every", "0"], "--eval-every", "at least 1"),
    (["train", "mlm", "--warmup", "-1"], "--warmup", "at least 0"),
    (["train", "mlm", "--device", "tpu"], "--device", "cpu, cuda"),
    (["train", "mlm", "--train", "/no/such/corpus.txt"], "--train", "does not exist"),
    (["train", "seq2seq", "--task", "dates", "--out", "x", "--heads", "0"], "--heads", "at least 1"),
    (["train", "seq2seq", "--task", "dates", "--out", "x", "--lr=-0.1"], "--lr", "at least 0"),
    (["train", "seq2seq", "--task", "dates", "--out", "x", "--steps", "0"], "--steps", "at least 1"),
])
def test_numbers_are_checked_by_argparse(capsys, argv, flag, expected):
    err = one_line_error(capsys, argv)
    assert flag in err and expected in err and "--help" in err


def test_output_paths_are_checked_before_the_model_runs(capsys, tmp_path):
    err = one_line_error(capsys, ["capture", "--text", "hi", "--out", "/nonexistent/dir/x.npz"])
    assert "--out" in err and "/nonexistent/dir" in err and "does not exist" in err
    err = one_line_error(capsys, ["capture", "--text", "hi", "--out", str(tmp_path)])
    assert "is a folder" in err
    (tmp_path / "file").write_text("")
    err = one_line_error(capsys, ["train", "seq2seq", "--task", "dates", "--out", str(tmp_path / "file")])
    assert "is a file, not a folder" in err
    if os.geteuid() != 0:  # root may write anywhere: permissions cannot be tested as root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        err = one_line_error(capsys, ["capture", "--text", "hi", "--out", str(locked / "x.npz")])
        assert "permission denied" in err


def test_user_errors_from_the_library_are_one_line(capsys, tmp_path, monkeypatch):
    model = tmp_path / "xl"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "xlnet"}))
    monkeypatch.setenv("VIZ_MODEL_ROOTS", str(tmp_path))
    err = one_line_error(capsys, ["capture", "--model", str(model), "--text", "hi", "--out", str(tmp_path / "x.npz")])
    assert "xlnet" in err and "attention interface" in err
    err = one_line_error(capsys, ["mask", "--model", "tiny-bert-mlm", "--text", "a [MASK] b", "--top-k", "99999"])
    assert "vocabulary" in err
    err = one_line_error(capsys, ["train", "seq2seq", "--task", "dates", "--out", str(tmp_path / "r"),
                                  "--d-model", "30", "--heads", "4"])
    assert "multiple of --heads" in err


def test_no_traceback_end_to_end(tmp_path):
    """The same through a real `python -m viz` process (what a user runs)."""
    r = subprocess.run([sys.executable, "-m", "viz", "capture", "--text", "hi", "--out", "/nonexistent/x.npz"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
