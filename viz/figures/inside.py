"""Inside-a-layer figures: one head's numbers as strips, the layer as a sublayer diagram, the heads' shares.

Arrays and labels in, plotly Figure out (never a model). The head figure shows only the keys it is given
(`viz.inside.pick_keys` chooses at most a screenful on a long input) and rounds what it sends.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.figures.attention import escape
from viz.figures.axes import shown
from viz.figures.encdec import INK

DIVERGING = "RdBu_r"  # blue negative, red positive, white zero
ROW_PX = 21
KIND_COLORS = {"input": "#BAB0AC", "norm": "#EECA3B", "add_norm": "#EECA3B", "attention": "#4C78A8",
               "ffn": "#54A24B", "add": "#D8D8D8", "output": "#BAB0AC", "final": "#E45756"}


def _r(a) -> np.ndarray:
    return np.round(np.asarray(a, dtype=np.float32), 4)


def _span(*arrays) -> float:
    m = max(float(np.nanmax(np.abs(a))) if np.size(a) else 0.0 for a in arrays)
    return m or 1.0


def _strip(z, y, zmax, name, hover_dim="dim"):
    """A [rows, dims] heatmap with a symmetric diverging scale; one row per label in `y`."""
    z = _r(z)
    return go.Heatmap(z=z, y=y, x=list(range(z.shape[1])), colorscale=DIVERGING, zmin=-zmax, zmax=zmax, zmid=0,
                      showscale=False, xgap=0, ygap=1, name=name,
                      hovertemplate=f"{name}<br>%{{y}}<br>{hover_dim} %{{x}}: %{{z:.4f}}<extra></extra>")


def head_figure(labels: list[str], query_label: str, query: np.ndarray, keys: np.ndarray, scores: np.ndarray,
                mask: np.ndarray, weights: np.ndarray, values: np.ndarray, head_output: np.ndarray,
                title: str = "", query_row: int | None = None) -> go.Figure:
    """softmax(q·kᵢ·scaling + maskᵢ)·vᵢ for the keys shown, left to right: kᵢ under q, q⊙kᵢ, the score, the
    mask, the weight, vᵢ, and wᵢ·vᵢ under their sum, the head output. One row per key (`labels`).

    query [d]; keys/values [n, d]; scores/mask/weights [n] (mask: 0 or -inf); head_output [d]
    (the sum over ALL keys, not only those shown). `query_row`: the row of the query's own position.
    """
    n = len(labels)
    height = int(ROW_PX * (max(n, 3) + 1.6) + 150)
    y = shown(labels)
    if query_row is not None and 0 <= query_row < n:
        y[query_row] = f"<b>▶ {y[query_row]}</b>"
    products = query[None, :] * keys
    weighted = weights[:, None] * values
    masked = ~np.isfinite(mask)
    fig = make_subplots(
        rows=2, cols=7, horizontal_spacing=0.012, vertical_spacing=34 / height,
        column_widths=[0.19, 0.19, 0.1, 0.04, 0.09, 0.19, 0.2],
        row_heights=[ROW_PX * 1.6, ROW_PX * max(n, 3)],
        specs=[[{}, None, None, None, None, None, {}], [{}] * 7],
        subplot_titles=[f"query q · “{shown([query_label])[0]}”", "head output Σ wᵢ·vᵢ (all keys)",
                        "keys kᵢ", "q ⊙ kᵢ", "score", "mask", "weight", "values vᵢ", "wᵢ · vᵢ"])
    qk = _span(query, keys)
    vv = _span(values)
    fig.add_trace(_strip(query[None], ["q"], qk, "q"), row=1, col=1)
    fig.add_trace(_strip(head_output[None], ["Σ"], _span(head_output), "head output"), row=1, col=7)
    fig.add_trace(_strip(keys, y, qk, "k"), row=2, col=1)
    fig.add_trace(_strip(products, y, _span(products), "q⊙k"), row=2, col=2)
    bars = np.where(masked, 0.0, scores)
    fig.add_trace(go.Bar(x=_r(bars), y=y, orientation="h", marker_color=np.where(masked, "#cccccc", "#4C78A8"),
                         text=["−∞" if m else f"{s:.2f}" for s, m in zip(scores, masked)], textposition="auto",
                         insidetextanchor="middle", textfont=dict(size=9), cliponaxis=False,
                         customdata=_r(scores), hovertemplate="%{y}<br>score %{customdata:.4f}<extra></extra>"),
                  row=2, col=3)
    fig.add_trace(go.Heatmap(z=masked.astype(np.int8)[:, None], y=y, x=[0], zmin=0, zmax=1, showscale=False,
                             colorscale=[[0, "#f3f3f3"], [1, "#555555"]], xgap=0, ygap=1,
                             text=np.where(masked, "−∞", "0")[:, None], texttemplate="%{text}",
                             textfont=dict(size=10), hovertemplate="%{y}<br>mask %{text}<extra></extra>"),
                  row=2, col=4)
    fig.add_trace(go.Bar(x=_r(weights), y=y, orientation="h", marker_color="#F58518",
                         text=[f"{w:.2f}" if w >= 0.005 else "" for w in weights], textposition="outside",
                         cliponaxis=False, hovertemplate="%{y}<br>weight %{x:.4f}<extra></extra>"), row=2, col=5)
    fig.add_trace(_strip(values, y, vv, "v"), row=2, col=6)
    fig.add_trace(_strip(weighted, y, _span(weighted), "w·v"), row=2, col=7)
    for col in range(1, 8):  # every body panel lists the same key rows, in the same order
        fig.update_yaxes(row=2, col=col, type="category", autorange="reversed", categoryorder="array",
                         categoryarray=y, showticklabels=col == 1, ticks="" if col > 1 else None, tickfont=dict(size=11))
    fig.update_yaxes(row=1, col=1, showticklabels=True, tickfont=dict(size=11))
    fig.update_yaxes(row=1, col=7, showticklabels=False, ticks="")
    for col in (1, 2, 6, 7):
        fig.update_xaxes(row=2, col=col, showticklabels=False, ticks="")
    fig.update_xaxes(row=1, col=1, showticklabels=False, ticks="")
    fig.update_xaxes(row=1, col=7, showticklabels=False, ticks="")
    fig.update_xaxes(row=2, col=4, showticklabels=False)
    fig.update_xaxes(row=2, col=5, range=[0, 1.25 * max(float(weights.max()), 0.05)], showticklabels=False)
    fig.update_xaxes(row=2, col=3, zeroline=True, zerolinecolor="#888", tickfont=dict(size=9), nticks=3)
    fig.update_annotations(font=dict(size=12))
    # each strip's colour scale under its panel (blue negative, red positive; q shares the keys' scale)
    for trace in fig.data:
        if trace.type == "heatmap" and trace.name in ("k", "q⊙k", "v", "w·v"):
            dom = fig.layout[trace.xaxis.replace("x", "xaxis")].domain
            trace.update(showscale=True, colorbar=dict(
                orientation="h", x=(dom[0] + dom[1]) / 2, xanchor="center", len=dom[1] - dom[0] - 0.01,
                y=0, yanchor="top", ypad=4, thickness=8, tickfont=dict(size=9), nticks=5, outlinewidth=0))
    fig.update_layout(title=dict(text=title, y=0.995, yanchor="top"), showlegend=False, bargap=0.15,
                      height=height + 40, margin=dict(l=10, r=10, t=64, b=50),
                      plot_bgcolor="white")
    return fig


def _layout(kinds: list[str], sublayers: list[str], parallel: bool) -> tuple[list[float], list[tuple[int, int, bool]]]:
    """x column of each step (0: the residual stream; 1, 2: sublayer branches) and the arrows
    (source step, target step, is_residual) the diagram draws."""
    order = list(dict.fromkeys(s for s in sublayers if s))
    xs, arrows = [], []
    stream, branch_last = 0, {}
    for i, (kind, sub) in enumerate(zip(kinds, sublayers)):
        if kind in ("norm", "attention", "ffn"):
            xs.append(1.0 + (order.index(sub) if parallel else 0))
            arrows.append((branch_last.get(sub, stream), i, False))
            branch_last[sub] = i
        else:
            xs.append(0.0)
            if kind == "add":
                ends = list(branch_last.values()) if parallel else [branch_last.get(sub, stream)]
                arrows += [(e, i, False) for e in ends] + [(stream, i, True)]
                branch_last = {} if not parallel else branch_last
            elif i > 0:
                arrows.append((stream, i, False))
            stream = i
    return xs, arrows


def _connector(fig: go.Figure, points: list[tuple[float, float]], label: str, residual: bool) -> None:
    """An elbow arrow through `points`, its label on the middle segment."""
    color = "#999999" if residual else "#333333"
    path = "M " + " L ".join(f"{x},{y}" for x, y in points[:-1])
    if len(points) > 2:
        fig.add_shape(type="path", path=path, line=dict(color=color, width=1.5, dash="dot" if residual else "solid"))
    (ax, ay), (x, y) = points[-2], points[-1]
    fig.add_annotation(x=x, y=y, ax=ax, ay=ay, xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                       arrowhead=2, arrowsize=1, arrowwidth=1.5, arrowcolor=color, text="")
    (x0, y0), (x1, y1) = points[(len(points) - 1) // 2], points[(len(points) - 1) // 2 + 1]
    vertical = x0 == x1
    fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=label, showarrow=False, bgcolor="rgba(255,255,255,0.85)",
                       xshift=(-34 if residual else 34) if vertical else 0, yshift=0 if vertical else 9,
                       font=dict(size=10, color=color))


def layer_figure(labels: list[str], kinds: list[str], sublayers: list[str], details: list[str], norms: list[float],
                 parallel: bool = False, title: str = "") -> go.Figure:
    """The sublayer diagram of the seed (x → attention → add & norm → FFN → add & norm), one box per step,
    top to bottom, with the norm ‖v‖ of the vector each arrow carries written on it. The residual stream
    runs down the left; each sublayer branches to the right and comes back at its “+”; the dotted line on
    the far left is the residual (skip) connection."""
    xs, arrows = _layout(kinds, sublayers, parallel)
    fig = go.Figure()
    w, h = 0.42, 0.3
    for i, (label, kind, detail, nv) in enumerate(zip(labels, kinds, details, norms)):
        x, y = xs[i], -i
        color = KIND_COLORS.get(kind, "#BAB0AC")
        fig.add_shape(type="rect", x0=x - w, x1=x + w, y0=y - h, y1=y + h, line=dict(color=color, width=2),
                      fillcolor=color, opacity=0.35, layer="below")
        text = f"<b>{escape(label)}</b>" + (f"<br><span style='font-size:10px'>{escape(detail)}</span>" if detail else "")
        fig.add_annotation(x=x, y=y, text=text, showarrow=False, font=dict(size=12, color=INK))
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", marker=dict(size=30, opacity=0), showlegend=False,
                                 hovertemplate=f"{escape(label)}<br>{escape(detail)}<br>‖v‖ = {nv:.4f}<extra></extra>"))
    left = -w - 0.14
    for src, dst, residual in arrows:
        xa, ya, xb, yb = xs[src], -src, xs[dst], -dst
        if residual:
            pts = [(xa - w, ya), (left, ya), (left, yb), (xb - w, yb)]
        elif xa == xb:
            pts = [(xa, ya - h), (xb, yb + h)]
        elif xb > xa:  # out of the stream into a sublayer: below the row where the last one came back
            pts = [(xa, ya - h), (xa, ya - 0.5), (xb, ya - 0.5), (xb, yb + h)]
        else:  # back from a sublayer to its "+"
            pts = [(xa, ya - h), (xa, yb), (xb + w, yb)]
        _connector(fig, pts, f"‖v‖ {norms[src]:.3g}", residual)
    n = len(labels)
    fig.update_layout(title=title, height=int(64 * n + 90), margin=dict(l=10, r=10, t=60, b=10),
                      plot_bgcolor="white", showlegend=False,
                      xaxis=dict(visible=False, range=[left - 0.35, max(xs) + w + 0.1]),
                      yaxis=dict(visible=False, range=[-n + 0.55, 0.55]))
    return fig


def contributions_figure(norms: np.ndarray, head: int, title: str = "") -> go.Figure:
    """‖head output · W_O[head]‖ of every head at this token: how much each head wrote into the stream."""
    norms = _r(norms)
    colors = ["#F58518" if h == head else "#4C78A8" for h in range(len(norms))]
    fig = go.Figure(go.Bar(x=[f"H{h}" for h in range(len(norms))], y=norms, marker_color=colors,
                           hovertemplate="%{x}<br>‖contribution‖ %{y:.4f}<extra></extra>"))
    fig.update_layout(title=title, height=260, margin=dict(l=10, r=10, t=50, b=10),
                      yaxis=dict(title="‖ head · W_O ‖"), bargap=0.2)
    return fig
