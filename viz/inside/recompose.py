"""The torch side of `viz.inside.walk`: a query token's attention row recomputed from the captured q, k, mask and bias,
the whole layer recomposed through the model's own modules (`viz.inside.recipes`), and the scores recomputed from the
projection weights (W_q·x, W_k·x, the family's own RoPE) as an independent check.

Shapes: H heads, K keys, d head_dim, D d_model. Numpy in and out; torch only to call the model's modules.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass

import numpy as np
import torch

from viz.core.names import level
from viz.core.arch import CROSS, DECODER, ENCODER
from viz.core.capture import Capture
from viz.core.models import ModelBundle
from viz.inside.recipes import Attn, NoRecipe, Recipe, layer_module, recipe_for, recipe_key, submodule


# ----------------------------------------------------------------------------- scores and weights
def _softcap(s: np.ndarray, cap: float) -> np.ndarray:
    return s if np.isnan(cap) else np.tanh(s / cap) * cap


def row_scores(cap: Capture, stack: str) -> tuple[np.ndarray, np.ndarray]:
    """(raw q·k·scaling [H, K], scores [H, K]) of the single recorded (layer, row), in float64."""
    q = cap.queries[stack][0, :, 0].astype(np.float64)  # [H, d]
    k = cap.head_keys(stack)[0].astype(np.float64)  # [H, K, d]
    raw = np.einsum("hd,hkd->hk", q, k) * cap.scaling[stack][0]
    s = _softcap(raw, cap.softcap[stack][0])
    if stack in cap.score_bias:
        s = s + cap.score_bias[stack][0, :, 0]
    return raw, s


def softmax_masked(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """softmax(scores + mask) over the last axis; a fully masked row stays all zeros."""
    z = scores + mask
    top = np.max(z, axis=-1, keepdims=True)
    e = np.exp(z - np.where(np.isfinite(top), top, 0.0))
    total = e.sum(-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def row_weights(cap: Capture, stack: str) -> np.ndarray:
    return softmax_masked(row_scores(cap, stack)[1], cap.masks[stack][0, 0].astype(np.float64))


# ----------------------------------------------------------------------------- results
@dataclass
class Step:
    """One box of the sublayer diagram: the vector a step outputs. `kind`: input | norm (on a sublayer's
    branch: pre/post norm) | attention | ffn | add (residual) | add_norm (post-LN, on the stream) | output |
    final (the model's final modules after the last layer). `detail`: the modules that computed it."""

    label: str
    kind: str
    sublayer: str
    vector: np.ndarray  # [D]
    detail: str = ""

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.vector))


@dataclass
class LayerWalk:
    """The token through the whole layer, every intermediate vector kept."""

    recipe: str
    parallel: bool
    steps: list[Step]
    output: np.ndarray  # [D] our recomposed hidden state (after the final modules, when they apply)
    model_output: np.ndarray  # [D] the model's hidden_states[layer + 1] at the token
    final: tuple[str, ...] = ()  # final modules applied (last layer only: hidden_states[-1] comes after them)

    @property
    def recomposition_error(self) -> float:
        return float(np.abs(self.output.astype(np.float64) - self.model_output).max())


# ----------------------------------------------------------------------------- torch helpers
def _call(module, vec: np.ndarray, like: torch.nn.Module) -> np.ndarray:
    """Run a module of the model on one vector [D] (as [1, 1, D], the model's dtype and device)."""
    p = next(like.parameters())
    with torch.inference_mode():
        out = module(torch.as_tensor(vec, dtype=p.dtype, device=p.device).reshape(1, 1, -1))
    out = out[0] if isinstance(out, tuple) else out
    return out.reshape(-1).float().cpu().numpy()


def proj_parts(proj, heads: np.ndarray, like) -> tuple[np.ndarray, np.ndarray]:
    """Through the output projection: (each head's contribution [H, D], the bias [D]). The projection is
    linear: proj(concat) = Σ_h proj(head h alone, others 0) - (H - 1)·proj(0)."""
    H, d = heads.shape
    basis = np.zeros((H + 1, H * d), np.float32)
    for h in range(H):
        basis[h, h * d:(h + 1) * d] = heads[h]
    p = next(like.parameters())
    with torch.inference_mode():
        out = proj(torch.as_tensor(basis, dtype=p.dtype, device=p.device)[None])[0].float().cpu().numpy()
    bias = out[H]
    return out[:H] - bias, bias


# ----------------------------------------------------------------------------- the whole layer
def _row(cap: Capture, stack: str, token: int) -> int:
    return list(cap.rows[stack]).index(token)


def _attention_out(bundle, cap, attn: Attn, layer_mod, like) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The attention sublayer at the token: (output [D], each head's contribution [H, D], bias [D])."""
    w = row_weights(cap, attn.stack)  # [H, K]
    heads = np.einsum("hk,hkd->hd", w, cap.head_values(attn.stack)[0].astype(np.float64)).astype(np.float32)
    contrib, bias = proj_parts(layer_mod.get_submodule(attn.out), heads, like)
    return contrib.sum(0) + bias, contrib, bias


def walk_layer(bundle: ModelBundle, cap: Capture, stack: str, layer: int, token: int) -> LayerWalk:
    """Recompose layer `layer` of the stack holding `stack` at query position `token` (raises NoRecipe)."""
    recipe = recipe_for(bundle.config, stack)
    hidden = DECODER if stack == CROSS else stack
    n = bundle.stack_layers(hidden)
    mod, parent = layer_module(bundle.model, recipe, layer, n)
    r = _row(cap, hidden, token)
    x = cap.hidden_states[hidden][layer, r].astype(np.float32)
    # named as everywhere else in the app (viz.core.names): the hidden state leaving emb, L0, L1, ...
    steps = [Step("layer input x", "input", "", x, level(layer) + (" (the embeddings)" if layer == 0 else ""))]
    h, branches = x, []

    def norm(name: str, v: np.ndarray, sub: str, kind: str) -> np.ndarray:
        m = mod.get_submodule(name) if name else None
        if m is None or isinstance(m, torch.nn.Identity):  # ModernBERT's layer 0 has no attention norm
            return v
        out = _call(m, v, bundle.model)
        steps.append(Step("add & norm" if kind == "add_norm" else "norm", kind, sub, out, f"{type(m).__name__} {name}"))
        return out

    for sub in recipe.sublayers:
        inp = x if recipe.parallel else h
        a = norm(sub.pre_norm, inp, sub.name, "norm")
        if sub.attn is not None:
            out = _attention_out(bundle, cap, sub.attn, mod, bundle.model)[0]
            steps.append(Step(sub.name, "attention", sub.name, out, f"Σ heads → {sub.attn.out}"))
        else:
            out = a
            for name in sub.ffn:
                out = _call(mod.get_submodule(name), out, bundle.model)
            steps.append(Step(sub.name, "ffn", sub.name, out, " → ".join(sub.ffn)))
        out = norm(sub.post_norm, out, sub.name, "norm")
        if recipe.parallel:
            branches.append(out)
            continue
        h = inp + out
        steps.append(Step("+ residual", "add", sub.name, h, f"x + {sub.name}"))
        h = norm(sub.add_norm, h, sub.name, "add_norm")
    if recipe.parallel:
        h = x + np.sum(branches, axis=0)
        steps.append(Step("+ residual", "add", "", h, "x + " + " + ".join(s.name for s in recipe.sublayers)))
    steps.append(Step("layer output", "output", "", h, f"ours, vs the model's {level(layer + 1)}"))
    final = ()
    if layer == n - 1 and recipe.final:  # hidden_states[-1] is written after the final norm (transformers 5)
        mods = [(name, submodule(parent, name)) for name in recipe.final]
        final = tuple(name for name, m in mods if m is not None)
        for name, m in mods:
            if m is not None:
                h = _call(m, h, bundle.model)
                steps.append(Step(f"final {name}", "final", "", h,
                                  f"{type(m).__name__}: the model's {level(layer + 1)} comes after it"))
    target = cap.hidden_states[hidden][layer + 1, r].astype(np.float64)
    return LayerWalk(recipe_key(bundle.config), recipe.parallel, steps, h, target, final)


# ----------------------------------------------------------------------------- W_q·x and W_k·x
def _split_heads(t: torch.Tensor, n: int) -> torch.Tensor:
    """[T, n*d] -> [T, n, d]."""
    return t.reshape(t.shape[0], n, -1)


def _project_qk(attn: Attn, mod, a_q: torch.Tensor, a_k: torch.Tensor, H: int, KV: int):
    """q [Tq, H, d] and k [Tk, KV, d] from the model's own projection modules (before RoPE)."""
    if not attn.qkv:
        q = _split_heads(mod.get_submodule(attn.q)(a_q), H)
        k = _split_heads(mod.get_submodule(attn.k)(a_k), KV)
    else:
        fused = mod.get_submodule(attn.qkv)
        outs = [fused(a_q), fused(a_k)] if a_q is not a_k else [fused(a_q)] * 2
        if attn.layout == "blocks":
            d = outs[0].shape[-1] // (H + 2 * KV)
            q, k = _split_heads(outs[0][:, :H * d], H), _split_heads(outs[1][:, H * d:(H + KV) * d], KV)
        elif attn.layout == "per_head":
            q = _split_heads(outs[0], H).chunk(3, dim=-1)[0]
            k = _split_heads(outs[1], H).chunk(3, dim=-1)[1]
        else:  # "qkv_heads": [3, head, d]
            q = outs[0].reshape(outs[0].shape[0], 3, H, -1)[:, 0]
            k = outs[1].reshape(outs[1].shape[0], 3, H, -1)[:, 1]
    if attn.q_norm:
        q, k = mod.get_submodule(attn.q_norm)(q), mod.get_submodule(attn.k_norm)(k)
    if attn.prescale:
        q = q * mod.get_submodule(attn.module).scaling
    return q, k


def _rope(bundle: ModelBundle, attn_mod, layer: int, q: torch.Tensor, k: torch.Tensor):
    """The family's own rotary embedding on q [T, H, d] and k [T, KV, d] (positions 0..T-1)."""
    rotary = next((m for n, m in bundle.model.named_modules() if n.split(".")[-1] == "rotary_emb"), None)
    apply = getattr(sys.modules[type(attn_mod).__module__], "apply_rotary_pos_emb", None)
    if rotary is None or apply is None:
        raise NoRecipe("this family's rotary embedding was not found")
    pos = torch.arange(q.shape[0], device=q.device)[None]
    kw = {}
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        kw["layer_type"] = bundle.config.layer_types[layer]
    cos, sin = rotary(q, pos, **kw)
    qr, kr = apply(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin)
    return qr[0].transpose(0, 1), kr[0].transpose(0, 1)


def _full_hidden(bundle: ModelBundle, cap: Capture, hidden: str, layer: int) -> np.ndarray:
    """hidden_states[layer] of every position [T, D], by a plain forward (nothing recorded)."""
    if list(cap.rows[hidden]) == list(range(len(cap.axis_tokens(hidden)[0]))):  # every row is there already
        return cap.hidden_states[hidden][layer]
    dev, model = bundle.device, bundle.model
    inputs = {"input_ids": torch.as_tensor(cap.input_ids, device=dev)[None]}
    if cap.target_ids is not None and hidden == ENCODER:
        model = model.get_encoder()  # the encoder's states need no decoder
    elif cap.target_ids is not None:
        inputs["decoder_input_ids"] = torch.as_tensor(cap.target_ids, device=dev)[None]
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        inputs["logits_to_keep"] = 1  # the states are wanted, not a vocabulary's worth of logits
    with bundle.lock, torch.inference_mode():
        # transformers 5 keeps only the selected states ([layer]); a family without the selection keeps all
        out = model(**inputs, output_hidden_states=[layer], use_cache=False, return_dict=True)
    states = out.decoder_hidden_states if hidden == DECODER and cap.target_ids is not None else out.hidden_states
    return states[layer][0].float().cpu().numpy()


def projected_scores(bundle: ModelBundle, cap: Capture, stack: str, layer: int, token: int,
                     walk: LayerWalk | None = None) -> np.ndarray:
    """q·k·scaling [H, K] recomputed from the layer input through the model's own norm, W_q and W_k (and
    RoPE): an independent check of what the attention function received. Raises NoRecipe."""
    recipe = recipe_for(bundle.config, stack)
    hidden = DECODER if stack == CROSS else stack
    mod, _ = layer_module(bundle.model, recipe, layer, bundle.stack_layers(hidden))
    sub = next(s for s in recipe.sublayers if s.attn is not None and s.attn.stack == stack)
    H, KV = cap.queries[stack].shape[1], cap.keys[stack].shape[1]
    p = next(bundle.model.parameters())

    def tensor(a):
        return torch.as_tensor(np.asarray(a, np.float32), dtype=p.dtype, device=p.device)

    def pre(t):
        return mod.get_submodule(sub.pre_norm)(t) if sub.pre_norm else t

    with torch.inference_mode():
        if stack == CROSS:  # queries: the decoder's input to this sublayer; keys: the encoder's output
            if walk is None:
                raise NoRecipe("cross-attention needs the layer walk for its query input")
            i = next(j for j, s in enumerate(recipe.sublayers) if s is sub)
            q_in = _sublayer_input(walk, recipe, i)
            a_q = pre(tensor(q_in)[None])
            a_k = tensor(cap.hidden_states[ENCODER][-1])
            q, k = _project_qk(sub.attn, mod, a_q, a_k, H, KV)
            row = 0
        else:
            a = pre(tensor(_full_hidden(bundle, cap, hidden, layer)))
            q, k = _project_qk(sub.attn, mod, a, a, H, KV)
            if sub.attn.rope:
                q, k = _rope(bundle, mod.get_submodule(sub.attn.module), layer, q, k)
            row = token
        k = k.repeat_interleave(H // KV, dim=1)  # [K, H, d]: transformers' repeat_kv, not the capture's map
        s = torch.einsum("hd,khd->hk", q[row].double(), k.double()) * float(cap.scaling[stack][0])
    return s.cpu().numpy()


def _sublayer_input(walk: LayerWalk, recipe: Recipe, index: int) -> np.ndarray:
    """The residual stream entering sublayer `index` (sequential recipes): the last add / add & norm before it."""
    if recipe.parallel or index == 0:
        return walk.steps[0].vector
    names = [s.name for s in recipe.sublayers[:index]]
    last = [s for s in walk.steps if s.sublayer == names[-1] and s.kind in ("add", "add_norm")]
    return last[-1].vector


