"""Figures for step-through generation with a decoder: one query's attention in every layer x head,
and the logit lens as a layer x rank table. Arrays and tokens in, plotly Figure out (never a model).

Sizes stay screen-sized: the head grid is one heatmap of [layer * head, context] (keys mean-pooled
into at most `max_keys` columns on long contexts), numbers rounded; the lens table is
(layer + 1) x (k + 1) cells.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures.attention import COLORSCALE, token_axis, token_labels
from viz.figures.axes import shown


def levels(n: int) -> list[str]:
    """Names of `n` residual-stream levels, embeddings first: 'emb', 'L0', 'L1', ... (a hidden state is named
    by the layer it leaves; the app-wide convention of viz.core.names)."""
    return ["emb"] + [f"L{i}" for i in range(n - 1)]


def _pool_keys(rows: np.ndarray, tokens: list[str], max_keys: int) -> tuple[np.ndarray, list[str]]:
    """Mean-pool the key axis of `[..., key]` into at most `max_keys` bins, labelled by their first token."""
    n = rows.shape[-1]
    if n <= max_keys:
        return rows, list(tokens)
    starts = np.unique(np.linspace(0, n, max_keys + 1).astype(int))[:-1]
    sums = np.add.reduceat(rows, starts, axis=-1)
    sizes = np.diff(np.append(starts, n))
    return sums / sizes, [f"{tokens[s]}…" for s in starts]


def head_grid(rows: np.ndarray, tokens: list[str], title: str = "", max_keys: int = 160) -> go.Figure:
    """Every layer x head's attention from one query `[layer, head, key]` as one heatmap: a row per head,
    grouped by layer, a column per context token. Each row is scaled to its own maximum (the pattern,
    not its size, is what the eye compares); hover gives the real weight. A click anywhere on a row selects
    that head: heatmap cells cannot be selected in Streamlit, so invisible markers tile every cell (several per
    cell on a short context, whose cells are wide), each with `customdata = [layer, head, weight]`. One marker at
    the start of each row only made the leftmost column clickable."""
    L, H, _ = rows.shape
    w, keys = _pool_keys(np.asarray(rows, dtype=np.float32), tokens, max_keys)
    flat = w.reshape(L * H, -1)
    peak = flat.max(axis=1, keepdims=True)
    z = np.round(flat / np.where(peak > 0, peak, 1), 3)
    labels = token_labels(keys)
    heads = [f"L{i} H{j}" for i in range(L) for j in range(H)]
    who = np.array([[i, j] for i in range(L) for j in range(H)], dtype=np.float32)  # [row, 2]
    cells = np.concatenate([np.broadcast_to(who[:, None, :], flat.shape + (2,)), np.round(flat, 4)[..., None]], -1)
    K = flat.shape[1]
    per = int(min(6, max(1, np.ceil(40 / K))))  # markers per cell: ~40 across a row whatever the context
    offsets = (np.arange(per) + 0.5) / per - 0.5
    xs = (np.arange(K)[:, None] + offsets[None, :]).ravel()  # category axes take numeric positions
    px = np.broadcast_to(xs, (L * H, xs.size))
    py = np.broadcast_to(np.arange(L * H)[:, None], px.shape)
    pc = np.concatenate([np.repeat(cells, per, axis=1),  # [row, K * per, 4]: layer, head, weight, key position
                         np.broadcast_to(np.repeat(np.arange(K), per)[None, :, None], (L * H, K * per, 1))], -1)
    named = px.size <= 6000  # the key's token in the hover (one string per marker) while that stays small
    row_px = max(3, min(22, 900 // (L * H)))
    fig = go.Figure([
        go.Heatmap(z=z, x=labels, y=heads, colorscale=COLORSCALE, zmin=0, zmax=1, hoverinfo="skip",
                   colorbar=dict(title="share of<br>row max", thickness=12)),
        # on hidden linear axes laid over the heatmap's category axes (a number on a category axis is a new category)
        go.Scatter(x=px.ravel().astype(np.float32), y=py.ravel().astype(np.float32), mode="markers", name="heads",
                   xaxis="x2", yaxis="y2",
                   marker=dict(size=row_px + 2, symbol="square", color="rgba(0,0,0,0)"),
                   customdata=pc.reshape(-1, 4).astype(np.float32),
                   text=np.repeat(labels, per).tolist() * (L * H) if named else None,
                   hovertemplate="L%{customdata[0]} H%{customdata[1]} → "
                                 + ("%{text}" if named else "key %{customdata[3]}")
                                 + "<br>weight %{customdata[2]:.4f}<br>click to open this head<extra></extra>"),
    ])
    shapes = [dict(type="line", xref="paper", x0=0, x1=1, yref="y", y0=i * H - 0.5, y1=i * H - 0.5,
                   line=dict(color="white", width=2)) for i in range(1, L)]
    every = L * H <= 48
    xaxis = token_axis(keys)  # plotly thins the ticks to what fits; the labels read as the tokens
    fig.update_layout(
        title=dict(text=title, y=0.995, yanchor="top"), height=row_px * L * H + 180, shapes=shapes, showlegend=False,
        margin=dict(l=10, r=10, t=120, b=10), clickmode="event+select", dragmode=False,
        xaxis=dict(title="context (attended to)", side="top", **xaxis),
        yaxis=dict(autorange="reversed", type="category", tickmode="array", tickvals=heads if every else heads[::H],
                   ticktext=heads if every else [f"L{i}" for i in range(L)]),
        xaxis2=dict(overlaying="x", range=[-0.5, K - 0.5], visible=False, fixedrange=True),
        yaxis2=dict(overlaying="y", range=[L * H - 0.5, -0.5], visible=False, fixedrange=True))
    return fig


def lens_table(layer_top: list[list[tuple[str, float]]], chosen: str, rank: np.ndarray, prob: np.ndarray,
               title: str = "") -> go.Figure:
    """The logit lens as a table: rows = residual stream after each layer (embeddings first), columns = rank
    1..k (cell text the token, colour its probability), and a last column with the chosen token's rank and
    probability at that layer. Cells holding the chosen token are bold."""
    k = len(layer_top[0])
    n = len(layer_top)
    probs = np.array([[p for _, p in row] + [float(prob[i])] for i, row in enumerate(layer_top)], dtype=np.float32)
    text = [[f"<b>{shown([t])[0]}</b>" if t == chosen else shown([t])[0] for t, _ in row]
            + [f"<b>#{int(rank[i])}</b> · {float(prob[i]):.1%}"] for i, row in enumerate(layer_top)]
    cols = [f"#{j + 1}" for j in range(k)] + [f"'{shown([chosen])[0]}'"]
    ys = levels(n)
    fig = go.Figure(go.Heatmap(
        z=np.round(probs, 4), x=cols, y=ys, text=text, texttemplate="%{text}", textfont=dict(size=13),
        colorscale="Blues", zmin=0, zmax=max(float(probs.max()), 1e-3), colorbar=dict(title="prob", thickness=12),
        xgap=2, ygap=2, hovertemplate="%{y}, %{x}: %{text} (p %{z:.2%})<extra></extra>"))
    fig.update_layout(title=dict(text=title, y=0.99, yanchor="top"), height=120 + 36 * n,
                      margin=dict(l=10, r=10, t=80, b=10),
                      xaxis=dict(side="top", type="category"),
                      yaxis=dict(autorange="reversed", type="category", title="residual stream after"))
    return fig


def rank_map(ranks: np.ndarray, tokens: list[str], current: int | None = None, title: str = "") -> go.Figure:
    """Every generated token's lens rank `[step, layer + 1]` as a heatmap (steps across, layers down,
    colour log10 of the rank, 1 darkest): where in the depth each prediction forms. `current`: a step outlined."""
    ranks = np.asarray(ranks)
    S, n = ranks.shape
    xs = [f"{s}: {t}" for s, t in enumerate(shown(tokens))]
    ys = levels(n)
    fig = go.Figure(go.Heatmap(
        z=np.round(np.log10(ranks.T), 3), x=xs, y=ys, text=ranks.T, texttemplate="%{text}" if S * n <= 400 else None,
        colorscale="Blues", reversescale=True, zmin=0, zmax=max(1.0, float(np.log10(ranks.max()))), xgap=1, ygap=1,
        colorbar=dict(title="rank", thickness=12, tickvals=list(range(0, 7)), ticktext=["1", "10", "100", "1k", "10k",
                                                                                       "100k", "1M"]),
        hovertemplate="step %{x}<br>%{y}: rank %{text}<extra></extra>"))
    if current is not None:
        fig.add_shape(type="rect", xref="x", yref="paper", x0=current - 0.5, x1=current + 0.5, y0=0, y1=1,
                      line=dict(color="#F58518", width=3))
    fig.update_layout(title=title, height=130 + 30 * n, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis=dict(type="category", tickangle=-45 if S > 8 else 0, tickmode="array", tickvals=xs,
                                 ticktext=xs if S <= 40 else [x if i % max(1, S // 40) == 0 else "" for i, x in
                                                              enumerate(xs)]),
                      yaxis=dict(autorange="reversed", type="category", title="residual stream after"))
    return fig


def next_token_bars(top_k: list[tuple[str, float]], chosen: str, title: str = "") -> go.Figure:
    """The k most likely next tokens as horizontal bars, best on top, the chosen one in orange. The axis
    fits the largest probability (a real model's next-token probabilities are often a few percent)."""
    toks = [t for t, _ in top_k][::-1]
    probs = [round(float(p), 4) for _, p in top_k][::-1]
    colors = ["#F58518" if t == chosen else "#9ecae1" for t in toks]
    fig = go.Figure(go.Bar(y=token_labels(toks), x=probs, orientation="h", marker_color=colors,
                           text=[f"{p:.1%}" for p in probs], textposition="auto",
                           hovertemplate="%{y}<br>p = %{x:.4f}<extra></extra>"))
    fig.update_layout(title=title, height=max(240, 34 * len(toks) + 90), margin=dict(l=10, r=10, t=50, b=10),
                      xaxis=dict(title="probability", tickformat=".0%", range=[0, max(probs + [1e-3]) * 1.15]),
                      yaxis=dict(type="category", tickmode="array", tickvals=token_labels(toks),
                                 ticktext=[shown([t])[0] for t in toks]))
    return fig
