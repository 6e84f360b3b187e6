"""Attention figures: arrays + tokens in, plotly Figure out (never a model).

Sizes are kept screen-sized (ARCHITECTURE.md §6): a single head is sent as
float32; the model view (every layer x head) is pooled to small thumbnails and
sent as one uint8 image, so 12 x 12 heads at 512 tokens stay well under 1 MB of
JSON where bertviz sends every weight.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

COLORSCALE = "Blues"


def escape(token: str) -> str:
    """Plotly renders text as pseudo-HTML: `<s>` starts a strike-through and `</s>` vanishes. Escape it."""
    return token.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def token_labels(tokens: list[str]) -> list[str]:
    """Unique category labels ('the (3)'): repeated tokens would otherwise merge on a categorical axis."""
    return [f"{escape(t)} ({i})" for i, t in enumerate(tokens)]


def token_axis(tokens: list[str], max_labels: int = 80) -> dict:
    labels = token_labels(tokens)
    step = max(1, int(np.ceil(len(tokens) / max_labels)))
    return dict(type="category", tickmode="array", tickvals=labels[::step],
                ticktext=[escape(t) for t in tokens[::step]],
                tickangle=-60 if len(tokens) > 8 else 0)


def head_heatmap(matrix: np.ndarray, q_tokens: list[str], k_tokens: list[str], title: str = "",
                 zmax: float | None = None) -> go.Figure:
    """One attention matrix `[query, key]` as a heatmap: rows are the attending token."""
    z = np.asarray(matrix, dtype=np.float32)
    nq, nk = z.shape
    fig = go.Figure(go.Heatmap(
        z=z, x=token_labels(k_tokens), y=token_labels(q_tokens), colorscale=COLORSCALE, zmin=0,
        zmax=zmax or float(z.max() or 1), colorbar=dict(title="weight", thickness=12),
        hovertemplate="%{y} → %{x}<br>weight %{z:.3f}<extra></extra>"))
    side = min(900, max(360, 22 * max(nq, nk) + 160))
    fig.update_layout(title=dict(text=title, y=0.995, yanchor="top"), height=side + 60,
                      margin=dict(l=10, r=10, t=110, b=10),
                      xaxis=dict(title="attended to (key)", side="top", **token_axis(k_tokens)),
                      yaxis=dict(title="attending (query)", autorange="reversed", **token_axis(q_tokens)))
    return fig


def pool(attn: np.ndarray, size: int) -> np.ndarray:
    """Mean-pool the last two axes of `[..., q, k]` down to at most `size` x `size`."""
    def bins(n: int) -> np.ndarray:
        return np.unique(np.linspace(0, n, min(n, size) + 1).astype(int))[:-1]

    q_b, k_b = bins(attn.shape[-2]), bins(attn.shape[-1])
    summed = np.add.reduceat(np.add.reduceat(attn, k_b, axis=-1), q_b, axis=-2)
    q_n = np.diff(np.append(q_b, attn.shape[-2]))
    k_n = np.diff(np.append(k_b, attn.shape[-1]))
    return summed / np.outer(q_n, k_n)


def model_view(attn: np.ndarray, tile: int = 40, title: str = "", kv_heads: np.ndarray | None = None,
               first_share: np.ndarray | None = None) -> go.Figure:
    """All layers x heads at a glance: `[layer, head, q, k]` -> one uint8 image of thumbnails.

    `attn` may already be pooled (a capture's `thumbnails`): pooling to `tile` leaves it as it is.
    Each thumbnail is scaled to its own maximum (patterns, not magnitudes, are what the eye
    compares across heads). Query heads that share a key/value head (`kv_heads[h]`, grouped-query
    attention) sit together, a wider gap between groups. An invisible marker sits on every
    thumbnail: hover names it (and its share of attention on the first token, `first_share
    [layer, head]`) and a click selects it (`customdata = [layer, head, share]`).
    """
    L, H = attn.shape[:2]
    small = pool(attn, tile)
    tq, tk = small.shape[-2:]
    peak = small.max(axis=(-2, -1), keepdims=True)
    small = np.round(255 * small / np.where(peak > 0, peak, 1)).astype(np.uint8)
    groups = np.zeros(H, dtype=int) if kv_heads is None else np.asarray(kv_heads)
    grouped = len(set(groups.tolist())) < H if kv_heads is not None else False
    gap, group_gap = 2, (8 if grouped else 2)
    x0 = np.cumsum([0] + [tk + (group_gap if groups[h + 1] != groups[h] else gap) for h in range(H - 1)])
    img = np.zeros((L * (tq + gap), int(x0[-1]) + tk), dtype=np.uint8)
    for layer in range(L):
        for head in range(H):
            y, x = layer * (tq + gap), int(x0[head])
            img[y:y + tq, x:x + tk] = small[layer, head]
    cy = (np.arange(L) * (tq + gap) + tq / 2)
    cx = x0 + tk / 2
    gy, gx = np.meshgrid(cy, cx, indexing="ij")
    ll, hh = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    cells = [ll.ravel(), hh.ravel()] + ([] if first_share is None else [np.round(np.ravel(first_share), 3)])
    width = min(1300, max(500, 90 * H + 80))
    marker = max(6, int((width - 80) / H * 0.9))
    ticktext = [f"H{h}" + (f"<br>kv{groups[h]}" if grouped and (h == 0 or groups[h] != groups[h - 1]) else "")
                for h in range(H)]
    hover = "layer %{customdata[0]}, head %{customdata[1]}"
    if grouped:
        hover += f"<br>shares its keys and values with {H // len(set(groups.tolist())) - 1} other heads"
    if first_share is not None:
        hover += "<br>share on the first token %{customdata[2]:.2f}"
    fig = go.Figure([
        go.Heatmap(z=img, colorscale=COLORSCALE, showscale=False, hoverinfo="skip", zmin=0, zmax=255),
        go.Scatter(x=gx.ravel(), y=gy.ravel(), mode="markers", name="heads",
                   marker=dict(size=marker, symbol="square", color="rgba(0,0,0,0)"),
                   customdata=np.stack(cells, axis=1),
                   hovertemplate=hover + "<br>click to open<extra></extra>"),
    ])
    fig.update_layout(
        title=title, width=width, height=int(width * img.shape[0] / img.shape[1]) + 80 + 14 * grouped,
        showlegend=False, margin=dict(l=10, r=10, t=60 + 14 * grouped, b=10), clickmode="event+select",
        dragmode=False,
        xaxis=dict(tickmode="array", tickvals=cx, ticktext=ticktext, side="top", showgrid=False, zeroline=False),
        yaxis=dict(tickmode="array", tickvals=cy, ticktext=[f"L{layer}" for layer in range(L)],
                   autorange="reversed", showgrid=False, zeroline=False, scaleanchor="x"),
    )
    return fig


def sink_heatmap(first_share: np.ndarray, layers: list[int] | None = None, title: str = "") -> go.Figure:
    """Each head's mean share of attention on the first token ("attention sink", Xiao et al. 2023,
    StreamingLLM), `[layer, head]`, as a layer x head grid with the values written in."""
    share = np.asarray(first_share, dtype=np.float32)
    L, H = share.shape
    layers = list(range(L)) if layers is None else list(layers)
    fig = go.Figure(go.Heatmap(
        z=share, x=[f"H{h}" for h in range(H)], y=[f"L{layer}" for layer in layers], zmin=0, zmax=1,
        colorscale="Oranges", text=np.round(share, 2), texttemplate="%{text:.2f}" if H <= 16 else None,
        colorbar=dict(title="share", thickness=12, tickformat=".0%"),
        hovertemplate="%{y} %{x}: %{z:.1%} of each row on the first token<extra></extra>"))
    fig.update_layout(title=title, height=max(220, 28 * L + 110), margin=dict(l=10, r=10, t=50, b=10),
                      yaxis=dict(autorange="reversed", type="category"), xaxis=dict(type="category", side="top"))
    return fig


def figure_json_bytes(fig: go.Figure) -> int:
    """Size of what the browser receives for this figure."""
    return len(fig.to_json().encode())
