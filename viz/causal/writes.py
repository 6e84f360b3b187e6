"""What a block writes: the tokens a sublayer's update promotes and suppresses, each head's direct logit
attribution to the predicted token, and the feed-forward's top neurons, read through the model's own output
head (llm-transparency-tool's "promoted / suppressed tokens"; direct logit attribution as in Elhage et al.
2021, "A Mathematical Framework for Transformer Circuits", here read through the real, non-linear head).

The read. Let y be the stream right after sublayer s at token i (before a post-LN norm N_add) and z a part of
what s added (the whole update, one head's output Σ_j α_ij^h v_j^h W_O^h, one neuron's a_n · W_out[n]). Then

    writes(z) = Head(N_add(y)) − Head(N_add(y − z))            [vocab]

the change in the output head's logits, read directly after s, had z not been added (later layers skipped).
Head: a decoder's final norm + unembedding (`viz.tasks.lens`, family data in `viz.core.arch`); an encoder's masked-LM
head (`arch.mlm_head`); an encoder–decoder's decoder: its final norm, the output scaling some configs ask for
(`scale_decoder_outputs`), lm_head and `final_logits_bias`. A head's direct logit attribution is writes(z_h)
at the predicted token (the model's own top prediction at i).

Neurons (`NEURONS`, family data): a_n is the input of the feed-forward's output projection W_out, so the
feed-forward's output is Σ_n a_n W_out[n] + b_out; `neurons` ranks them by their proximity contribution to y
(with the residual as one more part), as llm-transparency-tool does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from viz.core.arch import DECODER, ENCODER
from viz.causal.contributions import contributions
from viz.causal.routes import Node
from viz.causal.routes_parts import Parts, Sub, norm_gain, run
from viz.core.errors import CaptureError
from viz.inside.recipes import recipe_key


class WritesUnavailable(CaptureError):
    """This model has no output head the update can be read through; the message says what to do."""


@dataclass(frozen=True)
class Neurons:
    """Where a family's feed-forward neurons are, relative to its feed-forward module (the recipe's one ffn
    module, or the layer where the recipe lists several). a = act(inp...) or act(gate) * up, or a fused
    projection split in two halves: act(first) * second."""

    out: str
    inp: tuple[str, ...] = ()
    gate: str = ""
    up: str = ""
    fused: str = ""
    act: str = ""


_GATED = Neurons("down_proj", gate="gate_proj", up="up_proj", act="act_fn")
NEURONS: dict[str, Neurons] = {
    **{t: Neurons("output.dense", inp=("intermediate",)) for t in ("bert", "roberta", "electra", "xlm-roberta",
                                                                   "camembert")},
    "distilbert": Neurons("lin2", inp=("lin1", "activation")),
    "albert": Neurons("ffn_output", inp=("ffn", "activation")),
    **{t: Neurons("fc2", inp=("fc1", "activation_fn")) for t in ("bart", "marian", "opt", "opt/post")},
    "t5": Neurons("wo", inp=("wi", "act")),
    "t5/gated": Neurons("wo", gate="wi_0", up="wi_1", act="act"),
    "gpt2": Neurons("c_proj", inp=("c_fc", "act")),
    "gpt_neox": Neurons("dense_4h_to_h", inp=("dense_h_to_4h", "act")),
    "gpt_neox/sequential": Neurons("dense_4h_to_h", inp=("dense_h_to_4h", "act")),
    **{t: _GATED for t in ("llama", "qwen2", "qwen3", "mistral", "gemma2")},
    "phi3": Neurons("down_proj", fused="gate_up_proj", act="activation_fn"),
    "modernbert": Neurons("Wo", fused="Wi", act="act"),
}


@dataclass
class Neuron:
    index: int
    activation: float  # a_n
    contribution: float  # proximity share of a_n W_out[n] in y (neurons + residual sum to 1)
    norm: float  # ‖a_n W_out[n]‖₂
    promoted: list[tuple[str, float]]  # its own top tokens by writes(a_n W_out[n])


@dataclass
class Writes:
    """What node `node` writes (attention / cross / ffn nodes) or reads as (stream nodes, site 'in')."""

    node: Node
    readout: str  # which head read it
    predicted: tuple[str, int]  # the model's top prediction at this token (its final layer)
    promoted: list[tuple[str, float]]  # token, Δ logit (largest first); for a stream node: its own logits
    suppressed: list[tuple[str, float]]  # most negative first
    update_norm: float = 0.0
    head_dla: np.ndarray | None = None  # [H] writes(z_h)[predicted] of each head (attention nodes)
    neurons: list[Neuron] | None = None  # top neurons (feed-forward nodes)


# ----------------------------------------------------------------------------------------------- the head
def readout(parts: Parts):
    """(name, Head) where Head(x [R, D] pre-final stream) -> logits [R, vocab]; raises WritesUnavailable."""
    bundle = parts.bundle
    if bundle.kind == "decoder":
        from viz.tasks.lens import LensUnavailable, lens_logits, lens_parts

        try:
            lens_parts(bundle)
        except LensUnavailable as e:
            raise WritesUnavailable(str(e)) from None
        # the lens normalises every state but the last (transformers' last hidden state is normalised already)
        return "final norm + unembedding", lambda x: lens_logits(bundle, [x.to(bundle.device)] * 2)[0].float().cpu()
    if bundle.kind == "encoder":
        from viz.tasks.mlm import head_logits

        if not (bundle.has_mlm_head and bundle.arch.mlm_head):
            raise WritesUnavailable(
                f"'{bundle.name}' has no masked-LM head, so what a block writes cannot be read as tokens. Pick a "
                "model with one (e.g. minilm-mlm) for promoted tokens; the routes and head shares stand as they are.")
        return "masked-LM head", lambda x: run(_Fn(lambda t: head_logits(bundle, t)), x, like=bundle.model)
    if parts.stack == ENCODER:
        raise WritesUnavailable("An encoder–decoder's encoder has no output head of its own: pick the decoder "
                                "stack to read what blocks write as tokens.")
    return "final norm + lm_head", lambda x: _decoder_head(parts, x)


class _Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _decoder_head(parts: Parts, x: torch.Tensor) -> torch.Tensor:
    model, cfg = parts.bundle.model, parts.bundle.config
    h = parts.final(x)
    if getattr(cfg, "scale_decoder_outputs", False):  # T5 with tied embeddings
        h = h * cfg.d_model ** -0.5
    logits = run(model.get_output_embeddings(), h, like=model)
    bias = getattr(model, "final_logits_bias", None)
    return logits + bias.float().cpu().reshape(1, -1) if bias is not None else logits


# ----------------------------------------------------------------------------------------------- writes
def _top(logits: torch.Tensor, tok, k: int, largest: bool) -> list[tuple[str, float]]:
    v, i = torch.topk(logits, min(k, logits.shape[-1]), largest=largest)
    return list(zip(tok.convert_ids_to_tokens(i.tolist()), [round(float(x), 4) for x in v]))


def _site_sub(parts: Parts, node: Node) -> tuple[list[Sub], int]:
    subs = parts.block(node.layer, [node.token])
    kind = {"attn": "attention", "cross": "cross", "ffn": "ffn"}[node.site]
    return subs, [s.kind for s in subs].index(kind)


def removal_reads(parts: Parts, sub_index: int, subs: list[Sub], layer: int, removed: torch.Tensor, head):
    """Head(N_add(y)) − Head(N_add(y − z)) for every row z of `removed` [P, D] -> [P, vocab]."""
    sub = parts.recipe.sublayers[sub_index]
    mod, _ = parts._mods[layer]
    y = subs[sub_index].whole  # [1, D]

    def stream(v):
        m = mod.get_submodule(sub.add_norm) if sub.add_norm else None
        return v if m is None else run(m, v, like=parts.bundle.model)

    both = head(stream(torch.cat([y, y - removed])))
    return both[:1] - both[1:]


def predicted(parts: Parts, token: int, head) -> int:
    """The model's own top prediction at `token` (its last layer's output through the head)."""
    last = parts.n_layers - 1
    h = parts.block_output(last, parts.block(last, [token]))
    return int(torch.argmax(head(h)[0]))


def writes(parts: Parts, node: Node, k: int = 10, n_neurons: int = 10) -> Writes:
    """What `node` writes (its update) or, for a stream node, reads as. Raises WritesUnavailable."""
    name, head = readout(parts)
    tok = parts.bundle.tokenizer
    best = predicted(parts, node.token, head)
    target = (tok.convert_ids_to_tokens([best])[0], best)
    if node.site == "in":
        layer = node.layer
        if layer == 0:
            h = parts.hidden[0][[node.token]]
        else:
            h = parts.block_output(layer - 1, parts.block(layer - 1, [node.token]))
        logits = head(h)[0]
        return Writes(node, name, target, _top(logits, tok, k, True), _top(logits, tok, k, False),
                      float(h.norm()))
    subs, si = _site_sub(parts, node)
    sub = subs[si]
    delta = removal_reads(parts, si, subs, node.layer, sub.out, head)[0]
    w = Writes(node, name, target, _top(delta, tok, k, True), _top(delta, tok, k, False), float(sub.out.norm()))
    if sub.kind != "ffn":
        z = sub.head_parts(0).sum(1)  # [H, D] each head's output at the token
        w.head_dla = removal_reads(parts, si, subs, node.layer, z, head)[:, best].numpy()
    else:
        w.neurons = neurons(parts, node.layer, sub, subs, si, head, n_neurons, k)
    return w


# ----------------------------------------------------------------------------------------------- neurons
def _ffn_spec(parts: Parts, layer: int):
    """(the feed-forward sublayer's recipe, its root module, its `Neurons`); raises WritesUnavailable."""
    spec_sub = next(s for s in parts.recipe.sublayers if s.attn is None)
    mod, _ = parts._mods[layer]
    root = mod.get_submodule(spec_sub.ffn[0]) if len(spec_sub.ffn) == 1 else mod
    key = recipe_key(parts.bundle.config)
    if key == "t5" and hasattr(root, "wi_0"):
        key = "t5/gated"
    spec = NEURONS.get(key)
    if spec is None:
        raise WritesUnavailable(f"The feed-forward neurons of '{parts.bundle.config.model_type}' are not described "
                                "yet; the block's total write is shown.")
    return spec_sub, root, spec


def neuron_writes(parts: Parts, layer: int, sub: Sub) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a [R, N] activations, W_out [N, D] the output projection's rows, b_out [D]) of the feed-forward at
    `sub.rows`: its output is Σ_n a_n W_out[n] + b_out (before a post-norm). Raises WritesUnavailable."""
    spec_sub, root, spec = _ffn_spec(parts, layer)
    mod, _ = parts._mods[layer]
    like = parts.bundle.model
    x = sub.resid if not parts.recipe.parallel else parts.hidden[layer][sub.rows]
    if spec_sub.pre_norm:
        x = run(mod.get_submodule(spec_sub.pre_norm), x, like=like)
    if spec.inp:
        a = x
        for name in spec.inp:
            a = run(root.get_submodule(name), a, like=like)
    else:
        if spec.fused:
            first, second = run(root.get_submodule(spec.fused), x, like=like).chunk(2, dim=-1)
        else:
            first, second = (run(root.get_submodule(n), x, like=like) for n in (spec.gate, spec.up))
        a = run(root.get_submodule(spec.act), first, like=like) * second
    out = root.get_submodule(spec.out)
    w = out.weight.detach().float().cpu()
    b = getattr(out, "bias", None)
    return a, (w if type(out).__name__ == "Conv1D" else w.T), \
        (torch.zeros(w.shape[0] if type(out).__name__ != "Conv1D" else w.shape[1]) if b is None else b.detach().float().cpu())


def neurons(parts: Parts, layer: int, sub: Sub, subs: list[Sub], si: int, head, n: int, k: int) -> list[Neuron]:
    """The top `n` neurons of the feed-forward at the single row of `sub`, by proximity contribution."""
    a, w_out, b_out = neuron_writes(parts, layer, sub)
    z = a[0, :, None] * w_out  # [N, D]
    spec_sub = parts.recipe.sublayers[si]
    if spec_sub.post_norm:  # Gemma 2: the norm after the feed-forward scales every neuron's write alike
        mod, _ = parts._mods[layer]
        z = z * norm_gain(mod.get_submodule(spec_sub.post_norm), z.sum(0, keepdim=True) + b_out, sub.out)
    c = contributions(sub.whole[0], torch.cat([z, sub.resid]))[:-1]
    top = torch.argsort(c, descending=True)[:n]
    deltas = removal_reads(parts, si, subs, layer, z[top], head)
    tok = parts.bundle.tokenizer
    return [Neuron(int(i), float(a[0, i]), float(c[i]), float(z[i].norm()), _top(deltas[r], tok, k, True))
            for r, i in enumerate(top.tolist())]
