"""Layer-flow figures: arrays + tokens in, plotly Figure out (never a model).

The flow view draws tokens as nodes in columns (one column per level: embeddings, then the
output of each layer) and links between consecutive columns. To stay readable and small
(ARCHITECTURE.md §6) only the `top_k` strongest incoming links of each node above
`threshold` are drawn, bucketed into a few line widths: one trace per bucket, so a 12-layer
128-token view is a handful of traces, not thousands.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from plotly.subplots import make_subplots

from viz.figures.axes import TITLE_MARGIN, colorbar, escape, shown, title as _title
from viz.figures.axes import token_axis as _axis, token_labels as _labels
from viz.core.names import levels

WIDTHS = (1.0, 2.5, 4.5, 7.0)  # line width per weight bucket (quartiles of the drawn range)


def select_links(mats: np.ndarray, threshold: float, top_k: int) -> list[tuple[int, int, int, float]]:
    """Links (level, query, key, weight) kept for drawing from `mats` [layer, q, k]:
    per query the `top_k` largest weights, of those the ones >= `threshold`."""
    links = []
    k = max(1, min(top_k, mats.shape[-1]))
    for lv, m in enumerate(np.asarray(mats)):
        idx = np.argsort(-m, axis=-1)[:, :k]
        for q in range(m.shape[0]):
            links += [(lv, q, int(j), float(m[q, j])) for j in idx[q] if m[q, j] >= threshold and m[q, j] > 0]
    return links


def flow_view(mats: np.ndarray, tokens: list[str], threshold: float = 0.05, top_k: int = 3,
              selected: int | None = None, selected_level: int | None = None, title: str = "",
              level_names: list[str] | None = None) -> go.Figure:
    """Tokens x levels with links: mats[l][i, j] links token j at level l to token i at level l+1.

    `selected` marks one token at `selected_level` (default the top; its node is ringed). Every
    node carries customdata [level, token] so a click can select it.
    """
    mats = np.asarray(mats, dtype=np.float64)
    L, T = mats.shape[0], mats.shape[-1]
    links = select_links(mats, threshold, top_k)
    fig = go.Figure()
    if links:
        w = np.array([lk[3] for lk in links])
        edges = np.unique(np.quantile(w, [0.25, 0.5, 0.75]))
        bucket = np.searchsorted(edges, w, side="right")
        for b in range(len(edges) + 1):
            xs, ys = [], []
            for (lv, q, j, _), bb in zip(links, bucket):
                if bb == b:
                    xs += [lv, lv + 1, None]
                    ys += [j, q, None]
            if xs:
                lo = 0 if b == 0 else edges[b - 1]
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                         line=dict(width=WIDTHS[min(b, len(WIDTHS) - 1)],
                                                   color=f"rgba(31,119,180,{0.25 + 0.18 * b:.2f})"),
                                         name=f"weight ≥ {lo:.2f}"))
    lvl, tok = np.meshgrid(np.arange(L + 1), np.arange(T), indexing="ij")
    names = level_names or levels(L + 1)
    fig.add_trace(go.Scatter(
        x=lvl.ravel(), y=tok.ravel(), mode="markers", showlegend=False, name="tokens",
        marker=dict(size=9, color="white", line=dict(width=1.5, color="#1f77b4")),
        customdata=np.stack([lvl.ravel(), tok.ravel()], axis=1),
        text=[f"{escape(tokens[t])} ({t}) · {names[lv]}" for lv, t in zip(lvl.ravel(), tok.ravel())],  # raw in hover
        hovertemplate="%{text}<br>click to follow this token<extra></extra>"))
    if selected is not None:
        x_sel = L if selected_level is None else selected_level
        fig.add_trace(go.Scatter(x=[x_sel], y=[selected], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker=dict(size=16, color="rgba(214,39,40,0.35)",
                                             line=dict(width=2, color="#d62728"))))
    step = max(1, int(np.ceil(T / 60)))
    height = min(1400, max(320, 18 * T + 120))
    fig.update_layout(
        title=_title(title), height=height, margin=dict(l=10, r=10, t=TITLE_MARGIN + 30, b=10),
        clickmode="event+select",
        dragmode=False, plot_bgcolor="white",
        xaxis=dict(tickmode="array", tickvals=list(range(L + 1)), ticktext=names, side="top",
                   showgrid=False, zeroline=False, range=[-0.4, L + 0.4]),
        yaxis=dict(tickmode="array", tickvals=list(range(0, T, step)), ticktext=shown(tokens)[::step],
                   autorange="reversed", showgrid=False, zeroline=False),
    )
    return fig


def into_token_bars(series: dict[str, np.ndarray], tokens: list[str], title: str = "",
                    flow: np.ndarray | None = None) -> go.Figure:
    """Grouped bars over input tokens, one group per share (rollout, raw attention: each sums to 1 over the
    tokens). `flow`, the max-flow value into the token, is not a share (Abnar & Zuidema 2020 bound it by the
    edge capacities, not by 1): it gets its own panel and axis below instead of sharing the share axis."""
    x = _labels(tokens)
    bars = [go.Bar(name=name, x=x, y=np.round(np.asarray(v, dtype=np.float32), 4)) for name, v in series.items()]
    if flow is None:
        fig = go.Figure(bars)
        fig.update_layout(height=380, yaxis=dict(title="share of the token's input"), xaxis=_axis(tokens))
    else:
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4])
        for b in bars:
            fig.add_trace(b, row=1, col=1)
        fig.add_trace(go.Bar(name="max-flow", x=x, y=np.round(np.asarray(flow, dtype=np.float32), 4),
                             marker_color="#2ca02c"), row=2, col=1)
        fig.update_yaxes(title="share", row=1, col=1)
        fig.update_yaxes(title="max-flow value", rangemode="tozero", row=2, col=1)
        fig.update_xaxes(_axis(tokens), row=2, col=1)
        fig.update_xaxes(type="category", showticklabels=False, row=1, col=1)
        fig.update_layout(height=520)
    fig.update_layout(title=_title(title), barmode="group", margin=dict(l=10, r=10, t=TITLE_MARGIN + 30, b=10),
                      legend=dict(orientation="h", y=1, yanchor="bottom", x=1, xanchor="right"))
    return fig


def level_token_heatmap(z: np.ndarray, tokens: list[str], level_labels: list[str], title: str = "",
                        zmin: float | None = None, zmax: float | None = None,
                        colorscale: str = "Viridis", value: str = "cos") -> go.Figure:
    """A [level, token] matrix (e.g. cosine between consecutive layers) with tokens as rows."""
    z = np.asarray(z, dtype=np.float32).T
    fig = go.Figure(go.Heatmap(z=z, x=level_labels, y=_labels(tokens), colorscale=colorscale, zmin=zmin, zmax=zmax,
                               colorbar=colorbar(value),
                               hovertemplate=f"%{{y}} · %{{x}}<br>{value} %{{z:.3f}}<extra></extra>"))
    fig.update_layout(title=_title(title), height=min(1000, max(360, 16 * len(tokens) + 160)),
                      margin=dict(l=10, r=10, t=TITLE_MARGIN, b=10),
                      xaxis=dict(type="category", title="level"),
                      yaxis=_axis(tokens, autorange="reversed"))
    return fig


def pca_paths_figure(paths: np.ndarray, tokens: list[str], ratio: np.ndarray, title: str = "") -> go.Figure:
    """Each token's path through the levels in a 2-D PCA plane: grey polylines, markers coloured by level,
    the token's text at its last level."""
    n_levels, T, _ = paths.shape
    names = levels(n_levels)
    xs, ys = [], []
    for t in range(T):
        xs += list(paths[:, t, 0]) + [None]
        ys += list(paths[:, t, 1]) + [None]
    lv = np.repeat(np.arange(n_levels), T)
    pts = paths.reshape(-1, 2).astype(np.float32)
    fig = go.Figure([
        go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(120,120,120,0.35)", width=1),
                   hoverinfo="skip", showlegend=False),
        go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", showlegend=False,
                   marker=dict(size=7, color=lv, colorscale="Viridis",
                               colorbar=colorbar("level", tickvals=list(range(n_levels)), ticktext=names)),
                   text=[f"{escape(tokens[t])} ({t}) · {names[l_]}" for l_ in range(n_levels) for t in range(T)],
                   hovertemplate="%{text}<extra></extra>"),
        go.Scatter(x=paths[-1, :, 0], y=paths[-1, :, 1], mode="text", text=shown(tokens),
                   textposition="top center", showlegend=False, hoverinfo="skip"),
    ])
    fig.update_layout(title=_title(title), height=560, margin=dict(l=10, r=10, t=TITLE_MARGIN, b=10),
                      xaxis=dict(title=f"PC1 ({ratio[0]:.0%})"),
                      yaxis=dict(title=f"PC2 ({ratio[1]:.0%})" if len(ratio) > 1 else "PC2"))
    return fig
