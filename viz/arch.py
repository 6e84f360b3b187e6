"""Per-architecture facts as data.

Everything that differs between model families — where the attention modules
sit in the module tree, what their query/key/value projections are called, and
whether the family is an encoder, a decoder or both — lives in `ARCHS`, keyed by
`config.model_type`. Code elsewhere reads these facts; it never checks a model's
name (the inseq habit: differences in data, not in `if "bart" in name`).

Every attention module listed here returns a tuple whose *last* element is the
attention weights `[batch, head, query, key]` (transformers 5, eager attention).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ENCODER, DECODER, CROSS = "encoder", "decoder", "cross"
STACKS = (ENCODER, DECODER, CROSS)


@dataclass(frozen=True)
class AttentionSite:
    """Where one kind of attention lives, as regexes over `named_modules()` names.

    module: the attention module whose output tuple ends with the weights.
    query/key/value: child modules (relative to `module`) producing the
        projections `[batch, token, heads * head_dim]`. For fused projections
        (GPT-2's `c_attn`) all three name the same child and `fused=True`.
    output: regex of the output projection applied to the merged heads
        (BERT keeps it outside the self-attention module).
    """

    module: str
    query: str
    key: str
    value: str
    output: str
    fused: bool = False

    def matches(self, name: str) -> bool:
        return re.search(r"(^|\.)" + self.module + "$", name) is not None


@dataclass(frozen=True)
class Arch:
    kind: str  # "encoder" | "decoder" | "encoder-decoder"
    sites: dict[str, AttentionSite] = field(default_factory=dict)  # stack -> site
    # learned position tables that reserve slots (RoBERTa offsets positions by padding_idx + 1)
    position_offset: int = 0
    # masked-LM head of the *ForMaskedLM class: child modules applied in order to a hidden state
    mlm_head: tuple[str, ...] = ()

    @property
    def stacks(self) -> tuple[str, ...]:
        return tuple(s for s in STACKS if s in self.sites)


def _bert_like(mlm_head: tuple[str, ...] = ("cls",), position_offset: int = 0) -> Arch:
    prefix = r"encoder\.layer\.\d+\.attention"
    return Arch(
        kind="encoder",
        sites={ENCODER: AttentionSite(prefix + r"\.self", "query", "key", "value", prefix + r"\.output\.dense")},
        position_offset=position_offset, mlm_head=mlm_head,
    )


def _bart_like() -> Arch:
    def site(stack: str, name: str) -> AttentionSite:
        return AttentionSite(rf"{stack}\.layers\.\d+\.{name}", "q_proj", "k_proj", "v_proj",
                             rf"{stack}\.layers\.\d+\.{name}\.out_proj")

    return Arch(kind="encoder-decoder", sites={
        ENCODER: site("encoder", "self_attn"),
        DECODER: site("decoder", "self_attn"),
        CROSS: site("decoder", "encoder_attn"),
    })


def _t5_like() -> Arch:
    def site(stack: str, sub: str) -> AttentionSite:
        mod = rf"{stack}\.block\.\d+\.layer\.\d+\.{sub}"
        return AttentionSite(mod, "q", "k", "v", mod + r"\.o")

    return Arch(kind="encoder-decoder", sites={
        ENCODER: site("encoder", "SelfAttention"),
        DECODER: site("decoder", "SelfAttention"),
        CROSS: site("decoder", "EncDecAttention"),
    })


ARCHS: dict[str, Arch] = {
    "bert": _bert_like(),
    "electra": _bert_like(("generator_predictions", "generator_lm_head")),
    "roberta": _bert_like(("lm_head",), position_offset=2),
    "xlm-roberta": _bert_like(("lm_head",), position_offset=2),
    "camembert": _bert_like(("lm_head",), position_offset=2),
    "distilbert": Arch("encoder", {ENCODER: AttentionSite(
        r"transformer\.layer\.\d+\.attention", "q_lin", "k_lin", "v_lin",
        r"transformer\.layer\.\d+\.attention\.out_lin")},
        mlm_head=("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")),
    "albert": Arch("encoder", {ENCODER: AttentionSite(
        r"albert_layers\.\d+\.attention", "query", "key", "value", r"albert_layers\.\d+\.attention\.dense")},
        mlm_head=("predictions",)),
    "t5": _t5_like(),
    "mt5": _t5_like(),
    "bart": _bart_like(),
    "mbart": _bart_like(),
    "marian": _bart_like(),
    "pegasus": _bart_like(),
    "gpt2": Arch("decoder", {DECODER: AttentionSite(
        r"h\.\d+\.attn", "c_attn", "c_attn", "c_attn", r"h\.\d+\.attn\.c_proj", fused=True)}),
}

SUPPORTED = tuple(sorted(ARCHS))


class UnsupportedArchitecture(ValueError):
    pass


def arch_for(model_type: str) -> Arch:
    """Facts for `config.model_type`; a clear error naming what is supported otherwise."""
    try:
        return ARCHS[model_type]
    except KeyError:
        raise UnsupportedArchitecture(
            f"Model type '{model_type}' is not supported yet. Supported families: {', '.join(SUPPORTED)}."
        ) from None
