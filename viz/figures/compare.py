"""Comparison figures: per-head change grid and signed difference heatmaps."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures.attention import token_axis, token_labels


def head_change_grid(head_js: np.ndarray, title: str = "") -> go.Figure:
    """`[layer, head]` Jensen–Shannon divergence; click a cell to open that head."""
    L, H = head_js.shape
    fig = go.Figure(go.Heatmap(z=head_js.astype(np.float32), x=list(range(H)), y=list(range(L)), colorscale="Reds",
                               zmin=0, colorbar=dict(title="JS", thickness=12),
                               hovertemplate="layer %{y}, head %{x}<br>JS %{z:.4f}<extra></extra>"))
    fig.update_layout(title=title, height=120 + 32 * L, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(title="head", dtick=1), yaxis=dict(title="layer", dtick=1, autorange="reversed"))
    return fig


def diff_heatmap(diff: np.ndarray, q_tokens: list[str], k_tokens: list[str], title: str = "") -> go.Figure:
    """Signed difference `[query, key]` (variant − base) on a diverging scale centred at 0."""
    z = np.asarray(diff, dtype=np.float32)
    lim = float(np.abs(z).max()) or 1e-6
    fig = go.Figure(go.Heatmap(z=z, x=token_labels(k_tokens), y=token_labels(q_tokens), colorscale="RdBu", reversescale=True,
                               zmin=-lim, zmax=lim, colorbar=dict(title="Δ", thickness=12),
                               hovertemplate="%{y} → %{x}<br>Δ %{z:+.3f}<extra></extra>"))
    side = min(900, max(360, 22 * max(z.shape) + 160))
    fig.update_layout(title=dict(text=title, y=0.995, yanchor="top"), height=side + 60,
                      margin=dict(l=10, r=10, t=110, b=10),
                      xaxis=dict(side="top", **token_axis(k_tokens)), yaxis=dict(autorange="reversed", **token_axis(q_tokens)))
    return fig
