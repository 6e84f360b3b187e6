"""Compare masking page: two runs side by side and what changed between them."""

from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

from viz.app import cache, ui
from viz.tasks.compare import VARIANTS
from viz.figures.compare import head_change_grid, kl_bars, side_by_side
from viz.core.interventions import n_heads

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
    if not positions and text.strip():  # nothing to compare: draw no all-zero charts
        ui.stop("Pick tokens to mask: with none, both runs are the same.", "info", "👆")
elif variant == "ablate":
    chosen = st.multiselect("Heads to ablate (their output is zeroed)", [(l, h) for l in range(L) for h in range(H)],
                            format_func=lambda lh: f"L{lh[0]} H{lh[1]}", key="cmp_heads")
    heads = frozenset(chosen)
    if not heads:
        ui.stop("Pick heads to ablate: with none, both runs are the same.", "info", "👆")
else:
    st.caption("The second run adds the decoder's look-ahead mask to every encoder layer: token i sees only "
               "tokens ≤ i, as in the original Transformer's masked decoder self-attention.")

if not text.strip():
    ui.stop("The text is empty: type a sentence first.", "warning", "✍️")
cmp = cache.get_comparison(name, text, variant, positions, heads)
if cmp.base.truncated:
    st.warning(f"The text has {cmp.base.n_input_tokens} tokens; showing the first {len(cmp.base.tokens)}.", icon="✂️")
base_tok, other_tok = cmp.base.tokens, cmp.other.tokens


# a new comparison opens on the head that moved most; a click or the inputs choose another until the next one
best = cmp.top_heads(1)[0]
if st.session_state.get("cmp_for") != (name, text, variant, positions, heads):
    st.session_state.cmp_for = (name, text, variant, positions, heads)
    st.session_state.cmp_layer, st.session_state.cmp_head = best[0], best[1]


left, right = st.columns([1, 1])
with left:
    st.subheader("Which heads changed")
    ui.plot(head_change_grid(cmp.head_js, "Jensen–Shannon divergence per head (mean over rows)"), key="cmp_grid",
            stem=f"compare-{variant}-heads", on_select=ui.pick("cmp_grid", "cmp_layer", "cmp_head"), selection_mode="points")
    st.caption("Click a cell to open that head below.")
with right:
    top = pd.DataFrame(cmp.top_heads(10), columns=["layer", "head", "js"])
    st.dataframe(top, hide_index=True, width="stretch")
    ui.table_download(pd.DataFrame([(l, h, cmp.head_js[l, h]) for l in range(L) for h in range(cmp.head_js.shape[1])],
                                   columns=["layer", "head", "js"]), key="cmp_js_csv", stem=f"compare-{variant}-js")
    ui.npz_download(partial(cache.comparison_arrays, name, text, variant, positions, heads),
                    key="cmp_npz", stem=f"compare-{variant}", label="Both runs (NPZ)")

st.subheader("One head, both runs")
s1, s2, _ = st.columns([1, 1, 2])
layer = s1.number_input("Layer", 0, L - 1, key="cmp_layer")
head = s2.number_input("Head", 0, cmp.head_js.shape[1] - 1, key="cmp_head")
stack = bundle.arch.stacks[0]
second = VARIANTS[variant].split(" vs ")[1]
ui.plot(side_by_side(cmp.base.attentions[stack][layer, head], cmp.other.attentions[stack][layer, head], base_tok,
                     other_tok, ("first run", second, "difference (second − first)"),
                     f"L{layer} H{head} · JS {cmp.head_js[layer, head]:.4f}"),
        key="cmp_pair", stem=f"compare-{variant}-L{layer}-H{head}")
ui.table_download(pd.DataFrame(cmp.diff[layer, head], index=other_tok, columns=other_tok), key="cmp_diff_csv",
                  stem=f"compare-diff-L{layer}-H{head}", label="Difference (CSV)")

st.subheader("Prediction change")
if cmp.kl is None:
    st.info(f"'{name}' has no masked-LM head, so only attention changes are shown. Pick minilm-mlm to compare "
            "predictions too.")
else:
    keep = ~cmp.base.special
    toks = [t for t, k in zip(other_tok, keep) if k]
    st.metric("Mean KL(first ‖ second) over tokens", f"{float(cmp.kl[keep].mean()):.4f}")
    ui.plot(kl_bars(toks, cmp.kl[keep], "KL divergence of the output distribution per token"), key="cmp_kl",
            stem=f"compare-{variant}-kl")
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
