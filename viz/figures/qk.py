"""Queries and keys of a head in one space (viz.analysis.qk, viz.atlas.qk): arrays in, plotly figures out.

Points are drawn with WebGL (Scattergl): a head over the bundled corpus is ~11,000 points. Every point carries
`customdata = [sentence, position, kind]` (kind 0 = query, 1 = key), so a click can open its sentence.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures import axes

KIND_NAMES = ("query", "key")
KIND_PLURAL = ("queries", "keys")
KIND_COLORS = ("#1f77b4", "#e4572e")
KIND_SYMBOLS = ("circle", "diamond")
CLASS_COLORS = ("#7f7f7f", "#9467bd", "#2ca02c", "#bcbd22")
COLOR_BY = {"kind": "query / key", "position": "position in the sentence", "class": "token class"}


def qk_scatter(coords: np.ndarray, kind: np.ndarray, position: np.ndarray, token_class: np.ndarray,
               class_names: tuple[str, ...], hover: list[str], sentence: np.ndarray, color_by: str = "kind",
               title: str = "", selected: int | None = None) -> go.Figure:
    """coords [P, 2] of queries and keys together; colour by kind, by position (queries circles, keys diamonds)
    or by token class. `hover[i]` is shown for point i; `selected` (a point index) is ringed."""
    xy = np.round(np.asarray(coords, dtype=np.float32), 4)
    cd = np.stack([sentence, position, kind], 1).astype(np.int64)
    hover = np.asarray(hover, dtype=object)
    traces = []
    if color_by == "position":
        pmax = float(max(1, position.max(initial=1)))
        for k in (0, 1):
            m = kind == k
            traces.append(go.Scattergl(
                x=xy[m, 0], y=xy[m, 1], mode="markers", name=KIND_PLURAL[k], customdata=cd[m], text=hover[m],
                marker=dict(size=5, symbol=KIND_SYMBOLS[k], color=position[m], colorscale="Viridis", cmin=0,
                            cmax=pmax, opacity=0.75, showscale=k == 0,
                            colorbar=axes.colorbar("position") if k == 0 else None),
                hovertemplate="%{text}<extra>" + KIND_NAMES[k] + "</extra>"))
    else:
        groups = [(k, None) for k in (0, 1)] if color_by == "kind" else \
            [(k, c) for c in range(len(class_names)) for k in (0, 1)]
        for k, c in groups:
            m = (kind == k) if c is None else (kind == k) & (token_class == c)
            if not m.any():
                continue
            name = KIND_PLURAL[k] if c is None else f"{class_names[c]} ({KIND_NAMES[k]})"
            color = KIND_COLORS[k] if c is None else CLASS_COLORS[c % len(CLASS_COLORS)]
            traces.append(go.Scattergl(
                x=xy[m, 0], y=xy[m, 1], mode="markers", name=name, customdata=cd[m], text=hover[m],
                marker=dict(size=5, symbol=KIND_SYMBOLS[k], color=color, opacity=0.7),
                hovertemplate="%{text}<extra>" + KIND_NAMES[k] + "</extra>"))
    if selected is not None and 0 <= selected < len(xy):
        traces.append(go.Scatter(x=[xy[selected, 0]], y=[xy[selected, 1]], mode="markers", hoverinfo="skip",
                                 showlegend=False, marker=dict(size=16, symbol="circle-open", color="#d62728",
                                                                line=dict(width=3))))
    fig = go.Figure(traces)
    fig.update_layout(title=axes.title(title), height=560, margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 10, b=10),
                      clickmode="event+select", dragmode="zoom",
                      # the position colour bar takes the right edge: the legend goes under the plot then
                      legend=dict(itemsizing="constant", **(dict(orientation="h", y=-0.14, x=0) if color_by ==
                                                             "position" else {})),
                      xaxis=dict(title="component 1", zeroline=False),
                      yaxis=dict(title="component 2", zeroline=False, scaleanchor="x", scaleratio=1))
    return fig


def qk_overview(coords: np.ndarray, kind: np.ndarray, layers: list[int], title: str = "",
                selected: tuple[int, int] | None = None) -> go.Figure:
    """Every head's projection as a small multiple (rows: layers, columns: heads), like the model view:
    `coords [layer, head, P, 2]`, each scaled into its own cell. One trace per kind; an invisible marker per cell
    (`customdata = [layer, head]`) opens that head; `selected` (layer, head) is framed."""
    L, H, P, _ = coords.shape
    lo, hi = coords.min(axis=2, keepdims=True), coords.max(axis=2, keepdims=True)
    unit = (coords - lo) / np.where(hi - lo > 0, hi - lo, 1)  # [L, H, P, 2] in [0, 1]
    ll, hh = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    x = hh[..., None] + 0.06 + 0.88 * unit[..., 0]
    y = ll[..., None] + 0.06 + 0.88 * (1 - unit[..., 1])
    traces = []
    for k in (0, 1):
        m = kind == k
        traces.append(go.Scattergl(x=np.round(x[..., m].ravel(), 4), y=np.round(y[..., m].ravel(), 4), mode="markers",
                                   name=KIND_PLURAL[k], hoverinfo="skip",
                                   marker=dict(size=2.5, color=KIND_COLORS[k], opacity=0.6)))
    traces.append(go.Scatter(x=hh.ravel() + 0.5, y=ll.ravel() + 0.5, mode="markers", showlegend=False,
                             customdata=np.stack([np.asarray(layers)[ll.ravel()], hh.ravel()], 1),
                             marker=dict(size=max(20, min(60, 900 // H)), symbol="square", color="rgba(0,0,0,0)"),
                             hovertemplate="L%{customdata[0]} H%{customdata[1]}<br>click to open<extra></extra>"))
    if selected is not None and selected[0] in layers and 0 <= selected[1] < H:
        r = layers.index(selected[0])
        shape = dict(type="rect", x0=selected[1], x1=selected[1] + 1, y0=r, y1=r + 1, line=dict(color="#d62728",
                                                                                                 width=2))
    else:
        shape = None
    fig = go.Figure(traces)
    if shape:
        fig.add_shape(**shape)
    for i in range(1, H):
        fig.add_vline(x=i, line=dict(color="#dddddd", width=1))
    for i in range(1, L):
        fig.add_hline(y=i, line=dict(color="#dddddd", width=1))
    cell = min(90, max(45, 1000 // H))
    fig.update_layout(title=axes.title(title), height=L * cell + 110, clickmode="event+select", dragmode=False,
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 30, b=10), legend=dict(orientation="h", y=-0.02),
                      xaxis=dict(tickmode="array", tickvals=[h + 0.5 for h in range(H)],
                                 ticktext=[f"H{h}" for h in range(H)], side="top", range=[0, H], showgrid=False,
                                 zeroline=False),
                      yaxis=dict(tickmode="array", tickvals=[i + 0.5 for i in range(L)],
                                 ticktext=[f"L{layer}" for layer in layers], range=[L, 0], showgrid=False,
                                 zeroline=False))
    return fig
