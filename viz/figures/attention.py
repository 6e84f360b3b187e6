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
from viz.figures.axes import colorscale as named_scale, figure
from viz.core.names import head as head_name, layer as layer_name

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
    return figure([dict(
        type="heatmap", z=z, x=token_labels(k_tokens), y=token_labels(q_tokens), zmin=zmin, zmax=zmax,
        colorscale=named_scale(colorscale) if isinstance(colorscale, str) else colorscale, colorbar=colorbar(value),
        hovertemplate=f"%{{y}} → %{{x}}<br>{value} %{{z:.3f}}<extra></extra>")],
        dict(title=_title(title), height=heatmap_height(nq, nk), margin=dict(l=10, r=10, t=TITLE_MARGIN, b=10),
             xaxis=token_axis(k_tokens, title=x_title),
             yaxis=token_axis(q_tokens, title=dict(text=y_title, standoff=2), autorange="reversed")))


def pool(attn: np.ndarray, size: int) -> np.ndarray:
    """Mean-pool the last two axes of `[..., q, k]` down to at most `size` x `size`."""
    def bins(n: int) -> np.ndarray:
        return np.unique(np.linspace(0, n, min(n, size) + 1).astype(int))[:-1]

    q_b, k_b = bins(attn.shape[-2]), bins(attn.shape[-1])
    summed = np.add.reduceat(np.add.reduceat(attn, k_b, axis=-1), q_b, axis=-2)
    q_n = np.diff(np.append(q_b, attn.shape[-2]))
    k_n = np.diff(np.append(k_b, attn.shape[-1]))
    return summed / np.outer(q_n, k_n)


def model_view(attn: np.ndarray, tile: int = 40, title: str = "", selected: tuple[int, int] | None = None,
               kv_heads: np.ndarray | None = None, first_share: np.ndarray | None = None) -> go.Figure:
    """All layers x heads at a glance: `[layer, head, q, k]` -> one image of thumbnails (a PNG, `png_uri`).

    `attn` may already be pooled (a capture's `thumbnails`): pooling to `tile` leaves it as it is.
    Each thumbnail is scaled to its own maximum (patterns, not magnitudes, are what the eye
    compares across heads). Query heads that share a key/value head (`kv_heads[h]`, grouped-query
    attention) sit together, a wider gap between groups. An invisible marker sits on every
    thumbnail: hover names it (and its share of attention on the first token, `first_share
    [layer, head]`) and a click selects it (`customdata = [layer, head(, share)]`). `selected`
    (layer, head) is framed. The image fills the plot area (no locked aspect ratio: a locked one left
    a gap as wide as the container's spare width between the labels and the thumbnails).
    """
    L, H = attn.shape[:2]
    small = pool(attn, tile)
    tq, tk = small.shape[-2:]
    peak = small.max(axis=(-2, -1), keepdims=True)
    small = np.round(255 * small / np.where(peak > 0, peak, 1)).astype(np.uint8)
    groups = np.zeros(H, dtype=int) if kv_heads is None else np.asarray(kv_heads)
    grouped = kv_heads is not None and len(set(groups.tolist())) < H
    gap, group_gap = 2, (8 if grouped else 2)
    x0 = np.cumsum([0] + [tk + (group_gap if groups[h + 1] != groups[h] else gap) for h in range(H - 1)])
    img = np.zeros((L * (tq + gap) - gap, int(x0[-1]) + tk), dtype=np.uint8)
    for li in range(L):
        for h in range(H):
            y, x = li * (tq + gap), int(x0[h])
            img[y:y + tq, x:x + tk] = small[li, h]
    cy = (np.arange(L) * (tq + gap) + (tq - 1) / 2)
    cx = x0 + (tk - 1) / 2
    gy, gx = np.meshgrid(cy, cx, indexing="ij")
    ll, hh = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    cells = [ll.ravel(), hh.ravel()] + ([] if first_share is None else [np.round(np.ravel(first_share), 3)])
    cell = min(90, max(40, 1000 // H))  # thumbnail height: about square on a full-width page
    ticktext = [head_name(h) + (f"<br>kv{groups[h]}" if grouped and (h == 0 or groups[h] != groups[h - 1]) else "")
                for h in range(H)]
    hover = "L%{customdata[0]} H%{customdata[1]}"
    if grouped:
        hover += f"<br>shares its keys and values with {H // len(set(groups.tolist())) - 1} other heads"
    if first_share is not None:
        hover += "<br>share on the first token %{customdata[2]:.2f}"
    shapes = []
    if selected is not None and 0 <= selected[0] < L and 0 <= selected[1] < H:
        y0, left = selected[0] * (tq + gap), int(x0[selected[1]])
        shapes.append(dict(type="rect", x0=left - 0.5, x1=left + tk - 0.5, y0=y0 - 0.5, y1=y0 + tq - 0.5,
                           line=dict(color="#e4572e", width=3)))
    top = (TITLE_MARGIN if title else 0) + 30 + 14 * grouped
    return figure([
        dict(type="image", source=png_uri(img), x0=0, dx=1, y0=0, dy=1, hoverinfo="skip", name="thumbnails",
             meta=[int(img.shape[0]), int(img.shape[1]), int(img.sum(dtype=np.int64))]),  # a checksum
        dict(type="scatter", x=gx.ravel(), y=gy.ravel(), mode="markers", name="heads",
             marker=dict(size=max(6, min(60, cell - 8)), symbol="square", color="rgba(0,0,0,0)"),
             customdata=np.stack(cells, axis=1), hovertemplate=hover + "<br>click to open<extra></extra>"),
    ], dict(
        title=_title(title), height=L * cell + 40 + top - 30, showlegend=False, shapes=shapes,
        margin=dict(l=10, r=10, t=top, b=10), clickmode="event+select", dragmode=False,
        xaxis=dict(tickmode="array", tickvals=cx, ticktext=ticktext, side="top",
                   showgrid=False, zeroline=False, range=[-0.5, img.shape[1] - 0.5], automargin=True),
        yaxis=dict(tickmode="array", tickvals=cy, ticktext=[layer_name(li) for li in range(L)],
                   range=[img.shape[0] - 0.5, -0.5], showgrid=False, zeroline=False, automargin=True,
                   scaleanchor=False),  # an image trace locks square pixels unless told not to
    ))


def _lut(colorscale: str) -> np.ndarray:
    """[256, 3] uint8: `colorscale` sampled at 0, 1/255, ..., 1 (what a heatmap with zmin 0, zmax 255 shows)."""
    from plotly.colors import sample_colorscale, unlabel_rgb

    return np.array([unlabel_rgb(c) for c in sample_colorscale(colorscale, 256)]).round().astype(np.uint8)


LUT = _lut(COLORSCALE)


def png_uri(img: np.ndarray) -> str:
    """[rows, cols] uint8 -> a PNG data URI in COLORSCALE. The model view ships as a PNG: as a heatmap of
    ~250k cells its JSON was ~1 MB and drawing it was half of what the browser spent on a submit
    (bench/bench_load.py); the PNG is tens of kB and the browser decodes it natively."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    # a palette PNG (one byte a pixel, the colour scale as its palette): the same pixels as an RGB one, half the
    # bytes, and a quarter of the encoding time (14 -> 3 ms for 12 x 6 heads at 22 tokens)
    im = Image.frombytes("P", (img.shape[1], img.shape[0]), np.ascontiguousarray(img, dtype=np.uint8).tobytes())
    im.putpalette(LUT.tobytes())
    im.save(buf, format="PNG", optimize=False, compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def png_pixels(uri: str) -> np.ndarray:
    """A PNG data URI (png_uri's) -> [rows, cols, 3] uint8: what the browser draws (tests and the bench)."""
    import base64
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def sink_heatmap(first_share: np.ndarray, layers: list[int] | None = None, title: str = "") -> go.Figure:
    """Each head's mean share of attention on the first token ("attention sink", Xiao et al. 2023,
    StreamingLLM), `[layer, head]`, as a layer x head grid with the values written in."""
    share = np.asarray(first_share, dtype=np.float32)
    L, H = share.shape
    layers = list(range(L)) if layers is None else list(layers)
    return figure([dict(
        type="heatmap", z=share, x=[head_name(h) for h in range(H)], y=[layer_name(li) for li in layers], zmin=0,
        zmax=1, colorscale=named_scale("Oranges"), text=np.round(share, 2),
        texttemplate="%{text:.2f}" if H <= 16 else None,
        colorbar=colorbar("share on the first token", tickformat=".0%"),
        hovertemplate="%{y} %{x}: %{z:.1%} of each row on the first token<extra></extra>")],
        dict(title=_title(title), height=max(220, 28 * L + 110),
             margin=dict(l=10, r=10, t=(TITLE_MARGIN if title else 0) + 30, b=10),
             yaxis=dict(autorange="reversed", type="category"), xaxis=dict(type="category", side="top")))


def figure_json_bytes(fig: go.Figure) -> int:
    """Size of what the browser receives for this figure."""
    return len(fig.to_json().encode())
