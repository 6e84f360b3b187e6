"""The Head atlas page's parts that stand alone: the decoder head scores (no corpus run needed), and where the
corpus comes from (the bundled sample, an upload, or a CSV written by `python -m viz atlas`)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from viz.app import cache, ui
from viz.atlas.core import AtlasCsvError
from viz.atlas.core import read_csv as read_atlas_csv
from viz.core.capture import CaptureError
from viz.figures.atlas import stat_grid
from viz.figures.attention import head_heatmap
from viz.tasks.corpus import CorpusTooLarge, columns, load_corpus, sample_corpus
from viz.train.studio_decoder import REPEAT_LENGTH, REPEAT_MIN


def pick_head(fig_key: str) -> None:
    cell = ui.clicked_customdata(fig_key)
    if cell is not None and len(cell) >= 2:
        st.session_state.atlas_heads_pick = (int(cell[0]), int(cell[1]))


def decoder_heads(name: str, bundle) -> None:
    """Decoders: induction, previous-token, duplicate-token and first-token scores (viz.tasks.heads), which need no
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
    copies = res.loss_second < res.loss_first - 1.0  # a nat better on the repeat: it copies from the context
    st.caption(f"At {int(length)} random tokens per copy: best induction head L{li} H{hi} ({best:.2f}); next-token "
               f"loss on the first copy {res.loss_first:.2f} nats, on the repeated copy {res.loss_second:.2f}: "
               + ("the model copies from its context at this length (a model without induction heads predicts "
                  "both copies equally badly)." if copies else
                  "no better on the repeat, so at this length the model does not copy from its context. A head "
                  "trained on shorter repeats may not reach this far (the Training studio's repeated-tokens task "
                  f"trains on {REPEAT_MIN} to {REPEAT_LENGTH} tokens per copy): try the length it was trained on "
                  "before concluding.")
               + " Every grid is coloured on the same 0 to 1 scale: a pale grid means weak heads.")
    grids = [("induction", "Induction score", "Reds"), ("previous", "Previous-token score", "Blues"),
             ("duplicate", "Duplicate-token score", "Purples"), ("first", "First-token (sink) share", "Greys")]
    for row in (grids[:2], grids[2:]):
        for col, (attr, title, scale) in zip(st.columns(2), row):
            with col:
                ui.plot(stat_grid(getattr(res, attr), title, colorscale=scale, share=True), key=f"atlas_heads_{attr}",
                        stem=f"heads-{attr}", on_select=lambda k=f"atlas_heads_{attr}": pick_head(k),
                        selection_mode="points")
    layer, head = st.session_state.get("atlas_heads_pick") or (li, hi)
    if layer >= res.n_layers or head >= res.n_heads:  # a pick made on another model
        layer, head = li, hi
    ui.plot(head_heatmap(res.example_attn[layer, head].astype(np.float32), res.example_tokens, res.example_tokens,
                         f"Layer {layer}, head {head} on a repeated random sequence (induction "
                         f"{res.induction[layer, head]:.2f})"), key="atlas_heads_example", stem="heads-example")


SOURCES = ["Bundled sample", "Upload a file", "Open a result CSV"]


def cli_hint(name: str, corpus: str = "CORPUS.txt") -> str:
    return (f"For a bigger corpus, run the atlas from the command line (no size limit; `--engine ray` spreads it "
            f"over a Ray cluster, see README *Running on a cluster*):\n\n"
            f"`python -m viz atlas --model {name} --corpus {corpus} --out stats.csv`\n\n"
            f"then open `stats.csv` here with **{SOURCES[2]}**.")


def read_corpus(source: str, name: str):
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
        st.info(cli_hint(name, up.name), icon="💻")
        st.stop()


def open_result_csv(name: str):
    """A CSV written by `python -m viz atlas` (e.g. on a cluster) -> AtlasResult, explored like a run."""
    up = st.file_uploader("Head-atlas CSV (from `python -m viz atlas --out FILE.csv` or this page's table)",
                          type=["csv"], key="atlas_result_upload")
    if up is None:
        st.info(cli_hint(name), icon="💻")
        st.stop()
    try:
        res = read_atlas_csv(up.getvalue(), up.name)
    except AtlasCsvError as e:
        st.error(str(e), icon="🚫")
        st.stop()
    st.success(f"{up.name}: {res.n_layers} layers × {res.n_heads} heads, statistics and roles as written by the "
               "command line (it keeps no sentences, so there are no example sentences or importance here).")
    return res
