"""Compare masking page: two runs side by side and what changed between them."""

from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

from viz import cache, ui
from viz.compare import VARIANTS
from viz.figures.attention import head_heatmap
from viz.figures.compare import diff_heatmap, head_change_grid
from viz.figures.mlm import sweep_bars
from viz.interventions import n_heads

ui.through_app()
st.title("Compare masking")
name, text = ui.model_name(), st.session_state.get("text", "")
bundle = ui.bundle_or_stop(name)
if bundle.kind == "encoder-decoder":
    st.page_link("pages/attention.py", label="Open the Attention page", icon="🔭")
    ui.stop(f"'{name}' is an encoder–decoder; this comparison works on encoders (and decoders). "
            "Pick minilm, minilm-mlm or another encoder.")

# causal only for encoders (decoders are causal already); masking needs a mask token
variants = [v for v in VARIANTS if (v != "causal" or bundle.kind == "encoder")
            and (v != "mask" or bundle.tokenizer.mask_token)]
variant = st.radio("Compare", variants, format_func=VARIANTS.get, horizontal=True, key="cmp_variant")
L, H = bundle.n_layers, n_heads(bundle.config, bundle.arch.stacks[0])
positions, heads = (), frozenset()
if variant == "mask":
    positions = ui.token_picker("Tokens to mask in the second run", "cmp_positions", bundle, text)
    if not positions:
        st.info("Pick tokens to mask: with none, both runs are the same and every difference is zero.")
elif variant == "ablate":
    chosen = st.multiselect("Heads to ablate (their output is zeroed)", [(l, h) for l in range(L) for h in range(H)],
                            format_func=lambda lh: f"layer {lh[0]} · head {lh[1]}", key="cmp_heads")
    heads = frozenset(chosen)
else:
    st.caption("The second run adds the decoder's look-ahead mask to every encoder layer: token i sees only "
               "tokens ≤ i, as in the original Transformer's masked decoder self-attention.")

if not text.strip():
    ui.stop("The text is empty: type a sentence first.", "warning", "✍️")
cmp = cache.get_comparison(name, text, variant, positions, heads)
if cmp.base.truncated:
    st.warning(f"The text has {cmp.base.n_input_tokens} tokens; showing the first {len(cmp.base.tokens)}.", icon="✂️")
base_tok, other_tok = cmp.base.tokens, cmp.other.tokens


def open_head():
    pts = st.session_state.cmp_grid.selection.get("points", [])
    if pts:
        st.session_state.cmp_layer, st.session_state.cmp_head = int(pts[0]["y"]), int(pts[0]["x"])


left, right = st.columns([1, 1])
with left:
    st.subheader("Which heads changed")
    ui.plot(head_change_grid(cmp.head_js, "Jensen–Shannon divergence per head (mean over rows)"), key="cmp_grid",
            stem=f"compare-{variant}-heads", on_select=open_head, selection_mode="points")
with right:
    top = pd.DataFrame(cmp.top_heads(10), columns=["layer", "head", "js"])
    st.dataframe(top, hide_index=True, width="stretch")
    ui.table_download(pd.DataFrame([(l, h, cmp.head_js[l, h]) for l in range(L) for h in range(cmp.head_js.shape[1])],
                                   columns=["layer", "head", "js"]), key="cmp_js_csv", stem=f"compare-{variant}-js")
    ui.npz_download(partial(cache.comparison_arrays, name, text, variant, positions, heads),
                    key="cmp_npz", stem=f"compare-{variant}", label="Both runs (NPZ)")

best = cmp.top_heads(1)[0]
st.session_state.setdefault("cmp_layer", best[0])
st.session_state.setdefault("cmp_head", best[1])
s1, s2 = st.columns(2)
layer = s1.number_input("Layer", 0, L - 1, key="cmp_layer")
head = s2.number_input("Head", 0, cmp.head_js.shape[1] - 1, key="cmp_head")
stack = bundle.arch.stacks[0]
a, b, c = st.columns(3)
with a:
    ui.plot(head_heatmap(cmp.base.attentions[stack][layer, head], base_tok, base_tok, "first run"),
            key="cmp_base", stem=f"compare-base-L{layer}-H{head}")
with b:
    ui.plot(head_heatmap(cmp.other.attentions[stack][layer, head], other_tok, other_tok, VARIANTS[variant].split(" vs ")[1]),
            key="cmp_other", stem=f"compare-{variant}-L{layer}-H{head}")
with c:
    ui.plot(diff_heatmap(cmp.diff[layer, head], other_tok, other_tok, "difference (second − first)"),
            key="cmp_diff", stem=f"compare-diff-L{layer}-H{head}")
    ui.table_download(pd.DataFrame(cmp.diff[layer, head], index=other_tok, columns=other_tok), key="cmp_diff_csv",
                      stem=f"compare-diff-L{layer}-H{head}")

st.subheader("Prediction change")
if cmp.kl is None:
    st.info(f"'{name}' has no masked-LM head, so only attention changes are shown. Pick minilm-mlm to compare "
            "predictions too.")
else:
    keep = ~cmp.base.special
    toks = [t for t, k in zip(other_tok, keep) if k]
    st.metric("Mean KL(first ‖ second) over tokens", f"{float(cmp.kl[keep].mean()):.4f}")
    ui.plot(sweep_bars(toks, cmp.kl[keep], "KL divergence of the output distribution per token").update_yaxes(
        title="KL (nats)", tickformat=".2f", range=None), key="cmp_kl", stem=f"compare-{variant}-kl")
    mask_id = bundle.tokenizer.mask_token_id
    show = [p for p in range(len(other_tok)) if cmp.other.input_ids[p] == mask_id] or list(positions)
    rows = []
    for p in show:
        for run, cap in (("first", cmp.base), ("second", cmp.other)):
            probs = np.exp(cap.logits[p] - cap.logits[p].max())
            probs /= probs.sum()
            for r, i in enumerate(np.argsort(probs)[::-1][:5]):
                rows.append({"position": p, "run": run, "rank": r + 1,
                             "token": bundle.tokenizer.convert_ids_to_tokens(int(i)), "prob": float(probs[i])})
    if rows:
        df = pd.DataFrame(rows)
        st.dataframe(df.pivot_table(index=["position", "rank"], columns="run", values=["token", "prob"], aggfunc="first"),
                     width="stretch")
        ui.table_download(df, key="cmp_topk_csv", stem=f"compare-{variant}-topk")
