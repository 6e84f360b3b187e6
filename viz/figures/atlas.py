"""Head-atlas figures: per-head arrays in, plotly Figure out (never a model).

Every figure carries `customdata = [layer, head]` on its points, so a click can open that head
(heatmaps get an invisible marker per cell, as in `viz.figures.attention.model_view`).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.core.names import head as head_name, layer as layer_name
from viz.figures import axes

ROLE_COLORS = {"previous-token": "#1f77b4", "next-token": "#ff7f0e", "self": "#2ca02c", "[CLS]": "#d62728",
               "[SEP]/end (no-op)": "#9467bd", "punctuation": "#8c564b", "broad": "#bcbd22", "mixed": "#c7c7c7"}
CLUSTER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf"]


def _grid(L: int, H: int):
    ll, hh = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    return ll.ravel(), hh.ravel()


def click_layer(L: int, H: int, roles: np.ndarray | None = None) -> go.Scatter:
    """An invisible marker on every cell of a layer x head grid: heatmap cells cannot be selected in
    Streamlit (no points), markers can. `customdata = [layer, head, role]`."""
    ll, hh = _grid(L, H)
    role = roles.ravel() if roles is not None else np.full(L * H, "")
    return go.Scatter(x=hh, y=ll, mode="markers", marker=dict(size=18, symbol="square", color="rgba(0,0,0,0)"),
                      customdata=np.array([[int(a), int(b), str(r)] for a, b, r in zip(ll, hh, role)], dtype=object),
                      showlegend=False,
                      hovertemplate="layer %{customdata[0]}, head %{customdata[1]}<br>%{customdata[2]}"
                                    "<br>click to open<extra></extra>")


def _axes(fig: go.Figure, L: int, H: int, title: str) -> go.Figure:
    fig.update_layout(title=axes.title(title), height=max(300, 34 * L + 160),
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 45, b=10),
                      clickmode="event+select", dragmode=False,
                      xaxis=dict(title="head", tickmode="array", tickvals=list(range(H)), side="top",
                                 ticktext=[head_name(h) for h in range(H)], range=[-0.5, H - 0.5]),
                      yaxis=dict(title="layer", tickmode="array", tickvals=list(range(L)),
                                 ticktext=[layer_name(i) for i in range(L)], range=[L - 0.5, -0.5]))
    return fig


def stat_grid(values: np.ndarray, title: str, roles: np.ndarray | None = None, unit: str = "",
              colorscale: str = "Viridis", share: bool = False) -> go.Figure:
    """One statistic `[layer, head]` as a layer x head heatmap with the value printed in each cell.
    `share`: a share or score in [0, 1], coloured on that fixed scale. Scaled to its own maximum, a grid whose
    best head scored 0.01 drew it darkest: it read as a strong induction head."""
    v = np.asarray(values, dtype=np.float32)
    L, H = v.shape
    text = np.vectorize(lambda x: "" if np.isnan(x) else f"{x:.2f}")(v)
    fixed = dict(zmin=0.0, zmax=1.0) if share else {}
    fig = go.Figure([
        go.Heatmap(z=np.round(v, 4), x=list(range(H)), y=list(range(L)), colorscale=colorscale, **fixed,
                   text=text, texttemplate="%{text}", textfont=dict(size=9), hoverinfo="skip",
                   colorbar=axes.colorbar(unit)),
        click_layer(L, H, roles),
    ])
    return _axes(fig, L, H, title)


def role_grid(roles: np.ndarray, title: str = "Head roles") -> go.Figure:
    """Role labels `[layer, head]` as a categorical grid, one colour per role."""
    roles = np.asarray(roles, dtype=object)
    L, H = roles.shape
    names = list(ROLE_COLORS)
    idx = np.vectorize(lambda r: names.index(r) if r in names else len(names) - 1)(roles).astype(float)
    n = len(names)
    scale = []
    for i, name in enumerate(names):  # a stepped colour scale: each role owns 1/n of [0, 1]
        scale += [[i / n, ROLE_COLORS[name]], [(i + 1) / n, ROLE_COLORS[name]]]
    short = np.vectorize(lambda r: {"previous-token": "prev", "next-token": "next", "[SEP]/end (no-op)": "sep",
                                    "punctuation": "punct", "[CLS]": "cls"}.get(r, r))(roles)
    fig = go.Figure([
        go.Heatmap(z=idx + 0.5, zmin=0, zmax=n, colorscale=scale, showscale=False, text=short,
                   texttemplate="%{text}", textfont=dict(size=9), hoverinfo="skip",
                   x=list(range(H)), y=list(range(L))),
        click_layer(L, H, roles),
    ])
    return _axes(fig, L, H, title)


def head_scatter(coords: np.ndarray, clusters: np.ndarray, L: int, H: int, roles: np.ndarray,
                 explained: np.ndarray | None = None, title: str = "Heads by their statistics") -> go.Figure:
    """2-D map: coords [L*H, 2] (row-major over layer, head), one colour per cluster."""
    from viz.figures.flow import placed_labels

    ll, hh = _grid(L, H)
    role = np.asarray(roles, dtype=object).ravel()
    names = [f"{layer_name(a)} {head_name(b)}" for a, b in zip(ll, hh)]
    # only labels that do not touch another (most isolated first); the rest keep their hover: 72 heads in a
    # cluster piled 24 labels on each other
    shown = np.zeros(len(names), dtype=bool)
    shown[placed_labels(coords, names, plot_px=(380, 360))] = True
    traces = []
    for c in np.unique(clusters):
        sel = clusters == c
        traces.append(go.Scatter(
            x=np.round(coords[sel, 0], 4), y=np.round(coords[sel, 1], 4), mode="markers+text",
            name=f"cluster {c}", text=[n if k else "" for n, k in zip(np.asarray(names, dtype=object)[sel], shown[sel])],
            textposition="top center",
            textfont=dict(size=8), marker=dict(size=11, color=CLUSTER_COLORS[int(c) % len(CLUSTER_COLORS)]),
            customdata=np.stack([ll[sel], hh[sel], role[sel]], axis=1).astype(object),
            hovertemplate="layer %{customdata[0]}, head %{customdata[1]}<br>%{customdata[2]}"
                          "<br>click to open<extra></extra>"))
    ex = explained if explained is not None else np.zeros(2)
    fig = go.Figure(traces)
    fig.update_layout(title=axes.title(title), height=480, margin=dict(l=10, r=10, t=axes.TITLE_MARGIN, b=10),
                      clickmode="event+select",
                      xaxis=dict(title=f"PC 1 ({100 * ex[0]:.0f}% of variance)"
                                 + ("" if shown.all() else f" · {int(shown.sum())} of {len(names)} heads labelled "
                                    "(hover for all)"), zeroline=False),
                      yaxis=dict(title=f"PC 2 ({100 * ex[1]:.0f}% of variance)", zeroline=False),
                      legend=dict(orientation="h", y=-0.15))
    return fig
