"""Inside a layer: one query token through one attention head and through the whole layer, with the model's
real numbers (q, every kᵢ, q⊙kᵢ, scores, mask, softmax, the weighted values), and the layer recomposed from
its sublayers and compared with the model's own hidden state. Opened from a head of the Attention page."""

import zlib

import numpy as np
import pandas as pd
import streamlit as st

from viz.app import cache, ui
from viz.core.capture import CaptureError
from viz.core.names import level
from viz.core.tokens import readable
from viz.figures.inside import contributions_figure, head_figure, layer_figure
from viz.inside.walk import KEY_MODES, head_walk, pick_keys, to_arrays

STACK_LABELS = {"encoder": "Encoder self-attention", "decoder": "Decoder masked self-attention",
                "cross": "Cross-attention (decoder → encoder)"}
ss = st.session_state

ui.through_app()
st.title("Inside a layer")
st.caption("Where the attention weights come from, with this model's real numbers: the query q of one token, "
           "every key kᵢ, the scores q·kᵢ·scaling, the mask, the softmax, the weighted sum of the values; then "
           "the whole layer (attention → add & norm → feed-forward → add & norm) recomposed from the model's own "
           "modules and compared with the hidden state the model computed.")
name, text, target, bundle = ui.page_input("inside")
try:
    axes = cache.get_axis_tokens(name, text, target)
except CaptureError as e:
    ui.stop(str(e), "warning", "✍️")

stacks = list(bundle.arch.stacks)
if ss.get("inside_stack") not in stacks:
    ss.inside_stack = stacks[0]
c1, c2, c3, c4 = st.columns([3, 1, 1, 2])
stack = c1.radio("Attention", stacks, format_func=STACK_LABELS.get, horizontal=True, key="inside_stack") \
    if len(stacks) > 1 else stacks[0]
n_layers, n_heads = bundle.stack_layers("decoder" if stack == "cross" else stack), bundle.n_heads(stack)
q_tokens, k_tokens = axes[stack]
for key, top in (("inside_layer", n_layers - 1), ("inside_head", n_heads - 1), ("inside_token", len(q_tokens) - 1)):
    if key in ss and not 0 <= int(ss[key]) <= top:  # another model or text: keep the choice in range
        ss[key] = top
if "inside_token" not in ss:  # an encoder's first word; a decoder's last token (the one predicting next)
    ss.inside_token = min(1, len(q_tokens) - 1) if stack == "encoder" else len(q_tokens) - 1
layer = int(c2.number_input("Layer", 0, n_layers - 1, key="inside_layer"))
head = int(c3.number_input("Head", 0, n_heads - 1, key="inside_head"))
# one token widget per token list: a selectbox keeps showing its old labels when only format_func changes
# (another text or stack with as many tokens showed "the (1)" for "a"); `inside_token` carries the choice over
tok_key = f"inside_token_{stack}_{zlib.crc32(chr(31).join(q_tokens).encode())}"
if tok_key not in ss:
    ss[tok_key] = ss.inside_token
q_shown, k_shown = readable(q_tokens), readable(k_tokens)
token = int(c4.selectbox("Query token", range(len(q_tokens)), format_func=lambda i: f"{q_shown[i]} ({i})",
                         key=tok_key))
ss.inside_token = token
try:
    run = cache.get_inside(name, text, target, stack, layer, token)
    walk = head_walk(run, head)
except CaptureError as e:
    ui.stop(str(e), "warning", "✍️")
if run.cap.truncated:
    st.warning(f"The text has {run.cap.n_input_tokens} tokens; this model takes {len(run.cap.tokens)}. "
               f"Showing the first {len(run.cap.tokens)} tokens.", icon="✂️")

# ----------------------------------------------------------------------------- one head
st.subheader(f"One head: {STACK_LABELS[stack].lower()} · layer {layer} · head {head} · query “{q_shown[token]}”")
score = r"q\cdot k_i\cdot s"
if walk.softcap:
    score = rf"c\,\tanh({score}/c)"
if walk.bias is not None:
    score += r" + b_i"  # T5's relative position bias
st.latex(rf"w_i = \mathrm{{softmax}}_i\big({score} + \mathrm{{mask}}_i\big),\qquad "
         r"\mathrm{head} = \textstyle\sum_i w_i\, v_i")
kv = run.cap.keys[stack].shape[1]
m = st.columns(5)
m[0].metric("Scaling s", f"{walk.scaling:.4g}", help="q·kᵢ is multiplied by this (1/√d_k in Vaswani et al.; "
            "T5 folds it into its weights: 1).")
m[1].metric("Soft-cap c", "none" if walk.softcap is None else f"{walk.softcap:g}", help="Gemma 2: c·tanh(score/c).")
m[2].metric("Key/value head", f"{walk.kv_head}" + (f" of {kv}" if kv != n_heads else ""),
            help="Grouped-query attention: every group of query heads reads the same keys and values.")
m[3].metric("Weights vs the model", f"{walk.weight_error:.1e}",
            help="max |these weights − the attention row the model computed|")
pe = walk.projection_error
m[4].metric("Scores from W_q·x, W_k·x", "—" if pe is None else f"{pe:.1e}",
            help="max |q·kᵢ·s recomputed from the layer input through the model's own norm, projection "
                 "weights and RoPE − the scores above| " + (run.projection_note or ""))
k1, k2 = st.columns([3, 1])
mode = k1.radio("Keys shown", KEY_MODES, index=1, horizontal=True, key="inside_keys",
                help="A long input is legible one screenful at a time; the exports hold every key.")
limit = int(k2.number_input("At most", 4, 128, 24, key="inside_limit"))
idx, said = pick_keys(walk.weights, None if stack == "cross" else token, mode, limit, masked=~np.isfinite(walk.mask))
st.caption(said + " Strips: blue negative, red positive; the query's own position is marked ▶.")
row = [int(i) for i in idx].index(token) if stack != "cross" and token in idx else None
fig = head_figure([f"{k_shown[i]} ({i})" for i in idx], q_shown[token], walk.query, walk.keys[idx],
                  walk.scores[idx], walk.mask[idx], walk.weights[idx], walk.values[idx], walk.head_output,
                  title=f"“{q_shown[token]}” ({token}) reads {len(k_tokens)} keys", query_row=row)
stem = f"inside-{stack}-L{layer}-H{head}-T{token}"
ui.plot(fig, key="inside_head_fig", stem=stem)
table = pd.DataFrame({"position": np.arange(len(k_tokens)), "token": k_tokens, "q·k·s": walk.raw_scores,
                      "score": walk.scores, "mask": walk.mask, "weight": walk.weights, "model weight": walk.captured})
d1, d2 = st.columns(2)
with d1:
    ui.table_download(table, key="inside_keys_csv", stem=f"{stem}-keys", label="Every key (CSV)")
with d2:
    ui.npz_download(to_arrays(run, walk), key="inside_npz", stem=stem, label="Every vector (NPZ)")

# ----------------------------------------------------------------------------- the whole layer
st.subheader("The whole layer")
lw = run.layer_walk
if lw is None:
    st.info(run.layer_note, icon="ℹ️")
else:
    if stack != "encoder" and bundle.kind == "encoder-decoder":
        st.caption("A decoder layer holds both attentions: masked self-attention, then cross-attention "
                   "(queries from the decoder, keys and values from the encoder's output), then the feed-forward.")
    left, right = st.columns([3, 2])
    with left:
        steps = lw.steps
        ui.plot(layer_figure([s.label for s in steps], [s.kind for s in steps], [s.sublayer for s in steps],
                             [s.detail for s in steps], [s.norm for s in steps], lw.parallel,
                             title=f"Layer {layer} at “{q_shown[token]}” ({lw.recipe}"
                                   f"{', parallel residual' if lw.parallel else ''})"),
                key="inside_layer_fig", stem=f"{stem}-layer")
    with right:
        err = lw.recomposition_error
        st.metric("Recomposition error", f"{err:.1e}", help="max |our layer output − the model's hidden state| "
                  "over the d_model dimensions")
        if err <= 1e-4:
            st.success("The pieces add up to what the model computed (to float32 rounding).", icon="✅")
        else:
            st.warning(f"Off by {err:.2g}: beyond float32 rounding (a bfloat16 model, or a recipe to fix).", icon="⚠️")
        if lw.final:
            st.caption(f"Last layer: the model reports its last hidden state ({level(layer + 1)}) after "
                       f"{', '.join(lw.final)}; the walk applies it too.")
        steps_df = pd.DataFrame([s.vector for s in lw.steps])
        steps_df.insert(0, "‖v‖", [s.norm for s in lw.steps])
        steps_df.insert(0, "modules", [s.detail for s in lw.steps])
        steps_df.insert(0, "step", [s.label for s in lw.steps])
        # an HTML table that wraps (a data grid cut its ‖v‖ column and "masked self-att…" in this narrow column)
        st.table(steps_df[["step", "‖v‖", "modules"]].assign(**{"‖v‖": [f"{v:.4g}" for v in steps_df["‖v‖"]]})
                 .set_index("step"))
        ui.table_download(steps_df, key="inside_steps_csv", stem=f"{stem}-layer", label="Every step's vector (CSV)")
if run.contributions is not None:
    norms = np.linalg.norm(run.contributions, axis=1)
    ui.plot(contributions_figure(norms, head, f"What each head of layer {layer} wrote at “{q_shown[token]}”: "
                                              "‖head output · W_O[head]‖"), key="inside_contrib_fig",
            stem=f"{stem}-heads")
