"""Head atlas: what every head does, measured over a corpus (Clark et al. 2019)."""

import numpy as np
import streamlit as st

from viz import cache, ui
from viz.analysis.head_map import head_map
from viz.analysis.head_stats import BROAD_FRACTION, ROLE_NAMES, ROLE_THRESHOLDS, STATS
from viz.atlas import AtlasCsvError, frame, run_atlas
from viz.atlas import read_csv as read_atlas_csv
from viz.capture import CaptureError
from viz.corpus import (MAX_CHARS, MAX_SENTENCES, CorpusError, CorpusTooLarge, columns, corpus_key, load_corpus,
                         sample_corpus)
from viz.figures.atlas import head_scatter, role_grid, stat_grid
from viz.figures.attention import head_heatmap
from viz.importance import head_importance

STAT_LABELS = {"entropy": "entropy (nats)", "distance": "mean distance (positions)", "cls": "share on [CLS]/start",
               "sep": "share on [SEP]/end", "punct": "share on punctuation", "self": "share on itself",
               "prev": "share on previous token", "next": "share on next token"}
ROLE_STAT = {v: k for k, v in ROLE_NAMES.items()} | {"broad": "entropy", "mixed": "entropy"}

ui.through_app()
st.title("Head atlas")
st.caption("What every head does on average over many sentences: its entropy, how far it looks, and how much "
           "it attends to [CLS], [SEP], punctuation, itself and its neighbours (Clark et al. 2019).")
name = ui.model_name()
bundle = ui.bundle_or_stop(name)


def pick_head(fig_key: str) -> None:
    cell = ui.clicked_customdata(fig_key)
    if cell is not None and len(cell) >= 2:
        st.session_state.atlas_heads_pick = (int(cell[0]), int(cell[1]))


def decoder_heads() -> None:
    """Decoders: induction, previous-token, duplicate-token and first-token scores (viz.heads), which need no
    corpus run. A click on a cell shows that head on the first random sequence."""
    st.subheader("Induction and copying heads (decoders)")
    st.caption("On random tokens repeated once ([BOS] t₁…t_L t₁…t_L): **induction** = mean attention from each "
               "token of the second copy to the token right after its earlier occurrence (Olsson et al. 2022); "
               "**duplicate** = to the earlier occurrence itself; **previous** = to the token before. **First "
               "token** = the share on position 0 over the bundled sample sentences (the attention sink).")
    c1, c2 = st.columns(2)
    seed = c1.number_input("Seed", 0, 1_000_000, 0, key="atlas_heads_seed")
    longest = max(2, min(200, (bundle.max_tokens - 1) // 2))
    length = c2.number_input("Random tokens per copy", 2, longest, min(50, longest), key="atlas_heads_length")
    try:
        res = cache.get_head_scores(name, int(seed), int(length))
    except CaptureError as e:
        st.error(str(e), icon="🚫")
        return
    li, hi, best = res.best("induction")
    st.caption(f"Best induction head: layer {li}, head {hi} ({best:.2f}). Next-token loss on the first copy "
               f"{res.loss_first:.2f} nats, on the repeated copy {res.loss_second:.2f}: a model that copies from "
               "its context predicts the second far better.")
    grids = [("induction", "Induction score", "Reds"), ("previous", "Previous-token score", "Blues"),
             ("duplicate", "Duplicate-token score", "Purples"), ("first", "First-token (sink) share", "Greys")]
    for row in (grids[:2], grids[2:]):
        for col, (attr, title, scale) in zip(st.columns(2), row):
            with col:
                ui.plot(stat_grid(getattr(res, attr), title, colorscale=scale), key=f"atlas_heads_{attr}",
                        stem=f"heads-{attr}", on_select=lambda k=f"atlas_heads_{attr}": pick_head(k),
                        selection_mode="points")
    layer, head = st.session_state.get("atlas_heads_pick") or (li, hi)
    if layer >= res.n_layers or head >= res.n_heads:  # a pick made on another model
        layer, head = li, hi
    ui.plot(head_heatmap(res.example_attn[layer, head].astype(np.float32), res.example_tokens, res.example_tokens,
                         f"Layer {layer}, head {head} on a repeated random sequence (induction "
                         f"{res.induction[layer, head]:.2f})"), key="atlas_heads_example", stem="heads-example")


if bundle.kind == "decoder":
    decoder_heads()


SOURCES = ["Bundled sample", "Upload a file", "Open a result CSV"]


def cli_hint(corpus: str = "CORPUS.txt") -> str:
    return (f"For a bigger corpus, run the atlas from the command line (no size limit; `--engine ray` spreads it "
            f"over a Ray cluster, see README *Running on a cluster*):\n\n"
            f"`python -m viz atlas --model {name} --corpus {corpus} --out stats.csv`\n\n"
            f"then open `stats.csv` here with **{SOURCES[2]}**.")


def read_corpus(source: str):
    if source == SOURCES[0]:
        return sample_corpus()
    up = st.file_uploader("Sentences: .txt (one per line), .csv or .jsonl", type=["txt", "csv", "jsonl"],
                          key="atlas_upload")
    if up is None:
        st.info("Upload a file to measure the heads over it.", icon="📄")
        st.stop()
    data, col = up.getvalue(), None
    if not up.name.lower().endswith(".txt"):
        col = st.selectbox("Column with the sentences", columns(data, up.name) or ["—"], key="atlas_column")
    try:
        return load_corpus(data, up.name, col)
    except CorpusTooLarge as e:
        st.error(str(e), icon="🚫")
        st.info(cli_hint(up.name), icon="💻")
        st.stop()


def open_result_csv():
    """A CSV written by `python -m viz atlas` (e.g. on a cluster) -> AtlasResult, explored like a run."""
    up = st.file_uploader("Head-atlas CSV (from `python -m viz atlas --out FILE.csv` or this page's table)",
                          type=["csv"], key="atlas_result_upload")
    if up is None:
        st.info(cli_hint(), icon="💻")
        st.stop()
    try:
        res = read_atlas_csv(up.getvalue(), up.name)
    except AtlasCsvError as e:
        st.error(str(e), icon="🚫")
        st.stop()
    st.success(f"{up.name}: {res.n_layers} layers × {res.n_heads} heads, statistics and roles as written by the "
               "command line (it keeps no sentences, so there are no example sentences or importance here).")
    return res


def measure(source: str):
    """The page's own run over at most MAX_SENTENCES sentences -> (result, sentences, cache key, max_tokens)."""
    try:
        corpus = read_corpus(source)
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
    result, sentences, key, max_tokens = open_result_csv(), None, None, None
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
    ui.plot(stat_grid(stats[stat], STAT_LABELS[stat], roles), key="atlas_stat_fig", stem=f"atlas-{stat}",
            on_select=lambda: open_head("atlas_stat_fig"), selection_mode="points")
with right:
    ui.plot(role_grid(roles), key="atlas_roles_fig", stem="atlas-roles", on_select=lambda: open_head("atlas_roles_fig"),
            selection_mode="points")
    st.caption("Role = the share furthest above its threshold: " + ", ".join(
        f"{ROLE_NAMES[s]} > {t:.0%} on {s}" for s, t in ROLE_THRESHOLDS.items()) +
        f"; else broad if entropy ≥ {BROAD_FRACTION:.0%} of uniform (ln #keys); else mixed.")

st.subheader("Heads clustered by their statistics")
k = st.slider("Clusters", 2, 10, 5, key="atlas_k")
feats = np.stack([stats[s].ravel() for s in STATS], axis=1)
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
layer = h1.number_input("Layer", 0, result.n_layers - 1, 0, key="atlas_layer")
head = h2.number_input("Head", 0, result.n_heads - 1, 0, key="atlas_head")
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

st.subheader("Table")
df = frame(result).set_index(["layer", "head"])
st.dataframe(df, key="atlas_table")
ui.table_download(df, key="atlas_csv", stem=f"atlas-{bundle.name if sentences is not None else result.model_name}")
