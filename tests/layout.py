"""Layout checks on the Plotly charts a real Chromium has drawn (used by the browser tests).

`measure(page)` reads, for every visible chart, the rectangles the browser actually laid out: the
container, each subplot's plot area, each heatmap or image trace's image, every tick label (as the four corners of
its rotated box), the chart title and the axis titles. `problems(charts)` turns them into readable
complaints; an empty list means the page reads. What counts as broken, and why:

- a plot area under MIN_WIDTH_FRACTION of its container's width (a grid collapsed into a corner, a
  heatmap squeezed by its labels) or under MIN_PLOT_HEIGHT px tall, or a chart taller than MAX_HEIGHT;
- a heatmap image that fills less than MIN_FILL of its own subplot (a square-locked image leaving a gap);
- text in heatmap cells shrunk under MIN_CELL_FONT px to fit (a top-20 table of tokens read as dashes);
- two tick labels of one axis whose (rotated) boxes overlap;
- an axis title or a tick label that overlaps the chart title;
- a tick label drawn empty where its text is not (Plotly eats `</s>` as markup);
- two ticks of one numeric axis that read the same ("0%", "0%": the format is too coarse);
- a title, axis title or tick label that runs past the chart's edge (the SVG cuts it off);
- an annotation (a subplot title, a note) that overlaps a tick label, or is drawn across or within
  LINE_CLEARANCE px of a thin line (a marker line such as "induction ≥ 0.5 at step 140" written against its own
  line);
- a tick label drawn over a plot area (a subplot's labels over the heatmap to its left);
- two text labels of a scatter (PCA paths' token names) that overlap.

`draw_figure(page, fig)` draws one figure alone in the browser (plotly.js, no server) for these checks; `ink(page,
box)` is the share of a box Chromium painted (a view painted solid reads as nothing).
"""

from __future__ import annotations

import re

MIN_WIDTH_FRACTION = 0.6
MIN_PLOT_HEIGHT = 80
MAX_HEIGHT = 2200
MIN_FILL = 0.8
MIN_CELL_FONT = 8  # px: plotly shrinks text in heatmap cells to fit them; below this it reads as dashes
LINE_CLEARANCE = 4  # px an annotation keeps from a thin line: a note touching its line reads as crossed out
OVERLAP_PX = 1.0  # boxes may touch; anti-aliasing and glyph side bearings are not overlaps

_MEASURE = """() => {
  const rect = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; };
  const corners = t => {  // the text's own box, rotated as drawn, in page pixels
    const b = t.getBBox(), m = t.getScreenCTM(), svg = t.ownerSVGElement;
    return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]].map(([x, y]) => {
      const p = svg.createSVGPoint(); p.x = x; p.y = y; const q = p.matrixTransform(m); return [q.x, q.y]; });
  };
  const visible = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  return [...document.querySelectorAll('[data-testid="stPlotlyChart"]')].filter(visible).map(c => {
    const title = c.querySelector('.gtitle');
    const axes = {};
    c.querySelectorAll('g.xtick > text, g.ytick > text').forEach(t => {
      const g = t.parentNode, layer = g.parentNode;
      const sub = layer.closest('g.subplot, g.overaxes-above > g, g[class*="overaxes"]');
      const key = (sub ? sub.getAttribute('class') : '') + '/' + layer.getAttribute('class') + '/' + g.getAttribute('class');
      (axes[key] = axes[key] || []).push({text: t.textContent, raw: t.getAttribute('data-unformatted') || '',
                                          corners: corners(t)});
    });
    return {
      title: title ? title.textContent : '',
      container: rect(c),
      plots: [...c.querySelectorAll('.draglayer .nsewdrag')].map(rect),
      images: [...c.querySelectorAll('.heatmaplayer image, .imagelayer image')].map(rect),
      cell_fonts: [...c.querySelectorAll('.heatmaplayer text')].filter(t => t.textContent)
        .map(t => parseFloat(getComputedStyle(t).fontSize)),
      title_box: title && title.textContent ? rect(title) : null,
      axis_titles: [...c.querySelectorAll('.g-xtitle text, .g-ytitle text, [class^="g-x"][class$="title"] text, [class^="g-y"][class$="title"] text')]
        .filter(t => t.textContent).map(t => ({text: t.textContent, box: rect(t)})),
      annotations: [...c.querySelectorAll('g.annotation text.annotation-text')]
        .filter(t => t.textContent && visible(t)).map(t => ({text: t.textContent, box: rect(t)})),
      lines: [...c.querySelectorAll('.shapelayer path')].map(rect)
        .filter(r => (r[2] <= 3 && r[3] >= 20) || (r[3] <= 3 && r[2] >= 20)),
      point_texts: [...c.querySelectorAll('.scatterlayer .textpoint text')]
        .filter(t => t.textContent && visible(t)).map(t => ({text: t.textContent, box: rect(t)})),
      axes: Object.entries(axes).map(([k, ticks]) => ({key: k, ticks})),
    };
  });
}"""


def measure(page) -> list[dict]:
    """Every visible chart's geometry as drawn (see module docstring)."""
    return page.evaluate(_MEASURE)


# ----------------------------------------------------------------------------- geometry
def _overlap_1d(a: list[float], b: list[float]) -> float:
    return min(max(a), max(b)) - max(min(a), min(b))


def _height(c: list) -> float:
    """A text box's own height (corner 0 to corner 3), whatever its rotation."""
    (x0, y0), (x3, y3) = c[0], c[3]
    return ((x3 - x0) ** 2 + (y3 - y0) ** 2) ** 0.5


def _separated(p: list, q: list) -> bool:
    """Separating-axis test for two convex quadrilaterals (tick boxes, possibly rotated). A text box is the
    font's line box, about 1.3 em tall: neighbours whose boxes overlap by less than a fifth of that still
    have a full em between their baselines, and their glyphs do not touch."""
    slack = max(OVERLAP_PX, 0.2 * min(_height(p), _height(q)))
    for poly in (p, q):
        for i in range(4):
            (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % 4]
            nx, ny = y2 - y1, x1 - x2
            n = (nx * nx + ny * ny) ** 0.5 or 1.0
            pa = [(x * nx + y * ny) / n for x, y in p]
            pb = [(x * nx + y * ny) / n for x, y in q]
            if _overlap_1d(pa, pb) <= slack:
                return True
    return False


def _box_overlap(a: list[float], b: list[float]) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return (min(ax + aw, bx + bw) - max(ax, bx) > OVERLAP_PX) and (min(ay + ah, by + bh) - max(ay, by) > OVERLAP_PX)


def _corners_box(c: list) -> list[float]:
    xs, ys = [p[0] for p in c], [p[1] for p in c]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _outside(box: list[float], container: list[float]) -> bool:
    x, y, w, h = box
    cx, cy, cw, ch = container
    return x < cx - OVERLAP_PX or y < cy - OVERLAP_PX or x + w > cx + cw + OVERLAP_PX or y + h > cy + ch + OVERLAP_PX


def _union(rects: list[list[float]]) -> list[float]:
    x0 = min(r[0] for r in rects)
    y0 = min(r[1] for r in rects)
    x1 = max(r[0] + r[2] for r in rects)
    y1 = max(r[1] + r[3] for r in rects)
    return [x0, y0, x1 - x0, y1 - y0]


_NUMBER = re.compile(r"^[−\-+]?[\d.,]+(e[−\-+]?\d+)?[%kMGμmn]?$")


def _numeric(texts: list[str]) -> bool:
    return bool(texts) and all(_NUMBER.match(t.strip()) for t in texts)


# ----------------------------------------------------------------------------- checks
def problems(charts: list[dict]) -> list[str]:
    """Readable complaints about the measured charts; [] when every chart reads."""
    out = []
    for i, c in enumerate(charts):
        name = f"chart {i} '{c['title'][:60]}'"
        cw = c["container"][2]
        if c["plots"]:
            plot = _union(c["plots"])
            if plot[2] < MIN_WIDTH_FRACTION * cw:
                out.append(f"{name}: plot area {plot[2]:.0f} px wide in a {cw:.0f} px container")
            if min(p[3] for p in c["plots"]) < MIN_PLOT_HEIGHT:
                out.append(f"{name}: a plot area is {min(p[3] for p in c['plots']):.0f} px tall")
        if c["container"][3] > MAX_HEIGHT:
            out.append(f"{name}: {c['container'][3]:.0f} px tall")
        for img in c["images"]:
            home = [p for p in c["plots"] if _box_overlap(p, img)]
            if home:
                p = max(home, key=lambda r: r[2] * r[3])
                if img[2] < MIN_FILL * p[2] or img[3] < MIN_FILL * p[3]:
                    out.append(f"{name}: heatmap {img[2]:.0f}x{img[3]:.0f} px in a {p[2]:.0f}x{p[3]:.0f} px plot area")
        if c.get("cell_fonts") and min(c["cell_fonts"]) < MIN_CELL_FONT:
            out.append(f"{name}: text in heatmap cells shrunk to {min(c['cell_fonts']):.1f} px")
        for axis in c["axes"]:
            ticks = axis["ticks"]
            for t in ticks:
                if not t["text"].strip() and t["raw"].strip():
                    out.append(f"{name}: tick '{t['raw']}' is drawn empty")
            texts = [t["text"] for t in ticks if t["text"].strip()]
            if _numeric(texts) and len(set(texts)) < len(texts):
                out.append(f"{name}: numeric ticks repeat: {texts}")
            clashes = [(a["text"], b["text"]) for j, a in enumerate(ticks) for b in ticks[j + 1:]
                       if a["text"].strip() and b["text"].strip() and not _separated(a["corners"], b["corners"])]
            if clashes:
                out.append(f"{name}: {len(clashes)} overlapping tick labels, e.g. {clashes[:3]}")
            if c["title_box"]:
                hit = [t["text"] for t in ticks if t["text"].strip()
                       and _box_overlap(_corners_box(t["corners"]), c["title_box"])]
                if hit:
                    out.append(f"{name}: tick labels {hit[:3]} overlap the chart title")
        if c["title_box"]:
            for t in c["axis_titles"]:
                if _box_overlap(t["box"], c["title_box"]):
                    out.append(f"{name}: axis title '{t['text']}' overlaps the chart title")
        ticks = [t for a in c["axes"] for t in a["ticks"] if t["text"].strip()]
        for a in c.get("annotations", []):
            hit = [t["text"] for t in ticks if _box_overlap(_corners_box(t["corners"]), a["box"])]
            if hit:
                out.append(f"{name}: annotation '{a['text'][:40]}' overlaps tick labels {hit[:3]}")
            if any(_box_overlap(a["box"], [ln[0] - LINE_CLEARANCE, ln[1] - LINE_CLEARANCE, ln[2] + 2 * LINE_CLEARANCE,
                                           ln[3] + 2 * LINE_CLEARANCE]) for ln in c.get("lines", [])):
                out.append(f"{name}: annotation '{a['text'][:40]}' is drawn across (or against) a line")
        plots = [[[p[0], p[1]], [p[0] + p[2], p[1]], [p[0] + p[2], p[1] + p[3]], [p[0], p[1] + p[3]]] for p in c["plots"]]
        over = [t["text"] for t in ticks if any(not _separated(t["corners"], q) for q in plots)]
        if over:
            out.append(f"{name}: tick labels {over[:3]} drawn over a plot area (a neighbouring subplot's)")
        pts = c.get("point_texts", [])
        clashes = [(p["text"], q["text"]) for j, p in enumerate(pts) for q in pts[j + 1:] if _box_overlap(p["box"], q["box"])]
        if clashes:
            out.append(f"{name}: {len(clashes)} overlapping point labels, e.g. {clashes[:3]}")
        texts = ([("title", c["title"], c["title_box"])] if c["title_box"] else []) + \
            [("axis title", t["text"], t["box"]) for t in c["axis_titles"]] + \
            [("tick", t["text"], _corners_box(t["corners"])) for a in c["axes"] for t in a["ticks"] if t["text"].strip()]
        for what, text, box in texts:
            if _outside(box, c["container"]):
                out.append(f"{name}: {what} '{text[:40]}' runs past the chart's edge")
    return out


# ----------------------------------------------------------------------------- waiting
_BUSY = """() => !document.querySelector('[data-testid="stApp"][data-test-script-state="notRunning"]')
             || !!document.querySelector('[data-testid="stStatusWidgetRunningIcon"], [data-stale="true"], '
             + '.stSpinner, [data-testid="stSpinner"], [data-testid="stSkeleton"]')
             || [...document.querySelectorAll('[data-testid="stPlotlyChart"]')].some(c =>
                  c.getBoundingClientRect().width > 0 && !c.querySelector('.main-svg .cartesianlayer'))"""


def settle(page, timeout_ms: int = 180_000, quiet_ms: int = 800) -> None:
    """Wait until the app has finished its rerun: its script state is notRunning, no running icon, no stale
    or skeleton elements, no spinner, every visible chart drawn, for `quiet_ms` in a row (a rerun can start a
    moment after the input that caused it). Charts drawn by then are measured as they will stay. One condition
    polled in the page (the quiet stretch is timed there): no fixed sleep."""
    page.evaluate("() => { window.__settleSince = null; }")
    page.wait_for_function(f"""(ms) => {{
        if (({_BUSY})()) {{ window.__settleSince = null; return false; }}
        const now = performance.now();
        if (window.__settleSince == null) window.__settleSince = now;
        return now - window.__settleSince >= ms;
    }}""", arg=quiet_ms, timeout=timeout_ms, polling=100)


def tables_with_hidden_rows(page) -> int:
    """How many visible tables scroll vertically: rows hidden below the fold of their box."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
        .filter(t => t.getBoundingClientRect().height > 0)
        .filter(t => [...t.querySelectorAll('.dvn-scroller')].some(s => s.scrollHeight > s.clientHeight + 2)).length""")


def cut_texts(page) -> list[str]:
    """Texts in the main area that CSS cuts with an ellipsis (a widget label too long for its column)."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="stMain"] *')]
        .filter(e => e.children.length === 0 && e.textContent.trim() && e.getBoundingClientRect().width > 0)
        .filter(e => { for (let n = e; n && n.dataset?.testid !== 'stMain'; n = n.parentElement) {
                          const s = getComputedStyle(n);
                          if (s.textOverflow === 'ellipsis' && n.scrollWidth > n.clientWidth + 1) return true; }
                        return false; })
        .map(e => e.textContent.trim())""")


def tables_scrolling_sideways(page) -> int:
    """How many visible tables scroll horizontally: columns hidden beyond their box's right edge."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
        .filter(t => t.getBoundingClientRect().height > 0)
        .filter(t => [...t.querySelectorAll('.dvn-scroller')].some(s => s.scrollWidth > s.clientWidth + 2)).length""")


def draw_figure(page, fig, width: int = 700) -> None:
    """Draw one plotly figure alone in the page (plotly.js from the installed plotly, no server), inside a box
    marked like Streamlit's chart so that `measure` reads it."""
    import json

    from plotly.offline import get_plotlyjs

    height = fig.layout.height or 450  # plotly.js's default; the box is as tall as the figure, as in Streamlit
    page.set_content(f"<div data-testid='stPlotlyChart' style='width:{width}px;height:{height}px'>"
                     f"<div id='fig' style='height:{height}px'></div></div>")
    page.add_script_tag(content=get_plotlyjs())
    import plotly.graph_objects as go

    spec = json.loads(go.Figure(fig).update_layout(template="plotly").to_json())
    # plotly.py's own template (automatic margins on every axis), whatever the default is now: importing
    # Streamlit's chart element sets it to an empty "streamlit" one (its theme is applied in the browser), so
    # after any AppTest in the same process the figure came without automatic margins, ticks past the edge
    page.evaluate("spec => Plotly.newPlot('fig', spec.data, spec.layout).then(() => null)", spec)
    page.wait_for_selector("#fig .main-svg")
    # automatic margins redraw after the first draw (a busy machine measured the ticks before that redraw, past
    # the edge): wait until every text and plot area has kept its place for 300 ms
    page.evaluate("() => { window.__drawnAt = null; window.__drawnKey = ''; }")
    page.wait_for_function("""() => {
        const key = [...document.querySelectorAll('#fig text, #fig .nsewdrag')]
            .map(e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height].map(Math.round); })
            .join(';');
        const now = performance.now();
        if (key !== window.__drawnKey) { window.__drawnKey = key; window.__drawnAt = now; return false; }
        return now - window.__drawnAt >= 300;
    }""", timeout=60_000, polling=50)


def ink(page, box: list[float], background: int = 235) -> float:
    """The share of a box's pixels (page px, as `measure` gives plot areas) that Chromium painted darker than
    `background` in any channel: ~1 for a view painted solid, ~0 for an empty one."""
    import io

    import numpy as np
    from PIL import Image

    x, y, w, h = box
    png = page.screenshot(clip=dict(x=x, y=y, width=w, height=h))
    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return float((px.min(axis=-1) < background).mean())
