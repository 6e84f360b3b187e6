"""What one transformer layer computes, per family, as data: the sublayers in order, where each norm sits
(pre, post, both, parallel), which modules project q/k and the heads' output, and what the model applies
after its last layer. `viz.inside.walk` walks a token through these recipes with the model's own modules.

Vaswani et al. 2017 wrap every sublayer as Norm(x + Sublayer(x)) ("post-LN": BERT, BART, Marian);
later families normalise the sublayer's input instead, x + Sublayer(Norm(x)) ("pre-LN": GPT-2, T5 and
Llama with RMSNorm), Gemma 2 normalises both input and output of each sublayer (four norms a layer), and
GPT-NeoX (Pythia) runs attention and the feed-forward in parallel: x + Attn(N1(x)) + FFN(N2(x)).

Module names are relative to the layer module; `final` names are relative to the module that holds the
layer list (transformers puts the final norm there and, since v5, writes `hidden_states[-1]` AFTER it:
`capture_outputs(tie_last_hidden_states=True)`). A family missing here gets no layer walk (the head walk
works for every family). Config switches (OPT's `do_layer_norm_before`, GPT-NeoX's
`use_parallel_residual`) pick a variant key in `SWITCHES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from viz.core.arch import CROSS, DECODER, ENCODER


@dataclass(frozen=True)
class Attn:
    """One attention sublayer's modules (relative to the layer).

    q, k: query/key projections; or `qkv`, one fused projection split by `layout`:
      "blocks"    [q heads | k heads | v heads] along the output (GPT-2's c_attn, Phi-3's qkv_proj)
      "per_head"  per head [q | k | v] (GPT-NeoX's query_key_value)
      "qkv_heads" [3, head, head_dim] (ModernBERT's Wqkv)
    q_norm/k_norm: per-head norms on q and k (Qwen3). rope: rotary positions on q and k, by the family's
    own `apply_rotary_pos_emb` and the model's `rotary_emb`. prescale: q is multiplied by the module's
    `scaling` before the attention call, which then gets scaling=1 (OPT).
    """

    stack: str
    module: str
    out: str
    q: str = ""
    k: str = ""
    qkv: str = ""
    layout: str = ""
    q_norm: str = ""
    k_norm: str = ""
    rope: bool = False
    prescale: bool = False


@dataclass(frozen=True)
class Sublayer:
    """One residual block: out = add_norm(x + post_norm(F(pre_norm(x)))), any norm possibly absent.
    F is the attention (`attn`) or the modules of `ffn` applied in order."""

    name: str
    attn: Attn | None = None
    ffn: tuple[str, ...] = ()
    pre_norm: str = ""
    post_norm: str = ""
    add_norm: str = ""


@dataclass(frozen=True)
class Recipe:
    """A stack's layers. `layers`: path suffix of the layer list; `item`: the layer inside one list entry
    (ALBERT's shared groups: `albert_layers.0`); `parallel`: every sublayer reads the layer input and their
    outputs are summed onto it; `final`: modules applied after the last layer (relative to the list's parent)."""

    layers: str
    sublayers: tuple[Sublayer, ...]
    item: str = ""
    parallel: bool = False
    final: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- the families
def _bert() -> dict[str, Recipe]:
    a = "attention.self"
    return {ENCODER: Recipe("encoder.layer", (
        Sublayer("self-attention", Attn(ENCODER, a, "attention.output.dense", q=f"{a}.query", k=f"{a}.key"),
                 add_norm="attention.output.LayerNorm"),
        Sublayer("feed-forward", ffn=("intermediate", "output.dense"), add_norm="output.LayerNorm")))}


def _bart_like() -> dict[str, Recipe]:
    def attn(stack, m):
        return Attn(stack, m, f"{m}.out_proj", q=f"{m}.q_proj", k=f"{m}.k_proj")

    ffn = Sublayer("feed-forward", ffn=("fc1", "activation_fn", "fc2"), add_norm="final_layer_norm")
    return {
        ENCODER: Recipe("encoder.layers", (
            Sublayer("self-attention", attn(ENCODER, "self_attn"), add_norm="self_attn_layer_norm"), ffn)),
        DECODER: Recipe("decoder.layers", (
            Sublayer("masked self-attention", attn(DECODER, "self_attn"), add_norm="self_attn_layer_norm"),
            Sublayer("cross-attention", attn(CROSS, "encoder_attn"), add_norm="encoder_attn_layer_norm"), ffn)),
    }


def _t5() -> dict[str, Recipe]:
    def attn(stack, i, m):
        p = f"layer.{i}.{m}"
        return Sublayer({ENCODER: "self-attention", DECODER: "masked self-attention", CROSS: "cross-attention"}[stack],
                        Attn(stack, p, f"{p}.o", q=f"{p}.q", k=f"{p}.k"), pre_norm=f"layer.{i}.layer_norm")

    def ffn(i):
        return Sublayer("feed-forward", ffn=(f"layer.{i}.DenseReluDense",), pre_norm=f"layer.{i}.layer_norm")

    final = ("final_layer_norm",)
    return {ENCODER: Recipe("encoder.block", (attn(ENCODER, 0, "SelfAttention"), ffn(1)), final=final),
            DECODER: Recipe("decoder.block", (attn(DECODER, 0, "SelfAttention"), attn(CROSS, 1, "EncDecAttention"),
                                              ffn(2)), final=final)}


def _llama(q_norm: bool = False, sandwich: bool = False, fused: bool = False) -> dict[str, Recipe]:
    """Llama and its descendants: RMSNorm pre-LN, RoPE, gated MLP. `q_norm`: Qwen3's per-head q/k norms;
    `sandwich`: Gemma 2's norms on both sides of each sublayer; `fused`: Phi-3's qkv_proj."""
    m = "self_attn"
    proj = dict(qkv=f"{m}.qkv_proj", layout="blocks") if fused else dict(q=f"{m}.q_proj", k=f"{m}.k_proj")
    norms = dict(q_norm=f"{m}.q_norm", k_norm=f"{m}.k_norm") if q_norm else {}
    attn = Attn(DECODER, m, f"{m}.o_proj", rope=True, **proj, **norms)
    if sandwich:
        subs = (Sublayer("masked self-attention", attn, pre_norm="input_layernorm", post_norm="post_attention_layernorm"),
                Sublayer("feed-forward", ffn=("mlp",), pre_norm="pre_feedforward_layernorm",
                         post_norm="post_feedforward_layernorm"))
    else:
        subs = (Sublayer("masked self-attention", attn, pre_norm="input_layernorm"),
                Sublayer("feed-forward", ffn=("mlp",), pre_norm="post_attention_layernorm"))
    return {DECODER: Recipe("layers", subs, final=("norm",))}


def _gpt_neox(parallel: bool) -> dict[str, Recipe]:
    attn = Attn(DECODER, "attention", "attention.dense", qkv="attention.query_key_value", layout="per_head", rope=True)
    return {DECODER: Recipe("layers", (
        Sublayer("masked self-attention", attn, pre_norm="input_layernorm"),
        Sublayer("feed-forward", ffn=("mlp",), pre_norm="post_attention_layernorm")),
        parallel=parallel, final=("final_layer_norm",))}


def _opt(pre: bool) -> dict[str, Recipe]:
    m = "self_attn"
    attn = Attn(DECODER, m, f"{m}.out_proj", q=f"{m}.q_proj", k=f"{m}.k_proj", prescale=True)
    where = "pre_norm" if pre else "add_norm"
    return {DECODER: Recipe("decoder.layers", (
        Sublayer("masked self-attention", attn, **{where: "self_attn_layer_norm"}),
        Sublayer("feed-forward", ffn=("fc1", "activation_fn", "fc2"), **{where: "final_layer_norm"})),
        final=("final_layer_norm", "project_out"))}  # absent modules (None) are skipped


RECIPES: dict[str, dict[str, Recipe]] = {
    **{t: _bert() for t in ("bert", "roberta", "electra", "xlm-roberta", "camembert")},
    "distilbert": {ENCODER: Recipe("transformer.layer", (
        Sublayer("self-attention", Attn(ENCODER, "attention", "attention.out_lin", q="attention.q_lin",
                                        k="attention.k_lin"), add_norm="sa_layer_norm"),
        Sublayer("feed-forward", ffn=("ffn",), add_norm="output_layer_norm")))},
    "albert": {ENCODER: Recipe("encoder.albert_layer_groups", (
        Sublayer("self-attention", Attn(ENCODER, "attention", "attention.dense", q="attention.query",
                                        k="attention.key"), add_norm="attention.LayerNorm"),
        Sublayer("feed-forward", ffn=("ffn", "activation", "ffn_output"), add_norm="full_layer_layer_norm")),
        item="albert_layers.0")},
    "modernbert": {ENCODER: Recipe("layers", (
        Sublayer("self-attention", Attn(ENCODER, "attn", "attn.Wo", qkv="attn.Wqkv", layout="qkv_heads", rope=True),
                 pre_norm="attn_norm"),  # layer 0's attn_norm is an Identity
        Sublayer("feed-forward", ffn=("mlp",), pre_norm="mlp_norm")), final=("final_norm",))},
    "t5": _t5(),
    "bart": _bart_like(),
    "marian": _bart_like(),
    "gpt2": {DECODER: Recipe("h", (
        Sublayer("masked self-attention", Attn(DECODER, "attn", "attn.c_proj", qkv="attn.c_attn", layout="blocks"),
                 pre_norm="ln_1"),
        Sublayer("feed-forward", ffn=("mlp",), pre_norm="ln_2")), final=("ln_f",))},
    **{t: _llama() for t in ("llama", "qwen2", "mistral")},
    "qwen3": _llama(q_norm=True),
    "gemma2": _llama(sandwich=True),
    "phi3": _llama(fused=True),
    "gpt_neox": _gpt_neox(parallel=True),
    "gpt_neox/sequential": _gpt_neox(parallel=False),
    "opt": _opt(pre=True),
    "opt/post": _opt(pre=False),
}

# model_type -> (config attribute, its default, variant key when the attribute is False)
SWITCHES: dict[str, tuple[str, bool, str]] = {
    "gpt_neox": ("use_parallel_residual", True, "gpt_neox/sequential"),
    "opt": ("do_layer_norm_before", True, "opt/post"),
}

FAMILIES = tuple(sorted(k for k in RECIPES if "/" not in k))


class NoRecipe(LookupError):
    """This family's layer is not described in `RECIPES` (the head walk still works)."""


def recipe_key(config) -> str | None:
    mt = config.model_type
    if mt in SWITCHES:
        attr, default, other = SWITCHES[mt]
        return mt if getattr(config, attr, default) else other
    if mt == "albert" and getattr(config, "inner_group_num", 1) != 1:
        return None  # several layers per shared group: hidden_states no longer line up one per layer
    return mt if mt in RECIPES else None


def recipe_for(config, stack: str) -> Recipe:
    """The recipe of the stack whose layers hold `stack`'s attention (cross-attention sits in the decoder)."""
    key = recipe_key(config)
    hidden = DECODER if stack == CROSS else stack
    if key is None or hidden not in RECIPES[key]:
        raise NoRecipe(
            f"The layer walk is not available for '{config.model_type}' yet (known: {', '.join(FAMILIES)}). "
            "The head walk above is exact for every family.")
    return RECIPES[key][hidden]


def layer_module(model, recipe: Recipe, layer: int, n_layers: int):
    """The module of layer `layer` (shared lists, ALBERT: entry `layer * entries // n_layers`) and the
    module that holds the list (where the final norm lives)."""
    pattern = re.compile(r"(^|\.)" + re.escape(recipe.layers) + "$")
    found = [(name, m) for name, m in model.named_modules() if pattern.search(name)]
    if len(found) != 1:
        raise NoRecipe(f"Expected one '{recipe.layers}' list in {type(model).__name__}, found {len(found)}.")
    name, layers = found[0]
    entry = layers[layer * len(layers) // n_layers]
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    return (entry.get_submodule(recipe.item) if recipe.item else entry), parent


def submodule(root, path: str):
    """`root`'s module at dotted `path`; None where the family left it out (OPT's final_layer_norm = None)."""
    m = root
    for part in path.split("."):
        m = getattr(m, part, None) if not part.isdigit() else m[int(part)]
        if m is None:
            return None
    return m
