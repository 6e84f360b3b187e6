"""Comparison figures: the per-head change grid, both runs and their difference side by side, KL per token."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.figures import axes
from viz.figures.atlas import click_layer
from viz.figures.attention import COLORSCALE, heatmap_height


def head_change_grid(head_js: np.ndarray, title: str = "") -> go.Figure:
    """`[layer, head]` Jensen–Shannon divergence; a click on a cell selects it (`customdata = [layer, head, ...]`)."""
    js = np.asarray(head_js, dtype=np.float32)
    L, H = js.shape
    cells = np.vectorize(lambda v: f"JS {v:.4f}")(js)
    fig = go.Figure([
        go.Heatmap(z=js, x=list(range(H)), y=list(range(L)), colorscale="Reds", zmin=0,
                   zmax=max(float(js.max()), 1e-6),  # JS is never negative: an all-zero grid is not centred on 0
                   colorbar=axes.colorbar("JS"), hoverinfo="skip"),
        click_layer(L, H, cells),
    ])
    fig.update_layout(title=axes.title(title), height=140 + 32 * L, margin=dict(l=10, r=10, t=axes.TITLE_MARGIN, b=10),
                      clickmode="event+select", dragmode=False,
                      xaxis=dict(title="head", dtick=1, range=[-0.5, H - 0.5]),
                      yaxis=dict(title="layer", dtick=1, range=[L - 0.5, -0.5]))
    return fig


def row_labels(base_tokens: list[str], other_tokens: list[str]) -> list[str]:
    """One label per position for both runs: 'cat→[MASK]' where the second run's token differs."""
    return [a if a == b else f"{a}→{b}" for a, b in zip(base_tokens, other_tokens)]


def side_by_side(base: np.ndarray, other: np.ndarray, base_tokens: list[str], other_tokens: list[str],
                 titles: tuple[str, str, str], title: str = "") -> go.Figure:
    """First run, second run and their signed difference (second − first) `[query, key]` as three panels
    sharing the token rows. Both runs share one colour scale (so equal colours mean equal weights); the
    difference has a diverging scale centred at 0. One figure, full width: three separate charts in
    thirds of the page were ~130 px wide."""
    a, b = np.asarray(base, dtype=np.float32), np.asarray(other, dtype=np.float32)
    diff = b - a
    toks = row_labels(base_tokens, other_tokens)
    lim = float(np.abs(diff).max()) or 1e-6
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.02, subplot_titles=titles)
    labels = axes.token_labels(toks)
    hover = "%{y} → %{x}<br>"
    fig.add_trace(go.Heatmap(z=a, x=labels, y=labels, coloraxis="coloraxis",
                             hovertemplate=hover + "weight %{z:.3f}<extra>first</extra>"), 1, 1)
    fig.add_trace(go.Heatmap(z=b, x=labels, y=labels, coloraxis="coloraxis",
                             hovertemplate=hover + "weight %{z:.3f}<extra>second</extra>"), 1, 2)
    fig.add_trace(go.Heatmap(z=diff, x=labels, y=labels, coloraxis="coloraxis2",
                             hovertemplate=hover + "Δ %{z:+.3f}<extra>difference</extra>"), 1, 3)
    n = len(toks)
    for col in (1, 2, 3):
        fig.update_xaxes(axes.token_axis(toks, title="attended to (key)" if col == 2 else None), row=1, col=col)
    fig.update_yaxes(axes.token_axis(toks, autorange="reversed"), row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=3)
    fig.update_yaxes(title="attending (query)", row=1, col=1)
    fig.update_layout(
        title=axes.title(title), height=max(520, heatmap_height(n, n)),
        margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 25, b=10),
        coloraxis=dict(colorscale=COLORSCALE, cmin=0, cmax=float(max(a.max(), b.max())) or 1.0,
                       colorbar=axes.colorbar("weight", len=0.45, y=1, yanchor="top", x=1.01)),
        coloraxis2=dict(colorscale="RdBu", reversescale=True, cmin=-lim, cmax=lim,
                        colorbar=axes.colorbar("Δ", len=0.45, y=0, yanchor="bottom", x=1.01)))
    return fig


def kl_bars(tokens: list[str], kl: np.ndarray, title: str = "") -> go.Figure:
    """KL(first ‖ second) of the output distribution at each token. The axis follows the values (a fixed
    [0, 1] range cut off larger KLs) and its ticks keep three significant digits ('0.00' on every tick
    when all KLs were small)."""
    v = np.asarray(kl, dtype=np.float64)
    labels = axes.token_labels(tokens)
    fig = go.Figure(go.Bar(x=labels, y=v, marker_color="#3b6ea8",
                           hovertemplate="%{x}<br>KL %{y:.4g} nats<extra></extra>"))
    fig.update_layout(title=axes.title(title), height=360, margin=dict(l=10, r=10, t=axes.TITLE_MARGIN, b=10),
                      xaxis=axes.token_axis(tokens),
                      yaxis=dict(title="KL (nats)", tickformat=".3~g", rangemode="tozero"))
    return fig
