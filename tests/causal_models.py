"""Tiny random models for the causal tests, with weights drawn larger than their defaults (std 0.3): heads that
are not uniform, and a metric that really moves between a clean and a corrupted input."""

from __future__ import annotations

import torch

from viz.core.arch import arch_for
from viz.core.models import TINY_MLM, ModelBundle, _load_tiny

# family -> stack -> module paths ({l}: the layer). layer: the block (its input is resid_pre); out: the output
# projection (its input is the heads, its output attn_out); mlp: the feed-forward's last module; attn: the module
# that calls the attention function. A path without {l} is one module shared by every layer (ALBERT).
_BART = {"encoder": dict(layer="model.encoder.layers.{l}", out="model.encoder.layers.{l}.self_attn.out_proj",
                         mlp="model.encoder.layers.{l}.fc2", attn="model.encoder.layers.{l}.self_attn"),
         "decoder": dict(layer="model.decoder.layers.{l}", out="model.decoder.layers.{l}.self_attn.out_proj",
                         mlp="model.decoder.layers.{l}.fc2", attn="model.decoder.layers.{l}.self_attn"),
         "cross": dict(out="model.decoder.layers.{l}.encoder_attn.out_proj", attn="model.decoder.layers.{l}.encoder_attn")}
_T5 = {"encoder": dict(layer="encoder.block.{l}", out="encoder.block.{l}.layer.0.SelfAttention.o",
                       mlp="encoder.block.{l}.layer.1.DenseReluDense", attn="encoder.block.{l}.layer.0.SelfAttention"),
       "decoder": dict(layer="decoder.block.{l}", out="decoder.block.{l}.layer.0.SelfAttention.o",
                       mlp="decoder.block.{l}.layer.2.DenseReluDense", attn="decoder.block.{l}.layer.0.SelfAttention"),
       "cross": dict(out="decoder.block.{l}.layer.1.EncDecAttention.o", attn="decoder.block.{l}.layer.1.EncDecAttention")}


def _bert(p):
    return {"encoder": dict(layer=f"{p}.encoder.layer.{{l}}", out=f"{p}.encoder.layer.{{l}}.attention.output.dense",
                            mlp=f"{p}.encoder.layer.{{l}}.output.dense", attn=f"{p}.encoder.layer.{{l}}.attention.self")}


_LLAMA = {"decoder": dict(layer="model.layers.{l}", out="model.layers.{l}.self_attn.o_proj", mlp="model.layers.{l}.mlp",
                          attn="model.layers.{l}.self_attn")}


_ALBERT = "albert.encoder.albert_layer_groups.0.albert_layers.0"
MODULES = {
    "bert": _bert("bert"), "roberta": _bert("roberta"), "electra": _bert("electra"),
    "albert": {"encoder": dict(layer=_ALBERT, out=f"{_ALBERT}.attention.dense", mlp=f"{_ALBERT}.ffn_output",
                               attn=f"{_ALBERT}.attention")},
    "distilbert": {"encoder": dict(layer="distilbert.transformer.layer.{l}",
                                   out="distilbert.transformer.layer.{l}.attention.out_lin",
                                   mlp="distilbert.transformer.layer.{l}.ffn",
                                   attn="distilbert.transformer.layer.{l}.attention")},
    "modernbert": {"encoder": dict(layer="model.layers.{l}", out="model.layers.{l}.attn.Wo", mlp="model.layers.{l}.mlp",
                                   attn="model.layers.{l}.attn")},
    "t5": _T5, "bart": _BART, "marian": _BART,
    "gpt2": {"decoder": dict(layer="transformer.h.{l}", out="transformer.h.{l}.attn.c_proj", mlp="transformer.h.{l}.mlp",
                             attn="transformer.h.{l}.attn")},
    **{f: _LLAMA for f in ("llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3")},
    "gpt_neox": {"decoder": dict(layer="gpt_neox.layers.{l}", out="gpt_neox.layers.{l}.attention.dense",
                                 mlp="gpt_neox.layers.{l}.mlp", attn="gpt_neox.layers.{l}.attention")},
    "opt": {"decoder": dict(layer="model.decoder.layers.{l}", out="model.decoder.layers.{l}.self_attn.out_proj",
                            mlp="model.decoder.layers.{l}.fc2", attn="model.decoder.layers.{l}.self_attn")},
}

CLEAN, CORRUPT = "the cat sat on the mat", "the dog sat on the mat"
MASKED = "the cat sat on the [MASK] .", "the dog sat on the [MASK] ."


def redrawn(family: str, dtype=torch.float32):
    """(model, tokenizer): `tiny-<family>` (its masked-LM class for encoders) with every matrix redrawn."""
    model, tok = _load_tiny(family, mlm=family in TINY_MLM)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return model.to(dtype).eval(), tok


def bundle_of(model, tok, family: str) -> ModelBundle:
    return ModelBundle(f"t-{family}", model, tok, arch_for(model.config.model_type), has_mlm_head=family in TINY_MLM)


def tiny(family: str, dtype=torch.float32) -> ModelBundle:
    return bundle_of(*redrawn(family, dtype), family)


def pair_for(bundle: ModelBundle) -> dict:
    """make_task arguments: a masked pair for encoders, a prompt pair (and a decoder prefix) for the others."""
    if bundle.kind == "encoder":
        return dict(clean=MASKED[0], corrupt=MASKED[1])
    return dict(clean=CLEAN, corrupt=CORRUPT, prefix="the" if bundle.kind == "encoder-decoder" else None)


_OWN: dict[str, ModelBundle] = {}


def own(name: str) -> ModelBundle:
    """`load_model(name)`, cached here and not in conftest's `load`: patching installs its component hooks on a
    model for good (once), and other test files count the hooks of the bundles `load` shares."""
    from viz.core.models import load_model

    if name not in _OWN:
        _OWN[name] = load_model(name)
    return _OWN[name]
