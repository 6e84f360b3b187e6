"""Heads of two models matched (viz.analysis.match): arrays in, plotly figures out (never a model).

Heads are numbered row-major by layer then head (index = layer * H + head). Clickable points carry
`customdata = [a_layer, a_head, b_layer, b_head, similarity]` (heatmap cells cannot be selected in Streamlit:
markers can, as in viz.figures.atlas).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures import axes

SIM_SCALE = "Viridis"


def head_label(index: int, heads: int) -> str:
    return f"L{index // heads} H{index % heads}"


def _layer_ticks(L: int, H: int) -> dict:
    """One tick per layer, at its first head."""
    return dict(tickmode="array", tickvals=[l * H for l in range(L)], ticktext=[f"L{l}" for l in range(L)],
                showgrid=False, zeroline=False)


def similarity_matrix(sim: np.ndarray, shape_a: tuple[int, int], shape_b: tuple[int, int], pairs: list,
                      name_a: str, name_b: str, selected: tuple[int, int] | None = None, title: str = "") -> go.Figure:
    """`sim [NA, NB]` as a heatmap (rows: A's heads, columns: B's), layer boundaries drawn, the matched pairs as
    open circles (click one to open the pair; `selected` = (a index, b index) is ringed in red)."""
    (La, Ha), (Lb, Hb) = shape_a, shape_b
    z = np.round(np.asarray(sim, dtype=np.float32), 4)
    ya = [head_label(i, Ha) for i in range(La * Ha)]
    xb = [head_label(j, Hb) for j in range(Lb * Hb)]
    labelled = z.size <= 40_000  # a label per cell for the hover; beyond (1,000+ heads a side) indices only
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(Lb * Hb)), y=list(range(La * Ha)), colorscale=SIM_SCALE, zmin=0, zmax=1,
        colorbar=axes.colorbar("similarity (1 − JSD)"),
        customdata=np.array([[f"{a} · {b}" for b in xb] for a in ya], dtype=object) if labelled else None,
        hovertemplate=(f"{axes.escape(name_a)} %{{customdata}} {axes.escape(name_b)}" if labelled else
                       "A head %{y} · B head %{x} (index = layer × heads + head)")
                      + "<br>similarity %{z:.3f}<extra></extra>"))
    px = [p.b for p in pairs]
    py = [p.a for p in pairs]
    cd = [[p.a // Ha, p.a % Ha, p.b // Hb, p.b % Hb, round(p.similarity, 4)] for p in pairs]
    fig.add_trace(go.Scatter(
        x=px, y=py, mode="markers", name="matched", showlegend=False, customdata=cd,
        marker=dict(size=max(5, min(14, 600 // max(La * Ha, Lb * Hb))), symbol="circle-open", color="#e4572e",
                    line=dict(width=2)),
        hovertemplate=f"matched: {axes.escape(name_a)} L%{{customdata[0]}} H%{{customdata[1]}} ↔ "
                      f"{axes.escape(name_b)} L%{{customdata[2]}} H%{{customdata[3]}}<br>similarity "
                      "%{customdata[4]:.3f}<br>click to open<extra></extra>"))
    if selected is not None:
        fig.add_trace(go.Scatter(x=[selected[1]], y=[selected[0]], mode="markers", hoverinfo="skip", showlegend=False,
                                 marker=dict(size=22, symbol="circle-open", color="#d62728", line=dict(width=3))))
    for l in range(1, La):
        fig.add_hline(y=l * Ha - 0.5, line=dict(color="white", width=1))
    for l in range(1, Lb):
        fig.add_vline(x=l * Hb - 0.5, line=dict(color="white", width=1))
    side = min(760, max(360, 9 * max(La * Ha, Lb * Hb) + 140))
    fig.update_layout(
        title=axes.title(title), height=side, margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 10, b=10),
        clickmode="event+select", dragmode=False,
        xaxis=dict(title=f"{axes.escape(name_b)} (B) heads", range=[-0.5, Lb * Hb - 0.5], **_layer_ticks(Lb, Hb)),
        yaxis=dict(title=f"{axes.escape(name_a)} (A) heads", range=[La * Ha - 0.5, -0.5], **_layer_ticks(La, Ha)))
    return fig


def match_grid(pairs: list, shape_a: tuple[int, int], shape_b: tuple[int, int], name_b: str,
               title: str = "") -> go.Figure:
    """A's layer x head grid: each cell coloured by its match's similarity, the matched B head written in it
    ("L2 H7"; blank: unmatched when B has fewer heads). Click a cell to open the pair."""
    (La, Ha), (_, Hb) = shape_a, shape_b
    z = np.full((La, Ha), np.nan, dtype=np.float32)
    text = np.full((La, Ha), "", dtype=object)
    cd = []
    for p in pairs:
        al, ah, bl, bh = p.a // Ha, p.a % Ha, p.b // Hb, p.b % Hb
        z[al, ah] = round(p.similarity, 4)
        text[al, ah] = f"L{bl}<br>H{bh}"
        cd.append([al, ah, bl, bh, round(p.similarity, 4)])
    fig = go.Figure([
        go.Heatmap(z=z, x=list(range(Ha)), y=list(range(La)), colorscale=SIM_SCALE, zmin=0, zmax=1, text=text,
                   texttemplate="%{text}", textfont=dict(size=9), hoverinfo="skip",
                   colorbar=axes.colorbar("similarity")),
        go.Scatter(x=[c[1] for c in cd], y=[c[0] for c in cd], mode="markers", showlegend=False, customdata=cd,
                   marker=dict(size=18, symbol="square", color="rgba(0,0,0,0)"),
                   hovertemplate=f"A L%{{customdata[0]}} H%{{customdata[1]}} ↔ {axes.escape(name_b)} "
                                 "L%{customdata[2]} H%{customdata[3]}<br>similarity %{customdata[4]:.3f}"
                                 "<br>click to open<extra></extra>"),
    ])
    fig.update_layout(title=axes.title(title), height=max(300, 40 * La + 160),
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 45, b=10), clickmode="event+select",
                      dragmode=False,
                      xaxis=dict(title="head", tickmode="array", tickvals=list(range(Ha)), side="top",
                                 range=[-0.5, Ha - 0.5]),
                      yaxis=dict(title="layer", tickmode="array", tickvals=list(range(La)), range=[La - 0.5, -0.5]))
    return fig


def lineage_heatmap(steps: np.ndarray, matched: np.ndarray, similarity: np.ndarray, heads: int,
                    title: str = "") -> go.Figure:
    """Each final head (rows) followed back through the snapshots (columns): colour = similarity of the head
    matched to it at that step, text = which head that was. `customdata = [step index, final head index,
    matched head index, similarity]` on every cell; a click opens that step's pair."""
    S, N = similarity.shape
    z = np.round(similarity.T.astype(np.float32), 4)  # [N, S]
    text = np.array([[head_label(int(matched[s, n]), heads).replace(" ", "") for s in range(S)] for n in range(N)])
    ss, nn = np.meshgrid(np.arange(S), np.arange(N))
    cd = np.stack([ss.ravel(), nn.ravel(), matched.T.ravel(), z.ravel()], 1)
    fig = go.Figure([
        go.Heatmap(z=z, x=list(range(S)), y=list(range(N)), colorscale=SIM_SCALE, zmin=0, zmax=1, hoverinfo="skip",
                   text=text if S * N <= 1200 else None, texttemplate="%{text}" if S * N <= 1200 else None,
                   textfont=dict(size=8), colorbar=axes.colorbar("similarity to the final head")),
        go.Scatter(x=ss.ravel(), y=nn.ravel(), mode="markers", showlegend=False, customdata=cd,
                   marker=dict(size=12, symbol="square", color="rgba(0,0,0,0)"),
                   text=[f"step {int(steps[s])}: {head_label(int(matched[s, n]), heads)} → final "
                         f"{head_label(n, heads)}" for s, n in zip(ss.ravel(), nn.ravel())],
                   hovertemplate="%{text}<br>similarity %{customdata[3]:.3f}<br>click to open<extra></extra>"),
    ])
    ticks = np.unique(np.linspace(0, S - 1, min(S, 12)).round().astype(int))
    fig.update_layout(title=axes.title(title), height=max(320, 18 * N + 160),
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 10, b=10), clickmode="event+select",
                      dragmode=False,
                      xaxis=dict(title="training step (snapshot)", tickmode="array", tickvals=ticks.tolist(),
                                 ticktext=[str(int(steps[i])) for i in ticks], range=[-0.5, S - 0.5]),
                      yaxis=dict(title="final head", tickmode="array", tickvals=list(range(N)),
                                 ticktext=[head_label(n, heads) for n in range(N)], range=[N - 0.5, -0.5]))
    return fig
