"""Attention page: the model view (every layer x head), one head, and aggregates."""

import numpy as np
import pandas as pd
import streamlit as st

from viz import ui
from viz.analysis.words import aggregate, drop_rows_cols, merge_pieces, span_labels
from viz.capture import to_arrays
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


def view(attn, stack):
    """The attention tensor and axis labels after the word / special-token toggles."""
    (q_tok, k_tok), ((q_sp, q_spec), (k_sp, k_spec)) = cap.axis_tokens(stack), cap.axis_spans(stack)
    if words:
        attn = merge_pieces(attn, q_sp, k_sp)
        q_lab, k_lab = span_labels(q_tok, q_sp, bundle.tokenizer), span_labels(k_tok, k_sp, bundle.tokenizer)
        q_spec, k_spec = q_spec[[s for s, _ in q_sp]], k_spec[[s for s, _ in k_sp]]
    else:
        q_lab, k_lab = list(q_tok), list(k_tok)
    if hide and (~q_spec).any() and (~k_spec).any():
        attn = drop_rows_cols(attn, ~q_spec, ~k_spec)
        q_lab = [t for t, s in zip(q_lab, q_spec) if not s]
        k_lab = [t for t, s in zip(k_lab, k_spec) if not s]
    return attn, q_lab, k_lab


A, q_lab, k_lab = view(cap.attentions[stack], stack)  # [layer, head, query, key]
L, H = A.shape[:2]
st.caption(f"{bundle.name} · {bundle.kind} · {L} layers × {H} heads · {len(cap.tokens)} tokens")


def open_head():
    """Click on a model-view thumbnail -> select that layer and head."""
    cell = ui.clicked_customdata("attn_model_view")
    if cell is not None and len(cell) >= 2:
        st.session_state.attn_layer, st.session_state.attn_head = int(cell[0]), int(cell[1])


st.subheader("Model view")
st.caption("Every layer × head; each thumbnail scaled to its own maximum. Click one to open it below.")
ui.plot(model_view(A), key="attn_model_view", stem=f"model-view-{stack}", on_select=open_head,
        selection_mode="points")
ui.npz_download({"attentions": A, "query_tokens": np.array(q_lab), "key_tokens": np.array(k_lab)},
                key="attn_model_npz", stem=f"attention-{stack}", label="All heads (NPZ)")

left, right = st.columns([1, 1])
with left:
    st.subheader("One head")
    s1, s2 = st.columns(2)
    layer = s1.number_input("Layer", 0, L - 1, 0, key="attn_layer")
    head = s2.number_input("Head", 0, H - 1, 0, key="attn_head")
    if st.button(f"Inside layer {layer}, head {head} →", key="attn_inside", help="Open the Inside a layer page "
                 "for this head: q, k, v, scores, mask, softmax and the whole layer, with the real numbers."):
        ui.open_inside(stack, int(layer), int(head))
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
ui.npz_download(to_arrays(cap), key="attn_capture_npz", stem="capture", label="Whole capture (NPZ)")
