"""Training studio figures: curves over steps, the probe sentence's heads at one step, statistics over steps.

Arrays and rows in, plotly Figure out (never a model). Long curves are thinned to at most `MAX_POINTS`.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.figures import axes
from viz.figures.attention import COLORSCALE, model_view

MAX_POINTS = 600
TITLE_GAP = 34  # px between rows of the probe grid: a subplot title's height and some air
GRID_MAX_HEADS = 16  # up to this many heads: one labelled heatmap each; more: the pooled thumbnail grid


def _thin(rows: list[dict]) -> list[dict]:
    step = max(1, int(np.ceil(len(rows) / MAX_POINTS)))
    return rows[::step] + ([rows[-1]] if rows and (len(rows) - 1) % step else [])


def _line_layout(fig: go.Figure, title: str, ytitle: str, height: int = 300) -> go.Figure:
    fig.update_layout(title=axes.title(title), height=height, margin=dict(l=10, r=10, t=axes.TITLE_MARGIN, b=10),
                      xaxis_title="step", yaxis_title=ytitle, legend=dict(orientation="h", y=-0.25))
    return fig


def loss_curve(history: list[dict], title: str = "Training loss") -> go.Figure:
    """Per-step masked-LM loss (faint) and its moving average (EMA 0.95)."""
    rows = _thin(history)
    x = [r["step"] for r in rows]
    fig = go.Figure([
        go.Scatter(x=x, y=[round(r["loss"], 4) for r in rows], mode="lines", name="loss (step)",
                   line=dict(width=1, color="rgba(31,119,180,0.35)")),
        go.Scatter(x=x, y=[round(r["loss_ema"], 4) for r in rows], mode="lines", name="moving average",
                   line=dict(width=2, color="#1f77b4")),
    ])
    return _line_layout(fig, title, "cross-entropy (nats)")


def accuracy_curve(snapshots: list[dict], title: str = "Held-out masked-token accuracy",
                   ytitle: str = "top-1 accuracy (%)", steps: int | None = None) -> go.Figure:
    """Top-1 accuracy on the held-out split at each snapshot (masked tokens for a masked-LM, teacher-forced
    target tokens for an encoder–decoder). The x axis spans the run's `steps` and y 0..100 % from the first
    snapshot, and the latest value is written beside its point: one point on autoscaled axes read as an empty
    chart beside a metric that showed the value."""
    pts = [(s["step"], s["eval_top1"]) for s in snapshots if s.get("eval_top1") is not None]
    ys = [round(100 * p[1], 2) for p in pts]
    fig = go.Figure(go.Scatter(x=[p[0] for p in pts], y=ys, mode="lines+markers+text", name="top-1",
                               line=dict(color="#2ca02c"), marker=dict(size=7),
                               text=[""] * (len(ys) - 1) + [f"{ys[-1]:.1f}%"] if ys else [],
                               textposition="top center", textfont=dict(color="#2ca02c", size=11),
                               hovertemplate="step %{x}: %{y:.1f}%<extra></extra>"))
    fig.update_yaxes(range=[0, 108])  # room above 100 % for the value's label
    if steps:
        fig.update_xaxes(range=[0, steps * 1.04])
    return _line_layout(fig, title, ytitle)


def throughput_curve(history: list[dict], title: str = "Training speed") -> go.Figure:
    rows = _thin(history)
    fig = go.Figure(go.Scatter(x=[r["step"] for r in rows], y=[round(r["tokens_per_s"]) for r in rows],
                               mode="lines", name="tokens/s", line=dict(color="#ff7f0e")))
    return _line_layout(fig, title, "tokens / s")


def probe_grid(attn: np.ndarray, tokens: list[str], title: str = "", zmax: float = 1.0,
               row_tokens: list[str] | None = None) -> go.Figure:
    """The probe sentence's attention `[layer, head, q, k]`: one labelled heatmap per head (small models), else
    the pooled thumbnail grid of the Attention page. The colour range [0, zmax] is shared by every head; pass the
    maximum over all snapshots so that steps compare by eye. `row_tokens` labels the queries where they differ
    from the keys (cross-attention: decoder positions over source tokens)."""
    L, H = attn.shape[:2]
    if L * H > GRID_MAX_HEADS:
        fig = model_view(attn, title=title)
        fig.update_traces(hovertemplate="layer %{customdata[0]}, head %{customdata[1]}<extra></extra>",
                          selector=dict(type="scatter"))  # no click-to-open here
        return fig
    # Every head has the same keys and queries: keys are labelled under the bottom row and queries left of the
    # first column only (shared axes). Labels on every subplot ran under the subplot titles of the row below and
    # over the heatmap to their left. The gap between rows is the subplot title's (~TITLE_GAP px).
    side = 230 if H > 2 else 300
    plot_h = side * L + TITLE_GAP * (L - 1)
    fig = make_subplots(rows=L, cols=H, subplot_titles=[f"L{li} H{h}" for li in range(L) for h in range(H)],
                        shared_xaxes=True, shared_yaxes=True, horizontal_spacing=0.02,
                        vertical_spacing=TITLE_GAP / plot_h if L > 1 else 0.1)
    row_tokens = tokens if row_tokens is None else row_tokens
    labels, rows = axes.token_labels(tokens), axes.token_labels(row_tokens)  # escaped: a raw </s> collapsed the grid
    for li in range(L):
        for h in range(H):
            fig.add_trace(go.Heatmap(z=np.round(attn[li, h].astype(np.float32), 3), x=labels, y=rows,
                                     colorscale=COLORSCALE, zmin=0, zmax=zmax, showscale=li == 0 and h == 0,
                                     colorbar=axes.colorbar("weight"),
                                     hovertemplate=f"L{li} H{h}<br>%{{y}} → %{{x}}<br>%{{z:.3f}}<extra></extra>"),
                          row=li + 1, col=h + 1)
    fig.update_xaxes(axes.token_axis(tokens))
    fig.update_yaxes(axes.token_axis(row_tokens, autorange="reversed"))
    fig.update_layout(title=axes.title(title), height=plot_h + 120,
                      margin=dict(l=10, r=10, t=axes.TITLE_MARGIN + 30, b=10))
    return fig


def stat_over_steps(steps: np.ndarray, values: np.ndarray, label: str, mark_step: int | None = None,
                    title: str = "") -> go.Figure:
    """One line per head: `values [S, L, H]` against `steps [S]`; a dotted line marks the replayed step."""
    S, L, H = values.shape
    fig = go.Figure()
    for li in range(L):
        for h in range(H):
            fig.add_trace(go.Scatter(x=steps, y=np.round(values[:, li, h], 4), mode="lines+markers",
                                     name=f"L{li} H{h}", marker=dict(size=4)))
    if mark_step is not None:
        fig.add_vline(x=mark_step, line=dict(dash="dot", color="grey"))
    return _line_layout(fig, title or f"{label} per head over training", label, height=380)


def _mark_phase(fig: go.Figure, phase_step: int | None, steps: np.ndarray, text: str = "induction ≥ 0.5") -> None:
    """A red line at the phase change with its note beside it, never on it: left of the line (where the curves
    are still low) when the note fits there, else right of it, on a pale background over the curves. The note was anchored at the line
    itself and its last digit sat on the red line."""
    if phase_step is None:
        return
    lo, hi = float(np.min(steps)), float(np.max(steps))
    left = hi > lo and (phase_step - lo) / (hi - lo) > 0.45
    fig.add_vline(x=phase_step, line=dict(color="#d62728", width=2),
                  annotation=dict(text=f"{text} at step {phase_step}", font=dict(color="#d62728", size=11),
                                  xshift=-6 if left else 6, bgcolor="rgba(255,255,255,0.8)"),
                  annotation_position="top left" if left else "top right")


def score_curves(steps: np.ndarray, scores: dict[str, np.ndarray], labels: dict[str, str],
                 phase_step: int | None = None, threshold: float = 0.5, mark_step: int | None = None,
                 title: str = "Best head per score over training") -> go.Figure:
    """For each score `[S, L, H]`, the best head's value at each snapshot (which head is in the hover); a dashed
    line at `threshold` and a red line where the best induction score first reaches it (the phase change)."""
    colors = {"induction": "#d62728", "previous": "#1f77b4", "duplicate": "#9467bd"}
    fig = go.Figure()
    for name, values in scores.items():
        S, L, H = values.shape
        flat = values.reshape(S, L * H)
        best = flat.argmax(1)
        fig.add_trace(go.Scatter(
            x=steps, y=np.round(flat[np.arange(S), best], 4), mode="lines+markers", name=labels.get(name, name),
            marker=dict(size=4), line=dict(color=colors.get(name)),
            customdata=[f"L{b // H} H{b % H}" for b in best],
            hovertemplate="step %{x}: %{y:.3f} (%{customdata})<extra>" + labels.get(name, name) + "</extra>"))
    fig.add_hline(y=threshold, line=dict(dash="dash", color="grey"))
    _mark_phase(fig, phase_step, steps)
    if mark_step is not None:
        fig.add_vline(x=mark_step, line=dict(dash="dot", color="grey"))
    fig.update_yaxes(range=[0, 1.05])
    return _line_layout(fig, title, "score (best head)", height=340)


def context_curves(steps: np.ndarray, loss: np.ndarray, icl: np.ndarray, first_half: np.ndarray | None = None,
                   loss_name: str = "held-out loss", phase_step: int | None = None,
                   title: str = "In-context learning") -> go.Figure:
    """Held-out loss on the counted positions (the repeated half, for repeated tokens), the loss on the first
    half where there is one, and the in-context learning score (late minus early loss; Olsson et al. 2022),
    per snapshot, with the phase change marked."""
    fig = go.Figure([go.Scatter(x=steps, y=np.round(loss, 4), mode="lines+markers", name=loss_name,
                                marker=dict(size=4), line=dict(color="#1f77b4"))])
    if first_half is not None and np.isfinite(first_half).any():
        fig.add_trace(go.Scatter(x=steps, y=np.round(first_half, 4), mode="lines", name="loss on the first half",
                                 line=dict(color="#7f7f7f", dash="dot")))
    fig.add_trace(go.Scatter(x=steps, y=np.round(icl, 4), mode="lines+markers", marker=dict(size=4),
                             name="in-context score (late − early)", line=dict(color="#2ca02c")))
    fig.add_hline(y=0, line=dict(color="lightgrey"))
    _mark_phase(fig, phase_step, steps)
    return _line_layout(fig, title, "nats", height=340)
