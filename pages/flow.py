"""Layer flow page: rollout, attention flow, norm-based attention and the journey of hidden states."""

from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

from viz.app import cache, ui
from viz.analysis.flow import FLOW_MAX_TOKENS, FLOW_ROW_MAX_TOKENS, path_mass
from viz.analysis.journey import consecutive_cosine, cosine_to_final, pca_paths, token_similarity
from viz.analysis.norms import row_normalise
from viz.figures.attention import head_heatmap
from viz.figures.flow import flow_view, into_token_bars, level_token_heatmap, pca_paths_figure
from viz.core.names import levels

STACKS = {"encoder": "Encoder self-attention", "decoder": "Decoder masked self-attention",
          "cross": "Cross-attention (decoder → encoder)"}
WEIGHTS = {"graph": "attention + residual (rollout graph Â)", "raw": "raw attention (head mean)",
           "norm": "norm-based ‖Σₕ α f(x)‖", "norm_res": "norm-based, residual-aware"}

ui.through_app()
st.title("Layer flow")
name, text, target, bundle = ui.page_input("flow")
cap = ui.capture_or_stop(name, text, target)
self_stacks = [s for s in cap.stacks if s != "cross"]
stack = st.radio("Stack", self_stacks, format_func=STACKS.get, horizontal=True, key="flow_stack") \
    if len(self_stacks) > 1 else self_stacks[0]
if bundle.kind == "encoder-decoder":
    st.info("Rollout and flow follow **self-attention only**: the encoder from its input tokens, the decoder "
            "through its masked self-attention from its own input tokens. What the decoder takes from the "
            "encoder through cross-attention is not in them; cross-attention is under *Raw vs norm-based*.",
            icon="ℹ️")
lf = cache.get_layer_flow(name, text, target, stack)
tokens, L, T = lf.query_tokens, lf.raw.shape[0], lf.raw.shape[-1]
labels = [f"{t} ({i})" for i, t in enumerate(tokens)]
st.caption(f"{bundle.name} · {STACKS[stack]} · {L} layers × {lf.raw.shape[1]} heads · {T} tokens")
if lf.note:
    st.warning(lf.note)

# ----------------------------------------------------------------------------- flow view
st.header("Flow view")
SOURCE = {"graph": "graph", "raw": "raw_mean", "norm": "norm_summed", "norm_res": "norm_res"}
kinds = [k for k in WEIGHTS if getattr(lf, SOURCE[k]) is not None]
c1, c2, c3, c4 = st.columns([2, 1, 1, 2])
kind = c1.selectbox("Links weighted by", kinds, format_func=WEIGHTS.get, key="flow_weights")
threshold = c2.slider("Threshold", 0.0, 0.5, 0.05, 0.01, key="flow_threshold")
top_k = c3.slider("Top-k per token", 1, 10, 3, key="flow_topk")
ALL = -1  # "follow no token" (None as a selectbox value reads as "nothing chosen" and shows a placeholder)
if st.session_state.get("flow_token_for", (name, text, target, stack)) != (name, text, target, stack):
    st.session_state.flow_token = ALL  # new tokens: follow none of the old ones
st.session_state.flow_token_for = (name, text, target, stack)
picked = c4.selectbox("Follow token", [ALL] + list(range(T)), key="flow_token",
                      format_func=lambda i: "— all links —" if i == ALL else labels[i],
                      on_change=lambda: st.session_state.update(flow_level=L))
picked = None if picked in (None, ALL) else picked
level = min(int(st.session_state.get("flow_level", L)), L)  # level of the followed node; a click sets it
if level < 1:  # an embedding node has nothing flowing into it
    level = L
mats = {"graph": lf.graph, "raw": lf.raw_mean, "norm": None if lf.norm_summed is None else row_normalise(lf.norm_summed),
        "norm_res": None if lf.norm_res is None else row_normalise(lf.norm_res)}[kind]
shown = mats if picked is None else path_mass(mats, picked, level - 1)
st.caption("Columns are levels (embeddings, then each layer's output); a link joins token j one level down to "
           "token i it feeds. Following a token shows how its unit of mass splits over the links when routed "
           "proportionally downwards (the rollout decomposition). Click a node to follow it.")


def _follow():
    """Click on a node -> follow that token from that level."""
    node = ui.clicked_customdata("flow_view")
    if node is not None and len(node) >= 2:
        st.session_state.flow_level, st.session_state.flow_token = int(node[0]), int(node[1])


ui.plot(flow_view(shown, tokens, threshold, top_k, picked, level, title=WEIGHTS[kind]), key="flow_view",
        stem=f"flow-view-{stack}-{kind}", on_select=_follow, selection_mode="points")
ui.npz_download({"links": shown, "tokens": np.array(tokens)}, key="flow_view_npz", stem=f"flow-links-{stack}-{kind}",
                label="Links (NPZ, [layer, to, from])")
if picked is not None:
    node = f"{labels[picked]} at the output of L{level - 1}"
    series = {"rollout": lf.rollout[level - 1, picked],
              f"raw attention of L{level - 1} (head mean)": lf.raw_mean[level - 1, picked]}
    flow = None
    if T <= FLOW_ROW_MAX_TOKENS:
        bar = st.progress(0.0, text=f"Attention flow into {node}…")
        flow = cache.get_flow(name, text, target, stack, level - 1, (picked,), None,
                              progress=lambda d, n: bar.progress(d / n))[0]
        bar.empty()
    else:
        st.info(f"{T} tokens: attention flow for one token is limited to {FLOW_ROW_MAX_TOKENS}; showing rollout.")
    ui.plot(into_token_bars(series, tokens, f"What flows into {node} from the input tokens", flow=flow),
            key="flow_into", stem=f"flows-into-{picked}-L{level - 1}")
    ui.table_download(pd.DataFrame({**series, **({} if flow is None else {"max-flow": flow})}, index=labels),
                      key="flow_into_csv", stem=f"flows-into-{picked}-L{level - 1}")

# ----------------------------------------------------------------------------- rollout / flow heatmaps
st.header("Rollout and flow per layer")
h1, h2 = st.columns([1, 3])
method = h1.radio("Method", ["rollout", "flow"], horizontal=True, key="flow_method")
layer = h2.select_slider("Layer (output of)", list(range(L)), L - 1, key="flow_layer", format_func=lambda i: f"L{i}")
M, title, value = lf.rollout[layer], f"Attention rollout · L{layer} → input tokens", "share"
if method == "flow":
    if T > FLOW_MAX_TOKENS:
        st.warning(f"The sequence has {T} tokens; a full attention-flow matrix is limited to {FLOW_MAX_TOKENS} "
                   f"here ({T * T} max-flow problems). Showing attention rollout instead; shorten the text, or "
                   "follow one token in the flow view for its flow row.", icon="⏳")
    else:
        bar = st.progress(0.0, text="Attention flow (max-flow per token pair)…")
        M = cache.get_flow(name, text, target, stack, layer, None, FLOW_MAX_TOKENS,
                           progress=lambda d, n: bar.progress(d / n))
        bar.empty()
        title, value = f"Attention flow · L{layer} → input tokens", "max-flow"
ui.plot(head_heatmap(M, tokens, tokens, title, x_title="input token", y_title=f"token at the output of L{layer}",
                     value=value), key="flow_heat", stem=f"{method}-{stack}-L{layer}")
ui.table_download(pd.DataFrame(M, index=labels, columns=labels), key="flow_heat_csv", stem=f"{method}-{stack}-L{layer}")
ui.npz_download(partial(cache.layer_flow_arrays, name, text, target, stack), key="flow_all_npz",
                stem=f"layer-flow-{stack}", label="All arrays of this stack (NPZ)")

# ----------------------------------------------------------------------------- raw vs norm
st.header("Raw vs norm-based attention")
n1, n2, n3 = st.columns([2, 1, 1])
nstack = n1.radio("Attention", cap.stacks, format_func=STACKS.get, horizontal=True, key="flow_norm_stack") \
    if len(cap.stacks) > 1 else stack
nf = lf if nstack == stack else cache.get_layer_flow(name, text, target, nstack)
nl = n2.number_input("Layer", 0, nf.raw.shape[0] - 1, 0, key="flow_norm_layer")
nh = n3.number_input("Head", 0, nf.raw.shape[1] - 1, 0, key="flow_norm_head")
if nf.norm is None:
    st.warning("No value vectors or output projection for this stack: norm-based attention is unavailable.")
else:
    st.caption("Left: the weight α. Right: ‖α f(x)‖, the size of what the head actually adds "
               "(Kobayashi et al. 2020). Tokens with small transformed values (often [CLS]/[SEP]) fade.")
    a, b = st.columns(2)
    with a:
        ui.plot(head_heatmap(nf.raw[nl, nh], nf.query_tokens, nf.key_tokens, f"α · L{nl} H{nh}", value="α"),
                key="flow_raw_head", stem=f"raw-{nstack}-L{nl}-H{nh}")
    with b:
        ui.plot(head_heatmap(nf.norm[nl, nh], nf.query_tokens, nf.key_tokens, f"‖α f(x)‖ · L{nl} H{nh}",
                             x_title="key (its transformed value f(x))", value="‖α f(x)‖"),
                key="flow_norm_head_fig", stem=f"norm-{nstack}-L{nl}-H{nh}")
    ui.npz_download(partial(cache.layer_flow_arrays, name, text, target, nstack, ("raw", "norm", "norm_summed")),
                    key="flow_norm_npz", stem=f"norms-{nstack}", label="Raw and norm-based, all heads (NPZ)")
    if nf.norm_res is not None:
        ui.plot(head_heatmap(nf.norm_res[nl], nf.query_tokens, nf.key_tokens,
                             f"Whole L{nl}, {nf.norm_res_kind} (Kobayashi et al. 2021)", x_title="input token",
                             y_title=f"token at the output of L{nl}", value="share"),
                key="flow_norm_res", stem=f"norm-res-{nstack}-L{nl}")

# ----------------------------------------------------------------------------- journey
st.header("Journey of the hidden states")
if lf.hidden is None:
    st.info("No hidden states for this stack.")
else:
    h = lf.hidden
    names = levels(h.shape[0])
    cons, fin = consecutive_cosine(h), cosine_to_final(h)
    j1, j2 = st.columns(2)
    with j1:
        ui.plot(level_token_heatmap(cons, tokens, [f"{a}→{b}" for a, b in zip(names, names[1:])],
                                    "cos(level, next level) per token"), key="flow_cons", stem=f"cos-consecutive-{stack}")
        ui.table_download(pd.DataFrame(cons.T, index=labels, columns=names[1:]), key="flow_cons_csv",
                          stem=f"cos-consecutive-{stack}")
    with j2:
        ui.plot(level_token_heatmap(fin, tokens, names, f"cos(level, {names[-1]}) per token"), key="flow_fin",
                stem=f"cos-final-{stack}")
        ui.table_download(pd.DataFrame(fin.T, index=labels, columns=names), key="flow_fin_csv", stem=f"cos-final-{stack}")
    lvl = names.index(st.select_slider("Level for token-by-token similarity", names, names[-1], key="flow_sim_level",
                                       help="emb = the embeddings; L3 = the output of layer L3"))
    sim = token_similarity(h[lvl:lvl + 1])[0]
    s1, s2 = st.columns(2)
    with s1:
        ui.plot(head_heatmap(sim, tokens, tokens, f"Token-by-token cosine · {names[lvl]}", x_title="token",
                             y_title="token", value="cos", zmin=None, colorscale="Viridis"), key="flow_sim",
                stem=f"token-similarity-{stack}-{names[lvl]}")
        ui.table_download(pd.DataFrame(sim, index=labels, columns=labels), key="flow_sim_csv",
                          stem=f"token-similarity-{stack}-{names[lvl]}")
    with s2:
        paths, ratio = pca_paths(h)
        ui.plot(pca_paths_figure(paths, tokens, ratio, "Each token's path (PCA of unit-length states)"),
                key="flow_pca", stem=f"pca-paths-{stack}")
        ui.npz_download({"paths": paths, "explained": ratio, "tokens": np.array(tokens)}, key="flow_pca_npz",
                        stem=f"pca-paths-{stack}")
