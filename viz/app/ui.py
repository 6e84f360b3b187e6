"""Shared Streamlit widgets: the sidebar, guarded loading, plots with downloads.

Pages stay thin: they read widgets, call these helpers and `viz.app.cache`, and draw.
"""

from __future__ import annotations

import io
import re
import runpy
import sys
import threading
import types
from typing import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from viz.app import cache, exports
from viz.core.capture import Capture, CaptureError
from viz.core.models import DEFAULT_MODEL, ModelBundle, ModelLoadError, builtin_names, random_weights
from viz.core.names import CONVENTION
from viz.core.tokens import readable
from viz.core import paths

def stop(message: str, kind: str = "error", icon: str = "🚫"):
    """Show why the page cannot go on, then end this run (the sidebar and navigation stay)."""
    getattr(st, kind)(message, icon=icon)
    st.stop()


OTHER = "Other: Hugging Face id or local folder…"
EXAMPLES = [
    "The cat sat on the mat because it was tired.",
    "The keys to the cabinet are on the table.",
    "She poured a cup of coffee and read the morning paper.",
    "The animal didn't cross the street because it was too wide.",
    "Attention is all you need, said the paper from 2017.",
]


def through_app() -> None:
    """Call first in every page. On a fresh server whose first request is a deep link (/mlm), Streamlit
    1.67 runs the pages/ file on its own (the legacy pages-directory mode, chosen because a `pages/`
    folder sits beside app.py): no sidebar, no navigation. AppTest does the same on every run. Switch
    that mode off and run app.py in this same script run: its st.navigation resolves this very page by
    its URL path (a page's hash is the hash of its URL path in both modes) and runs it fully; then this
    outer run ends. Same run, so a button click that triggered it is not lost (st.rerun would drop it)."""
    from streamlit.runtime.pages_manager import PagesManager

    if not PagesManager.uses_pages_directory:
        _this_run.page_globals = sys._getframe(1).f_globals  # for release_page_data() once the page ends
        return
    PagesManager.uses_pages_directory = False  # what st.navigation itself sets on its first call
    runpy.run_path(str(paths.APP), run_name="__main__")
    st.stop()


_this_run = threading.local()  # each script run is a thread of its own


def release_page_data(min_bytes: int = 1 << 20) -> None:
    """Drop the data (arrays, captures, results: >= `min_bytes` each) from the globals of the page that
    just ran; app.py calls this after every page, however it ended.

    Why: Streamlit keeps a widget's callback (and a fragment's function) until the session's next run, and a
    function defined in a page keeps that page's whole globals alive: its capture, its arrays. Across a
    classroom of idle sessions that is one page's data per session, outside every cache budget. So a
    callback or fragment must read what it needs from `st.session_state` or `viz.app.cache`, not from a page
    global holding data (modules, functions, classes and small values stay)."""
    from viz.app.store import nbytes

    page = getattr(_this_run, "page_globals", None)
    _this_run.page_globals = None
    if not page:
        return
    for name, value in list(page.items()):
        if name.startswith("__") or isinstance(value, (types.ModuleType, type, types.FunctionType)):
            continue
        if nbytes(value, deep_objects=False) >= min_bytes:
            del page[name]


# The sidebar's widgets keep their values for the whole session. Without it a page switch made by the app
# (st.switch_page: the Attention page's "Inside L3 H0 →") dropped every widget's value, the model and the typed
# text with them: Streamlit 1.67 clears the widget state of a page change to the widgets the frontend reported,
# and a switch made on the server reports none (the next click brought the model back from the browser, not the
# text).
KEEP = "session"


def sidebar() -> None:
    """Model picker and text input shared by every page (state in `st.session_state`)."""
    st.session_state.setdefault("text", EXAMPLES[0])
    st.session_state.setdefault("model_choice", DEFAULT_MODEL)  # no index below: buttons set it (`_set_model`)
    with st.sidebar:
        names = builtin_names()
        choice = st.selectbox("Model", names + [OTHER], key="model_choice",
                              persist_state=KEEP, help="Bundled models work offline. Hub ids need the network or a local HF cache.")
        if choice == OTHER:
            st.text_input("Model id or folder", key="model_other", placeholder="bert-base-uncased or /path/to/model",
                          persist_state=KEEP)
        device_picker()
        if random_weights(model_name()):
            # a caption, not st.warning: pages and tests read warnings as something gone wrong with the input
            st.caption(f":orange[🎲 **{model_name().split('@')[0]} has random weights** (a tiny model built from a "
                       "config, never trained): its heads attend almost uniformly or by chance. It is here to try "
                       "every family's plumbing; to read real attention pick minilm, atlas-lm or a trained model.]")
        st.selectbox("Example sentences", ["—"] + EXAMPLES, key="example", on_change=_use_example,
                     persist_state=KEEP)
        st.text_area("Text", key="text", height=110, persist_state=KEEP)
        st.radio("Camera button 📷 saves", ["png", "svg"], format_func=str.upper, horizontal=True,
                 key="export_format", persist_state=KEEP, help="What the camera button above each figure downloads: PNG (twice the "
                                           "screen resolution) or SVG (vector; heatmaps stay images inside it).")
        st.caption(CONVENTION)


def device_picker() -> None:
    """Where the model runs: 'auto' is a GPU in bfloat16 where one is present, else the CPU in float32."""
    import torch

    from viz.core.models import resolve_device, resolve_dtype

    devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else []) + \
        (["mps"] if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available() else [])
    with st.expander("Device and precision", expanded=False):
        device = st.selectbox("Device", devices, key="model_device", persist_state=KEEP,
                              help="auto: CUDA (or Apple MPS) where present, else the CPU.")
        dtype = st.selectbox("Precision", ["auto", "float32", "bfloat16", "float16"], key="model_dtype",
                             persist_state=KEEP,
                             help="auto: bfloat16 on a GPU, float32 on the CPU. Captured numbers are shown in "
                                  "float32 whatever the model computes in.")
    dev = resolve_device(device)
    st.caption(f"Runs on {dev.type} in {str(resolve_dtype(dtype, dev)).replace('torch.', '')}")


def _use_example() -> None:
    if st.session_state.example != "—":
        st.session_state.text = st.session_state.example


def model_name() -> str:
    """The chosen model as a cache key: its name, plus `@device:dtype` when not on 'auto' (viz.core.models.model_key)."""
    from viz.core.models import model_key

    choice = st.session_state.get("model_choice", DEFAULT_MODEL)
    name = st.session_state.get("model_other", "").strip() if choice == OTHER else choice
    if not name:
        return name
    return model_key(name, st.session_state.get("model_device", "auto"), st.session_state.get("model_dtype", "auto"))


def bundle_or_stop(name: str | None = None) -> ModelBundle:
    """The cached model, or an error box and a stopped page (the rest of the app keeps working)."""
    name = model_name() if name is None else name
    try:
        return cache.get_bundle(name)
    except ModelLoadError as e:
        stop(str(e))


def page_input(key_prefix: str) -> tuple[str, str, str | None, ModelBundle]:
    """The usual start of a page: (model name, text, target, bundle) from the sidebar; encoder–decoders
    get a target box (teacher forcing; empty = the model's own greedy output)."""
    name, text = model_name(), st.session_state.get("text", "")
    bundle = bundle_or_stop(name)
    target = None
    if bundle.kind == "encoder-decoder":
        target = st.text_input("Target text (teacher forcing); leave empty to use the model's own output",
                               key=f"{key_prefix}_target").strip() or None
    return name, text, target, bundle


PAGE_CAPTURE_MB = 256  # above this a page asks for pooled thumbnails and one layer at a time (VIZ_PAGE_CAPTURE_MB)


def needs_overview(bundle: ModelBundle, text: str) -> bool:
    """Whether every layer x head x token^2 of this text would be too much to hold and draw: then pages show
    pooled thumbnails computed inside the model and capture one layer at a time."""
    import os

    if bundle.kind == "encoder-decoder" or not text.strip():
        return False
    with bundle.lock:  # fast tokenizers are not thread-safe
        n = min(len(bundle.tokenizer(text)["input_ids"]), bundle.max_tokens)
    stack = bundle.arch.stacks[0]
    cells = bundle.stack_layers(stack) * bundle.n_heads(stack) * n * n
    limit = float(os.environ.get("VIZ_PAGE_CAPTURE_MB", PAGE_CAPTURE_MB))
    return cells * 4 > limit * 2**20


def capture_or_stop(name: str, text: str, target: str | None = None, with_logits: bool = False,
                    layers: tuple[int, ...] | None = None, pool: int = 0, weights: bool = True) -> Capture:
    try:
        cap = cache.get_capture(name, text, target, with_logits, layers, pool, weights)
    except CaptureError as e:
        stop(str(e), "warning", "✍️")
    if cap.truncated:
        st.warning(f"The text has {cap.n_input_tokens} tokens; this model takes {len(cap.tokens)}. "
                   f"Showing the first {len(cap.tokens)} tokens.", icon="✂️")
    return cap


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "figure"


def plot(fig: go.Figure, key: str, stem: str, **kwargs):
    """Draw a figure; its camera button saves PNG or SVG (the sidebar's choice), and a popover offers it as
    HTML: small (plotly.js from its CDN) or self-contained (plotly.js inside, ~4.8 MB, opens offline)."""
    config = exports.camera_config(st.session_state.get("export_format", "png"), slug(stem))
    event = st.plotly_chart(exports.shipped(fig), key=key, config=config, **kwargs)
    with st.popover("Figure (HTML)"):
        for kind, label, help in exports.html_kinds():
            st.download_button(label, data=lambda kind=kind: exports.figure_html(fig, slug(stem), kind),
                               file_name=f"{slug(stem)}{exports.HTML_SUFFIX[kind]}.html", mime="text/html",
                               key=f"{key}_html_{kind}", on_click="ignore", help=help)
    return event


def pick(chart_key: str, *state_keys: str) -> Callable[[], None]:
    """An `on_select` callback: the clicked point's customdata -> `st.session_state[state_keys]` (as ints).
    Made here rather than in the page because Streamlit keeps a widget's callback until the session's
    next run, and a function defined in a page keeps that page's globals (its capture, its arrays) alive
    with it."""
    def on_select() -> None:
        cell = clicked_customdata(chart_key)
        if cell is not None and len(cell) >= len(state_keys):
            for k, v in zip(state_keys, cell):
                st.session_state[k] = int(v)

    return on_select


def clicked_customdata(chart_key: str) -> list | None:
    """customdata of the first point selected on a chart (Streamlit sends arrays as lists or index-keyed dicts)."""
    points = (st.session_state.get(chart_key) or {}).get("selection", {}).get("points", [])
    if not points:
        return None
    data = points[0].get("customdata")
    if isinstance(data, dict):
        data = [data[k] for k in sorted(data, key=lambda k: int(k))]
    return list(data) if data is not None else None


def table_download(df: pd.DataFrame, key: str, stem: str, label: str = "Data (CSV)") -> None:
    st.download_button(label, data=lambda: df.to_csv().encode(), file_name=f"{slug(stem)}.csv",
                       mime="text/csv", key=key, on_click="ignore")


def npz_download(arrays: dict[str, np.ndarray] | Callable[[], dict[str, np.ndarray]], key: str, stem: str,
                 label: str = "Data (NPZ)") -> None:
    """`arrays` may be a callable (e.g. a `functools.partial` of a `viz.app.cache` function): the button keeps
    it until the session's next run, so for big arrays pass one that holds cache keys, not the arrays."""
    def build() -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, **(arrays() if callable(arrays) else arrays))
        return buf.getvalue()

    st.download_button(label, data=build, file_name=f"{slug(stem)}.npz", mime="application/octet-stream",
                       key=key, on_click="ignore")


def token_picker(label: str, key: str, bundle: ModelBundle, text: str, help: str | None = None) -> tuple[int, ...]:
    """Multiselect over the text's non-special tokens; returns chosen token positions (sorted)."""
    from viz.tasks.mlm import with_mask_token

    if not text.strip():
        return ()
    with bundle.lock:  # fast tokenizers are not thread-safe
        ids = bundle.tokenizer(with_mask_token(text, bundle.tokenizer) if bundle.tokenizer.mask_token else text,
                               truncation=True, max_length=bundle.max_tokens)["input_ids"]
        tokens = bundle.tokenizer.convert_ids_to_tokens(ids)
    special = set(bundle.tokenizer.all_special_ids) - {bundle.tokenizer.unk_token_id}  # [UNK] is a typed word
    options = [i for i, t in enumerate(ids) if t not in special]
    if key in st.session_state:  # drop choices that no longer exist after the text changed
        st.session_state[key] = [p for p in st.session_state[key] if p in options]
    tokens = readable(tokens)
    chosen = st.multiselect(label, options, format_func=lambda i: f"{tokens[i]} ({i})", key=key, help=help)
    return tuple(sorted(chosen))


def open_inside(stack: str, layer: int, head: int) -> None:
    """Switch to the Inside a layer page on this head (its widgets read these keys when they are created)."""
    st.session_state.inside_stack, st.session_state.inside_layer, st.session_state.inside_head = stack, layer, head
    st.switch_page("pages/inside.py")


def open_attention(stack: str, layer: int, head: int) -> None:
    """Switch to the Attention page with this head open (its widgets read these keys when they are created)."""
    st.session_state.attn_stack, st.session_state.attn_layer, st.session_state.attn_head = stack, layer, head
    st.switch_page("pages/attention.py")


def mlm_or_stop(bundle: ModelBundle) -> None:
    """Stop a masked-LM page with advice (and a one-click switch) when the model has no MLM head."""
    from viz.tasks.mlm import MaskError, require_mlm_head

    try:
        require_mlm_head(bundle)
    except MaskError as e:
        st.error(str(e), icon="🚫")
        if "minilm-mlm" in builtin_names():
            st.button("Switch to minilm-mlm", key="switch_mlm", on_click=_set_model, args=("minilm-mlm",))
        st.page_link("pages/attention.py", label="Open the Attention page", icon="🔭")
        st.stop()


def _set_model(name: str) -> None:
    st.session_state.model_choice = name


MASK_EXAMPLE = "She poured a cup of [MASK] and read the morning paper."


def use_mask_example() -> None:
    st.session_state.text = MASK_EXAMPLE
