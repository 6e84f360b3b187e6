"""Safe loading: every refusal comes with a message that says what to do."""

import json

import pytest

from viz.core.models import ModelLoadError, builtin_names, load_model


def test_default_is_the_real_bundled_minilm(load):
    bundle = load("minilm")
    assert bundle.kind == "encoder" and bundle.n_layers == 6
    assert bundle.model.config.num_attention_heads == 12
    assert not bundle.model.training
    assert bundle.model.config._attn_implementation == "atlas"  # our function in the AttentionInterface (viz.core.recorder)
    assert not bundle.has_mlm_head  # its cls.* head does not exist: never show MLM predictions from it


@pytest.mark.parametrize("name", ["", "no such model!", "definitely-not/a-real-model-xyz"])
def test_unknown_names_fail_fast_with_advice(name, monkeypatch):
    """Fast means: refused without waiting on the network (no connection is even attempted offline)."""
    import socket

    tried = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: tried.append(addr))
    monkeypatch.setattr(socket, "create_connection", lambda addr, *a, **kw: tried.append(addr))
    with pytest.raises(ModelLoadError) as e:
        load_model(name)
    assert "minilm" in str(e.value) and not tried


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZ_MODEL_ROOTS", str(tmp_path))
    return tmp_path


def _save_tiny(path, **kw):
    bundle = load_model("tiny-bert")
    bundle.model.save_pretrained(path, **kw)
    bundle.tokenizer.save_pretrained(path)


def test_local_folder_under_allowed_root_loads(root):
    _save_tiny(root / "m")
    bundle = load_model(str(root / "m"))
    assert bundle.kind == "encoder" and bundle.model.config._attn_implementation == "atlas"


def test_folder_outside_allowed_roots_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("VIZ_MODEL_ROOTS", raising=False)
    _save_tiny(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="outside the allowed"):
        load_model(str(tmp_path / "m"))


def test_remote_code_is_refused(root):
    d = root / "custom"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "my_custom", "architectures": ["MyModel"],
        "auto_map": {"AutoConfig": "configuration_my.MyConfig", "AutoModel": "modeling_my.MyModel"}}))
    (d / "modeling_my.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelLoadError, match="custom code"):
        load_model(str(d))


def test_pickle_only_weights_are_refused(root):
    import torch

    _save_tiny(root / "pkl")
    bundle = load_model("tiny-bert")
    (root / "pkl" / "model.safetensors").unlink()
    torch.save(bundle.model.state_dict(), root / "pkl" / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(str(root / "pkl"))


def test_folder_without_config(root):
    (root / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(root / "empty"))


def test_picker_lists_bundled_and_tiny_models():
    names = builtin_names()
    assert names[0] == "minilm" and "tiny-t5" in names and "tiny-gpt2" in names


# The checkpoints shipped in models/ (git-tracked). Tests use them by name, never behind a skip or a fallback:
# a checkout without one must fail here, loudly, instead of quietly running a smaller suite.
SHIPPED = {"minilm-mlm": ["delta.safetensors", "MODEL_CARD.md"],
           "seq2seq-dates": ["config.json", "model.safetensors", "tokenizer.json", "task.json", "MODEL_CARD.md"],
           "seq2seq-reverse": ["config.json", "model.safetensors", "tokenizer.json", "task.json", "MODEL_CARD.md"]}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_checkpoints_are_present_and_listed(name):
    from viz.core.models import REPO_ROOT

    for f in SHIPPED[name]:
        path = REPO_ROOT / "models" / name / f
        assert path.is_file() and path.stat().st_size > 0, f"{path} is missing: the shipped checkpoint is incomplete"
        if f.endswith(".safetensors"):
            assert path.read_bytes()[:7] != b"version", f"{path} is a Git LFS pointer, not the weights"
    assert name in builtin_names()


def test_device_and_dtype_follow_the_model_when_it_moves():
    """The bundle finds its first parameter once; `model.to(...)` changes that parameter in place."""
    import torch

    bundle = load_model("tiny-bert")
    assert bundle.dtype == torch.float32 and bundle.device.type == "cpu"
    bundle.model.to(torch.bfloat16)
    assert bundle.dtype == torch.bfloat16 == next(bundle.model.parameters()).dtype


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-qwen2"])
def test_tiny_decoders_read_text_as_decoders_not_as_bert(name):
    """They borrow MiniLM's WordPiece: [CLS] ... [SEP] showed around every text. Same ids, decoder names."""
    bundle = load_model(name)
    tok = bundle.tokenizer
    enc = tok("The cat sat.")
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["<s>", "the", "cat", "sat", "."]
    assert (tok.bos_token_id, tok.eos_token_id) == (bundle.config.bos_token_id, bundle.config.eos_token_id)
    assert "token_type_ids" not in enc  # GPT-2 would add wte(token_type_ids) to its embeddings
    assert load_model("tiny-bert").tokenizer.convert_ids_to_tokens(tok("a")["input_ids"])[0] == "[CLS]"
