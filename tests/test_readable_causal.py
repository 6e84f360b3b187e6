"""The causal pages read tokens as text on a byte-level BPE model (atlas-lm, GPT-2's tokenizer): the Patching,
Routes and attribution pages, merged beside the token work of viz/core/tokens.py, showed 'Ġare' in sentences,
pickers, axes and titles. Every string the page shows (messages, pickers, figure titles, tick labels and the
categories an axis shows as they are) must be free of the byte alphabet's space 'Ġ'; hovers and exports keep the
raw tokens (their own tests read them)."""

from __future__ import annotations

import json

from apptest import open_page, rerun

RAW = "Ġ"
TEXT = "When Mary and John went to the store, John gave a drink to"


def shown_strings(at) -> list[str]:
    """Every string a user reads on the page: elements' values and labels, selectbox options, and in every chart
    the layout's texts (labelalias values, not its raw keys) and the trace categories of axes that show them raw."""
    out = []
    for kind in ("markdown", "caption", "success", "info", "warning", "subheader", "title"):
        out += [str(e.value) for e in at.get(kind)]
    for sb in at.selectbox:
        out += [str(sb.label)] + [str(o) for o in sb.options]
    for chart in at.get("plotly_chart"):
        fig = json.loads(chart.proto.spec)
        layout = fig.get("layout", {})

        def walk(x, skip_keys=False):
            if isinstance(x, str):
                out.append(x)
            elif isinstance(x, list):
                for v in x:
                    walk(v)
            elif isinstance(x, dict):
                for k, v in x.items():
                    if k in ("labelalias",):
                        out.extend(str(a) for a in v.values())
                    elif k not in ("customdata", "hovertemplate", "hovertext", "meta", "uid"):
                        walk(v)
        walk(layout)
        for trace in fig.get("data", []):
            for ax in ("x", "y"):
                name = ax + "axis" + str(trace.get(ax + "axis", ax)[1:])
                axis = layout.get(name, {})
                if not (axis.get("labelalias") or axis.get("ticktext")) and isinstance(trace.get(ax), list):
                    out += [v for v in trace[ax] if isinstance(v, str)]
            for k in ("title", "name", "text"):
                if isinstance(trace.get(k), str):
                    out.append(trace[k])
    return out


def assert_readable(at) -> None:
    seen = shown_strings(at)
    assert len(seen) > 20
    bad = [s for s in seen if RAW in s]
    assert not bad, bad[:5]


def test_patching_page_reads_tokens_as_text():
    at = open_page("patching", model_choice="atlas-lm")
    if not at.button(key="patch_run").disabled:  # disabled when an earlier test left every result in the cache
        at.button(key="patch_run").click()
        at = rerun(at, model_choice="atlas-lm")
    assert len(at.get("plotly_chart")) >= 2
    assert "answer '▁are', foil '▁is'" in at.success[0].value  # the default example, keys/key → are/is
    assert_readable(at)


def test_routes_page_reads_tokens_as_text():
    at = open_page("routes", model_choice="atlas-lm", text=TEXT)
    assert any("▁John" in o for o in at.selectbox(key="routes_token").options)
    assert_readable(at)


def test_attribution_page_reads_tokens_as_text():
    at = open_page("attribution", model_choice="atlas-lm", text=TEXT)
    assert len(at.get("plotly_chart")) >= 1
    assert_readable(at)
