"""The Head atlas's "queries and keys in one space" section (AttentionViz, Yeh et al. 2023): for the chosen head,
every query and key of the corpus normalised so that softmax is unchanged and projected together; an overview of
every head's PCA as small multiples; a click on a point opens its sentence's attention for the head.

Long work (gathering a layer's vectors over the corpus, a t-SNE) runs with a progress bar and a Cancel button, as
the atlas run does; results are stored byte-bounded in viz.app.cache. Callbacks read st.session_state only."""

from __future__ import annotations

from functools import partial

import numpy as np
import streamlit as st

from viz.app import cache, ui
from viz.analysis.qk import METHODS, ProjectionCancelled, available_methods
from viz.atlas.qk import CLASSES, gather_qk, head_points, overview
from viz.figures.attention import head_heatmap
from viz.figures.qk import COLOR_BY, qk_overview, qk_scatter

OVERVIEW_SENTENCES = 40  # the small multiples: every layer's vectors over the first sentences only
CONTEXT = 4  # tokens either side of a point's token in its hover


def _start(job: str) -> None:
    st.session_state[f"qk_{job}_running"], st.session_state[f"qk_{job}_cancel"] = True, None


def _cancel(job: str, settings) -> None:
    st.session_state[f"qk_{job}_running"], st.session_state[f"qk_{job}_cancel"] = False, settings


def _job(job: str, key: tuple, label: str, run, info: str):
    """A stored result, or Run/Cancel buttons and, once pressed, `run(progress, should_stop)` under a progress bar.
    run returns None when it was stopped."""
    result = cache.cached_job(f"qk_{job}", *key)
    running = result is None and st.session_state.get(f"qk_{job}_running", False)
    b1, b2 = st.columns([2, 3])
    b1.button(label, key=f"qk_{job}_run", on_click=_start, args=(job,), disabled=result is not None or running)
    b2.button("Cancel", key=f"qk_{job}_cancel_btn", on_click=_cancel, args=(job, key), disabled=not running)
    if running:
        bar = st.progress(0.0, text="Starting…")
        res = run(lambda d, t: bar.progress(min(1.0, d / max(t, 1)), text=f"{d:,} / {t:,}"),
                  lambda: st.session_state.get(f"qk_{job}_cancel") is not None)
        st.session_state[f"qk_{job}_running"] = False
        bar.empty()
        if res is None:
            st.session_state[f"qk_{job}_cancel"] = key
        else:
            cache.store_job(f"qk_{job}", *key, res)
            result = res
    if result is None:
        if st.session_state.get(f"qk_{job}_cancel") == key:
            st.warning("Cancelled: nothing was kept.", icon="⏹️")
        else:
            st.info(info, icon="▶️")
    return result


def hover_texts(data, pts) -> list[str]:
    """'token · … the <b>cat</b> sat …' for every point (queries then keys)."""
    out = []
    for i in range(len(pts.kind)):
        s, p = int(pts.sentence[i]), int(pts.position[i])
        toks = data.sentence_tokens.get(s, [])
        lo, hi = max(0, p - CONTEXT), min(len(toks), p + CONTEXT + 1)
        ctx = " ".join(f"<b>{_esc(t)}</b>" if j == p else _esc(t) for j, t in enumerate(toks[lo:hi], start=lo))
        out.append(f"{_esc(pts.tokens[i])} (sentence {s}, position {p})<br>{'… ' if lo else ''}{ctx}"
                   f"{' …' if hi < len(toks) else ''}")
    return out


def _esc(t: str) -> str:
    return str(t).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def section(name: str, bundle, sentences: list[str], max_tokens: int, layer: int, head: int, corpus_id: str) -> None:
    st.subheader("Queries and keys in one space")
    st.caption("Every query and key vector of the chosen head over the corpus, in one picture (AttentionViz, Yeh "
               "et al. 2023). Keys are scaled by 1/a and queries by a, then keys moved so their centroid sits on the "
               "queries' with equal mean norms: every attention row is unchanged, but a query now lies near the keys "
               "it attends to. Positional heads draw spirals of positions, previous-token heads offset query/key "
               "pairs, semantic heads clusters of tokens.")
    over = overview_data(name, bundle, sentences, max_tokens)
    if over is not None:
        coords, kind, layers = over
        st.caption(f"Every head's PCA on the first {min(OVERVIEW_SENTENCES, len(sentences))} sentences (queries blue, "
                   "keys orange; each cell scaled to its own points). Click a cell to open that head.")
        ui.plot(qk_overview(coords, kind, layers, "Every head: queries and keys (PCA)", (layer, head)),
                key="qk_overview_fig", stem=f"qk-overview-{bundle.name}", selection_mode="points",
                on_select=ui.pick("qk_overview_fig", "atlas_layer", "atlas_head"))
    key = (name, corpus_id, max_tokens, layer)
    data = _job("gather", key, f"Gather layer {layer}'s q and k",
                lambda progress, stop: _gather(bundle, sentences, layer, max_tokens, progress, stop),
                f"Press the button to run the {len(sentences):,} sentences through {bundle.name} and keep layer "
                f"{layer}'s queries and keys.")
    if data is None:
        return
    c1, c2 = st.columns(2)
    methods = available_methods()
    method = c1.radio("Projection", methods, format_func=METHODS.get, horizontal=True, key="qk_method",
                      help="PCA: instant, linear. t-SNE: neighbourhoods, a few seconds to minutes, with progress. "
                           + ("" if "umap" in methods else "UMAP appears when umap-learn is installed."))
    color_by = c2.radio("Colour by", list(COLOR_BY), format_func=COLOR_BY.get, horizontal=True, key="qk_color")
    if method == "pca":
        pts = cache.get_computed("qk_points", (key, head, "pca"), lambda: head_points(data, layer, head, "pca"), None)
    else:
        pts = _job(f"proj_{method}", (key, head), f"Run {METHODS[method]}",
                   lambda progress, stop: _project(data, layer, head, method, progress, stop),
                   f"Press the button to compute the {METHODS[method]} of {2 * len(data.tokens):,} points.")
        if pts is None:
            return
    picked = tuple(st.session_state.get(x) for x in ("qk_s", "qk_p", "qk_k"))
    sel = None
    if None not in picked:
        hit = np.flatnonzero((pts.sentence == picked[0]) & (pts.position == picked[1]) & (pts.kind == picked[2]))
        sel = int(hit[0]) if len(hit) else None
    ui.plot(qk_scatter(pts.coords, pts.kind, pts.position, pts.token_class, CLASSES, hover_texts(data, pts),
                       pts.sentence, color_by, f"{bundle.name} L{layer} H{head}: {len(data.tokens):,} queries and "
                       f"{len(data.tokens):,} keys ({METHODS[method]})", sel),
            key="qk_scatter_fig", stem=f"qk-{bundle.name}-L{layer}-H{head}-{method}", selection_mode="points",
            on_select=ui.pick("qk_scatter_fig", "qk_s", "qk_p", "qk_k"))
    st.download_button("Points (CSV)", data=partial(points_csv, key, head, method), on_click="ignore",
                       file_name=f"qk-{ui.slug(bundle.name)}-L{layer}-H{head}-{method}.csv", mime="text/csv",
                       key="qk_points_csv", help="One row per query and key: kind, sentence, position, token, x, y "
                                                 "and the normalised vector d0… (as `python -m viz qk --vectors`).")
    st.caption(f"{data.n_sentences:,} sentences · scores = q·k × {data.scaling[0]:.4g} · keys scaled by "
               f"1/{pts.norm.scale:.3g} and moved · hover a point for its token in its sentence; click it to open the "
               "sentence.")
    _opened_sentence(name, sentences, data, layer, head)


def points_csv(key: tuple, head: int, method: str) -> bytes:
    """The shown points as the CLI's CSV, rebuilt on click from what the cache holds (the button keeps keys only)."""
    import pandas as pd

    data = cache.cached_job("qk_gather", *key)
    pts = cache.cached_job("qk_points", key, head, "pca") if method == "pca" else \
        cache.cached_job(f"qk_proj_{method}", key, head)
    if data is None or pts is None:
        return b"the points are no longer cached: draw them again\n"
    vec = np.concatenate([pts.norm.q, pts.norm.k])
    df = pd.DataFrame({"kind": np.where(pts.kind == 0, "query", "key"), "sentence": pts.sentence,
                       "position": pts.position, "token": pts.tokens, "x": pts.coords[:, 0], "y": pts.coords[:, 1]})
    df = pd.concat([df, pd.DataFrame(vec, columns=[f"d{i}" for i in range(vec.shape[1])])], axis=1)
    return df.to_csv(index=False).encode()


def _gather(bundle, sentences, layer, max_tokens, progress, stop):
    data = gather_qk(bundle, sentences, [layer], max_tokens=max_tokens, progress=progress, should_stop=stop)
    return None if data.cancelled else data


def _project(data, layer, head, method, progress, stop):
    try:
        return head_points(data, layer, head, method, progress=progress, should_stop=stop)
    except ProjectionCancelled:
        return None


def overview_data(name: str, bundle, sentences: list[str], max_tokens: int):
    """Every layer's vectors over the first sentences -> each head's PCA (cached)."""
    from viz.tasks.corpus import corpus_key

    first = sentences[:OVERVIEW_SENTENCES]

    def compute():
        from viz.atlas.core import atlas_stack

        data = gather_qk(bundle, first, list(range(bundle.stack_layers(atlas_stack(bundle)))), max_tokens=max_tokens)
        coords, kind = overview(data)
        return coords, kind, data.layers

    return cache.get_computed("qk_overview", (name, corpus_key(first), max_tokens), compute,
                              "Projecting every head's queries and keys…")


def _opened_sentence(name: str, sentences: list[str], data, layer: int, head: int) -> None:
    s, p, k = (st.session_state.get(x) for x in ("qk_s", "qk_p", "qk_k"))
    if s is None or not 0 <= int(s) < len(sentences):
        return
    cap = ui.capture_or_stop(name, sentences[int(s)])
    A = cap.attentions[data.stack][layer, head]
    what = "query" if int(k) == 0 else "key"
    ui.plot(head_heatmap(A, cap.tokens, cap.tokens, f"Sentence {int(s)} · L{layer} H{head} · the clicked {what}: "
                                                    f"{cap.tokens[int(p)] if int(p) < len(cap.tokens) else '?'} "
                                                    f"(position {int(p)})"),
            key="qk_sentence_fig", stem=f"qk-sentence-{int(s)}-L{layer}-H{head}")
