"""The Attribution page's server side: cached attributions of one prediction (the JSON contract of
`python -m viz attribute`, never the model), the prediction picker's options, the arrays the figures take, and
the corpus job's sentences and stored results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from viz.app import cache, ui
from viz.causal.attribution_catalog import METHODS
from viz.core.models import ModelBundle
from viz.tasks.corpus import CorpusError, CorpusTooLarge, columns, load_corpus, sample_corpus

SOURCES = ["Bundled sample", "Upload a file"]
TASK_SOURCE = "The task's test examples"


# ----------------------------------------------------------------------------- one example
def get_attribution(name: str, text: str, target: str | None, foil: str | None, position: int | None,
                    methods: tuple[str, ...], steps: int, seeds: int, faithful: bool) -> dict:
    """`attribute(...).to_json()` plus each method's label and sign; cached per inputs. Raises AttributionError."""
    from viz.causal.attribution import attribute

    def compute() -> dict:
        res = attribute(cache.get_bundle(name), text, target=target, foil=foil, position=position, methods=methods,
                        with_faithfulness=faithful, ig_steps=steps, seeds=seeds)
        out = res.to_json(digits=8)
        out["labels"] = [METHODS[m].label for m in res.scores]
        out["tags"] = [METHODS[m].tag for m in res.scores]
        out["signed"] = [METHODS[m].signed for m in res.scores]
        if res.faithfulness is not None:
            out["random_runs"] = [[r.comprehensiveness, r.sufficiency] for r in res.faithfulness.random_runs]
        return out

    return cache._cached(cache.RESULTS, ("attribution", name, text, target, foil, position, methods, steps, seeds,
                                         faithful), compute, "Attributing…")


def choices(name: str, text: str, bundle: ModelBundle) -> tuple[list[int], dict[int, str], int | None, str]:
    """(positions the picker offers, their labels, the default, the picker's label) for this model and text."""
    from viz.causal.attribution_target import AttributionError, prepare
    from viz.tasks.generate_lm import prompt_ids
    from viz.core.tokens import readable
    from viz.tasks.mlm import with_mask_token

    def compute():
        tok = bundle.tokenizer
        if bundle.kind == "encoder-decoder":
            try:
                out = prepare(bundle, text).output_tokens
            except AttributionError:
                out = []
            return list(range(len(out))), {i: f"{i}: {t}" for i, t in enumerate(readable(list(out)))}, 0 if out else None, \
                "Output token to explain (the model's greedy output)"
        with bundle.lock:
            ids = prompt_ids(bundle, text) if bundle.kind == "decoder" else tok(with_mask_token(text, tok))["input_ids"]
            tokens = readable(tok.convert_ids_to_tokens(ids))  # byte-level Ġ as ▁ (viz/core/tokens.py)
        if bundle.kind == "decoder":
            opts = list(range(len(ids)))
            return opts, {i: f"{i}: {tokens[i]}" for i in opts}, (opts[-1] if opts else None), \
                "Explain the next-token prediction after"
        special = set(tok.all_special_ids) - {tok.mask_token_id, tok.unk_token_id}
        opts = [i for i, t in enumerate(ids) if t not in special]
        masks = [i for i in opts if ids[i] == tok.mask_token_id]
        return opts, {i: f"{i}: {tokens[i]}" for i in opts}, (masks[0] if masks else None), \
            "Token to predict (masked)"

    if not text.strip():
        return [], {}, None, "Position"
    return cache._cached(cache.RESULTS, ("attribution_choices", name, text), compute, "Tokenizing…")


def arrays(view: dict) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(tokens, method labels, scores [method, token] with NaN for null, candidates [token])."""
    scores = np.array([[np.nan if v is None else v for v in s] for s in view["scores"].values()], dtype=np.float64)
    return view["tokens"], view["labels"], scores, np.array(view["candidates"], dtype=bool)


def scores_frame(view: dict) -> pd.DataFrame:
    df = pd.DataFrame({"position": range(len(view["tokens"])), "token": view["tokens"],
                       "special": view["special"], "candidate": view["candidates"]})
    for m, s in view["scores"].items():
        df[m] = s
    return df.set_index("position")


def agreement_array(view: dict) -> np.ndarray:
    ms = list(view["scores"])
    return np.array([[np.nan if view["agreement"][a][b] is None else view["agreement"][a][b] for b in ms]
                     for a in ms], dtype=np.float64)


def faithfulness_frame(view: dict) -> pd.DataFrame:
    rows = [{"method": m, **v} for m, v in view["faithfulness"].items()]
    r = view["random"]
    rows.append({"method": f"random ({r['seeds']} seeds)", "comprehensiveness": r["comprehensiveness"],
                 "sufficiency": r["sufficiency"]})
    return pd.DataFrame(rows).set_index("method")


def picked_token(view: dict, key: str) -> int:
    """The clicked token, else the candidate occlusion (or the first method) scores highest."""
    tok = st.session_state.get(key)
    if tok is not None and 0 <= int(tok) < len(view["tokens"]):
        return int(tok)
    _, _, scores, cand = arrays(view)
    row = list(view["scores"]).index("occlusion") if "occlusion" in view["scores"] else 0
    s = np.where(cand, np.nan_to_num(scores[row], nan=-np.inf), -np.inf)
    return int(np.argmax(s)) if cand.any() else 0


# ----------------------------------------------------------------------------- corpus mode
def sources(name: str) -> list[str]:
    from viz.tasks.encdec import shipped_task

    return SOURCES + ([TASK_SOURCE] if shipped_task(name) else [])


def corpus_sentences(source: str, name: str) -> tuple[tuple[str, ...], str]:
    """(sentences, where they came from); stops the page with one sentence when they cannot be read."""
    if source == SOURCES[0]:
        c = sample_corpus()
        return c.sentences, f"{c.source}, {len(c):,} sentences"
    if source == TASK_SOURCE:
        from viz.tasks.encdec import shipped_task
        from viz.train.seq2seq_tasks import get_task

        task = shipped_task(name)
        return tuple(s for s, _, _ in get_task(task)["make_examples"](300, 0, "test")), \
            f"300 held-out examples of the '{task}' task"
    up = st.file_uploader("Sentences: .txt (one per line), .csv or .jsonl", type=["txt", "csv", "jsonl"],
                          key="attr_upload")
    if up is None:
        ui.stop("Upload a file to attribute over it.", "info", "📄")
    data, col = up.getvalue(), None
    if not up.name.lower().endswith(".txt"):
        col = st.selectbox("Column with the sentences", columns(data, up.name) or ["—"], key="attr_column")
    try:
        c = load_corpus(data, up.name, col)
    except (CorpusTooLarge, CorpusError) as e:
        ui.stop(str(e))
    return c.sentences, f"{up.name}, {len(c):,} sentences"


def stored_corpus(key: tuple):
    return cache.RESULTS.get(("attribution_corpus",) + key)


def store_corpus(key: tuple, result) -> None:
    cache.RESULTS.put(("attribution_corpus",) + key, result)


def corpus_board(summary: pd.DataFrame) -> dict:
    """The scoreboard's arguments from `CorpusAttribution.summary()`: bars = means, error bars and the random
    band = 95 % bootstrap intervals."""
    s = summary.set_index("method")
    methods = [m for m in s.index if m != "random"]
    r = s.loc["random"]
    return dict(labels=[METHODS[m].label for m in methods],
                comp=s.loc[methods, "comprehensiveness"].to_numpy(), suff=s.loc[methods, "sufficiency"].to_numpy(),
                comp_err=s.loc[methods, ["comprehensiveness_lo", "comprehensiveness_hi"]].to_numpy(),
                suff_err=s.loc[methods, ["sufficiency_lo", "sufficiency_hi"]].to_numpy(),
                random_comp=(r.comprehensiveness, r.comprehensiveness_lo, r.comprehensiveness_hi),
                random_suff=(r.sufficiency, r.sufficiency_lo, r.sufficiency_hi))
