"""Encoder–decoder page: the original Transformer live — encoder self-attention, decoder masked
self-attention beside its look-ahead mask, cross-attention (alignment), step-by-step decoding
with top-k, and the architecture read from the loaded model's config."""

import json
from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

from viz.app import cache, ui
from viz.analysis.words import aggregate
from viz.tasks.config_summary import VIEW_LABELS, describe, sublayer_rows, table_rows
from viz.core.capture import CaptureError
from viz.figures.attention import head_heatmap, model_view
from viz.figures.encdec import COLORS, architecture_figure, attention_bars, beams_figure, mask_figure, topk_figure
from viz.tasks.encdec import TASK_HINTS, encoder_decoder_names, example_source, max_new_tokens_limit, shipped_task
from viz.core.models import builtin_names

MODES = {"greedy": "Generate: greedy", "beam": "Generate: beam search", "teacher": "Teacher forcing (target text)"}
SUBLAYER = {"encoder": "encoder layer, sublayer 1 (multi-head self-attention)",
            "decoder": "decoder layer, sublayer 1 (masked multi-head self-attention)",
            "cross": "decoder layer, sublayer 2 (encoder–decoder attention: queries from the decoder, "
                     "keys and values from the encoder output)"}


def move_step(delta: int, n: int):
    st.session_state.ed_step = min(max(st.session_state.get("ed_step", 0) + delta, 0), n - 1)


def use_model():
    st.session_state.model_choice = st.session_state.ed_pick


ui.through_app()
st.title("Encoder–decoder")
name = ui.model_name()
bundle = ui.bundle_or_stop(name)
if bundle.kind != "encoder-decoder":
    st.warning(f"'{name}' is {'an' if bundle.kind == 'encoder' else 'a'} {bundle.kind}-only model: it has no "
               "decoder reading an encoder through cross-attention, which is what this page shows. Look at its "
               "attention on the Attention page, or switch to an encoder–decoder here.", icon="🔁")
    st.page_link("pages/attention.py", label="Open the Attention page", icon="🔭")
    if bundle.kind == "decoder":  # decoder-only models step through generation on their own page
        st.page_link("pages/generate.py", label="Step through its generation on the Generate page", icon="✍️")
    choices = encoder_decoder_names(builtin_names())
    st.selectbox("Encoder–decoder models", choices, key="ed_pick")
    st.button("Use this model", key="ed_use", on_click=use_model, type="primary")
    ui.stop("Pick an encoder–decoder model to continue.", "info", "👉")

# the page keeps its own source text, prefilled per model (a date for seq2seq-dates)
if "ed_source" not in st.session_state or st.session_state.get("ed_source_for", name) != name:
    st.session_state.ed_source = example_source(name) or st.session_state.get("text", ui.EXAMPLES[0])
st.session_state.ed_source_for = name

c1, c2 = st.columns([3, 2])
source = c1.text_area("Source text (encoder input)", key="ed_source", height=90)
if shipped_task(name) in TASK_HINTS:
    c1.caption(TASK_HINTS[shipped_task(name)])
sidebar_text = st.session_state.get("text", "")
if sidebar_text.strip() and sidebar_text.strip() != source.strip():  # it was ignored without a word
    c1.caption("This page reads the source box above, not the sidebar's **Text**" +
               (" (this model was trained on its task's inputs only)." if shipped_task(name) in TASK_HINTS else "."))
    c1.button("Use the sidebar's text as the source", key="ed_use_text",
              on_click=lambda: st.session_state.update(ed_source=st.session_state.get("text", "")))
mode = c2.radio("Decoder input", list(MODES), format_func=MODES.get, key="ed_mode", horizontal=True)
target, beams, limit = None, 1, max_new_tokens_limit(bundle)
max_new = min(20, limit)
if mode == "teacher":
    target = c1.text_input("Target text (the decoder reads it shifted right)", key="ed_target")
else:
    max_new = c2.number_input("Max new tokens", 1, limit, max_new, key="ed_max_new")
    if mode == "beam":
        beams = c2.number_input("Beams", 2, 8, 4, key="ed_beams")
top_k = c2.slider("Top-k next tokens", 1, 10, 5, key="ed_topk")
try:
    gen = cache.get_generation(name, source, mode, target or None, int(beams), int(max_new), int(top_k))
except CaptureError as e:
    ui.stop(str(e), "warning", "✍️")
if gen.truncated:
    st.warning(f"The source has {gen.n_source_tokens} tokens; this model takes {len(gen.source_tokens)}. "
               f"Showing the first {len(gen.source_tokens)}.", icon="✂️")
cap = gen.to_capture()
out_text = bundle.tokenizer.convert_tokens_to_string([t for s, t in zip(gen.steps, gen.output_tokens)
                                                       if s.token_id not in gen.special_ids])
st.markdown(f"**{'Target' if mode == 'teacher' else 'Output'}:** `{out_text or '(only special tokens)'}`")
st.caption(f"{bundle.name} · {len(gen.steps)} decoding steps · "
           f"{'ended on end-of-sequence' if gen.finished else 'stopped at the length limit'}")

if gen.beams:
    ui.plot(beams_figure(gen.beams, gen.length_penalty), key="ed_beams_fig", stem=f"{name}-beams")
    st.caption("The steps and attentions below follow the best beam (#1), teacher-forced.")
tab_steps, tab_attn, tab_arch = st.tabs(["Step by step", "Attention", "Architecture"])
L, H = gen.encoder_attentions.shape[:2]

with tab_steps:
    n = len(gen.steps)
    if st.session_state.get("ed_step", 0) >= n:
        st.session_state.ed_step = n - 1
    t = 0
    if n > 1:
        p1, p2, p3 = st.columns([1, 8, 1], vertical_alignment="bottom")
        p1.button("◀", key="ed_prev", on_click=move_step, args=(-1, n), help="previous step")
        p3.button("▶", key="ed_next", on_click=move_step, args=(1, n), help="next step")
        t = p2.select_slider("Step", list(range(n)), key="ed_step", format_func=lambda i: f"{i}: {gen.steps[i].token}")
    step = gen.steps[t]
    s1, s2 = st.columns(2)
    layer = s1.selectbox("Layer", list(range(L)), index=L - 1, key="ed_step_layer")
    head = s2.selectbox("Head", ["mean"] + list(range(H)), key="ed_step_head",
                        format_func=lambda h: "mean over heads" if h == "mean" else f"head {h}")
    pick = (lambda a: a[layer].mean(0)) if head == "mean" else (lambda a: a[layer, head])
    prefix = gen.decoder_tokens[: t + 1]
    st.markdown("Decoder so far: " + " ".join(f"`{x}`" for x in prefix) + f" → **`{step.token}`**"
                + (" *(forced by a generation rule)*" if step.forced and mode != "teacher" else "")
                + (" *(the target; the model's top-1 differs)*" if step.forced and mode == "teacher" else ""))
    b1, b2, b3 = st.columns(3)
    with b1:
        ui.plot(attention_bars(pick(step.cross), gen.source_tokens, f"Step {t}: cross-attention",
                               x_title="source token"), key="ed_step_cross", stem=f"step-{t}-cross")
    with b2:
        ui.plot(attention_bars(pick(step.self_attn), prefix, f"Step {t}: masked self-attention",
                               COLORS["decoder"], x_title="decoder input so far"),
                key="ed_step_self", stem=f"step-{t}-self")
    with b3:
        ui.plot(topk_figure(step.top_k, step.token), key="ed_step_topk", stem=f"step-{t}-topk")
    rows = [{"step": s.index, "decoder input": s.query_token, "output": s.token, "p(output)": round(s.prob, 4),
             "forced": s.forced, "most attended source (last layer, mean)":
                 gen.source_tokens[int(s.cross[-1].mean(0).argmax())],
             "top-1": s.top_k[0][0]} for s in gen.steps]
    steps_df = pd.DataFrame(rows).set_index("step")
    st.dataframe(steps_df, width="stretch")
    d1, d2 = st.columns(2)
    with d1:
        ui.table_download(steps_df, key="ed_steps_csv", stem=f"{name}-steps", label="Steps (CSV)")
    with d2:
        st.download_button("Steps (JSON, as `python -m viz generate --json`)", key="ed_steps_json",
                           data=lambda: json.dumps(gen.to_json(), indent=1), file_name=f"{ui.slug(name)}-steps.json",
                           mime="application/json", on_click="ignore")

with tab_attn:
    stack = st.radio("Attention", list(VIEW_LABELS), format_func=VIEW_LABELS.get, key="ed_stack", horizontal=True)
    st.caption(f"Comes from the {SUBLAYER[stack]}.")
    A = cap.attentions[stack]  # [layer, head, query, key]
    q_lab, k_lab = cap.axis_tokens(stack)
    a1, a2 = st.columns(2)
    if st.session_state.get("ed_layer") not in range(A.shape[0]):  # the last layer first; a click sets it
        st.session_state.ed_layer = A.shape[0] - 1
    layer = a1.number_input("Layer", 0, A.shape[0] - 1, key="ed_layer")
    head = a2.number_input("Head", 0, A.shape[1] - 1, key="ed_head")
    M = A[layer, head]
    left, right = st.columns(2)
    with left:
        ui.plot(head_heatmap(M, q_lab, k_lab, f"{VIEW_LABELS[stack]} · L{layer} H{head}"),
                key="ed_head_fig", stem=f"{stack}-L{layer}-H{head}")
        ui.table_download(pd.DataFrame(M, index=q_lab, columns=k_lab), key="ed_head_csv",
                          stem=f"{stack}-L{layer}-H{head}")
    with right:
        if stack == "decoder":
            ui.plot(mask_figure(q_lab), key="ed_mask_fig", stem="look-ahead-mask")
            future = float(np.triu(A, k=1).max()) if A.shape[-1] > 1 else 0.0
            st.caption(f"Measured on this run: the largest weight any of the {A.shape[0] * A.shape[1]} heads puts "
                       f"on a future position is {future:.1e}.")
        else:
            ui.plot(model_view(A, title="Every layer × head", selected=(layer, head)), key="ed_model_view",
                    stem=f"model-view-{stack}", on_select=ui.pick("ed_model_view", "ed_layer", "ed_head"), selection_mode="points")
    st.subheader("Head-averaged alignment (cross-attention)")
    scope = st.selectbox("Layers", ["all layers"] + [f"layer {i}" for i in range(L)], index=L, key="ed_align_layer")
    C = cap.attentions["cross"]
    align = aggregate(C) if scope == "all layers" else aggregate(C[int(scope.split()[1])], axis=0)
    ui.plot(head_heatmap(align, *cap.axis_tokens("cross"), f"Alignment: mean over heads · {scope}"),
            key="ed_align_fig", stem=f"alignment-{scope}")
    ui.table_download(pd.DataFrame(align, index=cap.axis_tokens("cross")[0], columns=cap.tokens),
                      key="ed_align_csv", stem=f"alignment-{scope}")
    ui.npz_download(partial(cache.generation_arrays, name, source, mode, target or None, int(beams), int(max_new),
                            int(top_k)), key="ed_capture_npz", stem=f"{name}-encdec", label="All attentions (NPZ)")

with tab_arch:
    desc = describe(bundle.config)
    subs = sublayer_rows(bundle.arch, bundle.model)
    ui.plot(architecture_figure(desc, subs), key="ed_arch_fig", stem=f"{name}-architecture")
    arch_df = pd.DataFrame(table_rows(desc)).set_index("property")
    st.dataframe(arch_df, width="stretch", height="content")  # every row visible, no scroll box
    st.dataframe(pd.DataFrame(subs), width="stretch", hide_index=True, height="content")
    ui.table_download(arch_df, key="ed_arch_csv", stem=f"{name}-architecture")
