"""Head atlas: what every head does, measured over a corpus (Clark et al. 2019)."""

import numpy as np
import streamlit as st

from viz.app import atlas_view as view
from viz.app import qk_view
from viz.app import cache, ui
from viz.analysis.head_map import head_map
from viz.analysis.head_stats import BROAD_FRACTION, ROLE_NAMES, ROLE_THRESHOLDS, SHARES, STATS
from viz.atlas.chunks import run_atlas
from viz.atlas.core import frame
from viz.atlas.importance import head_importance
from viz.figures.atlas import head_scatter, role_grid, stat_grid
from viz.figures.attention import head_heatmap
from viz.tasks.corpus import MAX_CHARS, MAX_SENTENCES, CorpusError, corpus_key

STAT_LABELS = {"entropy": "entropy (nats)", "distance": "mean distance (positions)", "cls": "share on [CLS]/start",
               "sep": "share on [SEP]/end", "punct": "share on punctuation", "self": "share on itself",
               "prev": "share on previous token", "next": "share on next token",
               "first": "share on the first token (sink)"}
ROLE_STAT = {v: k for k, v in ROLE_NAMES.items()} | {"broad": "entropy", "mixed": "entropy"}

ui.through_app()
st.title("Head atlas")
st.caption("What every head does on average over many sentences: its entropy, how far it looks, and how much "
           "it attends to [CLS], [SEP], punctuation, itself and its neighbours (Clark et al. 2019).")
name = ui.model_name()
bundle = ui.bundle_or_stop(name)

if bundle.kind == "decoder":
    view.decoder_heads(name, bundle)

SOURCES = view.SOURCES


def measure(source: str):
    """The page's own run over at most MAX_SENTENCES sentences -> (result, sentences, cache key, max_tokens)."""
    try:
        corpus = view.read_corpus(source, name)
    except CorpusError as e:
        st.error(str(e), icon="🚫")
        st.stop()
    o1, o2, o3 = st.columns(3)
    limit = o1.number_input("Sentences to use", 1, len(corpus), min(len(corpus), 300), key="atlas_limit")
    max_tokens = o2.number_input("Tokens per sentence", 8, bundle.max_tokens, min(128, bundle.max_tokens),
                                 key="atlas_max_tokens")
    words = o3.toggle("Word level too", key="atlas_words", help="Also merge word pieces (sum over key pieces, "
                      "mean over query pieces) and measure words.")
    st.caption(f"{corpus.source}: {len(corpus):,} sentences"
               + (" (permissive Debian sources: see data/corpus/DATACARD.md)" if corpus.source == "sample_sentences.txt"
                  else "") + f". Limits: {MAX_SENTENCES:,} sentences per corpus (more: `python -m viz atlas`, "
               f"then {SOURCES[2]}), {MAX_CHARS:,} characters and {max_tokens} tokens per sentence (longer ones are "
               "truncated).")
    sentences = corpus.sentences[:limit]
    key = (name, corpus_key(sentences), (int(max_tokens), bool(words)))
    result = cache.cached_atlas(*key)
    b1, b2 = st.columns([1, 5])
    running = result is None and st.session_state.get("atlas_running", False)
    b1.button("Run atlas", key="atlas_run", on_click=start, type="primary", disabled=result is not None or running)
    b2.button("Cancel", key="atlas_cancel_btn", on_click=cancel, args=(key,), disabled=not running)
    if running:
        bar = st.progress(0.0, text="Starting…")
        res = run_atlas(bundle, sentences, max_tokens=int(max_tokens), words=words,
                        progress=lambda d, t: bar.progress(d / t, text=f"{d:,} / {t:,} sentences"),
                        should_stop=lambda: st.session_state.get("atlas_cancel") is not None)
        st.session_state.atlas_running = False
        bar.empty()
        if res.cancelled:
            st.session_state.atlas_cancel = key
        else:
            cache.store_atlas(*key, res)
            result = res
    if result is None:
        if st.session_state.get("atlas_cancel") == key:
            st.warning("Cancelled: nothing was kept. Press Run atlas to start again.", icon="⏹️")
        else:
            st.info(f"Press **Run atlas** to measure {bundle.name}'s heads over {limit:,} sentences.", icon="▶️")
        st.stop()
    st.success(f"{result.n_sentences:,} sentences · {result.n_tokens:,} tokens · {result.n_truncated} truncated · "
               f"{result.n_layers} layers × {result.n_heads} heads · {result.stack} attention · {result.seconds:.1f} s")
    return result, sentences, key, max_tokens


# `atlas_cancel` holds the settings of the run that was cancelled (not a bare flag): the notice belongs to
# those settings only, not to every later model, corpus or option.
def start():
    st.session_state.atlas_running, st.session_state.atlas_cancel = True, None


def cancel(settings):
    st.session_state.atlas_running, st.session_state.atlas_cancel = False, settings


source = st.radio("Corpus", SOURCES, horizontal=True, key="atlas_source")
if source == SOURCES[2]:
    result, sentences, key, max_tokens = view.open_result_csv(name), None, None, None
else:
    result, sentences, key, max_tokens = measure(source)
level = st.radio("Level", ["tokens", "words"], horizontal=True, key="atlas_level") if result.word_stats else "tokens"
use_words = level == "words"
stats = result.word_stats if use_words else result.stats
roles = result.roles(use_words)


def open_head(fig_key):
    """Click on a head in any grid or the map -> open it below, ranked by its role's statistic."""
    cell = ui.clicked_customdata(fig_key)
    if cell is not None and len(cell) >= 2:
        st.session_state.atlas_layer, st.session_state.atlas_head = int(cell[0]), int(cell[1])
        st.session_state.atlas_top_stat = ROLE_STAT.get(cell[2] if len(cell) > 2 else "", "entropy")


left, right = st.columns(2)
with left:
    stat = st.selectbox("Statistic", STATS, format_func=STAT_LABELS.get, key="atlas_stat")
    ui.plot(stat_grid(stats[stat], STAT_LABELS[stat], roles, share=stat in SHARES), key="atlas_stat_fig",
            stem=f"atlas-{stat}",
            on_select=lambda: open_head("atlas_stat_fig"), selection_mode="points")
with right:
    ui.plot(role_grid(roles), key="atlas_roles_fig", stem="atlas-roles", on_select=lambda: open_head("atlas_roles_fig"),
            selection_mode="points")
    st.caption("Role = the share furthest above its threshold: " + ", ".join(
        f"{ROLE_NAMES[s]} > {t:.0%} on {s}" for s, t in ROLE_THRESHOLDS.items()) +
        f"; else broad if entropy ≥ {BROAD_FRACTION:.0%} of uniform (ln #keys); else mixed.")

st.subheader("Heads clustered by their statistics")
k = st.slider("Clusters", 2, 10, 5, key="atlas_k")
# every statistic the table has (a CSV written before the `first` column holds NaN there)
feats = np.stack([stats[s].ravel() for s in STATS if np.isfinite(stats[s]).all()], axis=1)
coords, clusters, explained = head_map(feats, k)
ui.plot(head_scatter(coords, clusters, result.n_layers, result.n_heads, roles, explained), key="atlas_map_fig",
        stem="atlas-map", on_select=lambda: open_head("atlas_map_fig"), selection_mode="points")

if sentences is not None:
    st.subheader("Head importance (Michel et al. 2019)")
    if not bundle.has_mlm_head:
        st.info(f"{bundle.name} has no masked-LM head, so there is no masked-LM loss to take gradients of. Pick a model "
                "with one (e.g. minilm-mlm, when installed) for head importance.", icon="ℹ️")
    else:
        ikey = (name, key[1], ("importance", int(max_tokens)))
        imp = cache.cached_atlas(*ikey)
        if imp is None:
            st.button("Compute importance (|dL/dgate| of the masked-LM loss)", key="atlas_importance",
                      on_click=lambda: st.session_state.update(atlas_importance_run=True))
        if imp is None and st.session_state.pop("atlas_importance_run", False):  # a flag survives a rerun
            ibar = st.progress(0.0)
            imp = head_importance(bundle, sentences, max_tokens=int(max_tokens),
                                  progress=lambda d, t: ibar.progress(d / t, text=f"{d:,} / {t:,} sentences"))
            ibar.empty()  # done: the bar must not stay above the result
            cache.store_atlas(*ikey, imp)
        if imp is not None:
            ui.plot(stat_grid(imp, "mean |∂L/∂gate|", roles, colorscale="Reds"), key="atlas_imp_fig",
                    stem="atlas-importance", on_select=lambda: open_head("atlas_imp_fig"), selection_mode="points")

st.subheader("One head" + (": where its pattern is strongest" if sentences is not None else ""))
h1, h2, h3 = st.columns(3)
layer = h1.number_input("Layer", 0, result.n_layers - 1, key="atlas_layer")  # a click sets it
head = h2.number_input("Head", 0, result.n_heads - 1, key="atlas_head")
top_stat = h3.selectbox("Strongest by", STATS, format_func=STAT_LABELS.get, key="atlas_top_stat") \
    if sentences is not None else None
st.caption(f"L{layer} H{head}: **{roles[layer, head]}** · " + " · ".join(
    f"{s} {stats[s][layer, head]:.2f}" for s in STATS))
top = result.top(top_stat, layer, head, use_words)[:3] if sentences is not None else []
if top:  # the strongest sentences as a list beside one wide heatmap (three in a row were ~130 px wide each)
    pick_col, fig_col = st.columns([1, 2])
    ranks = list(range(len(top)))
    if st.session_state.get("atlas_top_pick") not in ranks:
        st.session_state.atlas_top_pick = 0
    r = pick_col.radio("Sentence", ranks, key="atlas_top_pick",
                       format_func=lambda i: f"{top_stat} {top[i][1]:.2f}: {sentences[top[i][0]]}")
    sid, score = top[r]
    with fig_col:
        cap = ui.capture_or_stop(name, sentences[sid])
        A = cap.attentions[result.stack][layer, head]
        ui.plot(head_heatmap(A, cap.tokens, cap.tokens, f"L{layer} H{head} · {top_stat} {score:.2f}"),
                key="atlas_top_fig", stem=f"atlas-L{layer}-H{head}-{sid}")

if sentences is not None:  # queries and keys of the chosen head over the same corpus (viz/app/qk_view.py)
    qk_view.section(name, bundle, sentences, int(max_tokens), int(layer), int(head), key[1])

st.subheader("Table")
df = frame(result).set_index(["layer", "head"])
st.dataframe(df, key="atlas_table")
ui.table_download(df, key="atlas_csv", stem=f"atlas-{bundle.name if sentences is not None else result.model_name}")
