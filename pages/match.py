"""Compare models: the same text through two models, every head of one against every head of the other, matched."""

from functools import partial

import numpy as np
import streamlit as st

from viz.app import cache, ui
from viz.app import match_view as view
from viz.figures.attention import model_view
from viz.figures.match import match_grid, similarity_matrix

ui.through_app()
st.title("Compare models")
st.caption("Heads have no identity across models: L3 H7 of one model is not L3 H7 of another. So they are first "
           "matched by what they do: every head of A against every head of B (similarity = 1 − the mean "
           "Jensen–Shannon divergence, in bits, between their attention rows), then paired one to one so that the "
           "summed similarity is largest (the Hungarian method).")
mode = st.radio("Compare", ["Two models", "A Training-studio run through training"], horizontal=True,
                key="match_mode")
if mode != "Two models":
    view.studio()
    st.stop()

name_a, text = ui.model_name(), st.session_state.get("text", "")
bundle_a = ui.bundle_or_stop(name_a)
c1, c2, c3 = st.columns([2, 2, 1])
c1.markdown(f"**Model A** (the sidebar's)  \n`{name_a}`")
with c2:
    name_b = view.pick_b(name_a)
bundle_b = ui.bundle_or_stop(name_b)
over = c3.radio("Over", ["the text", "sample sentences"], key="match_over",
                help="The sidebar's text, or the Head atlas corpus (the bundled sample sentences).")
level = st.radio("Level", ["auto", "tokens", "words"], horizontal=True, key="match_level",
                 help="auto: tokens when both tokenizers cut the text the same way, else words.")

if not text.strip():
    ui.stop("The text is empty: type a sentence first.", "warning", "✍️")
from viz.atlas.match import MatchError  # noqa: E402

try:
    if over == "the text":
        max_tokens = 512
        result = cache.get_match(name_a, name_b, text, max_tokens, level)
    else:
        result, max_tokens = view.corpus_result(name_a, name_b, level)
except MatchError as e:
    ui.stop(str(e))

st.success(f"{result.model_a}: {result.shape_a[0]} layers × {result.shape_a[1]} heads · {result.model_b}: "
           f"{result.shape_b[0]} × {result.shape_b[1]} · {result.n_sentences:,} sentence"
           f"{'s' if result.n_sentences != 1 else ''}, {result.n_rows:,} rows · {result.seconds:.1f} s", icon="✅")
if result.level == "words":
    st.info("The two tokenizers cut the text differently, so heads are compared over **words** (the text split at "
            "spaces): special tokens ([CLS], [SEP], BOS) are set aside and each row renormalised, then a word's "
            "key pieces are summed and its query pieces averaged, as the Attention page merges them.", icon="🔤")
else:
    st.caption("Both tokenizers cut the text into the same tokens: heads are compared token by token, special tokens "
               "included.")

st.subheader("Both models on the text")
left, right = st.columns(2)
for col, nm, who in ((left, name_a, "A"), (right, name_b, "B")):
    with col:
        cap = ui.capture_or_stop(nm, text)
        stack = "encoder" if "encoder" in cap.attentions else "decoder"  # what the matching reads
        ui.plot(model_view(cap.attentions[stack], title=f"{who}: {nm} · {len(cap.tokens)} tokens",
                           kv_heads=cap.kv_heads.get(stack)),
                key=f"match_view_{who}", stem=f"model-view-{who}-{nm}")
        ui.npz_download(partial(cache.capture_arrays, nm, text), key=f"match_capture_{who}",
                        stem=f"capture-{who}-{nm}", label=f"{who}'s capture (NPZ)")

Ha = result.shape_a[1]
pairs = result.pairs
if not pairs:
    ui.stop("No rows to compare (every sentence was empty after truncation).", "warning")
# a new comparison opens on the matched pair that changed most (lowest similarity)
worst = min(pairs, key=lambda p: p.similarity)
setting = (name_a, name_b, text, over, level)
if st.session_state.get("match_for") != setting:
    st.session_state.match_for = setting
    st.session_state.match_layer, st.session_state.match_head = worst.a // Ha, worst.a % Ha

st.subheader("Matched heads")
sel_layer = int(st.session_state.get("match_layer", 0)) % result.shape_a[0]
sel_head = int(st.session_state.get("match_head", 0)) % Ha
sel_b = view.matched_b(result, sel_layer * Ha + sel_head)
g1, g2 = st.columns([3, 2])
with g1:
    ui.plot(similarity_matrix(result.similarity, result.shape_a, result.shape_b, pairs, result.model_a,
                              result.model_b, (sel_layer * Ha + sel_head, sel_b) if sel_b is not None else None,
                              "Every head of A × every head of B (circles: the matching)"),
            key="match_sim_fig", stem=f"similarity-{result.model_a}-{result.model_b}", selection_mode="points",
            on_select=ui.pick("match_sim_fig", "match_layer", "match_head"))
with g2:
    ui.plot(match_grid(pairs, result.shape_a, result.shape_b, result.model_b,
                       "A's heads: the B head each is matched to"),
            key="match_grid_fig", stem=f"matching-{result.model_a}-{result.model_b}", selection_mode="points",
            on_select=ui.pick("match_grid_fig", "match_layer", "match_head"))
    sims = np.array([p.similarity for p in pairs])
    kept = sum(p.a == p.b for p in pairs if result.shape_a == result.shape_b)
    st.caption(f"Mean matched similarity {sims.mean():.3f} (lowest {sims.min():.3f}). "
               + (f"{kept} of {len(pairs)} heads are matched to the head at their own position."
                  if result.shape_a == result.shape_b else "")
               + (f" B has fewer heads: {np.prod(result.shape_a) - len(pairs)} of A's heads stay unmatched (blank)."
                  if len(pairs) < np.prod(result.shape_a) else "") + " Click a circle or a cell to open the pair.")
df = view.pairs_table(result)
with st.expander(f"The {len(df)} matched pairs, least similar first", expanded=False):
    st.dataframe(df, hide_index=True, width="stretch", key="match_table")
d1, d2 = st.columns(2)
with d1:
    ui.table_download(df, key="match_pairs_csv", stem=f"matched-{result.model_a}-{result.model_b}",
                      label="Matched pairs (CSV)")
with d2:
    ui.npz_download(partial(dict, similarity=result.similarity, pairs=df.to_numpy(dtype=float)),
                    key="match_npz", stem=f"similarity-{result.model_a}-{result.model_b}", label="Similarity (NPZ)")

st.subheader("One pair, side by side")
p1, p2, _ = st.columns([1, 1, 3])
layer = p1.number_input("A layer", 0, result.shape_a[0] - 1, key="match_layer")
head = p2.number_input("A head", 0, Ha - 1, key="match_head")
view.pair_view(result, name_a, name_b, text, max_tokens, int(layer), int(head))
