"""Encoder–decoder figures: the look-ahead mask, one decoding step, top-k, and the layer schematic.

Arrays and tokens in, plotly Figure out (never a model). Sizes stay small: a step is a few
bars per source token; the mask is an int8 image.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures.axes import TITLE_MARGIN, colorbar, escape, shown, title as _title, token_axis, token_labels
from viz.figures.attention import heatmap_height

COLORS = {"encoder": "#4C78A8", "decoder": "#F58518", "cross": "#54A24B", None: "#BAB0AC"}
INK = "#1f1f1f"  # explicit: the app theme's grey annotation text is unreadable on coloured boxes


def lookahead_mask(n: int) -> np.ndarray:
    """The decoder's causal mask `[query, key]`: 1 where query i may attend to key j (j <= i)."""
    return np.tril(np.ones((n, n), dtype=np.int8))


def mask_figure(tokens: list[str], title: str = "Look-ahead mask") -> go.Figure:
    """The mask itself: allowed (j <= i) in dark, blocked future positions in light."""
    m = lookahead_mask(len(tokens))
    fig = go.Figure(go.Heatmap(
        z=m, x=token_labels(tokens), y=token_labels(tokens), zmin=0, zmax=1, showscale=False,
        colorscale=[[0, "#f3f3f3"], [0.5, "#f3f3f3"], [0.5, "#2c5d8f"], [1, "#2c5d8f"]],
        customdata=np.where(m == 1, "may attend", "masked (−∞ before softmax)"),
        hovertemplate="%{y} → %{x}<br>%{customdata}<extra></extra>", xgap=1, ygap=1))
    fig.update_layout(title=_title(title), height=heatmap_height(len(tokens), len(tokens)),
                      margin=dict(l=10, r=10, t=TITLE_MARGIN, b=10),
                      xaxis=token_axis(tokens, title="key (earlier decoder inputs)"),
                      yaxis=token_axis(tokens, title="query", autorange="reversed"))
    return fig


def attention_bars(weights: np.ndarray, tokens: list[str], title: str, color: str = COLORS["cross"],
                   highlight: int | None = None, x_title: str | None = None) -> go.Figure:
    """One query's attention `[key]` as bars over the key tokens, each with its weight written on it when they
    fit. `highlight`: a key drawn in a darker shade of the same colour, and the title says so (it was black,
    with nothing saying why)."""
    w = np.round(np.asarray(weights, dtype=np.float32), 4)
    colors = [color] * len(w)
    if highlight is not None and 0 <= highlight < len(w):
        colors[highlight] = darker(color)
        title = f"{title} · darker: the most attended (“{shown([tokens[highlight]])[0]}”, {w[highlight]:.2f})"
    fig = go.Figure(go.Bar(x=token_labels(tokens), y=w, marker_color=colors,
                           text=[f"{x:.2f}" for x in w] if len(w) <= 30 else None, textposition="outside",
                           cliponaxis=False, hovertemplate="%{x}<br>weight %{y:.3f}<extra></extra>"))
    fig.update_layout(title=_title(title), height=340, margin=dict(l=10, r=10, t=TITLE_MARGIN, b=10),
                      yaxis=dict(title="weight", range=[0, 1]), xaxis=token_axis(tokens, title=x_title), bargap=0.15)
    return fig


def darker(color: str, factor: float = 0.55) -> str:
    """`#rrggbb` scaled towards black: the same hue, read as a stronger bar of the same series."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c * factor):02x}" for c in (r, g, b))


def topk_figure(top_k: list[tuple[str, float]], chosen: str, title: str = "Next-token probabilities") -> go.Figure:
    """Horizontal bars of the k most likely next tokens; the chosen one in orange."""
    toks = [t for t, _ in top_k][::-1]
    probs = [round(p, 4) for _, p in top_k][::-1]
    colors = [COLORS["decoder"] if t == chosen else "#9ecae1" for t in toks]
    fig = go.Figure(go.Bar(y=token_labels(toks), x=probs, orientation="h", marker_color=colors, text=[f"{p:.3f}" for p in probs],
                           textposition="auto", hovertemplate="%{y}<br>p = %{x:.4f}<extra></extra>"))
    fig.update_layout(title=_title(title), height=max(260, 30 * len(toks) + 110),
                      margin=dict(l=10, r=10, t=TITLE_MARGIN, b=10),
                      xaxis=dict(title="probability", range=[0, 1]), yaxis=token_axis(toks))
    return fig


def _box(fig: go.Figure, x0, y0, x1, y1, text, color, hover=None):
    fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color=color, width=2), fillcolor=color,
                  opacity=0.35, layer="below")
    fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color=color, width=2))
    fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=text, showarrow=False, font=dict(size=12, color=INK))
    if hover:  # an invisible marker gives the box a tooltip (shapes have none)
        fig.add_trace(go.Scatter(x=[(x0 + x1) / 2], y=[(y0 + y1) / 2], mode="markers", marker=dict(size=40, opacity=0),
                                 hovertemplate=hover + "<extra></extra>", showlegend=False))


def architecture_figure(desc: dict, sublayers: list[dict]) -> go.Figure:
    """Schematic of one encoder and one decoder layer (× N), each sublayer with its norm placement
    and the attention view it feeds, plus the encoder output flowing into cross-attention."""
    pre = desc["norm"] == "pre"
    fig = go.Figure()
    stacks = {"encoder": (0.0, [r for r in sublayers if r["stack"] == "encoder"]),
              "decoder": (5.0, [r for r in sublayers if r["stack"] == "decoder"])}
    h, gap, w = 1.0, 0.35, 3.6
    tops = {}
    for stack, (x0, rows) in stacks.items():
        y = 0.8
        for r in rows:
            view = {"Encoder self-attention": "encoder", "Decoder masked self-attention": "decoder"}.get(
                r["attention view"], "cross" if r["attention view"].startswith("Cross") else None)
            norm = "Norm → " if pre else ""
            after = "" if pre else " → Add & Norm"
            label = f"{norm}<b>{r['sublayer']}</b>{' → Add' if pre else after}"
            if view:
                label += f"<br><i>view: {r['attention view']}</i>"
            _box(fig, x0, y, x0 + w, y + h, label, COLORS[view],
                 hover=f"module: {r['module']}" if r["module"] != "—" else None)
            if view == "cross":
                tops["cross"] = y + h / 2
            y += h + gap
        tops[stack] = y
        n = desc[f"{stack}_layers"]
        fig.add_shape(type="rect", x0=x0 - 0.15, y0=0.65, x1=x0 + w + 0.15, y1=y - gap + 0.15,
                      line=dict(color="#666", dash="dot"))
        fig.add_annotation(x=x0 + w / 2, y=y + 0.1, showarrow=False, font=dict(size=14, color=INK),
                           text=f"<b>{stack.capitalize()}</b> × {n} · d_model {desc['d_model']} · "
                                f"{desc[f'{stack}_heads']} heads · d_ff {desc[f'{stack}_ffn']}")
        fig.add_annotation(x=x0 + w / 2, y=0.3, showarrow=False, text=f"{stack} inputs + positions",
                           font=dict(color=INK))
    fig.add_annotation(x=5.0, y=tops["cross"], ax=3.6, ay=tops["encoder"] - gap, xref="x", yref="y", axref="x", ayref="y",
                       showarrow=True, arrowhead=3, arrowwidth=2, arrowcolor=COLORS["cross"], text="")
    fig.add_annotation(x=4.3, y=tops["encoder"] + 0.3, showarrow=False, font=dict(size=11, color=COLORS["cross"]),
                       text="encoder output →<br>keys & values")
    fig.update_layout(
        title=f"{desc['family']}: {'pre' if pre else 'post'}-LN ({desc['residual']}), {desc['norm_type']}",
        height=520, margin=dict(l=10, r=10, t=60, b=10), plot_bgcolor="white", showlegend=False,
        xaxis=dict(visible=False, range=[-0.4, 9.0]), yaxis=dict(visible=False, range=[0, tops["decoder"] + 0.6]))
    return fig


def beams_figure(beams: list, length_penalty: float = 1.0, title: str = "Beam search: every hypothesis") -> go.Figure:
    """Beam search's finished hypotheses, best first: one row per beam, one cell per generated token (its
    text), coloured by p(token) where it was chosen; the row label carries the beam's score (sum of log p
    over length ** length_penalty, what beam search ranks by) and its total log p."""
    n = max(len(b.tokens) for b in beams)
    z = np.full((len(beams), n), np.nan, dtype=np.float32)
    text = [[""] * n for _ in beams]
    for r, b in enumerate(beams):
        z[r, : len(b.tokens)] = np.exp(b.token_logprobs)
        text[r][: len(b.tokens)] = shown(b.tokens)
    rows = [f"#{r + 1} · score {b.score:.3f} · log p {b.log_prob:.2f}" for r, b in enumerate(beams)]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(n)), y=rows, text=text, texttemplate="%{text}", textfont=dict(size=11), colorscale="Greens",
        zmin=0, zmax=1, xgap=2, ygap=2, colorbar=colorbar("p(token)"),
        hovertemplate="%{y}<br>step %{x}: %{text} (p = %{z:.3f})<extra></extra>"))
    fig.update_layout(title=_title(title), height=TITLE_MARGIN + 90 + 34 * len(beams),
                      margin=dict(l=10, r=10, t=TITLE_MARGIN, b=10),
                      xaxis=dict(title=f"step (score = Σ log p / length^{length_penalty:g})", dtick=1),
                      yaxis=dict(autorange="reversed", type="category"))
    return fig
