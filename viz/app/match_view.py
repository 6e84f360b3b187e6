"""The Compare models page's parts: model B's picker, the corpus run (progress, Cancel), the opened pair, and a
Training-studio run's heads followed through its snapshots. Callbacks read `st.session_state` only (ui.pick)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from viz.app import cache, ui
from viz.figures.compare import side_by_side
from viz.figures.match import head_label, lineage_heatmap, similarity_matrix

OTHER = ui.OTHER


def pick_b(name_a: str) -> str:
    """Model B: any model the picker offers (studio runs included); minilm-mlm beside minilm by default."""
    from viz.core.models import builtin_names, model_key

    names = builtin_names()
    default = "minilm-mlm" if name_a.split("@")[0] == "minilm" and "minilm-mlm" in names else "minilm"
    choice = st.selectbox("Model B", names + [OTHER], index=names.index(default) if default in names else 0,
                          key="match_model_b", help="Model A is the sidebar's model.")
    name = st.text_input("Model B id or folder", key="match_model_b_other").strip() if choice == OTHER else choice
    if not name:
        ui.stop("Type model B's id or folder.", "info", "👆")
    return model_key(name, st.session_state.get("model_device", "auto"), st.session_state.get("model_dtype", "auto"))


def _start() -> None:
    st.session_state.match_running, st.session_state.match_cancel = True, None


def _cancel(settings) -> None:
    st.session_state.match_running, st.session_state.match_cancel = False, settings


def corpus_result(name_a: str, name_b: str, level: str):
    """The two models over the bundled sample sentences: a job with progress and Cancel (the Head atlas's pattern);
    None (and the page stopped) until it has run."""
    from viz.atlas.match import MatchError, match_models
    from viz.tasks.corpus import CorpusError, corpus_key, sample_corpus

    try:
        corpus = sample_corpus()
    except CorpusError as e:
        ui.stop(str(e))
    c1, c2 = st.columns(2)
    limit = c1.number_input("Sentences", 1, len(corpus), min(len(corpus), 300), key="match_limit")
    max_tokens = int(c2.number_input("Tokens per sentence", 8, 512, 128, key="match_max_tokens"))
    sentences = corpus.sentences[:limit]
    key = (name_a, name_b, corpus_key(sentences), max_tokens, level)
    result = cache.cached_job("match_corpus", *key)
    running = result is None and st.session_state.get("match_running", False)
    b1, b2 = st.columns([1, 5])
    b1.button("Run", key="match_run", on_click=_start, type="primary", disabled=result is not None or running)
    b2.button("Cancel", key="match_cancel_btn", on_click=_cancel, args=(key,), disabled=not running)
    if running:
        bar = st.progress(0.0, text="Starting…")
        try:
            res = match_models(cache.get_bundle(name_a), cache.get_bundle(name_b), sentences, max_tokens=max_tokens,
                               level=level, progress=lambda d, t: bar.progress(d / t, text=f"{d:,} / {t:,} sentences"),
                               should_stop=lambda: st.session_state.get("match_cancel") is not None)
        except MatchError as e:
            st.session_state.match_running = False
            ui.stop(str(e))
        st.session_state.match_running = False
        bar.empty()
        if res.cancelled:
            st.session_state.match_cancel = key
        else:
            cache.store_job("match_corpus", *key, res)
            result = res
    if result is None:
        if st.session_state.get("match_cancel") == key:
            ui.stop("Cancelled: nothing was kept. Press Run to start again.", "warning", "⏹️")
        ui.stop(f"Press **Run** to compare every head of both models over {limit:,} sample sentences "
                "(both models run on every sentence).", "info", "▶️")
    return result, max_tokens


def matched_b(result, a_index: int) -> int | None:
    for p in result.pairs:
        if p.a == a_index:
            return p.b
    return None


def pair_view(result, name_a: str, name_b: str, text: str, max_tokens: int, layer: int, head: int) -> None:
    """A's head (layer, head) and its match in B on the text, side by side with their difference (B − A), at the
    level the matching used."""
    Ha, Hb = result.shape_a[1], result.shape_b[1]
    a = layer * Ha + head
    b = matched_b(result, a)
    if b is None:
        st.info(f"A's L{layer} H{head} has no match: {result.model_b} has fewer heads.", icon="ℹ️")
        return
    A, B, labels = cache.get_sentence_views(name_a, name_b, text, result.level, max_tokens)
    sim = float(result.similarity[a, b])
    ui.plot(side_by_side(A[a], B[b], labels, labels,
                         (f"A: {result.model_a} L{layer} H{head}", f"B: {result.model_b} {head_label(b, Hb)}",
                          "difference (B − A)"),
                         f"Matched pair · similarity {sim:.3f} over the {'corpus' if result.n_sentences > 1 else 'text'}"
                         f" · shown on the text ({result.level})"),
            key="match_pair_fig", stem=f"match-L{layer}H{head}-{head_label(b, Hb).replace(' ', '')}")
    ui.table_download(pd.DataFrame(B[b] - A[a], index=labels, columns=labels), key="match_diff_csv",
                      stem=f"match-diff-L{layer}-H{head}", label="Difference (CSV)")


def pairs_table(result) -> pd.DataFrame:
    df = pd.DataFrame(result.pair_rows())
    return df.sort_values("similarity").reset_index(drop=True) if len(df) else df


# ----------------------------------------------------------------------------- a studio run
def studio_runs() -> list[Path]:
    from viz.core.models import user_models_dir

    root = user_models_dir()
    runs = [d for d in root.iterdir() if (d / "training" / "snapshots.npz").is_file()] if root.is_dir() else []
    return sorted(runs, key=lambda d: (d / "training" / "snapshots.npz").stat().st_mtime, reverse=True)


def _lineage(path: str, mtime: float):
    from viz.analysis.match import follow_heads

    z = np.load(Path(path) / "training" / "snapshots.npz")
    info = json.loads((Path(path) / "training" / "job.json").read_text(encoding="utf-8")) \
        if (Path(path) / "training" / "job.json").is_file() else {}
    attn = z["probe_attn"].astype(np.float32)
    return follow_heads(attn, z["steps"]), attn, list(info.get("probe_tokens") or [str(i) for i in
                                                                                  range(attn.shape[-1])])


def studio() -> None:
    """A run's heads at step s matched to its final heads, on the run's probe sentence (training/snapshots.npz)."""
    from viz.analysis.match import assign, head_similarity, pack

    runs = studio_runs()
    if not runs:
        st.page_link("pages/studio.py", label="Open the Training studio", icon="🏋️")
        ui.stop("No Training-studio run with snapshots yet: train one (a minute is enough) and come back.", "info",
                "🏋️")
    run = st.selectbox("Run", runs, format_func=lambda p: p.name, key="match_run_dir")
    snap = run / "training" / "snapshots.npz"
    lin, attn, tokens = cache.get_computed("studio_lineage", (str(run), snap.stat().st_mtime),
                                           lambda: _lineage(str(run), snap.stat().st_mtime), "Matching heads…")
    S, L, H = attn.shape[:3]
    if S < 2:
        ui.stop("This run has one snapshot so far: there is nothing to follow yet.", "info", "⏳")
    st.caption(f"{run.name}: {S} snapshots (steps {int(lin.steps[0])}–{int(lin.steps[-1])}), {L} layers × {H} heads, "
               f"probe sentence of {attn.shape[-1]} tokens. Each snapshot's heads are matched one to one to the final "
               "snapshot's (similarity = 1 − mean Jensen–Shannon divergence of their rows on the probe sentence): a "
               "row is one final head traced back through training; its text names the head it was at that step.")
    ui.plot(lineage_heatmap(lin.steps, lin.matched, lin.similarity, H, "Final heads followed back through training"),
            key="match_lineage_fig", stem=f"lineage-{run.name}", selection_mode="points",
            on_select=ui.pick("match_lineage_fig", "match_step", "match_final"))
    if int(st.session_state.get("match_step", 0)) >= S:  # a step picked on a longer run
        st.session_state.match_step = S - 1
    s = int(st.select_slider("Step", list(range(S)), format_func=lambda i: str(int(lin.steps[i])), key="match_step"))
    sim = head_similarity(pack(attn[s]), pack(attn[-1]), attn.shape[3])
    pairs = assign(sim)
    final = int(st.session_state.get("match_final", 0)) % (L * H)
    a = int(lin.matched[s, final])
    left, _ = st.columns([1, 1])
    with left:
        ui.plot(similarity_matrix(sim, (L, H), (L, H), pairs, f"step {int(lin.steps[s])}", "final", (a, final),
                                  f"Step {int(lin.steps[s])} heads × final heads"),
                key="match_step_sim", stem=f"step-{int(lin.steps[s])}-vs-final", selection_mode="points",
                on_select=lambda: _pick_final(H))
        ui.table_download(pd.DataFrame(sim, index=[head_label(i, H) for i in range(L * H)],
                                       columns=[head_label(i, H) for i in range(L * H)]), key="match_step_csv",
                          stem=f"step-{int(lin.steps[s])}-vs-final", label="Similarity (CSV)")
    flat = attn.reshape(S, L * H, *attn.shape[3:])
    ui.plot(side_by_side(flat[s, a], flat[-1, final], tokens, tokens,
                         (f"step {int(lin.steps[s])}: {head_label(a, H)}", f"final: {head_label(final, H)}",
                          "difference (final − step)"),
                         f"Final {head_label(final, H)} at step {int(lin.steps[s])} · similarity {sim[a, final]:.3f}"),
            key="match_step_pair", stem=f"lineage-{head_label(final, H)}-{int(lin.steps[s])}")
    ui.table_download(pd.DataFrame(lin.similarity, index=lin.steps, columns=[head_label(n, H) for n in range(L * H)]),
                      key="match_lineage_csv", stem=f"lineage-{run.name}", label="Similarity to each final head (CSV)")


def _pick_final(H: int) -> None:
    cell = ui.clicked_customdata("match_step_sim")
    if cell is not None and len(cell) >= 4:
        st.session_state.match_final = int(cell[2]) * H + int(cell[3])
