"""Every sublayer of a stack split into its parts, from one captured forward and the model's own modules.

One capture (`viz.core.capture.capture`: attention weights, value vectors and hidden states of every layer) holds
what each head mixed; the layer recipes (`viz.inside.recipes`) say how each family wires its sublayers. For a
block l and any set of query rows, walking the recipe gives, per sublayer, exactly what the model added:

    attention (self or cross)  y = resid + N_post(Σ_h Σ_j α_ij^h v_j^h W_O^h + b_O)
    feed-forward               y = resid + N_post(FFN(N_pre(resid)))

`resid` is the residual stream entering the sublayer, `y` the stream right after the add, BEFORE a post-LN
family's LayerNorm (BERT, BART, Marian, OPT-350m); the next sublayer's `resid` is that norm's output. A
parallel block (GPT-NeoX) reads x in both branches: its attention's y = x + attn, its feed-forward's resid is
that y and its y = x + attn + ffn. Gemma 2's norm after each sublayer (N_post, an RMSNorm) is a per-token
elementwise scale once the token's RMS is fixed: the head parts carry that scale (`gain`).

The block input of every token comes from the capture (hidden_states[l]), so any rows can be decomposed
without the others: a route from one token decomposes only the tokens it reaches. `Parts.check` compares the
recomposed block output with the model's next hidden state.

Shapes: T query tokens, K keys, H heads, d head_dim, D d_model, R chosen rows. Torch float32 on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from viz.core.arch import CROSS, DECODER, ENCODER
from viz.core.capture import Capture, capture
from viz.core.errors import CaptureError
from viz.core.models import ModelBundle
from viz.inside.recipes import NoRecipe, Sublayer, layer_module, recipe_for, submodule

SELF = {ENCODER: ENCODER, DECODER: DECODER}


class RoutesUnavailable(CaptureError):
    """This model's blocks cannot be split into parts (its family's layer is not described)."""


def decompose(bundle: ModelBundle, text: str, target: str | None = None, max_tokens: int | None = None
              ) -> dict[str, Parts]:
    """One capture (every layer's weights, values and hidden states) -> stack -> `Parts`. Raises CaptureError
    (RoutesUnavailable for a family without a layer recipe)."""
    cap = capture(bundle, text, target, qkv=True, max_tokens=max_tokens)
    try:
        return {s: Parts(bundle, cap, s) for s in stacks_of(bundle)}
    except NoRecipe as e:
        raise RoutesUnavailable(str(e).replace("The layer walk is", "Routes are").replace(
            " The head walk above is exact for every family.", " The Attention and Layer flow pages work for it.")
        ) from None


@dataclass
class Sub:
    """One sublayer of one block at rows `rows`. `kind`: attention | cross | ffn."""

    kind: str
    name: str  # the recipe's name ("masked self-attention", "feed-forward")
    rows: np.ndarray  # [R]
    resid: torch.Tensor  # [R, D]
    whole: torch.Tensor  # [R, D]  y
    out: torch.Tensor  # [R, D]  what the sublayer added (bias and post-norm included)
    alpha: torch.Tensor | None = None  # [H, R, K]
    f: torch.Tensor | None = None  # [H, K, D]
    gain: torch.Tensor | None = None  # [R, D]
    bias: torch.Tensor | None = None  # [R, D] the output projection's bias as added (after the gain)

    def head_parts(self, row: int) -> torch.Tensor:
        """The parts of one row (index into `rows`) [H, K, D] (for references and small views)."""
        p = self.alpha[:, row, :, None] * self.f
        return p if self.gain is None else p * self.gain[row]


def _weight_in_out(module) -> torch.Tensor:
    """A projection's weight as [in, out]: nn.Linear stores [out, in]; GPT-2's Conv1D already [in, out]."""
    w = module.weight.detach().float().cpu()
    return w if type(module).__name__ == "Conv1D" else w.T


def _bias(module, D: int) -> torch.Tensor:
    b = getattr(module, "bias", None)
    return b.detach().float().cpu() if b is not None else torch.zeros(D)


def norm_gain(module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """g [R, D] with module(x) = g ⊙ x exactly, for an RMS-type norm y = module(x) (no centring, no bias):
    g = γ / s(x). γ up to a constant comes from a probe of RMS 1 (±1 alternating), s per row by least squares,
    so the constant cancels. Raises NoRecipe if the norm is not of that kind."""
    D = x.shape[-1]
    probe = torch.ones(D)
    probe[1::2] = -1.0
    gamma = run(module, probe[None], like=module)[0] * probe  # γ / sqrt(1 + eps)
    gx = gamma * x
    scale = (y * gx).sum(-1, keepdim=True) / (gx * gx).sum(-1, keepdim=True).clamp(min=1e-30)
    g = gamma * scale
    if not torch.allclose(g * x, y, rtol=1e-4, atol=1e-5 * float(y.abs().max()) + 1e-8):
        raise NoRecipe(f"{type(module).__name__} after a sublayer is not an RMS-type norm: it cannot be split.")
    return g


def run(module, x: torch.Tensor, like=None) -> torch.Tensor:
    """A model module on rows [R, D] (as [1, R, D] in the module's dtype and device) -> float32 CPU [R, D']."""
    p = next((like if like is not None else module).parameters(), None)
    dev, dt = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        out = module(x.to(device=dev, dtype=dt)[None])
    out = out[0] if isinstance(out, tuple) else out
    return out[0].float().cpu()


class Parts:
    """Sublayer parts of one stack (`encoder` or `decoder`; a decoder's cross-attention is its own sublayer)."""

    def __init__(self, bundle: ModelBundle, cap: Capture, stack: str):
        if stack not in (ENCODER, DECODER):
            raise ValueError(f"stack must be encoder or decoder, not {stack!r}")
        self.bundle, self.cap, self.stack = bundle, cap, stack
        self.recipe = recipe_for(bundle.config, stack)
        self.n_layers = bundle.stack_layers(stack)
        missing = [s for s in self.attention_stacks if s not in cap.values or s not in cap.attentions]
        if stack not in cap.hidden_states or missing:
            raise ValueError("the capture needs every layer's attention weights, values and hidden states")
        if list(cap.rows[stack]) != list(range(cap.hidden_states[stack].shape[1])):
            raise ValueError("the capture needs every token's hidden states (rows=None)")
        self.hidden = torch.tensor(cap.hidden_states[stack], dtype=torch.float32)  # [L + 1, T, D] (a copy: cached
        # captures are read-only)
        self.tokens = cap.axis_tokens(stack)[0]
        self.n_heads = cap.attentions[SELF[stack]].shape[1]
        self._f: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._mods = [layer_module(bundle.model, self.recipe, l, self.n_layers) for l in range(self.n_layers)]

    @property
    def attention_stacks(self) -> tuple[str, ...]:
        return tuple(s.attn.stack for s in self.recipe.sublayers if s.attn is not None)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Sublayer kinds in order: attention, [cross,] ffn."""
        return tuple(_kind(s) for s in self.recipe.sublayers)

    def key_tokens(self, kind: str) -> list[str]:
        return self.cap.axis_tokens(CROSS if kind == "cross" else self.stack)[1]

    # ------------------------------------------------------------------------------------- per layer
    def transformed_values(self, attn_stack: str, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(f = v^h W_O^h [H, K, D], values per query head [H, K, d]) of one attention, memoised per layer."""
        key = (attn_stack, layer)
        if key not in self._f:
            sub = next(s for s in self.recipe.sublayers if s.attn is not None and s.attn.stack == attn_stack)
            out = self._mods[layer][0].get_submodule(sub.attn.out)
            v = torch.from_numpy(self.cap.head_values(attn_stack)[layer]).float()  # [H, K, d]
            H, _, d = v.shape
            w = _weight_in_out(out)  # [H * d, D]
            self._f[key] = (torch.einsum("hkd,hde->hke", v, w.reshape(H, d, -1)), v)
        return self._f[key]

    def block(self, layer: int, rows) -> list[Sub]:
        """Every sublayer of block `layer` at token positions `rows`, in order."""
        rows = np.asarray(sorted(set(int(r) for r in rows)), dtype=np.int64)
        mod, _ = self._mods[layer]
        x = self.hidden[layer][rows]
        h, subs = x, []
        for sub in self.recipe.sublayers:
            if self.recipe.parallel:
                resid = x if not subs else subs[-1].whole
                inp = x
            else:
                resid = inp = h
            s = self._attention(sub, mod, layer, rows, resid) if sub.attn is not None else \
                self._ffn(sub, mod, rows, inp, resid)
            subs.append(s)
            if not self.recipe.parallel:
                h = _apply(mod, sub.add_norm, s.whole, self.bundle.model)
        return subs

    def block_output(self, layer: int, subs: list[Sub]) -> torch.Tensor:
        """The block's output at the subs' rows [R, D], before the model's final modules."""
        if self.recipe.parallel:
            return subs[-1].whole
        mod, _ = self._mods[layer]
        return _apply(mod, self.recipe.sublayers[-1].add_norm, subs[-1].whole, self.bundle.model)

    def final(self, h: torch.Tensor) -> torch.Tensor:
        """The modules the model applies after its last layer (transformers writes hidden_states[-1] after them)."""
        _, parent = self._mods[-1]
        for name in self.recipe.final:
            m = submodule(parent, name)
            if m is not None:
                h = run(m, h, like=self.bundle.model)
        return h

    def check(self, layer: int, subs: list[Sub]) -> float:
        """max |recomposed block output − the model's hidden state| at the subs' rows."""
        h = self.block_output(layer, subs)
        if layer == self.n_layers - 1:
            h = self.final(h)
        return float((h - self.hidden[layer + 1][subs[0].rows]).abs().max())

    # ------------------------------------------------------------------------------------- sublayers
    def _attention(self, sub: Sublayer, mod, layer: int, rows: np.ndarray, resid: torch.Tensor) -> Sub:
        stack = sub.attn.stack
        f, v = self.transformed_values(stack, layer)
        alpha = torch.from_numpy(self.cap.attentions[stack][layer][:, rows]).float()  # [H, R, K]
        out_mod = mod.get_submodule(sub.attn.out)
        merged = torch.einsum("hrk,hkd->rhd", alpha, v).reshape(len(rows), -1)
        out = run(out_mod, merged, like=self.bundle.model)  # the model's own projection, bias included
        bias = _bias(out_mod, out.shape[-1]).expand_as(out)
        gain = None
        post = mod.get_submodule(sub.post_norm) if sub.post_norm else None
        if post is not None:
            normed = run(post, out, like=self.bundle.model)
            gain = norm_gain(post, out, normed)
            out, bias = normed, bias * gain
        return Sub("cross" if stack == CROSS else "attention", sub.name, rows, resid, resid + out, out,
                   alpha=alpha, f=f, gain=gain, bias=bias)

    def _ffn(self, sub: Sublayer, mod, rows: np.ndarray, inp: torch.Tensor, resid: torch.Tensor) -> Sub:
        a = _apply(mod, sub.pre_norm, inp, self.bundle.model)
        for name in sub.ffn:
            a = run(mod.get_submodule(name), a, like=self.bundle.model)
        out = _apply(mod, sub.post_norm, a, self.bundle.model)
        return Sub("ffn", sub.name, rows, resid, resid + out, out)


def _kind(sub: Sublayer) -> str:
    if sub.attn is None:
        return "ffn"
    return "cross" if sub.attn.stack == CROSS else "attention"


def _apply(mod, name: str, x: torch.Tensor, like) -> torch.Tensor:
    """The layer's module `name` on x; x itself where the recipe names none or the module is an Identity."""
    m = mod.get_submodule(name) if name else None
    if m is None or isinstance(m, torch.nn.Identity):
        return x
    return run(m, x, like=like)


def stacks_of(bundle: ModelBundle) -> tuple[str, ...]:
    """The stacks whose blocks can be decomposed: encoder and/or decoder."""
    return tuple(s for s in bundle.arch.stacks if s != CROSS)
