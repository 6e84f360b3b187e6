"""Layer-flow figures: arrays + tokens in, plotly Figure out (never a model).

The flow view draws tokens as nodes in columns (one column per level: embeddings, then the
output of each layer) and links between consecutive columns. To stay readable and small
(ARCHITECTURE.md §6) only the `top_k` strongest incoming links of each node above
`threshold` are drawn, bucketed into a few line widths: one trace per bucket, so a 12-layer
128-token view is a handful of traces, not thousands. Beyond MAX_LINKS only the strongest of each level are drawn, and
lines and nodes thin with the row pitch: at 512 tokens every link at full width painted the view solid blue.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from plotly.subplots import make_subplots

from viz.figures.axes import TITLE_MARGIN, colorbar, escape, shown, title as _title
from viz.figures.axes import token_axis as _axis, token_labels as _labels
from viz.core.names import levels

WIDTHS = (1.0, 2.5, 4.5, 7.0)  # line width per weight bucket (quartiles of the drawn range)
MAX_LINKS = 1500  # links drawn at most (the strongest): 512 tokens x 6 layers x top-3 is 9,216
MAX_HEIGHT = 1400  # px of the flow view
MAX_ROW_LABELS = 60  # row labels at most: beyond, every n-th token with its position, and the followed one
LABEL_PX = (6.5, 15)  # px per character and per line of an 11-12 px label, for placing PCA labels apart
PCA_PLOT_PX = (380, 440)  # the PCA plot area as drawn in half the page (a narrower guess places fewer labels)


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
    n_selected = len(links)
    if n_selected > MAX_LINKS:  # the strongest of each level (a global cut left the first levels bare)
        per = MAX_LINKS // L
        by_level = [[lk for lk in links if lk[0] == lv] for lv in range(L)]
        links = [lk for group in by_level for lk in sorted(group, key=lambda lk: -lk[3])[:per]]
        title = f"{title} · strongest {per:,} links per level of {n_selected:,}"
    height = min(MAX_HEIGHT, max(320, 18 * T + 120))
    pitch = (height - TITLE_MARGIN - 70) / max(1, T)  # px between rows
    thin = min(1.0, pitch / 10)  # line widths and nodes shrink with the rows (10 px rows and up: as designed)
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
                                         line=dict(width=max(0.5, thin * WIDTHS[min(b, len(WIDTHS) - 1)]),
                                                   color=f"rgba(31,119,180,{0.25 + 0.18 * b:.2f})"),
                                         name=f"weight ≥ {lo:.2f}"))
    lvl, tok = np.meshgrid(np.arange(L + 1), np.arange(T), indexing="ij")
    names = level_names or levels(L + 1)
    fig.add_trace(go.Scatter(
        x=lvl.ravel(), y=tok.ravel(), mode="markers", showlegend=False, name="tokens",
        marker=dict(size=max(3, 9 * thin), color="white", line=dict(width=1.5 if thin > 0.5 else 0.5,
                                                                     color="#1f77b4")),
        customdata=np.stack([lvl.ravel(), tok.ravel()], axis=1),
        text=[f"{escape(tokens[t])} ({t}) · {names[lv]}" for lv, t in zip(lvl.ravel(), tok.ravel())],  # raw in hover
        hovertemplate="%{text}<br>click to follow this token<extra></extra>"))
    if selected is not None:
        x_sel = L if selected_level is None else selected_level
        fig.add_trace(go.Scatter(x=[x_sel], y=[selected], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker=dict(size=16, color="rgba(214,39,40,0.35)",
                                             line=dict(width=2, color="#d62728"))))
    fig.update_layout(
        title=_title(title), height=height, margin=dict(l=10, r=10, t=TITLE_MARGIN + 30, b=10),
        clickmode="event+select",
        dragmode=False, plot_bgcolor="white",
        xaxis=dict(tickmode="array", tickvals=list(range(L + 1)), ticktext=names, side="top",
                   showgrid=False, zeroline=False, range=[-0.4, L + 0.4]),
        yaxis=dict(tickmode="array", **row_ticks(tokens, selected), autorange="reversed", showgrid=False,
                   zeroline=False),
    )
    return fig


def row_ticks(tokens: list[str], selected: int | None = None) -> dict:
    """tickvals/ticktext of the flow view's rows: every token up to MAX_ROW_LABELS, else every n-th with its
    position (a thinned column of words read as a sentence that is not there), and always the followed token,
    in red, with the neighbours that would touch it dropped (its row was unlabelled when it fell between two)."""
    T = len(tokens)
    step = max(1, int(np.ceil(T / MAX_ROW_LABELS)))
    text = shown(tokens)
    if step > 1:
        text = [f"{t} ({i})" for i, t in enumerate(text)]
    rows = [i for i in range(0, T, step) if selected is None or i == selected or abs(i - selected) >= step]
    if selected is not None and selected not in rows:
        rows = sorted(rows + [selected])
    labels = [f"<b><span style='color:#d62728'>{text[i]}</span></b>" if i == selected else text[i] for i in rows]
    return dict(tickvals=rows, ticktext=labels)


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


def placed_labels(xy: np.ndarray, texts: list[str], extent: np.ndarray | None = None,
                  plot_px: tuple[float, float] = PCA_PLOT_PX) -> list[int]:
    """Which points of `xy [N, 2]` get their text above them without two texts touching: greedily, the most
    isolated point first (a cluster gets one label, not a pile), each label's box estimated in px on a plot area
    of `plot_px` over the axes' data range (`extent [M, 2]`, every point drawn; default `xy`; plotly pads it by
    ~5 %). The others keep their hover."""
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) == 0:
        return []
    span = np.maximum(np.ptp(xy if extent is None else np.asarray(extent, dtype=np.float64), axis=0) * 1.1, 1e-12)
    px = xy / span * np.array(plot_px) * np.array([1, -1])  # screen px, y down
    d = np.linalg.norm(px[:, None] - px[None], axis=-1) + np.eye(len(px)) * 1e9
    order = np.argsort(-d.min(axis=1), kind="stable")
    cw, lh = LABEL_PX
    boxes, keep = [], []
    for i in order:
        w = cw * len(texts[i]) + 4
        box = (px[i, 0] - w / 2, px[i, 1] - 6 - lh, px[i, 0] + w / 2, px[i, 1] - 6)  # text above the marker
        if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes):
            boxes.append(box)
            keep.append(int(i))
    return sorted(keep)


def pca_paths_figure(paths: np.ndarray, tokens: list[str], ratio: np.ndarray, title: str = "") -> go.Figure:
    """Each token's path through the levels in a 2-D PCA plane: grey polylines, markers coloured by level,
    the token's text at its last level where it fits (`placed_labels`; every point has its hover), on a halo
    so the paths under it do not cut through it."""
    n_levels, T, _ = paths.shape
    names = levels(n_levels)
    xs, ys = [], []
    for t in range(T):
        xs += list(paths[:, t, 0]) + [None]
        ys += list(paths[:, t, 1]) + [None]
    lv = np.repeat(np.arange(n_levels), T)
    pts = paths.reshape(-1, 2).astype(np.float32)
    text = shown(tokens)
    labelled = placed_labels(paths[-1], text, extent=paths.reshape(-1, 2))
    # under the plot, beside PC1: in the title it ran past a half-page chart's edge
    note = f" · {len(labelled)} of {T} tokens labelled (hover for all)" if len(labelled) < T else ""
    fig = go.Figure([
        go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(120,120,120,0.35)", width=1),
                   hoverinfo="skip", showlegend=False),
        go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", showlegend=False,
                   marker=dict(size=7, color=lv, colorscale="Viridis",
                               colorbar=colorbar("level", tickvals=list(range(n_levels)), ticktext=names)),
                   text=[f"{escape(tokens[t])} ({t}) · {names[l_]}" for l_ in range(n_levels) for t in range(T)],
                   hovertemplate="%{text}<extra></extra>"),
        go.Scatter(x=paths[-1, labelled, 0], y=paths[-1, labelled, 1], mode="text", text=[text[i] for i in labelled],
                   textposition="top center", textfont=dict(size=11, shadow="auto"), showlegend=False,
                   hoverinfo="skip"),
    ])
    fig.update_layout(title=_title(title), height=560, margin=dict(l=10, r=10, t=TITLE_MARGIN, b=10),
                      xaxis=dict(title=f"PC1 ({ratio[0]:.0%}){note}"),
                      yaxis=dict(title=f"PC2 ({ratio[1]:.0%})" if len(ratio) > 1 else "PC2"))
    return fig
