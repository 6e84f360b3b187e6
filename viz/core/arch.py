"""Per-architecture facts as data.

Attention itself is captured for every family in one place (`viz.core.recorder`: our function in
transformers' AttentionInterface), so this table only holds what that function cannot see:
whether a family is an encoder, a decoder or both; where each layer's attention module and its
output projection sit (norm-based attention, head contributions); the masked-LM head's modules;
position-table offsets; and, for causal LMs, how a residual stream becomes next-token logits (the
logit lens: final norm, unembedding, logit post-processing). Keyed by `config.model_type`; code elsewhere never checks a model's name
(the inseq habit: differences in data, not in `if "bart" in name`).

A family missing here still works when its transformers class uses the AttentionInterface
(`generic_arch`): attention, hidden states and q/k/v are captured; the views that need module
paths (norm-based attention, head importance) say they are not available for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ENCODER, DECODER, CROSS = "encoder", "decoder", "cross"
STACKS = (ENCODER, DECODER, CROSS)
KIND_STACKS = {"encoder": (ENCODER,), "decoder": (DECODER,), "encoder-decoder": (ENCODER, DECODER, CROSS)}


@dataclass(frozen=True)
class AttentionSite:
    """Where one kind of attention lives, as regexes over `named_modules()` names (matched at a dot
    boundary, so `layers\\.\\d+\\.self_attn` matches `model.layers.3.self_attn`).

    module: the attention module (the one that calls the attention function).
    output: the output projection applied to the merged heads (BERT keeps it outside `module`).
    """

    module: str
    output: str

    def matches(self, name: str) -> bool:
        return re.search(r"(^|\.)" + self.module + "$", name) is not None


@dataclass(frozen=True)
class LensSite:
    """How a causal LM turns its residual stream into next-token logits, for the logit lens
    (nostalgebraist 2020): `logits = ops(unembed(norm(h)))` with the model's own modules.

    norm: modules applied in order before the unembedding (final norm, OPT's `project_out`);
        one that is missing or None in a given checkpoint is skipped.
    unembed: the output embedding (`lm_head`).
    last_normed: the model's last `hidden_states` entry already went through `norm` (transformers 5
        ties it to `last_hidden_state`), so the lens applies only the unembedding there: normalising
        twice would move the last layer off the model's own logits.
    ops: (config attribute, op) applied to the logits in order, op in softcap | scale | divide
        (Gemma 2's final soft-capping, Cohere's logit scale, Granite's logit divisor); a None value skips.
    """

    norm: tuple[str, ...]
    unembed: str = "lm_head"
    last_normed: bool = True
    ops: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Arch:
    kind: str  # "encoder" | "decoder" | "encoder-decoder"
    sites: dict[str, AttentionSite] = field(default_factory=dict)  # stack -> site
    # learned position tables that reserve slots (RoBERTa offsets positions by padding_idx + 1)
    position_offset: int = 0
    # masked-LM head of the *ForMaskedLM class: child modules applied in order to a hidden state
    mlm_head: tuple[str, ...] = ()
    # causal LMs: final norm + unembedding, for the logit lens (None: not known for this family)
    lens: LensSite | None = None

    @property
    def stacks(self) -> tuple[str, ...]:
        return KIND_STACKS[self.kind]


def _site(module: str, output: str) -> AttentionSite:
    return AttentionSite(module, rf"{module}\.{output}")


def _bert_like(mlm_head: tuple[str, ...] = ("cls",), position_offset: int = 0) -> Arch:
    prefix = r"encoder\.layer\.\d+\.attention"
    return Arch("encoder", {ENCODER: AttentionSite(prefix + r"\.self", prefix + r"\.output\.dense")},
                position_offset=position_offset, mlm_head=mlm_head)


def _bart_like() -> Arch:
    return Arch("encoder-decoder", {
        ENCODER: _site(r"encoder\.layers\.\d+\.self_attn", "out_proj"),
        DECODER: _site(r"decoder\.layers\.\d+\.self_attn", "out_proj"),
        CROSS: _site(r"decoder\.layers\.\d+\.encoder_attn", "out_proj"),
    })


def _t5_like() -> Arch:
    return Arch("encoder-decoder", {
        ENCODER: _site(r"encoder\.block\.\d+\.layer\.\d+\.SelfAttention", "o"),
        DECODER: _site(r"decoder\.block\.\d+\.layer\.\d+\.SelfAttention", "o"),
        CROSS: _site(r"decoder\.block\.\d+\.layer\.\d+\.EncDecAttention", "o"),
    })


def _decoder(module: str = r"layers\.\d+\.self_attn", output: str = "o_proj",
             lens: LensSite = LensSite(("model.norm",))) -> Arch:
    return Arch("decoder", {DECODER: _site(module, output)}, lens=lens)


_LLAMA_LIKE = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3_text", "phi3", "olmo", "olmo2",
               "olmo3", "smollm3", "granite", "cohere", "starcoder2", "helium", "glm", "ministral")

# logit post-processing of Llama-like families that have one (see LensSite.ops)
_LOGIT_OPS = {"gemma2": (("final_logit_softcapping", "softcap"),),
              "gemma3_text": (("final_logit_softcapping", "softcap"),),
              "cohere": (("logit_scale", "scale"),), "granite": (("logits_scaling", "divide"),)}

ARCHS: dict[str, Arch] = {
    "bert": _bert_like(),
    "electra": _bert_like(("generator_predictions", "generator_lm_head")),
    "roberta": _bert_like(("lm_head",), position_offset=2),
    "xlm-roberta": _bert_like(("lm_head",), position_offset=2),
    "camembert": _bert_like(("lm_head",), position_offset=2),
    "distilbert": Arch("encoder", {ENCODER: _site(r"transformer\.layer\.\d+\.attention", "out_lin")},
                       mlm_head=("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")),
    "albert": Arch("encoder", {ENCODER: _site(r"albert_layers\.\d+\.attention", "dense")}, mlm_head=("predictions",)),
    "modernbert": Arch("encoder", {ENCODER: _site(r"layers\.\d+\.attn", "Wo")}, mlm_head=("head", "decoder")),
    "t5": _t5_like(),
    "mt5": _t5_like(),
    "bart": _bart_like(),
    "mbart": _bart_like(),
    "marian": _bart_like(),
    "pegasus": _bart_like(),
    "gpt2": _decoder(r"h\.\d+\.attn", "c_proj", LensSite(("transformer.ln_f",))),
    "gpt_neox": _decoder(r"layers\.\d+\.attention", "dense", LensSite(("gpt_neox.final_layer_norm",))),
    "opt": _decoder(r"decoder\.layers\.\d+\.self_attn", "out_proj",
                    LensSite(("model.decoder.final_layer_norm", "model.decoder.project_out"))),
    "phi": _decoder(output="dense", lens=LensSite(("model.final_layernorm",))),
    **{t: _decoder(lens=LensSite(("model.norm",), ops=_LOGIT_OPS.get(t, ()))) for t in _LLAMA_LIKE},
}

SUPPORTED = tuple(sorted(ARCHS))


class UnsupportedArchitecture(ValueError):
    pass


def generic_arch(config) -> Arch:
    """Facts for a family missing from `ARCHS`, read from its config and transformers' auto mappings."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, \
        MODEL_FOR_MASKED_LM_MAPPING_NAMES

    mt = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        return Arch("encoder-decoder")
    if mt in MODEL_FOR_MASKED_LM_MAPPING_NAMES or mt not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return Arch("encoder")
    return Arch("decoder")


def arch_for(model_type: str, config=None) -> Arch:
    """Facts for `config.model_type`; with a config, families missing from the table get `generic_arch`."""
    if model_type in ARCHS:
        return ARCHS[model_type]
    if config is not None:
        return generic_arch(config)
    raise UnsupportedArchitecture(
        f"Model type '{model_type}' is not supported yet. Supported families: {', '.join(SUPPORTED)}, "
        "and any other family whose transformers code uses the attention interface."
    )
