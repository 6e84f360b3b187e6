"""Information-flow routes (Ferrando & Voita 2024): which parts of which sublayers carry information to one
token's last representation, found in one forward pass, with the proximity contributions of
`viz.causal.contributions` on the parts of `viz.causal.routes_parts`.

The graph (llm-transparency-tool's, with sublayers of encoder–decoders as their own nodes):

    Node(stack, layer, token, site)  site "in":    the stream entering block `layer` (layer = L: the last output)
                                     site "attn":  right after block `layer`'s (masked) self-attention
                                     site "cross": right after its cross-attention (decoders of encoder–decoders)
                                     site "ffn":   the feed-forward block itself
    edges into attn(l, i):   "attention"  from in(l, j) for every key j, weight Σ_h c_ij^h (each head's share kept)
                             "residual_attention" from in(l, i)
    edges into cross(l, i):  "cross" from the encoder's output in(L_enc, j); "residual_cross" from attn(l, i)
    edges into in(l+1, i):   "ffn" through ffn(l, i) from the last attention node; "residual_ffn" from it

A route keeps the edges whose weight is over the threshold τ, followed back from the chosen token's last node;
only the tokens it reaches are decomposed, block by block, top down. An encoder–decoder's decoder route goes on
into the encoder from the encoder tokens its cross-attention edges reach.

Shapes of the full table (`table`): attention [layer, token, key, head], residual_attention [layer, token], ffn
[layer, token], residual_ffn [layer, token] (and cross, residual_cross for a decoder with cross-attention).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from viz.core.arch import DECODER, ENCODER
from viz.causal.contributions import attention_contributions, ffn_contributions
from viz.causal.routes_parts import Parts, Sub

DEFAULT_THRESHOLD = 0.04  # llm-transparency-tool's default contribution threshold
SITES = ("in", "attn", "cross", "ffn")


@dataclass(frozen=True)
class Node:
    stack: str
    layer: int
    token: int
    site: str

    @property
    def label(self) -> str:
        return {"in": f"L{self.layer} in" if self.layer else "embedding", "attn": f"L{self.layer} after attention",
                "cross": f"L{self.layer} after cross-attention", "ffn": f"L{self.layer} feed-forward"}[self.site]


@dataclass
class Edge:
    src: Node
    dst: Node
    weight: float
    kind: str  # attention | residual_attention | cross | residual_cross | ffn | residual_ffn
    heads: np.ndarray | None = None  # [H] each head's share (attention, cross); sums to `weight`

    def to_json(self, src: Node | None = None, digits: int = 5) -> dict:
        """{from, to, weight, kind, stack, from_site, to_site[, from_stack][, heads]} (see `viz routes --help`);
        `src` replaces the source node (a feed-forward edge is written from the node its block reads)."""
        src = src or self.src
        out = {"from": [src.layer, src.token], "to": [self.dst.layer, self.dst.token],
               "weight": round(float(self.weight), digits), "kind": self.kind, "stack": self.dst.stack,
               "from_site": src.site, "to_site": self.dst.site}
        if src.stack != self.dst.stack:
            out["from_stack"] = src.stack
        if self.heads is not None:
            out["heads"] = [round(float(h), digits) for h in self.heads]
        return out


@dataclass
class Contributions:
    """One block's contributions at some rows (token positions)."""

    layer: int
    rows: np.ndarray  # [R]
    attention: dict[str, torch.Tensor] = field(default_factory=dict)  # kind -> [R, K, H]
    residual: dict[str, torch.Tensor] = field(default_factory=dict)  # kind -> [R]
    ffn: torch.Tensor | None = None  # [R]
    moved: dict[str, torch.Tensor] = field(default_factory=dict)  # kind -> [R, K] some head's α_ij > 0


def block_contributions(parts: Parts, layer: int, rows, subs: list[Sub] | None = None,
                        chunk_mb: float | None = None) -> tuple[Contributions, list[Sub]]:
    """Every sublayer's contributions of block `layer` at `rows` (and the sublayers themselves)."""
    subs = parts.block(layer, rows) if subs is None else subs
    c = Contributions(layer, subs[0].rows)
    kw = {} if chunk_mb is None else {"chunk_mb": chunk_mb}
    for s in subs:
        if s.kind == "ffn":
            c.ffn, c.residual["ffn"] = ffn_contributions(s.whole, s.resid, s.out)
        else:
            c.attention[s.kind], c.residual[s.kind] = attention_contributions(s.whole, s.resid, s.alpha, s.f,
                                                                              s.gain, **kw)
            c.moved[s.kind] = (s.alpha != 0).any(0)
    return c, subs


# ----------------------------------------------------------------------------------------------- the table
def table(parts: Parts, progress=None, chunk_mb: float | None = None) -> dict[str, np.ndarray]:
    """Every layer, token, key and head: {attention, residual_attention, ffn, residual_ffn[, cross,
    residual_cross]} as float32 arrays (shapes in the module docstring), filled layer by layer."""
    T, L = parts.hidden.shape[1], parts.n_layers
    out: dict[str, np.ndarray] = {}

    def put(key: str, layer: int, value: torch.Tensor) -> None:
        if key not in out:
            out[key] = np.empty((L,) + tuple(value.shape), np.float32)
        out[key][layer] = value.numpy()

    for layer in range(L):
        c, _ = block_contributions(parts, layer, range(T), chunk_mb=chunk_mb)
        for kind, a in c.attention.items():
            put(kind, layer, a)
            put(f"residual_{kind}", layer, c.residual[kind])
        put("ffn", layer, c.ffn)
        put("residual_ffn", layer, c.residual["ffn"])
        del c
        if progress is not None:
            progress(layer + 1, L)
    return out


# ----------------------------------------------------------------------------------------------- routes
@dataclass
class Route:
    """The route to one token: its edges over the threshold, and what the walk computed on the way."""

    stack: str
    token: int
    threshold: float
    tokens: dict[str, list[str]]  # stack -> its tokens
    n_layers: dict[str, int]
    n_heads: int
    edges: list[Edge]
    decomposed: dict[str, list[int]]  # stack -> how many rows were decomposed per block (cost)

    @property
    def nodes(self) -> set[Node]:
        return {e.src for e in self.edges} | {e.dst for e in self.edges} | \
            {Node(self.stack, self.n_layers[self.stack], self.token, "in")}

    def reached(self, stack: str, layer: int) -> list[int]:
        """Tokens whose stream entering block `layer` of `stack` is on the route."""
        return sorted({n.token for n in self.nodes if n.stack == stack and n.site == "in" and n.layer == layer})

    def to_json(self) -> list[dict]:
        """The edges as JSON; a feed-forward's two edges (into and out of its block) are one edge here."""
        into_ffn = {e.dst: e.src for e in self.edges if e.dst.site == "ffn"}
        return [e.to_json(into_ffn.get(e.src)) for e in self.edges if e.dst.site != "ffn"]


def _walk_block(c: Contributions, kinds: tuple[str, ...], stack: str, layer: int, targets: set[int], tau: float
                ) -> tuple[list[Edge], set[int], dict[int, float]]:
    """Edges into block `layer`'s output at `targets`, over τ; (edges, tokens reached at its input,
    encoder tokens reached through cross-attention -> best edge weight)."""
    index = {int(r): i for i, r in enumerate(c.rows)}
    edges, below, enc = [], set(), {}
    site_of = {"attention": "attn", "cross": "cross"}
    attn_kinds = [k for k in kinds if k != "ffn"]
    for i in sorted(targets):
        r = index[i]
        top = Node(stack, layer, i, site_of[attn_kinds[-1]])  # the node the feed-forward reads
        out = Node(stack, layer + 1, i, "in")
        cf, cr = float(c.ffn[r]), float(c.residual["ffn"][r])
        reached = False
        if cf > tau:
            m = Node(stack, layer, i, "ffn")
            edges += [Edge(top, m, cf, "ffn"), Edge(m, out, cf, "ffn")]
            reached = True
        if cr > tau:
            edges.append(Edge(top, out, cr, "residual_ffn"))
            reached = True
        if not reached:
            continue
        for kind in reversed(attn_kinds):  # cross-attention first (it sits above the self-attention)
            dst = Node(stack, layer, i, site_of[kind])
            share = c.attention[kind][r]  # [K, H]
            summed = share.sum(-1)
            # a key nothing was taken from (α = 0 in every head: the causal mask) is no edge, whatever τ
            for j in torch.nonzero((summed > tau) & c.moved[kind][r]).flatten().tolist():
                if kind == "cross":
                    src = Node(ENCODER, -1, j, "in")  # the encoder's output; its layer count is filled in later
                    enc[j] = max(enc.get(j, 0.0), float(summed[j]))
                else:
                    src = Node(stack, layer, j, "in")
                    below.add(j)
                edges.append(Edge(src, dst, float(summed[j]), kind, share[j].numpy().copy()))
            res = float(c.residual[kind][r])
            if res <= tau:
                break  # the nodes below this sublayer are reached only through its residual
            prev = Node(stack, layer, i, "attn") if kind == "cross" else Node(stack, layer, i, "in")
            edges.append(Edge(prev, dst, res, f"residual_{kind}"))
            if kind != "cross":
                below.add(i)
    return edges, below, enc


def _route_stack(parts: Parts, start: set[int], tau: float, stack: str) -> tuple[list[Edge], dict[int, float], list[int]]:
    edges, enc, cost = [], {}, []
    targets = set(start)
    for layer in reversed(range(parts.n_layers)):
        if not targets:
            cost.append(0)
            continue
        c, _ = block_contributions(parts, layer, sorted(targets))
        cost.append(len(targets))
        e, targets, reached = _walk_block(c, parts.kinds, stack, layer, targets, tau)
        edges += e
        for j, w in reached.items():
            enc[j] = max(enc.get(j, 0.0), w)
    return edges, enc, cost[::-1]


def route(parts: dict[str, Parts], stack: str, token: int, threshold: float = DEFAULT_THRESHOLD) -> Route:
    """The route to `token`'s output of `stack` (parts: stack -> Parts; a decoder with cross-attention needs
    the encoder's too). Raises ValueError for a token or threshold out of range."""
    p = parts[stack]
    T = p.hidden.shape[1]
    if not -T <= token < T:
        raise ValueError(f"There is no token {token}: this input has {T} tokens (0 to {T - 1}, or -1 for the last).")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"The threshold must be in [0, 1), not {threshold}.")
    token %= T
    edges, enc, cost = _route_stack(p, {token}, threshold, stack)
    decomposed = {stack: cost}
    if enc and ENCODER in parts:
        L_enc = parts[ENCODER].n_layers
        edges = [Edge(Node(ENCODER, L_enc, e.src.token, "in"), e.dst, e.weight, e.kind, e.heads)
                 if e.src.layer == -1 else e for e in edges]
        more, _, cost_enc = _route_stack(parts[ENCODER], set(enc), threshold, ENCODER)
        edges += more
        decomposed[ENCODER] = cost_enc
    return Route(stack, token, threshold, {s: q.tokens for s, q in parts.items()},
                 {s: q.n_layers for s, q in parts.items()}, p.n_heads, edges, decomposed)


def default_stack(kind: str) -> str:
    """The stack whose last token a route starts from by default: the one that predicts."""
    return ENCODER if kind == "encoder" else DECODER
