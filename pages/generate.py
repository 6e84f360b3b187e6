"""Generate page (decoder-only models): type a prompt, generate greedily, by sampling or with beam search,
and step through the new tokens: the query's attention in every layer x head and in one head, the
top-k next tokens, and the logit lens (every layer's residual stream read through the model's own
final norm and unembedding)."""

import json
import re

import numpy as np
import pandas as pd
import streamlit as st

from viz.app import cache, ui
from viz.core.capture import CaptureError
from viz.figures.encdec import COLORS, attention_bars
from viz.figures.steps import head_grid, lens_table, levels, next_token_bars, rank_map
from viz.tasks.generate_lm import MAX_BEAMS, beam_table, decoder_names, max_new_tokens_limit
from viz.core.models import builtin_names
from viz.core.tokens import readable, readable_token

METHODS = {"greedy": "Greedy", "sample": "Sampling", "beam": "Beam search"}


def generated_text(gen, tok) -> str:
    """The new tokens as text, a special token (end-of-text between two texts) shown where it fell: ⟨…⟩."""
    out, run = [], []
    for s in gen.steps:
        if s.token_id in gen.special_ids:
            out += [tok.convert_tokens_to_string(run), f" ⟨{s.token}⟩ "]
            run = []
        else:
            run.append(s.token)
    return "".join(out + [tok.convert_tokens_to_string(run)]).strip()


def move_step(delta: int, n: int):
    st.session_state.gen_step = min(max(st.session_state.get("gen_step", 0) + delta, 0), n - 1)


def use_model():
    st.session_state.model_choice = st.session_state.gen_pick


ui.through_app()
st.title("Generate")
name = ui.model_name()
bundle = ui.bundle_or_stop(name)
if bundle.kind != "decoder":
    st.warning(f"'{name}' is {'an' if bundle.kind[0] == 'e' else 'a'} {bundle.kind} model: this page steps "
               "through generation with a decoder-only language model (GPT-2, Llama, ...). Switch to one here; "
               "encoder–decoders step through generation on the Encoder–decoder page.", icon="✍️")
    st.page_link("pages/encdec.py", label="Open the Encoder–decoder page", icon="🔁")
    st.selectbox("Decoder models", decoder_names(builtin_names()), key="gen_pick")
    st.button("Use this model", key="gen_use", on_click=use_model, type="primary")
    ui.stop("Pick a decoder model to continue.", "info", "👉")

# The prompt starts as the sidebar text and follows it when that changes (it went stale before), without its
# closing full stop: a model trained on sentences ends a finished one at once (atlas-lm: end-of-text, p 0.99).
text = st.session_state.get("text", ui.EXAMPLES[0])
if "gen_prompt" not in st.session_state or st.session_state.get("gen_text_seen", text) != text:
    st.session_state.gen_prompt = re.sub(r"[\s.!?…]+$", "", text) or text
st.session_state.gen_text_seen = text
c1, c2 = st.columns([3, 2])
prompt = c1.text_area("Prompt", key="gen_prompt", height=90,
                      help="The model continues this text. It follows the sidebar's text (without its final full "
                           "stop) whenever that changes; edit it here freely.")
method = c2.radio("Method", list(METHODS), format_func=METHODS.get, key="gen_method", horizontal=True)
limit = max(1, max_new_tokens_limit(bundle, 1))
max_new = c2.number_input("Max new tokens", 1, min(limit, 200), min(20, limit), key="gen_max_new")
top_k = c2.slider("Top-k shown per step", 1, 10, 5, key="gen_topk")
stop = c2.toggle("Stop at end-of-text", False, key="gen_stop", disabled=method == "beam",
                 help="Off: generation goes on past the end-of-text token, as a model trained on texts packed one "
                      "after another behind it (atlas-lm) starts the next one; a long prompt often gave '.' and the "
                      "end. On: it stops there, as model.generate does (beam search always does).")
temperature, top_p, seed, beams, beam = 1.0, 1.0, 0, 4, 0
if method == "sample":
    s1, s2, s3 = c1.columns(3)
    temperature = s1.number_input("Temperature", 0.05, 5.0, 1.0, 0.05, key="gen_temperature")
    top_p = s2.number_input("Top-p", 0.01, 1.0, 0.9, 0.01, key="gen_top_p")
    seed = s3.number_input("Seed", 0, 2**31 - 1, 0, key="gen_seed")
elif method == "beam":
    s1, s2 = c1.columns(2)
    beams = s1.number_input("Beams", 2, MAX_BEAMS, 4, key="gen_beams")
    if st.session_state.get("gen_beam", 0) >= beams:  # fewer beams than the one being shown
        st.session_state.gen_beam = int(beams) - 1
    beam = s2.number_input("Step through beam", 0, int(beams) - 1, key="gen_beam", help="0 = the best beam")
try:
    gen = cache.get_lm_generation(name, prompt, method, int(max_new), int(top_k), float(temperature), float(top_p),
                                  int(seed), int(beams), int(beam), bool(stop))
except CaptureError as e:
    ui.stop(str(e), "warning", "✍️")

tok = bundle.tokenizer
new_text = generated_text(gen, tok)
st.markdown(f"**Prompt:** `{tok.convert_tokens_to_string(gen.prompt_tokens)}`  \n**Generated:** "
            f"`{new_text or '(only special tokens)'}`")
rules = ", ".join(gen.settings.get("rules", [])) or "none"
ends = sum(s.token_id in gen.special_ids for s in gen.steps)
st.caption(f"{bundle.name} · {len(gen.steps)} new tokens · "
           f"{'ended on end-of-sequence' if gen.finished else 'stopped at the length limit'}"
           + (f" (went on past {ends} end-of-text token{'s' * (ends > 1)}, shown ⟨…⟩)" if ends and not gen.finished
              else "") + " · "
           f"rules applied to the logits, as model.generate does: {rules}")
if gen.beams:
    st.dataframe(pd.DataFrame(beam_table(gen, tok)).set_index("beam"), width="stretch",
                 column_config={"ending": st.column_config.TextColumn(width="medium"),  # cut to the table's width
                                "text": st.column_config.TextColumn(width="large")})
    st.caption("Beams best first, as beam search ranks them: score = log p / length^length_penalty "
               f"(length_penalty {gen.settings.get('length_penalty', 1.0):g}); log p is the model's own; 'ending' "
               f"is what follows the start all beams share. Stepping through beam {gen.settings.get('beam', 0)}.")

n = len(gen.steps)
if st.session_state.get("gen_step", 0) >= n:
    st.session_state.gen_step = n - 1
t = 0
if n > 1:
    p1, p2, p3 = st.columns([1, 8, 1], vertical_alignment="bottom")
    p1.button("◀", key="gen_prev", on_click=move_step, args=(-1, n), help="previous token")
    p3.button("▶", key="gen_next", on_click=move_step, args=(1, n), help="next token")
    t = p2.select_slider("Step", list(range(n)), key="gen_step",
                         format_func=lambda i: f"{i}: {readable_token(gen.steps[i].token)}")
step = gen.steps[t]
context = gen.tokens[: step.position]
L, H = step.attention.shape[:2]
shown = readable(context) if len(context) <= 24 else ["…"] + readable(context)[-23:]
st.markdown("Context: " + " ".join(f"`{x}`" for x in shown) + f" → **`{readable_token(step.token)}`**"
            + f" (p = {step.prob:.3g}" + (", forced by a generation rule" if step.forced else "") + ")")

st.subheader("What it looked at")
ui.plot(head_grid(step.attention, context, f"Step {t}: every layer × head, from '{step.query_token}'"),
        key="gen_grid", stem=f"step-{t}-heads", on_select=ui.pick("gen_grid", "gen_layer", "gen_head"), selection_mode="points")
st.caption(f"The query of the last context token ('{step.query_token}'), whose output predicted '{step.token}', "
           "over the context. Each row is scaled to its own maximum; click a row to open that head below.")
a1, a2, _ = st.columns([1, 1, 3])
if st.session_state.get("gen_layer") not in range(L):  # the last layer first (or after another model); a click sets it
    st.session_state.gen_layer = L - 1
layer = a1.selectbox("Layer", list(range(L)), key="gen_layer")
head = a2.selectbox("Head", ["mean"] + list(range(H)), key="gen_head",
                    format_func=lambda h: "mean over heads" if h == "mean" else f"head {h}")
w = step.attention[layer].mean(0) if head == "mean" else step.attention[layer, head]
ui.plot(attention_bars(w, context, f"Layer {layer} · {'mean over heads' if head == 'mean' else f'head {head}'}, "
                       "over the context", COLORS["decoder"], highlight=int(np.argmax(w))),
        key="gen_head_fig", stem=f"step-{t}-L{layer}-{head}")

st.subheader("What it predicted")
if step.lens_rank is None:
    st.info(gen.lens_note or "No logit lens for this model.", icon="🔎")
    ui.plot(next_token_bars(step.top_k, step.token, f"Next-token probabilities at step {t}"), key="gen_topk_fig",
            stem=f"step-{t}-topk")
else:
    st.caption("The logit lens: the residual stream at this query after the embeddings (emb) and after each layer "
               "(L0, L1, ...), read through the model's own final norm and unembedding (nostalgebraist 2020), i.e. "
               "what the model would predict if it stopped there. The last row is the model's own output; the last "
               "column is the chosen token's rank and probability.")
    if gen.lens_gap is not None and gen.lens_gap > 1e-2:
        st.warning(f"The last layer's lens differs from the model's logits by up to {gen.lens_gap:.2g}: this "
                   "family's final norm or logit scaling is not fully known, so read the lens with care.", icon="⚠️")
    lens_df = pd.DataFrame([[t_ for t_, _ in row] + [int(r), round(float(p), 6)] for row, r, p in
                            zip(step.lens_top, step.lens_rank, step.lens_prob)],
                           columns=[f"#{j + 1}" for j in range(len(step.lens_top[0]))] + ["rank of chosen", "p(chosen)"],
                           index=levels(L + 1))
    g1, g2 = st.columns([1, 2])
    with g1:
        ui.plot(next_token_bars(step.top_k, step.token, f"Next-token probabilities at step {t}"), key="gen_topk_fig",
                stem=f"step-{t}-topk")
    with g2:
        ui.plot(lens_table(step.lens_top, step.token, step.lens_rank, step.lens_prob,
                           f"Step {t}: top-{len(step.lens_top[0])} by layer, and '{step.token}'"),
                key="gen_lens_fig", stem=f"step-{t}-lens")
        ui.table_download(lens_df, key="gen_lens_csv", stem=f"step-{t}-lens", label="Lens table (CSV)")
    ui.plot(rank_map(np.stack([s.lens_rank for s in gen.steps]), gen.output_tokens, t,
                     "Every step: the generated token's rank under each layer's lens"), key="gen_ranks_fig",
            stem="lens-ranks")


def first_top(ranks) -> str:
    """Where the lens first ranks the token first: 'emb', 'L{i}' (after that layer) or 'never'."""
    i = next((i for i, r in enumerate(ranks) if r == 1), None)
    return "never" if i is None else levels(len(ranks))[i]


rows = [{"step": s.index, "context token": s.query_token, "output": s.token, "p(output)": round(s.prob, 4),
         "forced": s.forced, "most attended (last layer, mean)": gen.tokens[int(s.attention[-1].mean(0).argmax())],
         "top-1": s.top_k[0][0],
         **({"lens: first at rank 1": first_top(s.lens_rank)} if s.lens_rank is not None else {})}
        for s in gen.steps]
steps_df = pd.DataFrame(rows).set_index("step")
with st.expander("All steps"):
    st.dataframe(steps_df, width="stretch")
d1, d2 = st.columns(2)
with d1:
    ui.table_download(steps_df, key="gen_steps_csv", stem=f"{name}-steps", label="Steps (CSV)")
with d2:
    st.download_button("Steps (JSON, as `python -m viz generate --json`)", key="gen_steps_json",
                       data=lambda: json.dumps(gen.to_json(), indent=1), file_name=f"{ui.slug(name)}-steps.json",
                       mime="application/json", on_click="ignore")
