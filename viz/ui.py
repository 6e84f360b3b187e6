"""Shared Streamlit widgets: the sidebar, guarded loading, plots with downloads.

Pages stay thin: they read widgets, call these helpers and `viz.cache`, and draw.
"""

from __future__ import annotations

import io
import re
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from viz import cache
from viz.capture import Capture, CaptureError
from viz.models import DEFAULT_MODEL, ModelBundle, ModelLoadError, builtin_names

def stop(message: str, kind: str = "error", icon: str = "🚫"):
    """Show why the page cannot go on, then end this run (the sidebar and navigation stay)."""
    getattr(st, kind)(message, icon=icon)
    st.stop()


APP = Path(__file__).resolve().parent.parent / "app.py"
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
        return
    PagesManager.uses_pages_directory = False  # what st.navigation itself sets on its first call
    runpy.run_path(str(APP), run_name="__main__")
    st.stop()


def sidebar() -> None:
    """Model picker and text input shared by every page (state in `st.session_state`)."""
    st.session_state.setdefault("text", EXAMPLES[0])
    with st.sidebar:
        names = builtin_names()
        choice = st.selectbox("Model", names + [OTHER], index=names.index(DEFAULT_MODEL), key="model_choice",
                              help="Bundled models work offline. Hub ids need the network or a local HF cache.")
        if choice == OTHER:
            st.text_input("Model id or folder", key="model_other", placeholder="bert-base-uncased or /path/to/model")
        st.selectbox("Example sentences", ["—"] + EXAMPLES, key="example", on_change=_use_example)
        st.text_area("Text", key="text", height=110)


def _use_example() -> None:
    if st.session_state.example != "—":
        st.session_state.text = st.session_state.example


def model_name() -> str:
    choice = st.session_state.get("model_choice", DEFAULT_MODEL)
    return st.session_state.get("model_other", "").strip() if choice == OTHER else choice


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


def capture_or_stop(name: str, text: str, target: str | None = None, with_logits: bool = False) -> Capture:
    try:
        cap = cache.get_capture(name, text, target, with_logits)
    except CaptureError as e:
        stop(str(e), "warning", "✍️")
    if cap.truncated:
        st.warning(f"The text has {cap.n_input_tokens} tokens; this model takes {len(cap.tokens)}. "
                   f"Showing the first {len(cap.tokens)} tokens.", icon="✂️")
    return cap


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "figure"


def plot(fig: go.Figure, key: str, stem: str, **kwargs):
    """Draw a figure with a PNG/SVG camera button and an HTML download beside it."""
    config = {"toImageButtonOptions": {"format": "png", "filename": slug(stem), "scale": 2},
              "displaylogo": False}
    event = st.plotly_chart(fig, key=key, config=config, **kwargs)
    st.download_button("Figure (HTML)", data=lambda: fig.to_html(include_plotlyjs=True, full_html=True),
                       file_name=f"{slug(stem)}.html", mime="text/html", key=f"{key}_html", on_click="ignore")
    return event


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


def npz_download(arrays: dict[str, np.ndarray], key: str, stem: str, label: str = "Data (NPZ)") -> None:
    def build() -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    st.download_button(label, data=build, file_name=f"{slug(stem)}.npz", mime="application/octet-stream",
                       key=key, on_click="ignore")


def token_picker(label: str, key: str, bundle: ModelBundle, text: str, help: str | None = None) -> tuple[int, ...]:
    """Multiselect over the text's non-special tokens; returns chosen token positions (sorted)."""
    from viz.mlm import with_mask_token

    if not text.strip():
        return ()
    with bundle.lock:  # fast tokenizers are not thread-safe
        ids = bundle.tokenizer(with_mask_token(text, bundle.tokenizer) if bundle.tokenizer.mask_token else text,
                               truncation=True, max_length=bundle.max_tokens)["input_ids"]
        tokens = bundle.tokenizer.convert_ids_to_tokens(ids)
    special = set(bundle.tokenizer.all_special_ids)
    options = [i for i, t in enumerate(ids) if t not in special]
    if key in st.session_state:  # drop choices that no longer exist after the text changed
        st.session_state[key] = [p for p in st.session_state[key] if p in options]
    chosen = st.multiselect(label, options, format_func=lambda i: f"{tokens[i]} ({i})", key=key, help=help)
    return tuple(sorted(chosen))


def open_inside(stack: str, layer: int, head: int) -> None:
    """Switch to the Inside a layer page on this head (its widgets read these keys when they are created)."""
    st.session_state.inside_stack, st.session_state.inside_layer, st.session_state.inside_head = stack, layer, head
    st.switch_page("pages/inside.py")


def mlm_or_stop(bundle: ModelBundle) -> None:
    """Stop a masked-LM page with advice (and a one-click switch) when the model has no MLM head."""
    from viz.mlm import MaskError, require_mlm_head

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
