"""Patching figures: effect arrays in, Plotly figures out (never a model).

Effects are normalised (0 = nothing restored, 1 = everything), so every figure uses one diverging scale centred
on 0, red for restoring and blue for the opposite, symmetric around 0 and never narrower than [-1, 1]: a cell
that restores everything always reads as the same red, whatever else the grid holds. Grids carry an invisible
marker per cell with `customdata` ([layer, position] or [layer, head]) so a click can open that cell elsewhere.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures import axes

SCALE = "RdBu_r"
MAX_TEXT_CELLS = 400  # values printed in the cells up to this many cells (more: hover only)


def _range(*arrays: np.ndarray) -> float:
    m = max((float(np.nanmax(np.abs(a))) for a in arrays if np.isfinite(a).any()), default=1.0)
    return max(1.0, m)


def _cell_text(v: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda x: "" if np.isnan(x) else f"{x:.2f}".replace("-0.00", "0.00"))(v)  # no "-0.00"


def _heat(v: np.ndarray, x, y, m: float, unit: str, **extra) -> go.Heatmap:
    text = dict(text=_cell_text(v), texttemplate="%{text}", textfont=dict(size=9)) if v.size <= MAX_TEXT_CELLS else {}
    return go.Heatmap(z=np.round(v, 4).astype(np.float32), x=x, y=y, colorscale=SCALE, zmid=0.0, zmin=-m, zmax=m,
                      colorbar=axes.colorbar(unit), **text, **extra)


def _clicks(x, y, data, hover: str) -> go.Scatter:
    """Invisible markers, one per cell: heatmap cells cannot be selected in Streamlit, markers can."""
    return go.Scatter(x=x, y=y, mode="markers", marker=dict(size=16, symbol="square", color="rgba(0,0,0,0)"),
                      customdata=data, showlegend=False, hovertemplate=hover + "<extra></extra>")


def position_labels(clean: list[str], corrupt: list[str]) -> list[str]:
    """Tokens for a position axis; where the two inputs differ, 'clean→corrupt'."""
    return [a if a == b else f"{a}→{b}" for a, b in zip(clean, corrupt)]


def stream_heatmap(effect: np.ndarray, tokens: list[str], title: str, unit: str = "effect") -> go.Figure:
    """effect [layer, position]: one stream site (resid_pre, attn_out, mlp_out) patched at each layer and token."""
    v = np.asarray(effect, dtype=np.float64)
    L, T = v.shape
    labels = axes.token_labels(tokens)
    ll, pp = np.meshgrid(np.arange(L), np.arange(T), indexing="ij")
    rows = [f"L{i}" for i in range(L)]
    data = np.stack([ll.ravel(), pp.ravel()], axis=1)
    hover = ("layer %{customdata[0]}, position %{customdata[1]}<br>" + "%{x}<br>effect %{z:.3f}")
    fig = go.Figure([
        _heat(v, labels, rows, _range(v), unit, hovertemplate="%{y} · %{x}<br>effect %{z:.3f}<extra></extra>"),
        _clicks([labels[p] for p in pp.ravel()], [rows[i] for i in ll.ravel()], data,
                hover.replace("effect %{z:.3f}", "click to open Inside a layer")),
    ])
    fig.update_layout(title=axes.title(title), height=max(260, 30 * L + 170),
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 10, b=10), clickmode="event+select",
                      dragmode=False, xaxis=axes.token_axis(tokens, title="position (clean→corrupted where they differ)"),
                      yaxis=dict(title="layer", autorange="reversed", type="category"))
    return fig


def head_grid(effect: np.ndarray, title: str, unit: str = "effect") -> go.Figure:
    """effect [layer, head]: each head patched (its output at every position, or its pattern)."""
    v = np.asarray(effect, dtype=np.float64)
    L, H = v.shape
    ll, hh = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    fig = go.Figure([
        _heat(v, list(range(H)), list(range(L)), _range(v), unit,
              hovertemplate="layer %{y}, head %{x}<br>effect %{z:.3f}<extra></extra>"),
        _clicks(hh.ravel(), ll.ravel(), np.stack([ll.ravel(), hh.ravel()], axis=1),
                "layer %{customdata[0]}, head %{customdata[1]}<br>click to open it on the Attention page"),
    ])
    fig.update_layout(title=axes.title(title), height=max(260, 34 * L + 170),
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 45, b=10), clickmode="event+select",
                      dragmode=False,
                      xaxis=dict(title="head", tickmode="array", tickvals=list(range(H)), side="top",
                                 range=[-0.5, H - 0.5]),
                      yaxis=dict(title="layer", tickmode="array", tickvals=list(range(L)), range=[L - 0.5, -0.5]))
    return fig


COLORS = {"resid_pre": "#1f77b4", "attn_out": "#2ca02c", "cross attn_out": "#17becf", "mlp_out": "#ff7f0e",
          "head": "#d62728"}


def largest_gaps(points: dict[str, tuple[np.ndarray, np.ndarray, list[str]]], top: int = 5) -> list[tuple]:
    """(site, label, exact, atp) of the `top` components where |exact − AtP| is largest, over every site."""
    gaps = []
    for site, (exact, atp, labels) in points.items():
        e, a = np.asarray(exact, dtype=np.float64).ravel(), np.asarray(atp, dtype=np.float64).ravel()
        gaps += [(abs(e[i] - a[i]), site, labels[i], float(e[i]), float(a[i]))
                 for i in np.flatnonzero(np.isfinite(e) & np.isfinite(a))]
    return [g[1:] for g in sorted(gaps, key=lambda g: -g[0])[:top]]


def atp_scatter(points: dict[str, tuple[np.ndarray, np.ndarray, list[str]]], title: str) -> go.Figure:
    """Attribution patching against exact patching, one point per component: points[site] = (exact, atp, labels),
    flat. The diagonal is where they agree; the five largest disagreements are ringed (`largest_gaps` lists them)."""
    traces, lo, hi = [], 0.0, 1.0
    for site, (exact, atp, labels) in points.items():
        e, a = np.asarray(exact, dtype=np.float64).ravel(), np.asarray(atp, dtype=np.float64).ravel()
        ok = np.isfinite(e) & np.isfinite(a)
        if not ok.any():
            continue
        lo, hi = min(lo, e[ok].min(), a[ok].min()), max(hi, e[ok].max(), a[ok].max())
        traces.append(go.Scatter(x=np.round(e[ok], 4), y=np.round(a[ok], 4), mode="markers", name=site,
                                 text=[labels[i] for i in np.flatnonzero(ok)],
                                 marker=dict(size=7, opacity=0.8, color=COLORS.get(site)),
                                 hovertemplate="%{text}<br>exact %{x:.3f}<br>AtP %{y:.3f}<extra>" + site + "</extra>"))
    pad = 0.05 * (hi - lo)
    traces.append(go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines", name="AtP = exact",
                             line=dict(color="#999", dash="dot"), hoverinfo="skip"))
    worst = largest_gaps(points)
    if worst:
        traces.append(go.Scatter(x=[w[2] for w in worst], y=[w[3] for w in worst], mode="markers",
                                 name="largest disagreements", text=[f"{w[0]} {w[1]}" for w in worst],
                                 marker=dict(size=13, color="rgba(0,0,0,0)", line=dict(color="#333", width=1.5)),
                                 hovertemplate="%{text}<br>exact %{x:.3f}<br>AtP %{y:.3f}<extra></extra>"))
    fig = go.Figure(traces)
    fig.update_layout(title=axes.title(title), height=460, margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 10, b=10),
                      xaxis=dict(title="exact patching (effect)", range=[lo - pad, hi + pad], zeroline=True),
                      yaxis=dict(title="attribution patching (estimate)", range=[lo - pad, hi + pad], zeroline=True),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def path_matrix(effect: np.ndarray, senders: list[str], receivers: list[str], title: str) -> go.Figure:
    """effect [sender, receiver]; blank where the receiver is not after the sender."""
    v = np.asarray(effect, dtype=np.float64)
    fig = go.Figure([_heat(v, receivers, senders, _range(v), "effect",
                           hovertemplate="%{y} → %{x}<br>effect %{z:.3f}<extra></extra>")])
    fig.update_layout(title=axes.title(title), height=max(280, 18 * len(senders) + 190),
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 10, b=10),
                      xaxis=dict(title="receiver", type="category", tickangle=-45 if len(receivers) > 8 else 0),
                      yaxis=dict(title="sender", type="category", autorange="reversed"))
    return fig
