"""Attribution figures: scores per method and token, their agreement, their faithfulness (arrays in, never a model).

One colour scale for every method: each method's scores are divided by its largest |score| over the candidate
tokens (`normalise`), so every row lies in [-1, 1] and one diverging scale centred on 0 reads them all (blue
against the target, red for it); unsigned methods (attention, rollout, flow, norm, value zeroing) only use the
red half. Tokens that are not candidates (special tokens, the predicting mask) are left blank: their attention
weight (a [CLS] or [SEP] sink) would otherwise set the scale for every other token. The raw score is printed in
each cell and in the hover.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.figures import axes

SCALE = "RdBu_r"  # blue = negative (against the target), red = positive
TEXT_MAX_TOKENS = 32  # more columns than this: values in the hover only
RANDOM_COLOR = "rgba(120,120,120,0.25)"


def normalise(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """[method, token] scores / each method's max |score| over the candidates; NaN off the candidates."""
    s = np.asarray(scores, dtype=np.float64)
    cand = np.asarray(candidates, dtype=bool)
    top = np.nanmax(np.abs(np.where(cand[None], s, np.nan)), axis=1, keepdims=True) if cand.any() else \
        np.ones((s.shape[0], 1))
    top = np.where(np.isfinite(top) & (top > 0), top, 1.0)
    return np.where(cand[None], s / top, np.nan)


def _fmt(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x:.3g}"


def token_strips(tokens: list[str], labels: list[str], scores: np.ndarray, candidates: np.ndarray,
                 title: str = "") -> go.Figure:
    """One row per method, one column per token; colour = `normalise`d score, text = the raw score.
    An invisible marker per cell carries the hover and customdata [token, method row, ...] for clicks."""
    z = normalise(scores, candidates)
    M, T = z.shape
    xl, yl = axes.token_labels(tokens), [axes.escape(lb) for lb in labels]
    raw = np.vectorize(_fmt)(np.asarray(scores, dtype=np.float64))
    show = T <= TEXT_MAX_TOKENS
    tt, mm = np.meshgrid(np.arange(T), np.arange(M))
    share = np.vectorize(lambda v: "blank: not a candidate" if not np.isfinite(v) else f"{v:.2f} of the largest")(z)
    cells = np.array([[int(t), int(m), yl[m], xl[t], raw[m, t], share[m, t]] for m, t in zip(mm.ravel(), tt.ravel())],
                     dtype=object)
    fig = go.Figure([
        go.Heatmap(z=np.round(z, 4), x=xl, y=yl, zmin=-1, zmax=1, zmid=0, colorscale=SCALE, xgap=1, ygap=1,
                   text=raw, texttemplate="%{text}" if show else None, textfont=dict(size=10), hoverinfo="skip",
                   colorbar=axes.colorbar("score ÷ the method's largest |score|")),
        # heatmap cells cannot be selected in Streamlit (no points): a marker per cell carries the hover and the
        # click, customdata = [token, method row, method, token label, raw score, share]
        go.Scatter(x=[xl[t] for t in tt.ravel()], y=[yl[m] for m in mm.ravel()], mode="markers",
                   marker=dict(size=16, symbol="square", color="rgba(0,0,0,0)"), showlegend=False, customdata=cells,
                   hovertemplate="%{customdata[2]} · %{customdata[3]}<br>score %{customdata[4]} "
                                 "(%{customdata[5]})<br>click: this token under every method<extra></extra>"),
    ])
    fig.update_layout(title=axes.title(title), height=axes.TITLE_MARGIN + 90 + 30 * M,
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN, b=10), plot_bgcolor="#f0f0f0",
                      clickmode="event+select", dragmode=False,
                      xaxis=axes.token_axis(tokens, showgrid=False),
                      yaxis=dict(type="category", autorange="reversed", showgrid=False))
    return fig


def token_detail(labels: list[str], raw: np.ndarray, share: np.ndarray, token: str, index: int) -> go.Figure:
    """One token under every method: bars = share of each method's largest |score| (signed), text = raw score."""
    y = [axes.escape(lb) for lb in labels]
    share = np.asarray(share, dtype=np.float64)
    fig = go.Figure(go.Bar(x=np.nan_to_num(share), y=y, orientation="h", text=[_fmt(r) for r in raw],
                           textposition="auto", marker_color=np.where(share < 0, "#3b6ea8", "#c0504d"),
                           hovertemplate="%{y}: %{x:.2f} of its largest |score|<extra></extra>"))
    fig.update_layout(title=axes.title(f"Token {index} '{axes.escape(token)}' under every method"),
                      height=axes.TITLE_MARGIN + 60 + 26 * len(labels), margin=dict(l=10, r=10, t=axes.TITLE_MARGIN, b=10),
                      xaxis=dict(title="score ÷ the method's largest |score|", range=[-1.05, 1.05], zeroline=True),
                      yaxis=dict(type="category", autorange="reversed"))
    return fig


def agreement_matrix(labels: list[str], tau: np.ndarray, title: str = "") -> go.Figure:
    """Kendall's τ between methods [method, method], diverging around 0."""
    t = np.asarray(tau, dtype=np.float64)
    lab = [axes.escape(lb) for lb in labels]
    fig = go.Figure(go.Heatmap(z=np.round(t, 3), x=lab, y=lab, zmin=-1, zmax=1, zmid=0, colorscale=SCALE,
                               text=np.vectorize(lambda v: "" if not np.isfinite(v) else f"{v:.2f}")(t),
                               texttemplate="%{text}", xgap=1, ygap=1, colorbar=axes.colorbar("Kendall τ"),
                               hovertemplate="%{y} vs %{x}: τ = %{z:.2f}<extra></extra>"))
    n = len(labels)
    fig.update_layout(title=axes.title(title), height=axes.TITLE_MARGIN + 120 + 34 * n,
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN, b=10), plot_bgcolor="#f0f0f0",
                      xaxis=dict(type="category", tickangle=-30), yaxis=dict(type="category", autorange="reversed"))
    return fig


def scoreboard(labels: list[str], comp: np.ndarray, suff: np.ndarray, random_comp: tuple[float, float, float],
               random_suff: tuple[float, float, float], comp_err: np.ndarray | None = None,
               suff_err: np.ndarray | None = None, title: str = "") -> go.Figure:
    """Comprehensiveness (left, higher is more faithful) and sufficiency (right, lower is more faithful) per
    method, with the random ranking drawn in: a dashed line at its mean and a grey band over (low, high); bars
    that beat the random mean are green. `random_*` = (mean, low, high); `*_err` = [method, 2] (low, high) error
    bars (e.g. 95 % intervals)."""
    y = [axes.escape(lb) for lb in labels]
    heads = []
    for name, sign, (mean, lo, hi) in (("comprehensiveness ↑", "removing the top tokens hurts", random_comp),
                                       ("sufficiency ↓", "the top tokens alone suffice", random_suff)):
        heads.append(f"{name} ({sign})<br><span style='font-size:11px'>random {mean:.3g}, band {lo:.3g}–{hi:.3g}"
                     "</span>")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=heads)
    for col, vals, err, (mean, lo, hi), better in ((1, comp, comp_err, random_comp, np.greater),
                                                    (2, suff, suff_err, random_suff, np.less)):
        v = np.asarray(vals, dtype=np.float64)
        colour = np.where(better(v, mean), "#2e7d32", "#9e9e9e")
        error = None
        if err is not None:
            e = np.asarray(err, dtype=np.float64)
            error = dict(type="data", symmetric=False, array=np.nan_to_num(e[:, 1] - v),
                         arrayminus=np.nan_to_num(v - e[:, 0]), color="#444", thickness=1.2)
        top = np.nanmax(np.abs(v)) if np.isfinite(v).any() else 1.0
        where = ["inside" if abs(x) > 0.3 * top else "outside" for x in np.nan_to_num(v)]  # short bars: beside
        fig.add_trace(go.Bar(x=np.nan_to_num(v), y=y, orientation="h", marker_color=colour, error_x=error,
                             text=[_fmt(x) for x in v], textposition=where, insidetextanchor="start",
                             showlegend=False, hovertemplate="%{y}: %{x:.4f}<extra></extra>"), row=1, col=col)
        fig.add_vrect(x0=lo, x1=hi, fillcolor=RANDOM_COLOR, line_width=0, layer="below", row=1, col=col)
        fig.add_vline(x=mean, line_dash="dash", line_color="#444", row=1, col=col)
    fig.update_annotations(font_size=12, yshift=8)  # the titles clear the random band's top edge
    fig.update_layout(title=axes.title(title), height=axes.TITLE_MARGIN + 130 + 28 * len(labels),
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 45, b=10), bargap=0.25,
                      yaxis=dict(type="category", autorange="reversed"))
    fig.update_xaxes(title_text="m(x) − m(variant), AOPC")
    return fig
