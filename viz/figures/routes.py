"""Route figures: the route graph over layers × tokens (llm-transparency-tool's picture), a head bar chart and
the promoted / suppressed tokens of a block. Edges and tokens in (the `viz routes --json` edge form), Plotly out,
never a model.

Layout of the graph: one column per shown token (an encoder–decoder's encoder columns left of its decoder's),
block l's stream entering it at height l, its attention node at l + 0.5 (self- then cross-attention at
l + 0.35 / l + 0.65), its feed-forward node at l + 0.8 beside the column; the stack's output at height L.
Edges are bucketed by weight into a few line widths, one trace per (kind, width): a route of hundreds of edges
is a handful of traces. Each node and each attention edge (a marker at its middle) carries customdata
[what, stack, layer, token, site or source token, kind] for a click (what: 0 node, 1 edge).

Long inputs: past `max_columns` tokens, the tokens the route touches least fold into one column, "… N tokens"
(their edges drawn into it), and the figure says so.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import plotly.graph_objects as go

from viz.core.names import levels
from viz.figures.axes import TITLE_MARGIN, escape, title as _title

STACKS = ("encoder", "decoder")
SITES = ("in", "attn", "cross", "ffn")
KINDS = ("attention", "residual_attention", "cross", "residual_cross", "ffn", "residual_ffn")
COLOURS = {"attention": "#1f77b4", "cross": "#9467bd", "ffn": "#ff7f0e", "residual": "#9a9a9a"}
LEGEND = {"attention": "attention (token → token)", "cross": "cross-attention (encoder → decoder)",
          "ffn": "feed-forward", "residual": "residual"}
BINS = (0.1, 0.25, 0.5)  # weight edges of the line-width buckets
WIDTHS = (1.2, 2.5, 4.5, 7.0)
MAX_COLUMNS = 40


def _group(kind: str) -> str:
    return "residual" if kind.startswith("residual") else kind


def _height(site: str, layer: int, cross: bool) -> float:
    if site == "in":
        return float(layer)
    if site == "attn":
        return layer + (0.35 if cross else 0.5)
    if site == "cross":
        return layer + 0.65
    return layer + 0.8


def fold_columns(edges: list[dict], n_tokens: int, stack: str, token: int | None, max_columns: int) -> list[int]:
    """The token positions of `stack` drawn as columns: all of them up to `max_columns`; beyond, the chosen
    token and the tokens with the most route weight into or out of them (the rest fold into one column)."""
    if n_tokens <= max_columns:
        return list(range(n_tokens))
    weight: dict[int, float] = defaultdict(float)
    for e in edges:
        for end, st in ((e["to"], e["stack"]), (e["from"], e.get("from_stack", e["stack"]))):
            if st == stack:
                weight[end[1]] += e["weight"]
    keep = sorted(weight, key=lambda t: -weight[t])[:max_columns - 1]
    if token is not None and token not in keep:
        keep = keep[:max_columns - 2] + [token]
    return sorted(keep)


def route_graph(edges: list[dict], tokens: dict[str, list[str]], n_layers: dict[str, int], stack: str, token: int,
                title: str = "", max_columns: int = MAX_COLUMNS, selected: tuple | None = None) -> go.Figure:
    """The route (edges in `routes_json` form) to `token` of `stack`. `selected`: (stack, layer, token, site) of a
    node to ring."""
    stacks = [s for s in STACKS if s in tokens and (s == stack or any(e.get("from_stack", e["stack"]) == s
                                                                        for e in edges))]
    cross = any(e["kind"] == "cross" for e in edges) or (stack == "decoder" and "encoder" in tokens)
    x_of, ticks, folded, x0 = {}, [], {}, 0
    for s in stacks:
        cols = fold_columns(edges, len(tokens[s]), s, token if s == stack else None, max_columns)
        for k, t in enumerate(cols):
            x_of[(s, t)] = x0 + k
            ticks.append((x0 + k, f"{escape(tokens[s][t])} ({t})"))
        rest = len(tokens[s]) - len(cols)
        if rest:
            folded[s] = (x0 + len(cols), rest)
            ticks.append((x0 + len(cols), f"… {rest} tokens"))
        x0 += len(cols) + (1 if rest else 0) + 1

    def xy(stk: str, layer: int, tok: int, site: str) -> tuple[float, float]:
        x = x_of.get((stk, tok), folded.get(stk, (None,))[0])
        return x + (0.3 if site == "ffn" else 0.0), _height(site, layer, cross and stk == "decoder")

    fig = go.Figure()
    buckets: dict[tuple[str, int], list] = defaultdict(list)
    mids, nodes = [], {}
    merged: dict[tuple, float] = defaultdict(float)
    for e in edges:
        src_stack = e.get("from_stack", e["stack"])
        src_site = e["from_site"]
        ends = ((src_stack, e["from"][0], e["from"][1], src_site), (e["stack"], e["to"][0], e["to"][1], e["to_site"]))
        if e["kind"] == "ffn":  # drawn through the feed-forward node beside the column
            m = (e["stack"], e["from"][0], e["from"][1], "ffn")
            merged[(ends[0], m, "ffn")] += e["weight"]
            merged[(m, ends[1], "ffn")] += e["weight"]
            nodes[m] = True
        else:
            merged[(ends[0], ends[1], e["kind"])] += e["weight"]
        for n in ends:
            nodes[n] = True
        if e["kind"] in ("attention", "cross"):
            mids.append(e)
    for (a, b, kind), w in merged.items():  # folded tokens' edges add up in their column
        b_ = int(np.searchsorted(BINS, min(w, 1.0), side="right"))
        buckets[(_group(kind), b_)].append((xy(*a), xy(*b)))
    for (group, b_), segs in sorted(buckets.items()):
        xs, ys = [], []
        for (x1, y1), (x2, y2) in segs:
            xs += [x1, x2, None]
            ys += [y1, y2, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(width=WIDTHS[b_], color=COLOURS[group]), opacity=0.55 + 0.1 * b_))
    for group in sorted({g for g, _ in buckets}):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=LEGEND[group],
                                 line=dict(width=3, color=COLOURS[group])))
    _edge_markers(fig, mids, tokens, xy)
    _node_markers(fig, nodes, tokens, n_layers, xy, stack, token, selected)
    top = max(n_layers[s] for s in stacks)
    names = levels(top + 1)
    note = "; ".join(f"{n} {s} tokens off the route fold into '… {n} tokens'" for s, (_, n) in folded.items())
    fig.update_layout(
        title=_title(title), height=min(1100, 190 + 110 * top),
        margin=dict(l=10, r=10, t=TITLE_MARGIN + 10, b=10), plot_bgcolor="white",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"), clickmode="event+select",
        xaxis=dict(tickmode="array", tickvals=[t for t, _ in ticks], ticktext=[s for _, s in ticks], tickangle=-60,
                   title=dict(text=f"token ({note})" if note else "token", font=dict(size=12)),
                   tickfont=dict(size=11), showgrid=False, zeroline=False, range=[-0.7, x0 - 0.4]),
        yaxis=dict(tickmode="array", tickvals=list(range(top + 1)), ticktext=names, title="stream after",
                   showgrid=True, gridcolor="#eee", zeroline=False, range=[-0.3, top + 0.3]))
    return fig


def _edge_markers(fig: go.Figure, mids: list[dict], tokens, xy) -> None:
    if not mids:
        return
    pts, data, text = [], [], []
    for e in mids:
        src_stack = e.get("from_stack", e["stack"])
        (x1, y1) = xy(src_stack, e["from"][0], e["from"][1], e["from_site"])
        (x2, y2) = xy(e["stack"], e["to"][0], e["to"][1], e["to_site"])
        pts.append(((x1 + x2) / 2, (y1 + y2) / 2))
        h = int(np.argmax(e["heads"]))
        data.append([1, STACKS.index(e["stack"]), e["to"][0], e["to"][1], e["from"][1], KINDS.index(e["kind"])])
        text.append(f"L{e['to'][0]} {e['kind']}: {escape(tokens[src_stack][e['from'][1]])} ({e['from'][1]}) → "
                    f"{escape(tokens[e['stack']][e['to'][1]])} ({e['to'][1]})<br>share {e['weight']:.3f}, most "
                    f"through H{h} ({e['heads'][h]:.3f})<br>click: which heads carried it")
    fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", showlegend=False,
                             marker=dict(size=9, color="rgba(255,255,255,0.6)",
                                         line=dict(width=1.5, color=[COLOURS[e["kind"]] for e in mids])),
                             customdata=data, text=text, hovertemplate="%{text}<extra></extra>", name="edges",
                             unselected=dict(marker=dict(opacity=1)), selected=dict(marker=dict(opacity=1))))


def _node_markers(fig, nodes: dict, tokens, n_layers, xy, stack: str, token: int, selected) -> None:
    symbols = {"in": "circle", "attn": "diamond", "cross": "diamond-wide", "ffn": "square"}
    what = {"in": "stream", "attn": "after attention", "cross": "after cross-attention", "ffn": "feed-forward"}
    names = {s: levels(n + 1) for s, n in n_layers.items()}
    keys = sorted(nodes, key=lambda n: (n[0], n[1], SITES.index(n[3]), n[2]))
    pts = [xy(*n) for n in keys]
    text = [f"{escape(tokens[s][t])} ({t}) · {s} · " + (f"stream after {names[s][l]}" if site == "in" else
                                                         f"L{l} {what[site]}") + "<br>click: what it writes"
            for s, l, t, site in keys]
    fig.add_trace(go.Scatter(
        x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", showlegend=False, name="nodes",
        marker=dict(size=[8 if n[3] == "ffn" else 10 for n in keys], symbol=[symbols[n[3]] for n in keys],
                    color="white", line=dict(width=1.5, color="#333")),
        customdata=[[0, STACKS.index(s), l, t, SITES.index(site), 0] for s, l, t, site in keys],
        text=text, hovertemplate="%{text}<extra></extra>",
        unselected=dict(marker=dict(opacity=1)), selected=dict(marker=dict(opacity=1))))  # a click keeps the graph
    rings = [((stack, n_layers[stack], token, "in"), "#d62728")]
    if selected is not None and tuple(selected) in nodes:
        rings.append((tuple(selected), "#2ca02c"))
    for node, colour in rings:
        x, y = xy(*node)
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker=dict(size=20, color="rgba(0,0,0,0)", line=dict(width=2.5, color=colour))))


def head_bars(shares: np.ndarray, title: str, value: str = "share") -> go.Figure:
    """One bar per head (H0 …): e.g. each head's share of an edge, or its direct logit attribution."""
    shares = np.asarray(shares, dtype=np.float64)
    fig = go.Figure(go.Bar(x=[f"H{h}" for h in range(len(shares))], y=shares, customdata=[[h] for h in range(len(shares))],
                           marker_color=["#1f77b4" if v >= 0 else "#d62728" for v in shares],
                           hovertemplate=f"%{{x}}: {value} %{{y:.4f}}<extra></extra>"))
    fig.update_layout(title=_title(title), height=280, margin=dict(l=10, r=10, t=TITLE_MARGIN + 10, b=10),
                      yaxis=dict(title=value, zeroline=True), xaxis=dict(title="head", type="category"))
    return fig


def token_bars(promoted: list[tuple[str, float]], suppressed: list[tuple[str, float]], title: str,
               value: str = "Δ logit") -> go.Figure:
    """Promoted tokens (right, positive) and suppressed tokens (left, negative), largest magnitude at the top."""
    rows = list(promoted) + list(reversed(suppressed))
    labels = [f"{escape(t)} " + ("▲" if v >= 0 else "▼") + f" {k}" for k, (t, v) in enumerate(rows)]
    fig = go.Figure(go.Bar(y=labels, x=[v for _, v in rows], orientation="h",
                           marker_color=["#2ca02c" if v >= 0 else "#d62728" for _, v in rows],
                           text=[f"{v:+.2f}" for _, v in rows], textposition="auto",
                           hovertemplate=f"%{{y}}: {value} %{{x:.3f}}<extra></extra>"))
    fig.update_layout(title=_title(title), height=max(260, 22 * len(rows) + 90),
                      margin=dict(l=10, r=10, t=TITLE_MARGIN + 10, b=10), xaxis=dict(title=value, zeroline=True),
                      yaxis=dict(type="category", showticklabels=True, autorange="reversed",
                                 ticktext=[escape(t) for t, _ in rows], tickvals=labels))
    return fig
