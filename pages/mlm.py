"""Masked LM page: top-k per mask, per-layer predictions (logit lens), and the mask sweep."""

import pandas as pd
import streamlit as st

from viz.app import cache, ui
from viz.figures.mlm import layer_rank_heatmap, original_by_layer, sweep_bars, topk_bars
from viz.tasks.mlm import MaskError, mask_sweep
from viz.core.names import level

ui.through_app()
st.title("Masked LM")
name, text = ui.model_name(), st.session_state.get("text", "")
bundle = ui.bundle_or_stop(name)
ui.mlm_or_stop(bundle)
mask = bundle.tokenizer.mask_token
typed = mask if mask == "[MASK]" else f"{mask} (or [MASK])"
st.caption(f"Type {typed} in the text, or pick tokens below to mask them. Several masks at once are fine.")

c1, c2, c3 = st.columns([2, 2, 3], vertical_alignment="bottom")
positions = ui.token_picker("Tokens to mask", "mlm_positions", bundle, text)
top_k = c2.slider("Top k", 1, 20, 5, key="mlm_topk")
layers = c3.toggle("Per-layer predictions", value=True, key="mlm_layers",
                   help="Apply the masked-LM head to every layer's hidden state (a logit lens for encoders).")
c1.button("Try an example with a mask", key="mlm_example", on_click=ui.use_mask_example)

try:
    result = cache.get_mask_result(name, text, positions, top_k, layers)
except MaskError as e:
    st.warning(str(e), icon="✍️")
    result = None

if result is not None:
    rows, layer_rows = [], []
    for pred in result.predictions:
        label = f"position {pred.position}" + (f" (was '{pred.original}')" if pred.original else "")
        st.subheader(f"{mask} at {label}")
        left, right = st.columns([1, 2])
        with left:
            ui.plot(topk_bars(pred.top, f"top {top_k}"), key=f"mlm_top_{pred.position}", stem=f"mlm-top-{pred.position}")
        if pred.layer_top:
            with right:
                ui.plot(layer_rank_heatmap(pred.layer_top, "prediction at every layer"),
                        key=f"mlm_layers_{pred.position}", stem=f"mlm-layers-{pred.position}")
            if pred.layer_original_prob:
                ui.plot(original_by_layer(pred.layer_original_prob, pred.layer_original_rank, pred.original),
                        key=f"mlm_orig_{pred.position}", stem=f"mlm-original-{pred.position}")
        rows += [{"position": pred.position, "original": pred.original, "rank": r + 1, "token": t, "prob": p}
                 for r, (t, p) in enumerate(pred.top)]
        layer_rows += [{"position": pred.position, "level": level(li), "rank": r + 1, "token": t, "prob": p,
                        "original_prob": (pred.layer_original_prob or [None] * len(pred.layer_top))[li],
                        "original_rank": (pred.layer_original_rank or [None] * len(pred.layer_top))[li]}
                       for li, row in enumerate(pred.layer_top) for r, (t, p) in enumerate(row)]
    d1, d2 = st.columns(2)
    with d1:
        ui.table_download(pd.DataFrame(rows), key="mlm_top_csv", stem="mlm-predictions", label="Predictions (CSV)")
    if layer_rows:
        with d2:
            ui.table_download(pd.DataFrame(layer_rows), key="mlm_layer_csv", stem="mlm-per-layer",
                              label="Per-layer predictions (CSV)")

st.header("Mask sweep")
st.caption("Each token masked in turn: the probability the model gives the true token from the rest of the sentence. "
           "Summed in log space this is the pseudo-log-likelihood (Salazar et al. 2020).")
sweep_key = (name, text)
if st.button("Run the mask sweep", key="mlm_sweep_run"):
    bar = st.progress(0.0, text="Masking each token in turn…")
    try:
        st.session_state.mlm_sweep = (sweep_key, mask_sweep(bundle, text, on_progress=lambda f: bar.progress(f)))
    except MaskError as e:
        st.warning(str(e), icon="✍️")
    bar.empty()
saved = st.session_state.get("mlm_sweep")
if saved and saved[0] == sweep_key:
    sweep = saved[1]
    toks = [sweep.tokens[i] for i in sweep.positions]
    m1, m2 = st.columns(2)
    m1.metric("Pseudo-log-likelihood", f"{sweep.pll:.2f}")
    m2.metric("Per token (mean log p)", f"{sweep.pll / max(1, len(toks)):.2f}")
    n_typed = sum(t == mask for t in sweep.tokens)  # typed masks stay masked while each other token takes its turn
    ui.plot(sweep_bars(toks, sweep.prob, "p(true token) with only that token masked" if not n_typed else
                       f"p(true token) with that token masked (the {n_typed} typed {mask} stay masked too)"),
            key="mlm_sweep_fig", stem="mask-sweep")
    ui.table_download(pd.DataFrame({"position": sweep.positions, "token": toks, "prob": sweep.prob, "rank": sweep.rank}),
                      key="mlm_sweep_csv", stem="mask-sweep")
