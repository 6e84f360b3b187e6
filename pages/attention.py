"""Attention page: the model view (every layer x head), one head, and aggregates."""

from functools import partial

import pandas as pd
import streamlit as st

from viz import cache, ui
from viz.analysis.words import aggregate
from viz.figures.attention import head_heatmap, model_view

STACK_LABELS = {"encoder": "Encoder self-attention", "decoder": "Decoder masked self-attention",
                "cross": "Cross-attention (decoder → encoder)"}

ui.through_app()
st.title("Attention")
name, text, target, bundle = ui.page_input("attn")
cap = ui.capture_or_stop(name, text, target)

c1, c2, c3 = st.columns([2, 1, 1])
stack = c1.radio("Attention", cap.stacks, format_func=STACK_LABELS.get, horizontal=True, key="attn_stack") \
    if len(cap.stacks) > 1 else cap.stacks[0]
words = c2.toggle("Merge word pieces", key="attn_words", help="Sum over key pieces, mean over query pieces.")
hide = c3.toggle("Hide special tokens", key="attn_hide_special",
                 help="Drop [CLS]/[SEP]/padding rows and columns and renormalise each row.")


# [layer, head, query, key] after the toggles (viz.analysis.words.attention_view), cached beside the capture
A, q_lab, k_lab = cache.get_attention_view(name, text, target, stack, words, hide)
L, H = A.shape[:2]
st.caption(f"{bundle.name} · {bundle.kind} · {L} layers × {H} heads · {len(cap.tokens)} tokens")

st.subheader("Model view")
st.caption("Every layer × head; each thumbnail scaled to its own maximum. Click one to open it below.")
# Callbacks and download callables outlive this run: none of them may hold the page's arrays (ui.pick).
ui.plot(model_view(A), key="attn_model_view", stem=f"model-view-{stack}",
        on_select=ui.pick("attn_model_view", "attn_layer", "attn_head"), selection_mode="points")
ui.npz_download(partial(cache.attention_view_arrays, name, text, target, stack, words, hide),
                key="attn_model_npz", stem=f"attention-{stack}", label="All heads (NPZ)")

left, right = st.columns([1, 1])
with left:
    st.subheader("One head")
    s1, s2 = st.columns(2)
    layer = s1.number_input("Layer", 0, L - 1, 0, key="attn_layer")
    head = s2.number_input("Head", 0, H - 1, 0, key="attn_head")
    M = A[layer, head]
    ui.plot(head_heatmap(M, q_lab, k_lab, f"{STACK_LABELS[stack]} · layer {layer} · head {head}"),
            key="attn_head_fig", stem=f"{stack}-L{layer}-H{head}")
    ui.table_download(pd.DataFrame(M, index=q_lab, columns=k_lab), key="attn_head_csv",
                      stem=f"{stack}-L{layer}-H{head}")
with right:
    st.subheader("Aggregate")
    a1, a2 = st.columns(2)
    how = a1.radio("Over heads by", ["mean", "max"], horizontal=True, key="attn_agg")
    scope = a2.selectbox("Layers", ["all layers"] + [f"layer {i}" for i in range(L)], key="attn_agg_layer")
    agg = aggregate(A, how) if scope == "all layers" else aggregate(A[int(scope.split()[1])], how, axis=0)
    ui.plot(head_heatmap(agg, q_lab, k_lab, f"{how} over heads · {scope}"), key="attn_agg_fig",
            stem=f"{stack}-{how}-{scope}")
    ui.table_download(pd.DataFrame(agg, index=q_lab, columns=k_lab), key="attn_agg_csv",
                      stem=f"{stack}-{how}-{scope}")
ui.npz_download(partial(cache.capture_arrays, name, text, target), key="attn_capture_npz", stem="capture",
                label="Whole capture (NPZ)")
