"""Axes and titles shared by every figure that has tokens on an axis.

A token axis is a category axis whose categories are unique ("the (3)": repeated tokens would merge)
and whose tick labels show the bare token through `labelalias`. Ticks stay on `tickmode="auto"`, so
the browser, which knows the drawn length of the axis, thins them to one label per ~1.2 font heights
(plotly.js `prepTicks` on category axes) and turns x labels upright only when they would collide
(`autotickangles`). Server-side thinning cannot do that: it does not know how wide the chart is drawn.

Tick labels show tokens as a reader reads them (`viz.core.tokens.readable`: byte-level BPE's `Ġthe` as `▁the`,
an emoji split over four byte tokens as `🙂 1/4` ... `🙂 4/4`); the categories, and so the hover, keep the raw
token. On a long axis (more than LONG_AXIS tokens) the browser can label only every n-th token, and a row of
every third word read as a sentence that is not there: there each label carries its position ("cat (12)"), so
the gaps show, and hover or zoom (which relabels the range it shows) give the rest.

Plotly renders text as pseudo-HTML: `<s>` starts a strike-through and `</s>` vanishes, so every
token is escaped before it reaches a figure.
"""

from __future__ import annotations

import functools
import os

from viz.core.tokens import readable

TICK_FONT = 11
MAX_LABEL = 14  # characters of a tick label; longer tokens end in "…" (the hover shows them whole)
LONG_AXIS = 40  # tokens: beyond this a heatmap row is under ~20 px and the browser labels every n-th token


def escape(token: str) -> str:
    return str(token).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def shown(tokens: list[str]) -> list[str]:
    """Tokens as tick text or cell text reads them (readable, escaped); one list of a text's tokens at a time,
    or one token: `shown([t])[0]`."""
    return [escape(t) for t in readable(tokens)]


def token_labels(tokens: list[str]) -> list[str]:
    """Unique category labels, 'the (3)', escaped."""
    return [f"{escape(t)} ({i})" for i, t in enumerate(tokens)]


def token_axis(tokens: list[str], **extra) -> dict:
    """Layout of an axis whose categories are `token_labels(tokens)`; tick labels read as the tokens."""
    labels = token_labels(tokens)
    short = [escape(t if len(t) <= MAX_LABEL else t[: MAX_LABEL - 1] + "…") for t in readable(tokens)]
    if len(tokens) > LONG_AXIS:
        short = [f"{t} ({i})" for i, t in enumerate(short)]
    if isinstance(extra.get("title"), str):  # the form plotly's validator sends (an unvalidated figure too)
        extra["title"] = dict(text=extra["title"])
    return dict(type="category", tickmode="auto", labelalias=dict(zip(labels, short)),
                autotickangles=[0, 90], tickfont=dict(size=TICK_FONT), automargin=True, **extra)


def colorbar(title: str, **extra) -> dict:
    """A slim colour bar with its title turned along it: on a half-page heatmap every pixel of width the bar
    takes is a pixel the plot loses."""
    return dict(title=dict(text=title, side="right"), thickness=10, tickfont=dict(size=10), xpad=4, **extra)


TITLE_MARGIN = 40  # px above the plot kept for the title: nothing else is drawn on top (axes are at the bottom)


def title(text: str) -> dict:
    """The chart title in the top TITLE_MARGIN px of the figure. Token axes sit at the bottom: a top axis's
    rotated labels and its title grew into the chart title (or pushed it between the labels and the plot)."""
    return dict(text=text, x=0, xanchor="left", xref="paper", y=1, yanchor="top", yref="container",
                pad=dict(t=10), font=dict(size=14))


# d3 format for probabilities: three significant digits, trailing zeros trimmed. ".0%" printed every tick of
# an axis whose values stay under 0.5 % as "0%".
PERCENT = ".3~p"


# ----------------------------------------------------------------------------- building a figure cheaply
# Plotly checks every property as it is set: a token heatmap built with go.Heatmap + update_layout took 25 ms of
# CPU (20 of them parsing the token axis' label aliases as property paths), the model view 30 ms, with the GIL
# held; the server builds five such figures per submit per session, so a class of eight waited on each other's
# validation (bench/bench_load.py). `figure` builds from plain dicts in one step without that check (1.2 ms).
# What it sends is what the validated figure sends (tests/test_figures.py compares the two JSONs for every figure
# built here); VIZ_VALIDATE_FIGURES=1 checks every property again.
VALIDATE = os.environ.get("VIZ_VALIDATE_FIGURES", "").strip() not in ("", "0")


def figure(data: list[dict], layout: dict):
    """A plotly Figure from trace dicts (each with its `type`) and a layout dict, unvalidated unless VALIDATE."""
    import plotly.graph_objects as go

    return go.Figure(data=data, layout=layout, _validate=VALIDATE)


@functools.lru_cache(maxsize=None)
def colorscale(name: str) -> tuple:
    """A named plotly.py colour scale as the [position, colour] pairs its validator sends (plotly.js has its own
    scales under some of the same names, e.g. a different 'Blues': an unvalidated name would change colours)."""
    import plotly.graph_objects as go

    return tuple(tuple(step) for step in go.Heatmap(colorscale=name).colorscale)
