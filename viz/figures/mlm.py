"""Masked-LM figures: top-k bars, the level x rank prediction table, the original token through the levels,
the mask sweep. Levels follow `viz.core.names`: "emb" (the embeddings), then L0 … L{n-1}."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures import axes
from viz.core.names import levels


def topk_bars(top: list[tuple[str, float]], title: str = "") -> go.Figure:
    """Horizontal bars, best prediction on top."""
    toks, probs = [t for t, _ in top][::-1], [p for _, p in top][::-1]
    labels = axes.token_labels(toks)
    fig = go.Figure(go.Bar(x=probs, y=labels, orientation="h", text=[f"{p:.1%}" for p in probs],
                           textposition="auto", marker_color="#3b6ea8",
                           hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(title=axes.title(title), height=axes.TITLE_MARGIN + 50 + 24 * len(top),
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN, b=10),
                      xaxis=dict(title="probability", tickformat=axes.PERCENT, range=[0, max(probs + [0.01]) * 1.15]),
                      yaxis=axes.token_axis(toks))
    return fig


def layer_rank_heatmap(layer_top: list[list[tuple[str, float]]], title: str = "") -> go.Figure:
    """The prediction at every level: columns = levels (emb, L0, …), rows = rank (#1 on top); a cell's text is
    the predicted token, its colour the probability. Ranks run down the rows so that a top-20 table grows
    taller, not narrower: twenty columns squeezed each cell to a dash."""
    probs = np.array([[p for _, p in row] for row in layer_top], dtype=np.float32).T  # [rank, level]
    text = [[axes.shown([row[k][0]])[0] for row in layer_top] for k in range(probs.shape[0])]
    names = levels(len(layer_top))
    ranks = [f"#{k + 1}" for k in range(probs.shape[0])]
    fig = go.Figure(go.Heatmap(z=probs, x=names, y=ranks, text=text, texttemplate="%{text}", textfont=dict(size=11),
                               colorscale="Blues", zmin=0, zmax=max(float(probs.max()), 1e-3),
                               colorbar=axes.colorbar("p", tickformat=axes.PERCENT), xgap=1, ygap=1,
                               hovertemplate="%{x}, rank %{y}: %{text} (%{z:.2%})<extra></extra>"))
    fig.update_layout(title=axes.title(title), height=axes.TITLE_MARGIN + 70 + 26 * len(ranks),
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN, b=10),
                      xaxis=dict(title="level (the masked-LM head on each layer's output)", type="category"),
                      yaxis=dict(autorange="reversed", type="category"))
    return fig


def rank_ticks(max_rank: int) -> tuple[list[int], list[str]]:
    """Ticks for a log rank axis: 1, 10, 100, … up to `max_rank` (plotly's own log ticks read '2, 4, 1,140.11')."""
    vals = [10 ** e for e in range(int(np.ceil(np.log10(max(max_rank, 1)))) + 1)]
    return vals, [f"{v:,}" for v in vals]


def original_by_layer(prob: list[float], rank: list[int], token: str) -> go.Figure:
    """The original token's probability (bars, left axis) and rank (line, right log axis, 1 at the top) at every
    level. The probability axis keeps three significant digits: values under 0.5 % all read '0%' before."""
    names = levels(len(prob))
    p = np.asarray(prob, dtype=np.float64)
    r = np.asarray(rank, dtype=np.int64)
    tickvals, ticktext = rank_ticks(int(r.max()))
    fig = go.Figure([
        go.Bar(x=names, y=p, name="probability", marker_color="#3b6ea8", yaxis="y",
               hovertemplate="%{x}: p = %{y:.3~%}<extra></extra>"),
        go.Scatter(x=names, y=r, name="rank", mode="lines+markers", yaxis="y2", line=dict(color="#d0543a"),
                   hovertemplate="%{x}: rank %{y:,}<extra></extra>"),
    ])
    fig.update_layout(title=axes.title(f"'{axes.shown([token])[0]}' through the levels"), height=340,
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN, b=10),
                      xaxis=dict(type="category"),
                      yaxis=dict(title="probability", tickformat=axes.PERCENT, rangemode="tozero"),
                      yaxis2=dict(title="rank (1 = top)", type="log", overlaying="y", side="right", tickvals=tickvals,
                                  ticktext=ticktext, range=[np.log10(tickvals[-1] * 1.5), np.log10(0.8)],
                                  showgrid=False),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def sweep_bars(tokens: list[str], prob: np.ndarray, title: str = "") -> go.Figure:
    """Probability of each true token when it is masked."""
    labels = axes.token_labels(tokens)
    fig = go.Figure(go.Bar(x=labels, y=prob, marker_color="#3b6ea8",
                           hovertemplate="%{x}: p(true token) = %{y:.2%}<extra></extra>"))
    fig.update_layout(title=axes.title(title), height=360, margin=dict(l=10, r=10, t=axes.TITLE_MARGIN, b=10),
                      yaxis=dict(title="p(true token | rest)", tickformat=axes.PERCENT, range=[0, 1]),
                      xaxis=axes.token_axis(tokens))
    return fig
