"""Patching: what a component causes. Run a clean and a corrupted input, put one component's clean activation
into the corrupted run, and measure how much of the answer comes back (Meng et al. 2022; Wang et al. 2022;
Heimersheim & Nanda 2024); attribution patching (Nanda 2023) beside it; path patching for decoders."""

from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

from viz.core.tokens import readable, readable_token
from viz.app import cache, ui
from viz.app import patching as job
from viz.causal.atp import compare
from viz.causal.examples import examples_for, replace_word, words
from viz.causal.task import PatchError
from viz.figures.patching import atp_scatter, head_grid, largest_gaps, path_matrix, stream_heatmap

SITE_TITLES = {"resid_pre": "Residual stream entering each layer (resid_pre)", "attn_out": "Attention output (attn_out)",
               "mlp_out": "Feed-forward output (mlp_out)"}
STACKS = {"encoder": "Encoder", "decoder": "Decoder", "cross": "Cross-attention"}
ss = st.session_state

ui.through_app()
job.follow()  # a click on the last run asked for another page
st.title("Patching")
st.caption("Which components carry the answer? The corrupted input runs with one component's activation taken from "
           "the clean input; the effect says how much of the answer came back: 0 = nothing, 1 = all of it "
           "((m_patched − m_corrupt) / (m_clean − m_corrupt)). Attribution patching estimates every effect at once "
           "from one gradient; where it disagrees with the exact numbers, trust the exact ones.")
name = ui.model_name()
bundle = ui.bundle_or_stop(name)
if bundle.kind == "encoder":
    ui.mlm_or_stop(bundle)
examples = examples_for(bundle.name, bundle.kind)


def use_example() -> None:
    ex = next((e for e in examples_for(bundle.name, bundle.kind) if e.label == ss.patch_example), None)
    if ex is not None:
        ss.patch_clean, ss.patch_mode, ss.patch_corrupt = ex.clean, "Type both", ex.corrupt
        ss.patch_target, ss.patch_foil = ex.target, ex.foil


if ss.get("patch_for") != bundle.name:  # another model: its first example (a link's own inputs stay)
    fresh = "patch_for" in ss or "patch_clean" not in ss
    ss.patch_for = bundle.name
    if fresh or ss.get("patch_example") not in [e.label for e in examples]:
        ss.patch_example = examples[0].label if examples else "—"
    if fresh:
        use_example()
st.selectbox("Example", [e.label for e in examples] or ["—"], key="patch_example", on_change=use_example)
ex = next((e for e in examples if e.label == ss.patch_example), None)
if ex is not None and ex.why:
    st.caption(ex.why)
clean = st.text_input("Clean input" + (" (with [MASK] where the answer goes)" if bundle.kind == "encoder" else ""),
                      key="patch_clean")
mode = st.radio("Corrupted input", ["Replace a word", "Type both"], horizontal=True, key="patch_mode")
if mode == "Replace a word":
    w1, w2 = st.columns(2)
    ws = words(clean)
    i = w1.selectbox("Word to replace", range(len(ws)), format_func=lambda k: f"{ws[k]} ({k})", key="patch_word") \
        if ws else 0
    new = w2.text_input("Replace it by", key="patch_new", placeholder="a word of the same token length")
    corrupt = replace_word(clean, int(i or 0), new) if new.strip() else clean
    st.caption(f"Corrupted input: {corrupt}")
else:
    corrupt = st.text_input("Corrupted input (the same number of tokens)", key="patch_corrupt")
a1, a2, a3 = st.columns(3)
target = a1.text_input("Answer", key="patch_target", placeholder="top prediction on the clean input").strip() or None
foil = a2.text_input("Foil", key="patch_foil", placeholder="top prediction on the corrupted input").strip() or None
prefix = (a3.text_input("Decoder prefix", key="patch_prefix", placeholder="where the two outputs first differ")
          .strip() or None) if bundle.kind == "encoder-decoder" else None

key = (name, clean, corrupt, target, foil, prefix)
try:
    task = cache.get_patch_task(*key)
except PatchError as e:
    ui.stop(str(e), "warning", "✍️")


what = f"at the [MASK] (position {task.answer_position})" if task.kind == "encoder" else "for the next token"
st.success(f"Both inputs have {len(task.clean_ids)} tokens. {task.metric_name} {what}: **{task.metric_clean:.2f}** "
           f"clean, **{task.metric_corrupt:.2f}** corrupted (answer '{readable_token(task.target_token)}', foil '{readable_token(task.foil_token)}').")
for note in task.notes:
    st.info(note, icon="ℹ️")
prefix_text = bundle.tokenizer.decode(task.decoder_ids, skip_special_tokens=True) if task.decoder_ids else ""
ss.patch_handover = {"text": clean, "target": prefix_text}
if task.kind == "encoder-decoder":
    st.caption(f"The decoder reads “{' '.join(readable(list(task.decoder_tokens)))}” in both runs; the answer is its next token.")
    s1, s2 = st.columns(2)
    stream_stack = s1.radio("Stream of", ["decoder", "encoder"], format_func=STACKS.get, horizontal=True,
                            key="patch_stream_stack")
    head_stack = s2.radio("Heads of", ["cross", "decoder", "encoder"], format_func=STACKS.get, horizontal=True,
                          key="patch_head_stack")
else:
    stream_stack = head_stack = task.kind if task.kind == "decoder" else "encoder"
stream = [(s, stream_stack) for s in SITE_TITLES]
if task.kind == "encoder-decoder" and stream_stack == "decoder":  # what arrives from the encoder
    stream.insert(2, ("attn_out", "cross"))
todo = stream + [("head", head_stack)]

results = {w: cache.cached_patch(key, w) for w in todo}
running = ss.get("patch_running", False) and any(r is None for r in results.values())
b1, b2 = st.columns([1, 5])
b1.button("Run patching", key="patch_run", type="primary", on_click=job.start, args=("patch_running",),
          disabled=running or all(r is not None for r in results.values()))
b2.button("Cancel", key="patch_cancel_btn", on_click=job.cancel, args=(key,), disabled=not running)
if running:
    ss.patch_running = False
    if job.run_sweeps(key, todo):
        results = {w: cache.cached_patch(key, w) for w in todo}
    else:
        ss.patch_cancel = key
if any(r is None for r in results.values()):
    if ss.get("patch_cancel") == key:
        st.warning("Cancelled: nothing was kept. Press Run patching to start again.", icon="⏹️")
    else:
        n = job.runs_left(key, todo)
        st.info(f"Press **Run patching** for {n:,} patched runs (each a row of a batched forward).", icon="▶️")
    st.stop()

atp = cache.get_attribution(key)
st.subheader("Where the answer lives: layer × position")
st.caption("Each cell: that component at that layer and token, clean, in the corrupted run. Click a cell to open "
           "Inside a layer at that layer and token.")
for site, stack in stream:
    title = SITE_TITLES[site] if stack != "cross" else "Cross-attention output (attn_out of the encoder–decoder attention)"
    ui.plot(stream_heatmap(results[(site, stack)].effect, job.position_tokens(task, stack),
                           f"{title} · {STACKS[stack].lower()}"),
            key=f"patch_{stack}_{site}_fig", stem=f"patching-{stack}-{site}", selection_mode="points",
            on_select=job.open_cell(f"patch_{stack}_{site}_fig", stack))

st.subheader("Which heads carry it")
h1, h2 = st.columns(2)
heads = results[("head", head_stack)]
with h1:
    ui.plot(head_grid(heads.effect, f"Each head's output at every position · {STACKS[head_stack].lower()}"),
            key="patch_head_fig", stem="patching-heads", selection_mode="points",
            on_select=job.open_head("patch_head_fig", head_stack))
    st.caption("Click a head to open it on the Attention page with this text.")
with h2:
    points, lines = {}, []
    for site, stack in todo:
        exact, est = results[(site, stack)].effect, atp[(stack, site)]
        names = ([f"L{l} {t} ({p})" for l in range(exact.shape[0]) for p, t in enumerate(job.position_tokens(task, stack))]
                 if site != "head" else
                 [f"L{l} H{h}" for l in range(exact.shape[0]) for h in range(exact.shape[1])])
        label = site if stack == stream_stack or site == "head" else f"{stack} {site}"
        points[label] = (exact, est, names)
        lines.append(f"{label} r = {compare(exact, est, top=1).correlation:.2f}")
    ui.plot(atp_scatter(points, "Attribution patching against exact patching"), key="patch_atp_fig",
            stem="patching-atp")
    st.caption("Pearson correlation per site: " + " · ".join(lines) + ". AtP is linear: it misses a saturated "
               "softmax and effects that cancel (Kramár et al. 2024). Where they disagree most:")
    st.dataframe(pd.DataFrame(largest_gaps(points), columns=["site", "component", "exact", "AtP"]).round(3),
                 hide_index=True, key="patch_gaps")
ui.table_download(pd.DataFrame(heads.effect, index=heads.rows, columns=heads.cols), key="patch_head_csv",
                  stem="patching-heads", label="Head effects (CSV)")
ui.npz_download(partial(job.arrays, key, todo), key="patch_npz", stem="patching", label="Every sweep and AtP (NPZ)")

if task.kind == "decoder":
    with st.expander("Path patching: sender head → receiver head", expanded=ss.get("patch_path_open", False)):
        st.caption("Only the direct path from a sender head into a receiver's query, key or value input carries the "
                   "clean activation; every other reader keeps the corrupted stream (Wang et al. 2022).")
        comp = st.radio("Receiver input", ["q", "k", "v"], horizontal=True, key="patch_path_comp")
        grouped = bundle.n_kv_heads("decoder") != bundle.n_heads("decoder") and comp != "q"
        n = bundle.n_kv_heads("decoder") if grouped else bundle.n_heads("decoder")
        options = [f"L{l} {'KV' if grouped else 'H'}{h}" for l in range(1, heads.effect.shape[0]) for h in range(n)]
        best = [options[i] for i in np.argsort(-heads.effect[1:].reshape(-1))[:3]] if not grouped else options[-n:]
        recv = st.multiselect("Receivers", options, default=[o for o in best if o in options], key=f"patch_recv_{comp}")
        chosen = tuple((int(o.split()[0][1:]), int(o.split()[1].lstrip("KVH"))) for o in recv)
        path = cache.cached_patch(key, ("path", comp, chosen)) if chosen else None
        path_running = ss.get("patch_path_running", False) and chosen and path is None
        p1, p2 = st.columns([1, 5])
        p1.button("Run path patching", key="patch_path_run", on_click=job.start, args=("patch_path_running",),
                  disabled=not chosen or path is not None or path_running)
        p2.button("Cancel", key="patch_path_cancel", on_click=job.cancel, args=(key,), disabled=not path_running)
        if path_running:
            ss.patch_path_running = False
            if job.run_path(key, comp, chosen):
                path = cache.cached_patch(key, ("path", comp, chosen))
        if path is not None:
            ui.plot(path_matrix(path.effect, path.rows, path.cols, f"Sender → receiver {comp}"), key="patch_path_fig",
                    stem=f"patching-path-{comp}")
