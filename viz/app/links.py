"""Links that reopen a view: the URL carries the page (its path), the model, the text and the page's settings.

Writing: every run publishes the page's view into `st.query_params` (at its start, and again at its end when the
page ran through), so the address bar, a bookmark and a reload always hold what is on screen; the sidebar's
"Copy link" shows the same URL. Reading: a new session opened on such a URL gets the values put into
`st.session_state` before any widget exists (each widget is then created from the state), and the
values that do not fit (an unknown model or setting, a layer this model does not have, a text no longer kept) give
way to the defaults with one line saying which. Only the keys listed below travel: a link is data, never code.

Texts of up to TEXT_CHARS characters travel in the link itself; a longer one (up to KEEP_CHARS) is kept on the
server (`VIZ_LINK_DIR`, default ~/.cache/attention-atlas/links) and the link carries its 16-character fingerprint.
A new page adds its shareable widget keys to PAGES (URL name -> session key and kind).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from pathlib import Path
from urllib.parse import urlencode

import streamlit as st

from viz.app.ui import OTHER

TEXT_CHARS = 2000  # longer texts travel as a fingerprint of a copy kept on this server
KEEP_CHARS = 100_000  # longer still: the link leaves the text out (and says so)
KEEP_FILES = 5000  # kept texts beyond this: the oldest go
STATE = "_link"  # session key: {"page", "values" (what a link set), "notice" (lines to show)}


def _page(prefix: str, **kinds: str) -> dict[str, tuple[str, str]]:
    return {name: (f"{prefix}_{name}", kind) for name, kind in kinds.items()}


# kinds: bool int float str text (long ones by fingerprint) ints (a list) pair (layer, head) pairs intstr ("mean" or 3)
COMMON = {"model": ("model_choice", "model"), "device": ("model_device", "str"), "dtype": ("model_dtype", "str"),
          "text": ("text", "text")}
PAGES = {
    "attention": _page("attn", stack="str", words="bool", hide_special="bool", sink="bool", layer="int", head="int",
                       agg="str", agg_layer="str", target="text"),
    "inside": _page("inside", stack="str", layer="int", head="int", token="int", keys="str", limit="int",
                    target="text"),
    "flow": _page("flow", stack="str", weights="str", threshold="float", topk="int", token="int", level="int",
                  method="str", layer="int", norm_stack="str", norm_layer="int", norm_head="int", sim_level="str",
                  target="text"),
    "routes": _page("routes", stack="str", token="int", threshold="float", target="text"),
    "mlm": _page("mlm", positions="ints", topk="int", layers="bool"),
    "compare": _page("cmp", variant="str", positions="ints", heads="pairs"),
    "encdec": _page("ed", source="text", mode="str", target="text", max_new="int", beams="int", topk="int",
                    step="int", step_layer="int", step_head="intstr", stack="str", layer="int", head="int",
                    align_layer="str"),
    "generate": _page("gen", prompt="text", method="str", max_new="int", topk="int", stop="bool", temperature="float",
                      top_p="float", seed="int", beams="int", beam="int", step="int", layer="int", head="intstr"),
    "atlas": _page("atlas", source="str", limit="int", max_tokens="int", words="bool", level="str", stat="str",
                   k="int", layer="int", head="int", top_stat="str", top_pick="int", heads_seed="int",
                   heads_length="int", heads_pick="pair"),
    "match": _page("match", mode="str", model_b="str", over="str", level="str", layer="int", head="int"),
    "patching": _page("patch", example="str", clean="text", mode="str", corrupt="text", word="int", new="str",
                      target="str", foil="str", stream_stack="str", head_stack="str", path_comp="str")
    | {"prefix": ("patch_prefix", "text")},  # `prefix` is _page's own argument
    "attribution": _page("attr", mode="str", steps="int", seeds="int", position="int", target="text", foil="text",
                         faithful="bool", token="int", source="str", limit="int", max_tokens="int", seed="int"),
}
NOT_SHARED = ("studio",)  # a training job is no view to reopen: its links carry the model and the text only


def page_name(page) -> str:
    """'attention', 'mlm', ...: the page's file name (its URL path, except the default page's, which is '')."""
    source = getattr(page, "_page", None)
    return Path(source).stem if isinstance(source, (str, Path)) else page.url_path


def spec(name: str) -> dict[str, tuple[str, str]]:
    return {**COMMON, **PAGES.get(name, {})}


# ----------------------------------------------------------------------------- values <-> URL strings
def encode(value, kind: str) -> str | None:
    if value is None:
        return None
    if kind == "bool":
        return "1" if value else "0"
    if kind == "ints":
        return ",".join(str(int(v)) for v in value)
    if kind == "pair":
        return f"{int(value[0])}.{int(value[1])}"
    if kind == "pairs":
        return ",".join(f"{int(a)}.{int(b)}" for a, b in value)
    if kind == "float":
        return repr(float(value))
    return str(value)


def decode(raw: str, kind: str):
    """The URL string as the widget's value; ValueError when it is not one."""
    if kind == "bool":
        if raw.lower() not in ("1", "0", "true", "false"):
            raise ValueError
        return raw.lower() in ("1", "true")
    if kind == "int":
        return int(raw)
    if kind == "float":
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError
        return value
    if kind == "intstr":
        return int(raw) if raw.lstrip("-").isdigit() else raw
    if kind == "ints":
        return [int(v) for v in raw.split(",") if v.strip()]
    if kind in ("pair", "pairs"):
        pairs = [tuple(int(x) for x in v.split(".")) for v in raw.split(",") if v.strip()]
        if any(len(p) != 2 for p in pairs) or (kind == "pair" and len(pairs) != 1):
            raise ValueError
        return pairs[0] if kind == "pair" else pairs
    if len(raw) > (KEEP_CHARS if kind == "text" else 200):
        raise ValueError
    return raw


# ----------------------------------------------------------------------------- long texts, kept on the server
def link_dir() -> Path:
    return Path(os.environ.get("VIZ_LINK_DIR") or Path.home() / ".cache" / "attention-atlas" / "links")


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def keep_text(text: str) -> str:
    """Keep `text` on the server -> its fingerprint (16 hex characters)."""
    key, folder = fingerprint(text), link_dir()
    path = folder / f"{key}.txt"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        kept = sorted(folder.glob("*.txt"), key=lambda p: p.stat().st_mtime)
        for old in kept[: max(0, len(kept) - KEEP_FILES)]:
            old.unlink(missing_ok=True)
    return key


def kept_text(key: str) -> str | None:
    if len(key) != 16 or any(c not in "0123456789abcdef" for c in key):
        return None
    path = link_dir() / f"{key}.txt"
    return path.read_text(encoding="utf-8") if path.is_file() else None


# ----------------------------------------------------------------------------- state -> URL
def params(name: str, state) -> tuple[dict[str, str], list[str]]:
    """The view in `state` (session state) as URL parameters, and what to say about its texts (sentences)."""
    from viz.core.models import DEFAULT_MODEL

    out, notes = {}, []
    choice = state.get("model_choice", DEFAULT_MODEL)
    if choice == OTHER:  # a hub id or folder typed into the sidebar
        choice = str(state.get("model_other", "")).strip()
    if choice:
        out["model"] = choice
    for url, (key, kind) in spec(name).items():
        if url == "model" or key not in state:
            continue
        value = encode(state[key], kind)
        if value is None or (url in ("device", "dtype") and value == "auto"):
            continue
        if kind == "text" and len(value) > TEXT_CHARS:
            if len(value) > KEEP_CHARS:
                notes.append(f"The {url} ({len(value):,} characters) is longer than a link keeps: it is left out.")
                continue
            out[f"{url}_id"] = keep_text(value)
            notes.append(f"The {url} ({len(value):,} characters) is kept on this server: this link opens here only.")
        else:
            out[url] = value
    return out, notes


def url_for(query: dict[str, str]) -> str:
    base = st.context.url or ""
    return base + ("?" + urlencode(query, safe=",") if query else "")  # encoded as the address bar shows it


# ----------------------------------------------------------------------------- URL -> state
def read(name: str, query: dict[str, str]) -> tuple[dict, list[str]]:
    """URL parameters -> (session values, what did not fit: one phrase each). The model is checked by loading it
    (a name the server cannot load is 'not available here')."""
    from viz.core.models import ModelLoadError, builtin_names

    from viz.app import cache

    table, values, bad = spec(name), {}, []
    for url, raw in query.items():
        if url in ("embed", "embed_options"):
            continue
        base = url[:-3] if url.endswith("_id") and url[:-3] in table and table[url[:-3]][1] == "text" else url
        if base not in table:
            bad.append(f"'{url}' (not a setting of this page)")
            continue
        key, kind = table[base]
        if base != url:  # a long text kept on the server
            text = kept_text(raw)
            if text is None:
                bad.append(f"the {base} (no longer kept on this server)")
            else:
                values[key] = text
            continue
        if kind == "model":
            if raw in builtin_names():
                values["model_choice"] = raw
                continue
            try:
                cache.get_bundle(raw)  # what the page would do next: a name that does not load is refused here
                values["model_choice"], values["model_other"] = OTHER, raw
            except ModelLoadError:
                bad.append(f"model '{raw[:60]}' (not available here)")
            continue
        try:
            values[key] = decode(raw, kind)
        except (ValueError, TypeError):
            bad.append(f"{base}={raw[:40]} (not a valid value)")
    return values, bad



# ----------------------------------------------------------------------------- the run (app.py)
_run = threading.local()  # this script run's notice slot and Copy-link slot (each run is a thread of its own)


def start(page) -> None:
    """app.py, after st.navigation and before the sidebar: the "Copy link" control at the top of the sidebar, and,
    on a session's first run, the link's values put into session state, where every widget (the sidebar's too)
    finds them when it is created."""
    name, ss = page_name(page), st.session_state
    _run.control = st.sidebar.empty()
    _run.notice = None
    link = ss.get(STATE)
    if link is None:  # the session's first run: read the URL once
        values, bad = read(name, st.query_params.to_dict())
        ss[STATE] = {"page": name, "values": values, "notice": bad, "fresh": bool(values or bad)}
        ss.update(values)
        link = ss[STATE]
    if link.get("fresh") and link["page"] == name:
        _run.notice = st.empty()  # above the page's title: filled once the page has run (or failed)
        if link["notice"]:
            _say(link["notice"])
    elif link.get("fresh"):  # navigated away before the linked page ran through
        link["fresh"] = False


def run(page) -> None:
    """app.py: run the page between two publications of its view; on the first run after a link, a value the page
    refused (a widget resetting an out-of-range layer) is said in one line, and an error the link's values caused
    gives the defaults (and that line) instead of a traceback."""
    name, ss = page_name(page), st.session_state
    publish(name)  # the URL holds the view even when the page stops early (st.stop)
    link = ss.get(STATE) or {}
    fresh = link.get("fresh") and link.get("page") == name
    if fresh:
        link["fresh"] = False  # one look only: what the user changes next is theirs
    try:
        page.run()
    except Exception as e:  # st.stop and st.rerun are BaseExceptions and pass through
        if not fresh or not link["values"]:
            raise
        for key in link["values"]:
            ss.pop(key, None)
        ss[STATE] = {**link, "values": {}, "fresh": True,
                     "notice": link["notice"] + [f"all of them together ({type(e).__name__}: {str(e)[:80]})"]}
        st.rerun()
    if fresh:
        refused = [url for url, (key, kind) in spec(name).items()
                   if key in link["values"] and ss.get(key) != link["values"][key]]
        if refused:
            table = spec(name)
            link["notice"] = link["notice"] + [f"{url}={encode(link['values'][table[url][0]], table[url][1])} "
                                               "(not in this view)" for url in refused]
            _say(link["notice"])
    publish(name)


def _say(what: list[str]) -> None:
    slot = getattr(_run, "notice", None)
    if slot is not None:
        slot.warning("Some of this link's settings did not fit, so the defaults stand in for them: " + "; ".join(what)
                     + ".", icon="🔗")


def publish(name: str) -> None:
    """The view -> the URL (only when it changed) and the sidebar's Copy link."""
    query, notes = params(name, st.session_state)
    if query != st.query_params.to_dict():
        st.query_params.from_dict(query)
    slot = getattr(_run, "control", None)
    if slot is None:
        return
    with slot.container():
        with st.popover("🔗 Copy link", width="stretch", help="A link that reopens this page with this model, "
                        "text and settings: the address bar holds it too, and follows every change."):
            st.code(url_for(query), language=None, wrap_lines=True)
            st.caption(f"Texts up to {TEXT_CHARS:,} characters travel in the link; a longer one (up to "
                       f"{KEEP_CHARS:,}) is kept on this server, and its link opens here only. " + " ".join(notes))
