"""Model families as a new user meets them: a saved Hugging Face folder under an allowed root, opened by the
CLI. Every family's capture equals transformers' eager `output_attentions=True` on the same saved weights."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from viz.cli.main import main
from viz.core.models import _load_tiny

SAVED = ["llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3", "gpt_neox", "opt", "modernbert", "gpt2", "bert"]
TEXT = "The cat sat on the mat because it was tired, and then the dog came in and barked at it twice."


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def save(root, family: str):
    path = root / family
    if not path.exists():
        model, tok = _load_tiny(family)
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return path


def eager_reference(path, ids):
    """transformers alone: load the saved folder with eager attention, no viz code involved."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    with torch.inference_mode():
        out = model(input_ids=torch.tensor(ids)[None], output_attentions=True, output_hidden_states=True)
    return (torch.stack([a[0] for a in out.attentions]).numpy(), torch.stack([h[0] for h in out.hidden_states]).numpy())


@pytest.mark.parametrize("family", SAVED)
def test_cli_capture_of_a_saved_folder_equals_eager(root, family, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("VIZ_MODEL_ROOTS", str(root))
    path = save(root, family)
    out = tmp_path / "c.npz"
    assert main(["capture", "--model", str(path), "--text", TEXT, "--out", str(out)]) == 0
    z = np.load(out)
    stack = "encoder" if family in ("bert", "modernbert") else "decoder"
    att, hid = eager_reference(path, z["input_ids"])
    np.testing.assert_allclose(z[f"{stack}_attentions"], att, atol=1e-5)
    np.testing.assert_allclose(z[f"{stack}_hidden_states"], hid, atol=1e-4)
    # selected layers and rows are the same slice of the full capture
    part = tmp_path / "p.npz"
    assert main(["capture", "--model", str(path), "--text", TEXT, "--out", str(part), "--layers", "0,-1",
                 "--rows", "-1"]) == 0
    p = np.load(part)
    L, T = att.shape[0], att.shape[-1]
    assert list(p[f"{stack}_layers"]) == [0, L - 1] and list(p[f"{stack}_rows"]) == [T - 1]
    np.testing.assert_allclose(p[f"{stack}_attentions"], att[[0, L - 1]][:, :, [T - 1]], atol=1e-5)


def test_unsupported_family_gets_one_line_not_a_traceback(root, tmp_path):
    """Falcon computes attention in its own code: refused before its weights are read, with the families
    that do work named."""
    from transformers import AutoTokenizer, FalconConfig, FalconForCausalLM

    path = root / "falcon"
    FalconForCausalLM(FalconConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
                      ).save_pretrained(path)
    from viz.core.models import minilm_dir

    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(path)
    r = subprocess.run([sys.executable, "-m", "viz", "capture", "--model", str(path), "--text", "hi", "--out",
                        str(tmp_path / "x.npz")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "VIZ_MODEL_ROOTS": str(root)})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "falcon" in r.stderr and "Llama" in r.stderr


def test_bad_layer_list_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["capture", "--model", "tiny-bert", "--text", "hi", "--out", "/tmp/x.npz", "--layers", "one,two"])
    assert e.value.code == 2
    assert "comma-separated list of integers" in capsys.readouterr().err


def test_layer_out_of_range_is_a_one_line_error(tmp_path, capsys):
    assert main(["capture", "--model", "tiny-bert", "--text", "hi", "--out", str(tmp_path / "x.npz"),
                 "--layers", "7"]) == 2
    assert "no layer 7" in capsys.readouterr().err


def test_device_that_is_missing_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU
    assert main(["capture", "--model", "tiny-bert", "--text", "hi", "--out", str(tmp_path / "x.npz"),
                 "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
