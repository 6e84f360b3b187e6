"""Does attention explain? Input attributions of one prediction beside attention, scored for faithfulness."""

import json

import pandas as pd
import streamlit as st

from viz.app import attribution_view as view
from viz.app import ui
from viz.causal.attribution_catalog import DEFAULT_METHODS, IG_STEPS, METHODS, RANDOM_SEEDS, AttributionError
from viz.causal.attribution_corpus import DEFAULT_MAX_TOKENS, run_corpus
from viz.core.tokens import readable, readable_token
from viz.figures.attribution import agreement_matrix, normalise, scoreboard, token_detail, token_strips
from viz.tasks.corpus import corpus_key

ui.through_app()
st.title("Does attention explain?")
st.caption("One prediction attributed to the input tokens by gradients, perturbations and value zeroing, beside "
           "the attention-based scores, all for the same target; each scored by what happens to the prediction "
           "when its top tokens are removed (comprehensiveness and sufficiency, DeYoung et al. 2020) against "
           "random rankings.")
name, text = ui.model_name(), st.session_state.get("text", "")
bundle = ui.bundle_or_stop(name)
if bundle.kind == "encoder":
    ui.mlm_or_stop(bundle)  # an encoder explains its masked-LM prediction

mode = st.radio("Mode", ["One example", "Corpus"], horizontal=True, key="attr_mode")
c1, c2, c3 = st.columns([4, 1, 1])
methods = tuple(c1.multiselect("Methods", list(METHODS), default=list(DEFAULT_METHODS), key="attr_methods",
                               format_func=lambda m: METHODS[m].label))
steps = int(c2.number_input("IG steps", 4, 512, IG_STEPS, key="attr_steps",
                            help="Gauss–Legendre points of integrated gradients, all in one batch"))
seeds = int(c3.number_input("Random seeds", 2, 50, RANDOM_SEEDS, key="attr_seeds",
                            help="random rankings behind the faithfulness baseline"))
with st.expander("How each score is computed"):
    st.markdown("\n".join(f"- **{m.label}** (`{m.name}`, {'signed' if m.signed else 'unsigned'}): {m.definition}"
                          for m in METHODS.values()))
    st.markdown("f(x) = log p(target | x), or logit(target) − logit(foil) with a foil. Removing a token replaces "
                "it by the mask token (masked LMs), else the pad token, else end-of-text; positions are kept.")
if not methods:
    ui.stop("Choose at least one method.", "info", "☝️")


def one_example() -> None:
    opts, labels, default, label = view.choices(name, text, bundle)
    now, before = (name, text), st.session_state.get("attr_position_of")
    if before != now or "attr_position" not in st.session_state:  # a new text, or back from the corpus mode
        if before not in (None, now) or st.session_state.get("attr_position") not in opts:
            st.session_state.attr_position = default  # the typed mask, the last token, the first output
        st.session_state.attr_position_of = now  # (a link's position stays when it fits)
    p1, p2, p3, p4 = st.columns([3, 2, 2, 1], vertical_alignment="bottom")
    position = p1.selectbox(label, opts, index=None, key="attr_position",  # its value: the state set above
                            format_func=labels.get, placeholder="choose a token")
    target = p2.text_input("Target token (empty: the model's prediction)", key="attr_target").strip() or None
    foil = p3.text_input("Foil (optional: target − foil)", key="attr_foil").strip() or None
    faithful = p4.toggle("Faithfulness", value=True, key="attr_faithful")
    try:
        v = view.get_attribution(name, text, target, foil, position, methods, steps, seeds, faithful)
    except AttributionError as e:
        ui.stop(str(e), "warning", "✍️")
    tokens, labels_m, scores, cand = view.arrays(v)
    tokens = readable(list(tokens))  # as read (Ġ as ▁); the table and the exports keep the raw tokens
    against = f" against foil **{readable_token(v['foil'])}**" if v["foil"] else ""
    f_name = "logit(target) − logit(foil)" if v["foil"] else "log p(target)"
    st.markdown(f"Explaining **{readable_token(v['target'])}**{against} at position {v['position']}"
                + (f" of the output {' '.join(readable(list(v['output_tokens'])))}" if v.get("output_tokens") else "")
                + f" (the model's own top token: {readable_token(v['predicted'])}); f = {f_name} = {v['f']:.4f}.")
    ig = v.get("integrated_gradients")
    if ig:
        st.caption(f"Integrated gradients: {ig['steps']} Gauss–Legendre steps from the baseline where every "
                   f"candidate token is {v['replacement']} (f = {ig['f_baseline']:.4f}); completeness gap "
                   f"|Σ IG − (f(x) − f(baseline))| = {v['completeness_gap']:.2e} "
                   f"({ig['relative_gap']:.2%} of f(x) − f(baseline)).")
    for m, note in v["notes"].items():
        st.caption(f"{METHODS[m].label}: {note}.")
    ui.plot(token_strips(tokens, labels_m, scores, cand, "Scores per method (colour: share of the method's largest "
                         "|score|; blank: special tokens and a masked LM's mask)"),
            key="attr_strips", stem="attribution-strips", on_select=ui.pick("attr_strips", "attr_token"),
            selection_mode="points")
    t = view.picked_token(v, "attr_token")
    share = normalise(scores, cand)[:, t]
    left, right = st.columns([1, 1])
    with left:
        ui.plot(token_detail(labels_m, scores[:, t], share, tokens[t], t), key="attr_token_fig",
                stem=f"attribution-token-{t}")
        st.caption("Click a token in the strips above to see its score under every method.")
    with right:
        n = int(cand.sum())
        ui.plot(agreement_matrix(v["tags"], view.agreement_array(v), f"Rank agreement (Kendall τ over {n} tokens)"),
                key="attr_agreement", stem="attribution-agreement")
    if v["faithfulness"] is not None:
        fr = view.faithfulness_frame(v)
        sc, ss = v["random"]["spread"]["comprehensiveness"], v["random"]["spread"]["sufficiency"]
        band = {k: (s["mean"], s["mean"] - s["std"], s["mean"] + s["std"]) for k, s in (("c", sc), ("s", ss))}
        ms = list(v["faithfulness"])
        ui.plot(scoreboard(labels_m, fr.loc[ms, "comprehensiveness"].to_numpy(float),
                           fr.loc[ms, "sufficiency"].to_numpy(float), band["c"], band["s"],
                           title="Faithfulness (AOPC over 1, 5, 10, 20 and 50 % of the tokens removed)"),
                key="attr_scoreboard", stem="attribution-faithfulness")
        st.caption(f"Random rankings: {v['random']['seeds']} seeds; dashed line = their mean, grey band = mean ± one "
                   f"standard deviation (range over seeds: {sc['min']:.3g}–{sc['max']:.3g} and {ss['min']:.3g}–"
                   f"{ss['max']:.3g}). m(x) = {'p(target) − p(foil)' if v['foil'] else 'p(target)'} = {v['m']:.4f}; tokens removed per fraction: {v['removed']}.")
    d = st.columns(4)
    with d[0]:
        ui.table_download(view.scores_frame(v), key="attr_scores_csv", stem="attribution-scores", label="Scores (CSV)")
    with d[1]:
        ui.table_download(pd.DataFrame(view.agreement_array(v), index=list(v["scores"]), columns=list(v["scores"])),
                          key="attr_agree_csv", stem="attribution-agreement", label="Agreement (CSV)")
    if v["faithfulness"] is not None:
        with d[2]:
            ui.table_download(view.faithfulness_frame(v), key="attr_faith_csv", stem="attribution-faithfulness",
                              label="Faithfulness (CSV)")
    with d[3]:
        st.download_button("Everything (JSON)", data=json.dumps(v, ensure_ascii=False),
                           file_name="attribution.json", mime="application/json", key="attr_json", on_click="ignore")


# `attr_cancel` holds the settings of the run that was cancelled: the notice belongs to those settings only.
def start():
    st.session_state.attr_running, st.session_state.attr_cancel = True, None


def cancel(settings):
    st.session_state.attr_running, st.session_state.attr_cancel = False, settings


def corpus() -> None:
    source = st.radio("Corpus", view.sources(name), horizontal=True, key="attr_source")
    sentences, where = view.corpus_sentences(source, name)
    o1, o2, o3 = st.columns(3)
    limit = int(o1.number_input("Sentences to use", 1, len(sentences), min(len(sentences), 20), key="attr_limit"))
    max_tokens = int(o2.number_input("Skip sentences over (tokens)", 4, bundle.max_tokens,
                                     min(DEFAULT_MAX_TOKENS, bundle.max_tokens), key="attr_max_tokens"))
    seed = int(o3.number_input("Seed (which token each sentence explains)", 0, 1_000_000, 0, key="attr_seed"))
    st.caption(f"{where}. One seeded prediction per sentence: a masked whole word (masked LMs), the next token "
               "after a seeded position (decoders), a seeded output step (encoder–decoders); target = the model's "
               "own prediction." + (f" Integrated gradients costs {steps} forward and backward passes per sentence."
                                     if "integrated_gradients" in methods else ""))
    chosen = tuple(sentences[:limit])
    key = (name, corpus_key(chosen), methods, steps, seeds, max_tokens, seed)
    result = view.stored_corpus(key)
    running = result is None and st.session_state.get("attr_running", False)
    b1, b2 = st.columns([1, 5])
    b1.button("Run", key="attr_run", on_click=start, type="primary", disabled=result is not None or running)
    b2.button("Cancel", key="attr_cancel_btn", on_click=cancel, args=(key,), disabled=not running)
    if running:
        bar = st.progress(0.0, text="Starting…")
        res = run_corpus(bundle, chosen, methods, seed=seed, max_tokens=max_tokens, ig_steps=steps, seeds=seeds,
                         progress=lambda d, t: bar.progress(d / t, text=f"{d:,} / {t:,} sentences"),
                         should_stop=lambda: st.session_state.get("attr_cancel") is not None)
        st.session_state.attr_running = False
        bar.empty()
        if res.cancelled:
            st.session_state.attr_cancel = key
        else:
            view.store_corpus(key, res)
            result = res
    if result is None:
        if st.session_state.get("attr_cancel") == key:
            ui.stop("Cancelled: nothing was kept. Press Run to start again.", "warning", "⏹️")
        ui.stop(f"Press **Run** to attribute {limit:,} sentences with {len(methods)} methods.", "info", "▶️")
    if not result.examples:
        ui.stop(f"None of the {limit} sentences had a prediction to explain ({result.skipped} skipped: too long, "
                "or no whole word to mask); choose other sentences.", "warning")
    st.success(result.verdict() + f" ({result.skipped} skipped, {result.seconds:.0f} s)")
    summary = result.summary()
    ui.plot(scoreboard(**view.corpus_board(summary), title=f"Faithfulness over {len(result.examples)} examples "
                       "(AOPC; error bars and grey band: 95 % bootstrap intervals of the mean)"),
            key="attr_corpus_board", stem="attribution-corpus-faithfulness")
    st.dataframe(summary.set_index("method").round(4), key="attr_corpus_table")
    d1, d2 = st.columns(2)
    with d1:
        ui.table_download(summary.set_index("method"), key="attr_corpus_csv", stem="attribution-corpus-summary",
                          label="Summary (CSV)")
    with d2:
        ex = pd.DataFrame(result.examples).set_index("example")
        ui.table_download(result.frame().join(ex[["text", "position", "target"]], on="example"),
                          key="attr_corpus_rows", stem="attribution-corpus-examples", label="Every example (CSV)")


if mode == "One example":
    one_example()
else:
    corpus()
