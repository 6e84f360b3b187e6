"""Attention rollout and attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow
in Transformers", ACL, §3).

Both treat the layers as a layered graph: node (l, i) is token i at the output of layer l
(level 0 = the input embeddings), and an edge (l+1, i) -> (l, j) carries the residual-aware
attention  Â_l = renorm(0.5 · mean_heads(A_l) + 0.5 · I)  (§3: "we account for residual
connections by adding the identity matrix ... and re-normalising").

* rollout multiplies these matrices through the layers (proportional routing);
* flow treats each Â_l[i, j] as an edge capacity and asks for the maximum flow from an
  output node to an input node (networkx max-flow, one problem per (query, key) pair).

Shapes:
    attn       [layer, head, query, key]  or already head-averaged [layer, query, key]
    rollout    [layer, query, key]   row l: output of layer l -> input tokens
    flow       [query, key]          output of one layer -> input tokens
"""

from __future__ import annotations

from typing import Callable

import networkx as nx
import numpy as np
from networkx.algorithms.flow import build_residual_network, shortest_augmenting_path

# Longest inputs for which the page computes a full flow matrix (q x q max-flows) and one
# token's flow row (q max-flows) at interactive speed; measured in bench/bench_flow.py.
FLOW_MAX_TOKENS = 16
FLOW_ROW_MAX_TOKENS = 64


class FlowTooLong(ValueError):
    """The sequence is too long for exact max-flow at interactive speed; the message offers rollout."""


def _head_mean(attn: np.ndarray) -> np.ndarray:
    attn = np.asarray(attn, dtype=np.float64)
    if attn.ndim == 4:
        return attn.mean(axis=1)
    if attn.ndim != 3:
        raise ValueError(f"expected [layer, head, q, k] or [layer, q, k], got shape {attn.shape}")
    return attn


def residual_attention(attn: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """Â = renorm((1 - residual) · mean_heads(A) + residual · I): [layer, q, q] (Abnar & Zuidema §3).

    Needs square (self-attention) matrices; rows of the result sum to 1.
    """
    a = _head_mean(attn)
    if a.shape[-1] != a.shape[-2]:
        raise ValueError("rollout and flow need self-attention (square) matrices; cross-attention has none.")
    a = (1.0 - residual) * a + residual * np.eye(a.shape[-1])
    return a / np.clip(a.sum(axis=-1, keepdims=True), 1e-12, None)


def attention_rollout(attn: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020, eq. 1): R_0 = Â_0, R_l = Â_l · R_{l-1}.

    attn: [layer, head, q, q] (or [layer, q, q]) -> [layer, q, q]; R_l[i, j] is how much of
    token i at the output of layer l is attributed to input token j. Rows sum to 1 and
    R_0 = 0.5·A_0 + 0.5·I (head mean) for the default residual.
    """
    a = residual_attention(attn, residual)
    out = np.empty_like(a)
    acc = np.eye(a.shape[-1])
    for layer in range(a.shape[0]):
        acc = a[layer] @ acc
        out[layer] = acc
    return out


def path_mass(mats: np.ndarray, token: int, layer: int | None = None) -> np.ndarray:
    """How much of one token's unit mass passes through each link when routed proportionally
    down through `mats` [layer, q, k] (the rollout decomposition of one row).

    Returns [layer, q, k]: entry [l, i, j] is the mass on link (l+1, i) -> (l, j); layers above
    `layer` (default the last) are zero. Each used layer's entries sum to 1 when rows sum to 1.
    """
    mats = np.asarray(mats, dtype=np.float64)
    top = mats.shape[0] - 1 if layer is None else layer
    out = np.zeros_like(mats)
    mass = np.zeros(mats.shape[-2])
    mass[token] = 1.0
    for lv in range(top, -1, -1):
        out[lv] = mass[:, None] * mats[lv]
        mass = out[lv].sum(axis=0)
    return out


def flow_graph(attn: np.ndarray, layer: int | None = None, residual: float = 0.5) -> nx.DiGraph:
    """The layered capacity graph of §3 up to the output of `layer` (default the last).

    Nodes are (level, token); edges (l+1, i) -> (l, j) with capacity Â_l[i, j] (zeros omitted).
    """
    a = residual_attention(attn, residual)
    top = a.shape[0] - 1 if layer is None else layer
    g = nx.DiGraph()
    for lv in range(top + 1):
        qi, kj = np.nonzero(a[lv] > 0)
        g.add_edges_from(((lv + 1, int(i)), (lv, int(j)), {"capacity": float(a[lv, i, j])})
                         for i, j in zip(qi, kj))
    return g


def _reduced_graph(a: np.ndarray, layer: int) -> nx.DiGraph:
    """flow_graph's levels 1..layer plus a source "S" (stands for the query node at level layer+1) and a
    sink "Z" (stands for the input node at level 0). Their edges get per-problem capacities, so one
    graph and one residual network serve every (query, key) pair, and no search wanders into the
    other input nodes (dead ends) or the other output nodes (unreachable)."""
    n = a.shape[-1]
    g = nx.DiGraph()
    g.add_edges_from(("S", (layer, k), {"capacity": 1.0}) for k in range(n))
    for lv in range(1, layer):
        qi, kj = np.nonzero(a[lv] > 0)
        g.add_edges_from(((lv + 1, int(i)), (lv, int(j)), {"capacity": float(a[lv, i, j])}) for i, j in zip(qi, kj))
    g.add_edges_from(((1, k), "Z", {"capacity": 1.0}) for k in range(n))
    return g


class _Dinic:
    """Dinic's max-flow (Dinic 1970) on `_reduced_graph`'s layout, in flat Python lists.

    The same algorithm networkx offers, without its per-edge dict views: on MiniLM's graphs
    (16k edges, ~1000 augmenting paths per problem) it is 4-8x faster than networkx's
    shortest-augmenting-path, which stays the reference in the tests. Edge e and e ^ 1 are
    a pair (forward, reverse); residual capacities below EPS count as saturated.
    """

    EPS = 1e-12

    def __init__(self, g: nx.DiGraph, depth: dict | None = None):
        """`depth`: node -> distance from the source along the layered DAG. The first phase's level
        graph is then known without a search: every forward arc goes one level down."""
        self.index = {u: i for i, u in enumerate(g.nodes)}
        self.adj: list[list[int]] = [[] for _ in self.index]
        self.to: list[int] = []
        self.base: list[float] = []
        self.edge: dict[tuple, int] = {}
        for u, v, c in g.edges(data="capacity"):
            iu, iv = self.index[u], self.index[v]
            self.edge[(u, v)] = len(self.to)
            self.adj[iu].append(len(self.to))
            self.to.append(iv)
            self.base.append(float(c))
            self.adj[iv].append(len(self.to))
            self.to.append(iu)
            self.base.append(0.0)
        self.depth = None
        if depth is not None:
            self.depth = [depth[u] for u in self.index]
            self.down = [[e for e in arcs if e % 2 == 0 and self.depth[self.to[e]] == self.depth[u] + 1]
                         for u, arcs in enumerate(self.adj)]

    def set_capacity(self, u, v, c: float) -> None:
        self.base[self.edge[(u, v)]] = c

    def max_flow(self, s, t) -> float:
        s, t = self.index[s], self.index[t]
        cap, to, adj, eps = self.base[:], self.to, self.adj, self.EPS
        # no flow exceeds what leaves s or what enters t: stop there instead of proving it by search
        bound = min(sum(cap[e] for e in adj[s] if e % 2 == 0), sum(cap[e ^ 1] for e in adj[t] if e % 2))
        total, first = 0.0, self.depth is not None
        while total < bound - eps:
            if first:  # phase 1: the layered DAG itself is the level graph
                level, arcs_of, first = self.depth[:], self.down, False
            else:
                level = [-1] * len(adj)  # BFS levels in the residual graph
                level[s], frontier = 0, [s]
                while frontier and level[t] < 0:
                    nxt = []
                    for u in frontier:
                        for e in adj[u]:
                            v = to[e]
                            if level[v] < 0 and cap[e] > eps:
                                level[v] = level[u] + 1
                                nxt.append(v)
                    frontier = nxt
                if level[t] < 0:
                    return total
                # the level graph: per node, the arcs one level down (saturation is checked in the DFS)
                arcs_of = [[e for e in arcs if level[to[e]] == lu + 1] if lu >= 0 else []
                           for arcs, lu in zip(adj, level)]
            ptr = [0] * len(adj)  # current arc: blocking flow by repeated DFS
            while True:
                path, u = [], s
                while u != t:
                    arcs, i = arcs_of[u], ptr[u]
                    n_arcs = len(arcs)
                    while i < n_arcs and (cap[arcs[i]] <= eps or level[to[arcs[i]]] < 0):
                        i += 1
                    ptr[u] = i
                    if i < n_arcs:
                        path.append(arcs[i])
                        u = to[arcs[i]]
                    elif u == s:
                        break
                    else:  # dead end: never come back here this phase
                        level[u] = -1
                        u = to[path.pop() ^ 1]
                        ptr[u] += 1
                if u != t:
                    break
                f = min(cap[e] for e in path)
                for e in path:
                    cap[e] -= f
                    cap[e ^ 1] += f
                total += f
        return total


def attention_flow(attn: np.ndarray, layer: int | None = None, queries: list[int] | None = None,
                   residual: float = 0.5, max_tokens: int | None = FLOW_MAX_TOKENS,
                   progress: Callable[[int, int], None] | None = None, solver: str = "dinic") -> np.ndarray:
    """Attention flow (Abnar & Zuidema 2020, §3): max-flow from each output token to each input token.

    attn: [layer, head, q, q] (or [layer, q, q]). Returns [len(queries), q]: entry [a, j] is the
    maximum flow from node (layer + 1, queries[a]) to input node (0, j) through capacities Â
    (`flow_graph`). `layer` defaults to the last; `queries` to every token. Costs len(queries) x q
    max-flow problems on one graph whose source/sink capacities change per problem;
    `solver` "dinic" (ours, fast) or "networkx" (shortest augmenting path, the reference).
    `progress(done, total)` is called after each query row.

    Raises FlowTooLong when q > max_tokens (pass max_tokens=None to lift the guard).
    """
    a = residual_attention(attn, residual)
    n = a.shape[-1]
    if max_tokens is not None and n > max_tokens:
        raise FlowTooLong(
            f"The sequence has {n} tokens; exact attention flow is limited to {max_tokens} tokens here "
            f"({n * n} max-flow problems per layer). Use attention rollout instead, shorten the text, "
            "or pick one token to compute only its row.")
    top = a.shape[0] - 1 if layer is None else layer
    queries = list(range(n)) if queries is None else [int(q) for q in queries]
    if top == 0:  # one edge between each output and input node: the flow is the capacity
        if progress is not None:
            progress(len(queries), len(queries))
        return a[0][queries].copy()
    g = _reduced_graph(a, top)
    if solver == "dinic":
        depth = {u: (0 if u == "S" else top + 1 if u == "Z" else top + 1 - u[0]) for u in g.nodes}
        dinic = _Dinic(g, depth)
        set_capacity, solve = dinic.set_capacity, dinic.max_flow
    elif solver == "networkx":
        res = build_residual_network(g, "capacity")

        def set_capacity(u, v, c: float) -> None:
            g[u][v]["capacity"] = c
            res[u][v]["capacity"] = c

        def solve(s, t) -> float:
            return shortest_augmenting_path(g, s, t, residual=res).graph["flow_value"]
    else:
        raise ValueError(f"unknown solver {solver!r}; use 'dinic' or 'networkx'")

    out = np.zeros((len(queries), n))
    for row, q in enumerate(queries):
        for k in range(n):
            set_capacity("S", (top, k), float(a[top, q, k]))
        for j in range(n):
            for k in range(n):
                set_capacity((1, k), "Z", float(a[0, k, j]))
            out[row, j] = solve("S", "Z")
        if progress is not None:
            progress(row + 1, len(queries))
    return out
