"""Value zeroing (Mohebbi, Zuidema, Chrupała & Alishahi 2023, "Quantifying Context Mixing in Transformers",
EACL, §3): how much token i's output of layer l changes when token j's value vectors are zeroed in that
layer's attention (every head), the layer's input held at its clean value.

    C_l[i, j] = 1 - cos(x_i^l, x̃_i^{l, ¬j})        x^l = hidden_states[l + 1] (the output of layer l)
    C_l[i, :] /= Σ_j C_l[i, j]                        (their row normalisation)
    R = C_{L-1} · … · C_0                             (rolled out without an added identity: C already
                                                       measures the whole layer, residual included)
    score_j = R[position, j]

Two exact ways to compute x̃ (the same numbers, to float32 roundoff; tests hold both to plain forward hooks):
- "recompose" (families with a layer recipe, `viz.inside.recipes`): one recorded clean forward gives each layer's
  input, attention weights and values; zeroing v_j changes head h's output at query i by -α^h_ij v^h_j, and the
  rest of the layer (output projection, residuals, norms, feed-forward; the final norm after the last layer,
  where transformers writes hidden_states[-1] after it) is recomposed through the model's own modules for the
  T variants at once. Costs about T forwards without attention, whatever the depth.
- "forward" (any family): one batched forward of the T variants per layer, zeroing only in that layer, so layers
  before it are untouched and hidden_states[l + 1] is "layer l on the clean input, token j's values zeroed".
  The zeroing rides our attention function (`viz.recorder.Edit.values`, ContextVar-gated: no hook on the shared
  model). Costs L x T forwards.

Encoder–decoders: C and R over the encoder's self-attention; then c_j = 1 - cos of the decoder's last hidden
state at the explained step when source token j's value vectors are zeroed in every decoder layer's
cross-attention (the encoder output held clean), normalised to sum 1; score = c · R.

Scores are unsigned (distances): a share of the prediction's context mixing per input token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from viz.core.arch import CROSS, DECODER, ENCODER
from viz.core.capture import recording
from viz.causal.attribution_target import CHUNK, Problem
from viz.inside.recipes import NoRecipe, layer_module, recipe_for, submodule
from viz.core.recorder import EDIT, Edit, active


@dataclass
class ValueZeroing:
    scores: np.ndarray  # [T]
    mixing: np.ndarray  # [layer, T, T] row-normalised C_l of the (encoder) stack
    rollout: np.ndarray  # [T, T] R
    cross: np.ndarray | None = None  # [T] encoder–decoders: the step's normalised cross-attention zeroing row


def _cos_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def _normalise(c: np.ndarray) -> np.ndarray:
    total = c.sum(-1, keepdims=True)
    return np.divide(c, total, out=np.zeros_like(c), where=total > 0)


def _zeroing(n_tokens: int, keys: np.ndarray, device) -> torch.Tensor:
    """[len(keys), n_tokens] ones with a 0 at each row's key."""
    s = torch.ones(len(keys), n_tokens, device=device)
    s[torch.arange(len(keys)), torch.as_tensor(keys)] = 0.0
    return s


def mixing_forward(run, ids: torch.Tensor, stack: str, n_layers: int, chunk: int = CHUNK) -> np.ndarray:
    """Row-normalised C_l [layer, T, T] by batched forwards ("forward" in the module docstring).
    `run(ids [B, T])` -> the stack's hidden_states (embeddings first)."""
    T = ids.shape[0]
    clean = run(ids[None])
    out = np.zeros((n_layers, T, T))
    for layer in range(n_layers):
        for s in range(0, T, chunk):
            keys = np.arange(s, min(T, s + chunk))
            edit = Edit(n_layers={stack: n_layers}, values={(stack, layer): _zeroing(T, keys, ids.device)})
            with active(EDIT, edit):
                h = run(ids[None].expand(len(keys), -1))[layer + 1]  # [B, T, D]
            out[layer][:, keys] = _cos_distance(h, clean[layer + 1]).T.cpu().numpy()
    return _normalise(out)


def _out(x):
    return x[0] if isinstance(x, tuple) else x


def _norm(mod, name: str, x: torch.Tensor) -> torch.Tensor:
    m = mod.get_submodule(name) if name else None
    return x if m is None or isinstance(m, torch.nn.Identity) else _out(m(x))


def _compose(recipe, mod, parent, x: torch.Tensor, heads: torch.Tensor, last: bool) -> torch.Tensor:
    """The layer's output from its input x [1, T, D] and the merged head outputs heads [B, T, H*d], through the
    model's own modules in the recipe's order; parts that do not depend on the heads stay [1, T, D]."""
    h, branches = x, []
    for sub in recipe.sublayers:
        inp = x if recipe.parallel else h
        if sub.attn is not None:
            o = _out(mod.get_submodule(sub.attn.out)(heads))
        else:
            o = _norm(mod, sub.pre_norm, inp)
            for name in sub.ffn:
                o = _out(mod.get_submodule(name)(o))
        o = _norm(mod, sub.post_norm, o)
        if recipe.parallel:
            branches.append(o)
            continue
        h = _norm(mod, sub.add_norm, inp + o)
    if recipe.parallel:
        h = x + sum(branches)
    if last:
        for name in recipe.final:
            m = submodule(parent, name)
            if m is not None:
                h = _out(m(h))
    return h


def mixing_recomposed(problem: Problem, module, stack: str, chunk: int = CHUNK) -> np.ndarray:
    """Row-normalised C_l [layer, T, T] by recomposing each layer ("recompose"); raises NoRecipe."""
    b, ids = problem.bundle, problem.ids
    recipe = recipe_for(b.config, stack)
    L, T = b.stack_layers(stack), ids.shape[0]
    with recording(b, qkv=True) as rec:
        hidden = module(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None], output_hidden_states=True,
                        return_dict=True).hidden_states
    out = np.zeros((L, T, T))
    for layer in range(L):
        mod, parent = layer_module(b.model, recipe, layer, L)
        a = rec.data[(stack, "attn")][layer][0]  # [H, T, T]
        v = rec.data[(stack, "v")][layer][0]  # [KV, T, d]
        v = v.repeat_interleave(a.shape[0] // v.shape[0], dim=0)  # [H, T, d], transformers' repeat_kv
        heads = torch.einsum("hik,hkd->ihd", a, v)  # [T, H, d]
        x = hidden[layer]
        clean = _compose(recipe, mod, parent, x, heads.reshape(1, T, -1), layer == L - 1)
        for s in range(0, T, chunk):
            keys = torch.arange(s, min(T, s + chunk), device=ids.device)
            var = heads[None] - torch.einsum("hib,hbd->bihd", a[:, :, keys], v[:, keys])
            h = _compose(recipe, mod, parent, x, var.reshape(len(keys), T, -1), layer == L - 1)
            out[layer][:, keys.cpu().numpy()] = _cos_distance(h, clean).T.cpu().numpy()
    return _normalise(out)


def mixing_matrices(problem: Problem, module, stack: str, how: str = "auto", chunk: int = CHUNK) -> np.ndarray:
    """C_l [layer, T, T] of `module`'s stack; how = "auto" (recompose where the family has a recipe, else
    forward), "recompose" or "forward"."""
    if how in ("auto", "recompose"):
        try:
            return mixing_recomposed(problem, module, stack, chunk)
        except NoRecipe:
            if how == "recompose":
                raise
    return mixing_forward(_stack_runner(module), problem.ids, stack, problem.bundle.stack_layers(stack), chunk)


def rollout(mixing: np.ndarray) -> np.ndarray:
    """R = C_{L-1} · … · C_0 -> [T, T]."""
    acc = np.eye(mixing.shape[-1])
    for c in mixing:
        acc = c @ acc
    return acc


def _stack_runner(module):
    def run(ids: torch.Tensor):
        return module(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True,
                      return_dict=True).hidden_states
    return run


def _cross_row(problem: Problem, enc_last: torch.Tensor, chunk: int) -> np.ndarray:
    """c_j for every source token j (see the module docstring) -> normalised [S]."""
    b, model = problem.bundle, problem.bundle.model
    S, L = problem.n, b.stack_layers(DECODER)
    dec = problem.decoder_ids[None]

    def run(batch: int) -> torch.Tensor:
        enc = BaseModelOutput(last_hidden_state=enc_last.expand(batch, -1, -1))
        out = model(encoder_outputs=enc, attention_mask=torch.ones(batch, S, dtype=torch.long, device=dec.device),
                    decoder_input_ids=dec.expand(batch, -1), output_hidden_states=True, use_cache=False,
                    return_dict=True)
        return out.decoder_hidden_states[-1][:, -1]  # [B, D]

    clean = run(1)
    c = np.zeros(S)
    for s in range(0, S, chunk):
        keys = np.arange(s, min(S, s + chunk))
        zero = _zeroing(S, keys, dec.device)
        edit = Edit(n_layers={DECODER: L, CROSS: L}, values={(CROSS, layer): zero for layer in range(L)})
        with active(EDIT, edit):
            c[keys] = _cos_distance(run(len(keys)), clean).cpu().numpy()
    return _normalise(c)


def value_zeroing(problem: Problem, how: str = "auto", chunk: int = CHUNK) -> ValueZeroing:
    """Value-zeroing scores of `problem`'s prediction over its input tokens (see the module docstring)."""
    b = problem.bundle
    with b.lock, torch.inference_mode():
        if b.kind == "encoder-decoder":
            encoder = b.model.get_encoder()
            mixing = mixing_matrices(problem, encoder, ENCODER, how, chunk)
            enc_last = _stack_runner(encoder)(problem.ids[None])[-1]
            cross = _cross_row(problem, enc_last, chunk)
            r = rollout(mixing)
            return ValueZeroing(cross @ r, mixing, r, cross)
        stack = ENCODER if b.kind == "encoder" else DECODER
        mixing = mixing_matrices(problem, b.model.base_model, stack, how, chunk)
        r = rollout(mixing)
        return ValueZeroing(r[problem.position].copy(), mixing, r)
