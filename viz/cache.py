"""Streamlit caching around the library (the only viz module besides `viz.ui` that imports streamlit).

Models are `cache_resource` (one shared object for every session: hence the bundle lock and the
ContextVar-gated hooks in `viz.capture`). Captures are `cache_data`: each session gets its own
unpickled copy, so one session can never mutate another's arrays.
"""

from __future__ import annotations

import streamlit as st

from viz.capture import Capture, capture
from viz.generate import Generation, generate
from viz.models import ModelBundle, load_model


@st.cache_resource(max_entries=4, show_spinner="Loading model…")
def get_bundle(name: str) -> ModelBundle:
    return load_model(name)


@st.cache_data(max_entries=64, show_spinner="Running the model…")
def get_capture(name: str, text: str, target: str | None = None, with_logits: bool = False) -> Capture:
    return capture(get_bundle(name), text, target, with_logits=with_logits)


@st.cache_data(max_entries=32, show_spinner="Computing rollout and norm-based attention…")
def get_layer_flow(name: str, text: str, target: str | None, stack: str):
    from viz.flowdata import layer_flow

    return layer_flow(get_bundle(name), get_capture(name, text, target), stack)


@st.cache_resource
def _flow_store() -> dict:
    """Attention-flow results shared by all sessions. Not st.cache_data: the page draws a progress
    bar from inside the computation, and cache_data would try to replay those element calls."""
    import threading
    from collections import OrderedDict

    return {"lock": threading.Lock(), "items": OrderedDict()}


def get_flow(name: str, text: str, target: str | None, stack: str, layer: int, queries: tuple[int, ...] | None,
             max_tokens: int | None, progress=None):
    """Attention flow (viz.analysis.flow.attention_flow) for one layer, memoised (64 entries, LRU)."""
    from viz.analysis.flow import attention_flow

    store, key = _flow_store(), (name, text, target, stack, layer, queries, max_tokens)
    with store["lock"]:
        hit = store["items"].get(key)
        if hit is not None:
            store["items"].move_to_end(key)
            return hit.copy()
    attn = get_capture(name, text, target).attentions[stack]
    out = attention_flow(attn, layer=layer, queries=None if queries is None else list(queries),
                         max_tokens=max_tokens, progress=progress)
    with store["lock"]:
        store["items"][key] = out
        while len(store["items"]) > 64:
            store["items"].popitem(last=False)
    return out.copy()


@st.cache_data(max_entries=64, show_spinner="Decoding…")
def get_generation(name: str, text: str, method: str, target: str | None = None, num_beams: int = 4,
                   max_new_tokens: int = 20, top_k: int = 5) -> Generation:
    return generate(get_bundle(name), text, method, target=target, num_beams=num_beams,
                    max_new_tokens=max_new_tokens, top_k=top_k)


@st.cache_data(max_entries=64, show_spinner="Predicting masked tokens…")
def get_mask_result(name: str, text: str, positions: tuple[int, ...], top_k: int, layers: bool):
    from viz.mlm import predict

    return predict(get_bundle(name), text, positions=positions, top_k=top_k, layers=layers)


@st.cache_data(max_entries=32, show_spinner="Running both variants…")
def get_comparison(name: str, text: str, variant: str, positions: tuple[int, ...], heads: frozenset):
    from viz.compare import compare

    return compare(get_bundle(name), text, variant, positions=positions, heads=heads)


# ----------------------------------------------------------------------------- head atlas
# The atlas job runs in the page (it draws a progress bar and can be cancelled), so it cannot run
# *inside* a cached function: st.cache_data replays elements drawn in there and fails on a progress
# bar created outside. Instead the finished result is stored under (model, corpus hash, options)
# with the memo below: a call without `_result` is a lookup (a miss raises, and exceptions are
# never cached), a call with it stores.
@st.cache_data(max_entries=16, show_spinner=False)
def _atlas_memo(name: str, corpus_key: str, options: tuple, _result=None):
    if _result is None:
        raise LookupError("not computed yet")
    return _result


def cached_atlas(name: str, corpus_key: str, options: tuple):
    """The stored AtlasResult / importance array for these inputs, or None."""
    try:
        return _atlas_memo(name, corpus_key, options)
    except LookupError:
        return None


def store_atlas(name: str, corpus_key: str, options: tuple, result) -> None:
    _atlas_memo(name, corpus_key, options, _result=result)


@st.cache_data(max_entries=32, show_spinner="Generating…")
def get_lm_generation(name: str, prompt: str, method: str, max_new_tokens: int = 20, top_k: int = 5,
                      temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, num_beams: int = 4, beam: int = 0):
    """Decoder-only step-through generation (viz.generate_lm), memoised per settings."""
    from viz.generate_lm import generate_lm

    return generate_lm(get_bundle(name), prompt, method, max_new_tokens=max_new_tokens, top_k=top_k,
                       temperature=temperature, top_p=top_p, seed=seed, num_beams=num_beams, beam=beam)
