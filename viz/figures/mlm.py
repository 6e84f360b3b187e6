"""Masked-LM figures: top-k bars, the layer x rank prediction table, the mask sweep."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def topk_bars(top: list[tuple[str, float]], title: str = "") -> go.Figure:
    """Horizontal bars, best prediction on top."""
    toks, probs = [t for t, _ in top][::-1], [p for _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=[f"{t} " for t in toks], orientation="h", text=[f"{p:.1%}" for p in probs],
                           textposition="auto", marker_color="#3b6ea8",
                           hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(title=title, height=60 + 28 * len(top), margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(title="probability", tickformat=".0%", range=[0, max(probs + [0.01]) * 1.15]))
    return fig


def layer_rank_heatmap(layer_top: list[list[tuple[str, float]]], title: str = "") -> go.Figure:
    """Rows = layers (embeddings first), columns = rank; cell text is the predicted token, colour its probability."""
    probs = np.array([[p for _, p in row] for row in layer_top], dtype=np.float32)
    text = [[t for t, _ in row] for row in layer_top]
    layers = ["embeddings"] + [f"layer {i}" for i in range(1, len(layer_top))]
    fig = go.Figure(go.Heatmap(z=probs, x=[f"#{k + 1}" for k in range(probs.shape[1])], y=layers, text=text,
                               texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=max(float(probs.max()), 1e-3),
                               colorbar=dict(title="prob", thickness=12),
                               hovertemplate="%{y}, rank %{x}: %{text} (%{z:.2%})<extra></extra>"))
    fig.update_layout(title=title, height=80 + 34 * len(layers), margin=dict(l=10, r=10, t=40, b=10),
                      yaxis=dict(autorange="reversed"))
    return fig


def original_by_layer(prob: list[float], rank: list[int], token: str) -> go.Figure:
    """The original token's probability (bars) and rank (line, log axis) at each layer."""
    layers = ["emb"] + [f"L{i}" for i in range(1, len(prob))]
    fig = go.Figure([
        go.Bar(x=layers, y=prob, name="probability", marker_color="#3b6ea8", yaxis="y"),
        go.Scatter(x=layers, y=rank, name="rank", mode="lines+markers", yaxis="y2", line=dict(color="#d0543a")),
    ])
    fig.update_layout(title=f"'{token}' through the layers", height=320, margin=dict(l=10, r=10, t=40, b=10),
                      yaxis=dict(title="probability", tickformat=".0%"),
                      yaxis2=dict(title="rank (1 = top)", type="log", overlaying="y", side="right", autorange="reversed"),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def sweep_bars(tokens: list[str], prob: np.ndarray, title: str = "") -> go.Figure:
    """Probability of each true token when it alone is masked."""
    labels = [f"{t} ({i})" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Bar(x=labels, y=prob, marker_color="#3b6ea8",
                           hovertemplate="%{x}: p(true token) = %{y:.2%}<extra></extra>"))
    fig.update_layout(title=title, height=340, margin=dict(l=10, r=10, t=40, b=10),
                      yaxis=dict(title="p(true token | rest)", tickformat=".0%", range=[0, 1]),
                      xaxis=dict(type="category", tickmode="array", tickvals=labels, ticktext=tokens))
    return fig
