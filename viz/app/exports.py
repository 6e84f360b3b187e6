"""Figure exports: the camera button's settings and the HTML downloads.

Plotly's camera button saves one format, fixed in the chart's config (a second modebar button would need a
JavaScript callback, which Streamlit's JSON config cannot carry), so the sidebar chooses PNG or SVG for it.
An HTML download either embeds plotly.js (~4.8 MB, opens offline) or loads it from Plotly's CDN (a few kB
plus the figure's data, needs the internet once). Either file gets both a PNG and an SVG camera button.
"""

from __future__ import annotations

import json
from functools import lru_cache

import plotly.graph_objects as go

FORMATS = ("png", "svg")
HTML_SUFFIX = {"small": "", "offline": "-offline"}


def camera_config(fmt: str, filename: str) -> dict:
    """Plotly config for a chart whose camera button saves `fmt` (png at twice the screen resolution, or svg)."""
    fmt = fmt if fmt in FORMATS else "png"
    return {"toImageButtonOptions": {"format": fmt, "filename": filename, "scale": 2 if fmt == "png" else 1},
            "displaylogo": False}


@lru_cache(maxsize=1)
def plotlyjs_bytes() -> int:
    from plotly.offline import get_plotlyjs

    return len(get_plotlyjs().encode())


def html_kinds() -> tuple[tuple[str, str, str], ...]:
    """(kind, button label, help) for the two HTML downloads, the embedded plotly.js size measured."""
    mb = plotlyjs_bytes() / 1e6
    return (("small", "Small HTML (loads plotly.js from the internet)",
             "A few kB plus the figure's data; the browser fetches plotly.js from cdn.plot.ly when it opens the file."),
            ("offline", f"Self-contained HTML (+{mb:.1f} MB, opens offline)",
             f"plotly.js ({mb:.1f} MB) is inside the file: it opens without a network connection."))


def _svg_button(filename: str) -> str:
    """post_script for an exported page: redraw its figure with an extra modebar button that saves SVG."""
    name = json.dumps(filename)
    return ("var gd = document.getElementById('{plot_id}');"
            "Plotly.newPlot(gd, gd.data, gd.layout, {displaylogo: false,"
            f" toImageButtonOptions: {{format: 'png', scale: 2, filename: {name}}},"
            " modeBarButtonsToAdd: [{name: 'Download plot as SVG', icon: Plotly.Icons.camera,"
            f" click: function (g) {{ Plotly.downloadImage(g, {{format: 'svg', filename: {name}}}); }} }}]}});")


def figure_html(fig: go.Figure, filename: str, kind: str = "small") -> str:
    """The figure as a standalone HTML page: `small` loads plotly.js from the CDN, `offline` embeds it."""
    if kind not in HTML_SUFFIX:
        raise ValueError(f"unknown HTML kind {kind!r}; one of {', '.join(HTML_SUFFIX)}")
    return fig.to_html(include_plotlyjs="cdn" if kind == "small" else True, full_html=True,
                       post_script=_svg_button(filename), config={"displaylogo": False})


# ----------------------------------------------------------------------------- what st.plotly_chart receives
class Shipped(go.Figure):
    """A figure as `st.plotly_chart` sends it, without `Figure.to_dict`'s deep copies.

    Streamlit turns a Figure into JSON with `fig.to_dict()`, which deep-copies every trace and the layout with its
    ~3,300-dict default template (2 ms a figure, with the GIL held), then rewrites numpy arrays as base64 in the
    copy. `shipped` copies only the containers of the traces and the layout (the base64 rewrite replaces values
    inside them) and shares the template, which holds no arrays and is only read. Streamlit calls nothing on the
    object but `to_dict()` (1.67: `plotly.tools.return_figure_from_figure_or_data`); tests/test_exports.py checks
    the dict equals `fig.to_dict()`."""

    def __init__(self, spec: dict) -> None:  # noqa: D107 - no Figure.__init__: nothing to validate or copy
        object.__setattr__(self, "_spec", spec)

    def to_dict(self) -> dict:
        return self._spec


def _containers(obj):
    if isinstance(obj, dict):
        return {k: _containers(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_containers(v) for v in obj)
    return obj


def shipped(fig: go.Figure) -> Shipped:
    """`fig` for st.plotly_chart: its `to_dict()` without the deep copies (see `Shipped`)."""
    from _plotly_utils.utils import convert_to_base64

    layout = dict(fig._layout)
    template = layout.pop("template", None)
    spec = {"data": _containers(fig._data), "layout": _containers(layout)}
    frames = [_containers(f._props) for f in fig._frame_objs]
    if frames:
        spec["frames"] = frames
    convert_to_base64(spec)
    if template is not None:
        spec["layout"]["template"] = template
    return Shipped(spec)
