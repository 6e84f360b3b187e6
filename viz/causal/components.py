"""Named components of every supported family: read, replace and differentiate them inside one forward.

Components (TransformerLens's hook names in brackets), per stack (`encoder`, `decoder`, and `cross` for an
encoder–decoder's cross-attention, which lives in the decoder's layers and has only the attention sites):

    resid_pre[l]  [batch, pos, d_model]         input of block l (blocks.l.hook_resid_pre)
    attn_out[l]   [batch, pos, d_model]         attention sublayer's output projection, bias included, before
                                                the residual add and any norm (blocks.l.hook_attn_out)
    mlp_out[l]    [batch, pos, d_model]         feed-forward's output, before the residual add and any norm
                                                (blocks.l.hook_mlp_out)
    head[l]       [batch, pos, head, d_head]    every head's output before the output projection: that
                                                projection's input, split into heads (blocks.l.attn.hook_z)
    q/k/v[l]      [batch, pos, head|kv_head, d_head]   the projections' outputs, before RoPE and q/k norms
                                                (blocks.l.attn.hook_q/k/v); fused projections are split

Where each lives is the family's layer recipe (`viz.inside.recipes`: the layer list, the attention sublayer's
output projection and q/k projections, the feed-forward's modules), so this module holds one table of sites
(`SITES`), never a branch per family. Attention patterns are not a hook site: a pattern patch is a head patch
with the value pattern·V (see `viz.causal.patching`).

Mechanism (the discipline of `viz.recorder`): hooks are installed once per model and do nothing unless the
current context holds a `Session` for that model in the `SESSION` ContextVar. A session says which sites to
keep (`read`), which to change (`edit`: site -> fn(layer, tensor) -> new tensor or None) and whether kept
tensors stay in the autograd graph (`graph`, for gradients). Two threads sharing the model never see each
other's session, and a session that ends — normally or by an exception inside the forward — leaves the model
exactly as it was: nothing is installed or removed per call.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from viz.core.arch import CROSS, DECODER, ENCODER
from viz.inside.recipes import Attn, NoRecipe, Recipe, Sublayer, layer_module, recipe_for, submodule
from viz.core.models import ModelBundle

RESID_PRE, ATTN_OUT, MLP_OUT, HEAD = "resid_pre", "attn_out", "mlp_out", "head"
Q, K, V = "q", "k", "v"
STREAM_SITES = (RESID_PRE, ATTN_OUT, MLP_OUT)
STACK_SITES = {ENCODER: (RESID_PRE, ATTN_OUT, MLP_OUT, HEAD, Q, K, V),
               DECODER: (RESID_PRE, ATTN_OUT, MLP_OUT, HEAD, Q, K, V),
               CROSS: (ATTN_OUT, HEAD, Q, K, V)}

# The table: site -> (which module of the layer, hook kind). "layer": the block itself; "out": the attention
# sublayer's output projection; "ffn": the feed-forward's last module; "q"/"k"/"v": a projection.
SITES: dict[str, tuple[str, str]] = {
    RESID_PRE: ("layer", "pre"),
    ATTN_OUT: ("out", "post"),
    HEAD: ("out", "pre"),
    MLP_OUT: ("ffn", "post"),
    Q: ("q", "post"), K: ("k", "post"), V: ("v", "post"),
}
# a separate value projection's name, from its query projection's (the recipes name q and k only)
_V_OF_Q = {"q_proj": "v_proj", "query": "value", "q_lin": "v_lin", "q": "v"}


class ComponentError(ValueError):
    """This model's components cannot be named; the message says why (one sentence for the user)."""


# ----------------------------------------------------------------------------- one session
@dataclass
class Session:
    """What one call reads and changes. Keys are (stack, site); `store[(stack, site)][layer]` after the forward."""

    owner: "Components"
    read: frozenset = frozenset()
    edit: dict[tuple[str, str], Callable[[int, torch.Tensor], torch.Tensor | None]] = field(default_factory=dict)
    graph: bool = False
    store: dict[tuple[str, str], dict[int, torch.Tensor]] = field(default_factory=dict)
    calls: dict[int, int] = field(default_factory=dict)
    tokens: dict[str, tuple[int, int]] = field(default_factory=dict)  # stack -> (batch, pos) of its last block input

    def layer_of(self, point: "Point") -> int:
        if len(point.layers) == 1:
            return point.layers[0]
        n = self.calls.get(id(point), 0)  # a module shared by several layers (ALBERT): its n-th call
        self.calls[id(point)] = n + 1
        return point.layers[n % len(point.layers)]


SESSION: ContextVar[Session | None] = ContextVar("viz_components", default=None)


@dataclass(eq=False)
class Point:
    """One hook point: a module, the layers it serves (several when shared), the sites it carries."""

    owner: "Components"
    stack: str
    module: torch.nn.Module
    layers: tuple[int, ...]
    site: str


def _enter(point: Point) -> tuple[Session, int] | None:
    """The session this call belongs to and the layer it is at, or None (no session, or another model's)."""
    s = SESSION.get()
    if s is None or s.owner is not point.owner:
        return None
    return s, s.layer_of(point)


def _visit(s: Session, layer: int, stack: str, site: str, x: torch.Tensor) -> torch.Tensor | None:
    """The hooks' common body: the tensor to use instead of `x`, or None to leave it."""
    key = (stack, site)
    out = x
    fn = s.edit.get(key)
    if fn is not None:
        y = fn(layer, x)
        out = x if y is None else y
    if s.graph and not out.requires_grad and out.is_floating_point():
        out = out.detach().requires_grad_(True)  # the first site of a graph: nothing above it matters
    if key in s.read:
        s.store.setdefault(key, {})[layer] = out if s.graph else out.detach()
    return out if (out is not x or s.graph) else None


# ----------------------------------------------------------------------------- the per-model table
@dataclass
class StackParts:
    """One stack's modules per layer, from its recipe."""

    recipe: Recipe
    sublayer: Sublayer  # the attention sublayer of this stack
    ffn: Sublayer | None
    layers: list[torch.nn.Module]  # layer module per layer (the same object for shared layers)


class Components:
    """Hook points of one model, installed once (`components(bundle)`), and what sites its stacks have."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.kind = bundle.kind
        self.n_layers = {s: bundle.stack_layers(s) for s in bundle.arch.stacks}
        self.n_heads = {s: bundle.n_heads(s) for s in bundle.arch.stacks}
        self.n_kv = {s: bundle.n_kv_heads(s) for s in bundle.arch.stacks}
        self.parts: dict[str, StackParts] = {}
        self.points: list[Point] = []
        for stack in bundle.arch.stacks:
            self.parts[stack] = self._parts(bundle, stack)
        self._install()

    # -- the table
    def _parts(self, bundle: ModelBundle, stack: str) -> StackParts:
        try:
            recipe = recipe_for(bundle.config, stack)
        except NoRecipe:
            from viz.inside.recipes import FAMILIES

            raise ComponentError(
                f"Patching needs to know where each component of '{bundle.config.model_type}' lives, and this family "
                f"is not described yet (known: {', '.join(FAMILIES)}).") from None
        sub = next(s for s in recipe.sublayers if s.attn is not None and s.attn.stack == stack)
        ffn = next((s for s in recipe.sublayers if s.ffn), None)
        n = self.n_layers[stack]
        layers = [layer_module(bundle.model, recipe, layer, n)[0] for layer in range(n)]
        return StackParts(recipe, sub, ffn, layers)

    def module(self, stack: str, layer: int, where: str) -> torch.nn.Module | None:
        """The module of `where` (layer | out | ffn | q | k | v | qkv | pre_norm) in `stack`'s layer `layer`."""
        p = self.parts[stack]
        mod, attn = p.layers[layer], p.sublayer.attn
        path = {"layer": "", "out": attn.out, "ffn": p.ffn.ffn[-1] if p.ffn else "", "q": attn.q, "k": attn.k,
                "v": _v_path(attn), "qkv": attn.qkv, "pre_norm": p.sublayer.pre_norm}[where]
        if where == "layer":
            return mod
        return submodule(mod, path) if path else None

    def sites(self, stack: str) -> tuple[str, ...]:
        return tuple(s for s in STACK_SITES[stack] if s in self._hooked.get(stack, ()))

    def head_dim(self, stack: str) -> int:
        out = self.module(stack, 0, "out")
        n_in = getattr(out, "in_features", None) or getattr(out, "nx", None) or out.weight.shape[0]
        return int(n_in) // self.n_heads[stack]

    # -- installing
    def _install(self) -> None:
        self._hooked: dict[str, set[str]] = {}
        for stack, p in self.parts.items():
            by_module: dict[tuple[int, str], list[int]] = {}
            mods: dict[int, torch.nn.Module] = {}
            for layer in range(self.n_layers[stack]):
                for where in ("layer", "out", "ffn", "qkv", "q", "k", "v"):
                    if stack == CROSS and where in ("layer", "ffn"):
                        continue
                    m = self.module(stack, layer, where)
                    if m is not None:
                        mods[id(m)] = m
                        by_module.setdefault((id(m), where), []).append(layer)
            for (mid, where), layers in by_module.items():
                self._hook(stack, mods[mid], where, tuple(layers))

    def _hook(self, stack: str, module: torch.nn.Module, where: str, layers: tuple[int, ...]) -> None:
        hooked = self._hooked.setdefault(stack, set())
        if where == "layer":
            point = Point(self, stack, module, layers, RESID_PRE)
            module.register_forward_pre_hook(_resid_hook(point), with_kwargs=True)
            hooked.add(RESID_PRE)
        elif where == "out":
            pre, post = Point(self, stack, module, layers, HEAD), Point(self, stack, module, layers, ATTN_OUT)
            module.register_forward_pre_hook(_head_hook(pre, self.n_heads[stack]))
            module.register_forward_hook(_output_hook(post))
            hooked.update((HEAD, ATTN_OUT))
        elif where == "ffn":
            module.register_forward_hook(_output_hook(Point(self, stack, module, layers, MLP_OUT)))
            hooked.add(MLP_OUT)
        else:  # a projection: q, k, v alone, or the three fused
            attn = self.parts[stack].sublayer.attn
            sites = (Q, K, V) if where == "qkv" else (where,)
            point = Point(self, stack, module, layers, sites[0])
            module.register_forward_hook(_projection_hook(point, sites, attn.layout if where == "qkv" else "",
                                                          self.n_heads[stack], self.n_kv[stack]))
            hooked.update(sites)

    # -- using the projections outside a forward (path patching)
    def project(self, stack: str, layer: int, site: str, x: torch.Tensor) -> torch.Tensor:
        """The model's own q/k/v projection of `x` [..., d_model] -> [..., head|kv_head, d_head] (no RoPE)."""
        attn = self.parts[stack].sublayer.attn
        fused = self.module(stack, layer, "qkv")
        if fused is not None:
            return split_fused(fused(x), attn.layout, self.n_heads[stack], self.n_kv[stack])[site]
        y = self.module(stack, layer, site)(x)
        n = self.n_heads[stack] if site == Q else self.n_kv[stack]
        return y.reshape(*y.shape[:-1], n, -1)


def _v_path(attn: Attn) -> str:
    if attn.qkv or not attn.q:
        return ""
    head, _, last = attn.q.rpartition(".")
    return f"{head}.{_V_OF_Q[last]}" if last in _V_OF_Q else ""


def split_fused(y: torch.Tensor, layout: str, H: int, KV: int) -> dict[str, torch.Tensor]:
    """A fused q/k/v projection's output [..., F] -> {q: [..., H, d], k: [..., KV, d], v: [..., KV, d]} (views)."""
    lead = y.shape[:-1]
    if layout == "blocks":  # [q heads | k heads | v heads]
        d = y.shape[-1] // (H + 2 * KV)
        q, k, v = y.split([H * d, KV * d, KV * d], dim=-1)
        return {Q: q.reshape(*lead, H, d), K: k.reshape(*lead, KV, d), V: v.reshape(*lead, KV, d)}
    if layout == "per_head":  # per head [q | k | v]
        q, k, v = y.reshape(*lead, H, 3, -1).unbind(-2)
        return {Q: q, K: k, V: v}
    q, k, v = y.reshape(*lead, 3, H, -1).unbind(-3)  # "qkv_heads": [3, head, d]
    return {Q: q, K: k, V: v}


def join_fused(parts: dict[str, torch.Tensor], layout: str) -> torch.Tensor:
    """`split_fused` backwards."""
    q, k, v = parts[Q], parts[K], parts[V]
    lead = q.shape[:-2]
    if layout == "blocks":
        return torch.cat([q.reshape(*lead, -1), k.reshape(*lead, -1), v.reshape(*lead, -1)], dim=-1)
    if layout == "per_head":
        return torch.stack([q, k, v], dim=-2).reshape(*lead, -1)
    return torch.stack([q, k, v], dim=-3).reshape(*lead, -1)


# ----------------------------------------------------------------------------- the hooks
def _resid_hook(point: Point):
    def hook(module, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states")
        here = _enter(point) if torch.is_tensor(x) else None
        if here is None:
            return None
        here[0].tokens[point.stack] = tuple(x.shape[:2])
        y = _visit(*here, point.stack, RESID_PRE, x)
        if y is None:
            return None
        if args:
            return (y, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": y}

    return hook


def _head_hook(point: Point, n_heads: int):
    def hook(module, args):
        here = _enter(point)
        if here is None:
            return None
        x = args[0]
        y = _visit(*here, point.stack, HEAD, x.reshape(*x.shape[:-1], n_heads, x.shape[-1] // n_heads))
        return None if y is None else (y.reshape(x.shape), *args[1:])

    return hook


def _output_hook(point: Point):
    def hook(module, args, output):
        here = _enter(point) if torch.is_tensor(output) else None
        if here is None:
            return None
        flat = output.dim() == 2 and point.stack in here[0].tokens  # OPT runs its feed-forward on [batch*pos, d]
        x = output.reshape(*here[0].tokens[point.stack], -1) if flat else output
        y = _visit(*here, point.stack, point.site, x)
        return y.reshape(output.shape) if flat and y is not None else y

    return hook


def _projection_hook(point: Point, sites: tuple[str, ...], layout: str, H: int, KV: int):
    def hook(module, args, output):
        here = _enter(point)
        if here is None:
            return None
        if layout:
            parts = split_fused(output, layout, H, KV)
        else:
            parts = {sites[0]: output.reshape(*output.shape[:-1], H if sites[0] == Q else KV, -1)}
        changed = False
        for site in sites:
            y = _visit(*here, point.stack, site, parts[site])
            if y is not None:
                parts[site], changed = y, True
        if not changed:
            return None
        return join_fused(parts, layout) if layout else parts[sites[0]].reshape(output.shape)

    return hook


# ----------------------------------------------------------------------------- entry points
_INSTALL_LOCK = threading.Lock()


def components(bundle: ModelBundle) -> Components:
    """The model's hook points, installed on first use (once per model, whoever asks first)."""
    with _INSTALL_LOCK:
        comps = getattr(bundle.model, "_viz_components", None)
        if comps is None:
            comps = Components(bundle)
            bundle.model._viz_components = comps
        return comps


@contextmanager
def session(bundle: ModelBundle, read=(), edit: dict | None = None, graph: bool = False) -> Iterator[Session]:
    """Forwards of `bundle.model` inside this context keep the sites in `read` ((stack, site) pairs) and apply
    `edit`; `graph=True` keeps the read tensors in the autograd graph (run under `torch.enable_grad()`).
    Only this thread/task sees it; it is gone when the context exits, however it exits."""
    comps = components(bundle)
    for stack, site in list(read) + list(edit or {}):
        if stack not in comps.parts or site not in comps.sites(stack):
            raise ComponentError(f"'{bundle.name}' has no component {site} in its {stack} stack "
                                 f"(it has: {', '.join(comps.sites(stack)) if stack in comps.parts else 'none'}).")
    token = SESSION.set(Session(comps, frozenset(read), dict(edit or {}), graph))
    try:
        yield SESSION.get()
    finally:
        SESSION.reset(token)
