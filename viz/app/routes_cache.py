"""The Routes page's results, cached beside the others (`viz.app.cache.RESULTS`, byte-bounded, read-only).

The capture is the one every page shares (`cache.get_capture`: every layer's weights, values and hidden
states); `Parts` are rebuilt on it per call (they hold the model, so they are never stored). What is stored:
a route in its JSON form (`viz routes --json` edges), one layer's contribution table, what a node writes.
"""

from __future__ import annotations

import numpy as np

from viz.app import cache
from viz.causal.routes import block_contributions, route
from viz.causal.routes_parts import NoRecipe, Parts, RoutesUnavailable, stacks_of


def parts(name: str, text: str, target: str | None) -> dict[str, Parts]:
    """stack -> Parts on the shared capture. Raises CaptureError (RoutesUnavailable: no recipe for the family)."""
    bundle = cache.get_bundle(name)
    cap = cache.get_capture(name, text, target)
    try:
        return {s: Parts(bundle, cap, s) for s in stacks_of(bundle)}
    except NoRecipe as e:
        raise RoutesUnavailable(f"Routes are not available for '{bundle.config.model_type}' yet: {e}") from None


def stacks(name: str, text: str, target: str | None) -> list[str]:
    """The stacks whose routes can be drawn (the Parts are built to check the family, then let go: a page must
    not hold them, they keep the capture and the model alive)."""
    return list(parts(name, text, target))


def get_route(name: str, text: str, target: str | None, stack: str, token: int, threshold: float) -> dict:
    """{edges (JSON form), tokens {stack: [...]}, n_layers {stack: L}, n_heads, token, decomposed}."""
    def compute():
        r = route(parts(name, text, target), stack, token, threshold)
        return {"edges": r.to_json(), "tokens": r.tokens, "n_layers": r.n_layers, "n_heads": r.n_heads,
                "token": r.token, "decomposed": r.decomposed}

    return cache._cached(cache.RESULTS, ("route", name, text, target, stack, token, threshold), compute,
                         "Following the route…")


def get_layer_table(name: str, text: str, target: str | None, stack: str, layer: int,
                    spinner: str | None = "Contributions of every token of this layer…") -> dict[str, np.ndarray]:
    """One layer's contributions for every token: {attention [T, K, H], residual_attention [T], ffn [T],
    residual_ffn [T] (, cross, residual_cross)}."""
    def compute():
        p = parts(name, text, target)[stack]
        c, _ = block_contributions(p, layer, range(p.hidden.shape[1]))
        out = {k: v.numpy() for k, v in c.attention.items()}
        out.update({f"residual_{k}": v.numpy() for k, v in c.residual.items()})
        out["ffn"] = c.ffn.numpy()
        return out

    return cache._cached(cache.RESULTS, ("route_layer", name, text, target, stack, layer), compute, spinner)


def layers_ready(name: str, text: str, target: str | None, stack: str, n_layers: int) -> int:
    """How many of the stack's layer tables are cached already (0 .. n_layers)."""
    return sum(("route_layer", name, text, target, stack, l) in cache.RESULTS for l in range(n_layers))


def table_arrays(name: str, text: str, target: str | None, stack: str) -> dict[str, np.ndarray]:
    """Every layer (the NPZ download): the `viz routes --json` table keys as arrays [layer, ...], and tokens."""
    p = parts(name, text, target)[stack]
    layers = [get_layer_table(name, text, target, stack, l, spinner=None) for l in range(p.n_layers)]
    out = {k: np.stack([t[k] for t in layers]) for k in layers[0]}
    out["tokens"] = np.array(p.tokens)
    return out


def get_writes(name: str, text: str, target: str | None, stack: str, node: tuple[int, int, str]):
    """viz.causal.writes.writes of node (layer, token, site). Raises WritesUnavailable (never cached)."""
    from viz.causal.routes import Node
    from viz.causal.writes import writes

    layer, token, site = node
    return cache._cached(cache.RESULTS, ("route_writes", name, text, target, stack, node),
                         lambda: writes(parts(name, text, target)[stack], Node(stack, layer, token, site)),
                         "Reading what it writes…")
