"""Attention figures: arrays + tokens in, plotly Figure out (never a model).

Sizes are kept screen-sized (ARCHITECTURE.md §6): a single head is sent as
float32; the model view (every layer x head) is pooled to small thumbnails and
sent as one uint8 image, so 12 x 12 heads at 512 tokens stay well under 1 MB of
JSON where bertviz sends every weight.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

# escape, token_axis and token_labels lived here first: re-exported for callers that import them from here
from viz.figures.axes import TITLE_MARGIN, colorbar, escape, title as _title, token_axis, token_labels  # noqa: F401
from viz.names import head as head_name, layer as layer_name

COLORSCALE = "Blues"


def heatmap_height(n_rows: int, n_cols: int) -> int:
    """Height of a token x token heatmap: ~square cells on a half-page column, within [420, 960] px."""
    return min(960, max(420, 22 * max(n_rows, n_cols) + 200))


def head_heatmap(matrix: np.ndarray, q_tokens: list[str], k_tokens: list[str], title: str = "",
                 zmax: float | None = None, x_title: str = "attended to (key)", y_title: str = "attending (query)",
                 value: str = "weight", zmin: float | None = 0.0, colorscale: str = COLORSCALE) -> go.Figure:
    """One matrix `[row, column]` over tokens as a heatmap (attention: rows attend, columns are attended to).
    `x_title`, `y_title` and `value` name the axes and the colour bar for what the matrix holds."""
    z = np.asarray(matrix, dtype=np.float32)
    nq, nk = z.shape
    if zmax is None and zmin == 0:
        zmax = float(z.max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=token_labels(k_tokens), y=token_labels(q_tokens), colorscale=colorscale, zmin=zmin, zmax=zmax,
        colorbar=colorbar(value),
        hovertemplate=f"%{{y}} → %{{x}}<br>{value} %{{z:.3f}}<extra></extra>"))
    fig.update_layout(title=_title(title), height=heatmap_height(nq, nk), margin=dict(l=10, r=10, t=TITLE_MARGIN, b=10),
                      xaxis=token_axis(k_tokens, title=x_title),
                      yaxis=token_axis(q_tokens, title=dict(text=y_title, standoff=2), autorange="reversed"))
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


def model_view(attn: np.ndarray, tile: int = 40, title: str = "",
               selected: tuple[int, int] | None = None) -> go.Figure:
    """All layers x heads at a glance: `[layer, head, q, k]` -> one uint8 image of thumbnails.

    Each thumbnail is scaled to its own maximum (patterns, not magnitudes, are what the eye
    compares across heads). An invisible marker sits on every thumbnail: hover names it and a
    click selects it (`customdata = [layer, head]`). `selected` (layer, head) is framed.
    The image fills the plot area (no locked aspect ratio: a locked one left a gap as wide as the
    container's spare width between the labels and the thumbnails).
    """
    L, H = attn.shape[:2]
    small = pool(attn, tile)
    tq, tk = small.shape[-2:]
    peak = small.max(axis=(-2, -1), keepdims=True)
    small = np.round(255 * small / np.where(peak > 0, peak, 1)).astype(np.uint8)
    gap = 2
    img = np.zeros((L * (tq + gap) - gap, H * (tk + gap) - gap), dtype=np.uint8)
    for li in range(L):
        for h in range(H):
            y, x = li * (tq + gap), h * (tk + gap)
            img[y:y + tq, x:x + tk] = small[li, h]
    cy = (np.arange(L) * (tq + gap) + (tq - 1) / 2)
    cx = (np.arange(H) * (tk + gap) + (tk - 1) / 2)
    gy, gx = np.meshgrid(cy, cx, indexing="ij")
    ll, hh = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    cell = min(90, max(40, 1000 // H))  # thumbnail height: about square on a full-width page
    fig = go.Figure([
        go.Heatmap(z=img, colorscale=COLORSCALE, showscale=False, hoverinfo="skip", zmin=0, zmax=255),
        go.Scatter(x=gx.ravel(), y=gy.ravel(), mode="markers", name="heads",
                   marker=dict(size=max(6, min(60, cell - 8)), symbol="square", color="rgba(0,0,0,0)"),
                   customdata=np.stack([ll.ravel(), hh.ravel()], axis=1),
                   hovertemplate="L%{customdata[0]} H%{customdata[1]}<br>click to open<extra></extra>"),
    ])
    if selected is not None and 0 <= selected[0] < L and 0 <= selected[1] < H:
        y0, x0 = selected[0] * (tq + gap), selected[1] * (tk + gap)
        fig.add_shape(type="rect", x0=x0 - 0.5, x1=x0 + tk - 0.5, y0=y0 - 0.5, y1=y0 + tq - 0.5,
                      line=dict(color="#e4572e", width=3))
    fig.update_layout(
        title=_title(title), height=L * cell + 40 + (TITLE_MARGIN if title else 0), showlegend=False,
        margin=dict(l=10, r=10, t=(TITLE_MARGIN if title else 0) + 30, b=10), clickmode="event+select",
        dragmode=False,
        xaxis=dict(tickmode="array", tickvals=cx, ticktext=[head_name(h) for h in range(H)], side="top",
                   showgrid=False, zeroline=False, range=[-0.5, img.shape[1] - 0.5], automargin=True),
        yaxis=dict(tickmode="array", tickvals=cy, ticktext=[layer_name(li) for li in range(L)],
                   range=[img.shape[0] - 0.5, -0.5], showgrid=False, zeroline=False, automargin=True),
    )
    return fig


def figure_json_bytes(fig: go.Figure) -> int:
    """Size of what the browser receives for this figure."""
    return len(fig.to_json().encode())
