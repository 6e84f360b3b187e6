"""Attention page: the model view (every layer x head), one head, aggregates, and each head's sink share."""

from functools import partial

import pandas as pd
import streamlit as st

from viz.app import cache, ui
from viz.analysis.words import aggregate
from viz.core.models import random_weights
from viz.figures.attention import head_heatmap, model_view, sink_heatmap

STACK_LABELS = {"encoder": "Encoder self-attention", "decoder": "Decoder masked self-attention",
                "cross": "Cross-attention (decoder → encoder)"}

ui.through_app()
st.title("Attention")
name, text, target, bundle = ui.page_input("attn")
overview = ui.needs_overview(bundle, text)
# a long input on a big model: pooled thumbnails of every head come from inside the model, one layer in full
look = dict(pool=40, weights=False) if overview else {}
cap = ui.capture_or_stop(name, text, target, **look)

c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
stacks = list(cap.first_share)
stack = c1.radio("Attention", stacks, format_func=STACK_LABELS.get, horizontal=True, key="attn_stack") \
    if len(stacks) > 1 else stacks[0]
words = c2.toggle("Merge word pieces", key="attn_words", help="Sum over key pieces, mean over query pieces.")
hide = c3.toggle("Hide special tokens", key="attn_hide_special",
                 help="Drop [CLS]/[SEP]/padding rows and columns and renormalise each row ([UNK] stays: it is a "
                      "word you typed).")
sink = c4.toggle("Sink-aware", key="attn_sink",
                 help="Sink-aware view: drop the first token's row and column and renormalise each row, so "
                      "heads that park most of their attention on it (an 'attention sink') show what they do "
                      "with the rest.")
L, H = cap.first_share[stack].shape
kv = cap.kv_heads.get(stack)
grouped = kv is not None and len(set(kv.tolist())) < H
layer = int(st.session_state.get("attn_layer", 0))
# [layer, head, query, key] after the toggles (viz.analysis.words.attention_view), cached beside the capture;
# in overview mode the opened layer only: [1, head, query, key]
A, q_lab, k_lab = cache.get_attention_view(name, text, target, stack, words, hide, sink,
                                           (min(layer, L - 1),) if overview else None)


def counted(n_raw: int, n_shown: int) -> str:
    """'13 tokens', or what the toggles made of them: '13 tokens → 9 words shown'."""
    if n_raw == n_shown and not words:
        return f"{n_raw} tokens"
    return f"{n_raw} tokens → {n_shown} {'words' if words else 'tokens'} shown"


raw_q, raw_k = cap.axis_tokens(stack)
shown = counted(len(raw_q), len(q_lab)) if stack != "cross" else \
    f"rows: {counted(len(raw_q), len(q_lab))} · columns: {counted(len(raw_k), len(k_lab))}"
st.caption(f"{bundle.name}{' (random weights)' if random_weights(name) else ''} · {bundle.kind} · {L} layers × {H} heads"
           + (f" ({len(set(kv.tolist()))} key/value heads, grouped-query attention)" if grouped else "")
           + f" · {shown}")

st.subheader("Model view")
if overview:
    st.info(f"A long input on a big model ({len(raw_q)} tokens): the model view shows "
            f"{cap.thumbnails[stack].shape[-1]}-pixel thumbnails pooled inside the model, without keeping every "
            "weight; the head you open is captured in full, one layer at a time.", icon="🔭")
st.caption("Every layer × head; each thumbnail scaled to its own maximum"
           + ("; heads that share keys and values sit together" if grouped else "")
           + ". Click one to open it below.")
# Callbacks and download callables outlive this run: none of them may hold the page's arrays (ui.pick).
selected = (st.session_state.get("attn_layer", 0), st.session_state.get("attn_head", 0))
ui.plot(model_view(cap.thumbnails[stack] if overview else A, selected=selected, kv_heads=kv,
                   first_share=cap.first_share[stack]),
        key="attn_model_view", stem=f"model-view-{stack}", on_select=ui.pick("attn_model_view", "attn_layer", "attn_head"),
        selection_mode="points")
if not overview:
    ui.npz_download(partial(cache.attention_view_arrays, name, text, target, stack, words, hide, sink),
                    key="attn_model_npz", stem=f"attention-{stack}", label="All heads (NPZ)")

with st.expander("Attention on the first token, per head (attention sinks)", expanded=False):
    st.caption("Mean share of each row's attention that goes to the first token (rows after the first). Heads near "
               "100 % use it as a resting place (Xiao et al. 2023, 'Efficient streaming language models with "
               "attention sinks'); the toggle above sets it aside.")
    ui.plot(sink_heatmap(cap.first_share[stack]), key="attn_sink_fig", stem=f"first-token-share-{stack}")
    ui.table_download(pd.DataFrame(cap.first_share[stack], index=[f"L{i}" for i in range(L)],
                                   columns=[f"H{h}" for h in range(H)]), key="attn_sink_csv",
                      stem=f"first-token-share-{stack}")

left, right = st.columns([1, 1])
with left:
    st.subheader("One head")
    s1, s2 = st.columns(2)
    layer = s1.number_input("Layer", 0, L - 1, key="attn_layer")  # no default: a click sets it (ui.pick)
    head = s2.number_input("Head", 0, H - 1, key="attn_head")
    if st.button(f"Inside L{layer} H{head} →", key="attn_inside", help="Open the Inside a layer page for this "
                 "head: q, k, v, scores, mask, softmax and the whole layer, with the real numbers."):
        ui.open_inside(stack, int(layer), int(head))
    M = A[0 if overview else layer, head]
    ui.plot(head_heatmap(M, q_lab, k_lab, f"{STACK_LABELS[stack]} · L{layer} H{head}"),
            key="attn_head_fig", stem=f"{stack}-L{layer}-H{head}")
    ui.table_download(pd.DataFrame(M, index=q_lab, columns=k_lab), key="attn_head_csv",
                      stem=f"{stack}-L{layer}-H{head}")
with right:
    st.subheader("Aggregate")
    a1, a2 = st.columns(2)
    how = a1.radio("Over heads by", ["mean", "max"], horizontal=True, key="attn_agg")
    if overview:
        scope = f"layer {layer}"
        a2.caption(f"Over the heads of the opened layer ({scope}).")
    else:
        scope = a2.selectbox("Layers", ["all layers"] + [f"layer {i}" for i in range(L)], key="attn_agg_layer")
    if scope == "all layers":
        agg = aggregate(A, how)
    else:
        agg = aggregate(A[0 if overview else int(scope.split()[1])], how, axis=0)
    ui.plot(head_heatmap(agg, q_lab, k_lab, f"{how} over heads · {scope}"), key="attn_agg_fig",
            stem=f"{stack}-{how}-{scope}")
    ui.table_download(pd.DataFrame(agg, index=q_lab, columns=k_lab), key="attn_agg_csv",
                      stem=f"{stack}-{how}-{scope}")
ui.npz_download(partial(cache.capture_arrays, name, text, target, **look), key="attn_capture_npz", stem="capture",
                label="Whole capture (NPZ)" if not overview else "Thumbnails and first-token shares (NPZ)")
