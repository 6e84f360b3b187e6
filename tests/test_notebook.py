"""The example notebook (examples/attention.ipynb) runs in a real Jupyter kernel (nbclient + ipykernel), and every
figure it displays carries the text's own tokens and the model's own weights.

References: transformers' eager forward with `output_attentions=True` (never our attention function), word
merging by explicit loops over the tokenizer's word ids, the shares and maxima recomputed from those tensors.
"""

from __future__ import annotations

import json
import re

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient

from conftest import ROOT, plotly_array

NOTEBOOK = ROOT / "examples" / "attention.ipynb"
TEXT = "The cat sat on the mat because it was tired."


def bare(labels) -> list[str]:
    """Axis categories 'the (3)' -> 'the' (unique categories, viz.figures.axes.token_labels)."""
    return [re.sub(r" \(\d+\)$", "", str(x)).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
            for x in labels]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook's code cells -> (their source, the figures and text they displayed), run in a fresh kernel
    whose working directory is outside the repository (the kernel finds `viz` on PYTHONPATH, as after pip install)."""
    import os

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT)  # the kernel is a subprocess: it inherits this (and HF_HUB_OFFLINE)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path_factory.mktemp("nb"))}}).execute()
    finally:
        if env_before is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = env_before
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        figs = [o["data"]["application/vnd.plotly.v1+json"] for o in cell.outputs
                if "application/vnd.plotly.v1+json" in o.get("data", {})]
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.get("name") == "stdout")
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, (cell.source, errors)
        noise = [o["text"] for o in cell.outputs if o.output_type == "stream" and o.get("name") == "stderr"]
        assert not noise, (cell.source, noise)  # no loading bars or library warnings in a reader's notebook
        cells.append((cell.source, figs, text))
    return cells


def figure_of(cells, needle: str) -> dict:
    (figs,) = [f for src, f, _ in cells if needle in src]
    assert len(figs) == 1, (needle, len(figs))
    return figs[0]


def eager(name: str, text: str, load):
    """(tokens, [layer, head, q, k]) from a plain eager forward of the same weights."""
    from transformers import AutoModel

    bundle = load(name)
    path = bundle.model.config._name_or_path
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    enc = bundle.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_attentions=True)
    tokens = bundle.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    return tokens, torch.stack([a[0] for a in out.attentions]).numpy(), enc


def heat(fig: dict):
    (trace,) = fig["data"]
    return bare(trace["y"]), bare(trace["x"]), plotly_array(trace["z"]).astype(np.float64)


def test_every_cell_runs_and_the_model_view_has_every_head(executed):
    assert all(figs or "import" in src or "print" in src for src, figs, _ in executed)
    fig = figure_of(executed, 'model_view("minilm", text)')
    heads = next(t for t in fig["data"] if t.get("name") == "heads")
    cells = plotly_array(heads["customdata"])
    assert sorted(map(tuple, cells[:, :2].astype(int).tolist())) == [(li, h) for li in range(6) for h in range(12)]
    assert fig["layout"]["yaxis"]["ticktext"] == [f"L{i}" for i in range(6)]


def test_one_head_carries_the_tokens_and_the_weights(executed, load):
    tokens, A, _ = eager("minilm", TEXT, load)
    q, k, z = heat(figure_of(executed, 'head_view("minilm", text, layer=3, head=5)'))
    assert q == tokens and k == tokens
    np.testing.assert_allclose(z, A[3, 5], atol=2e-6)


def test_merged_words_are_the_words_and_their_weights_merge_by_hand(executed, load):
    text = "Tokenization splits unfamiliar words."
    tokens, A, enc = eager("minilm", text, load)
    word_of = enc.word_ids(0)
    assert len(tokens) > 7  # the words are split into pieces, or this cell would prove nothing
    groups = []  # token positions of each word, special tokens on their own
    for i, w in enumerate(word_of):
        if w is not None and groups and word_of[groups[-1][0]] == w:
            groups[-1].append(i)
        else:
            groups.append([i])
    ref = np.zeros((len(groups), len(groups)))
    for a, rows in enumerate(groups):
        for b, cols in enumerate(groups):
            ref[a, b] = np.mean([sum(A[3, 5, r, c] for c in cols) for r in rows])
    q, k, z = heat(figure_of(executed, "words=True"))
    assert q == k == ["[CLS]", "tokenization", "splits", "unfamiliar", "words", ".", "[SEP]"]
    np.testing.assert_allclose(z, ref, atol=2e-6)


def test_aggregate_and_sink_views_of_one_capture(executed, load):
    tokens, A, _ = eager("minilm", TEXT, load)
    src, _, printed = next(c for c in executed if "cap = capture" in c[0])
    assert printed.splitlines()[0] == str(tokens) and "(6, 12, 13, 13)" in printed
    q, k, z = heat(figure_of(executed, 'aggregate_view(cap, how="max")'))
    assert q == tokens == k
    np.testing.assert_allclose(z, A.max(axis=(0, 1)), atol=2e-6)
    (trace,) = figure_of(executed, "sink_view(cap)")["data"]
    np.testing.assert_allclose(plotly_array(trace["z"]), A[:, :, 1:, 0].mean(axis=-1), atol=2e-6)


def test_decoder_and_encoder_decoder_heads(executed, load):
    text = "The cat sat on the mat because it was"
    tokens, A, _ = eager("atlas-lm", text, load)
    q, k, z = heat(figure_of(executed, 'head_view("atlas-lm"'))
    assert q == k == tokens
    np.testing.assert_allclose(z, A[1, 0], atol=2e-6)
    assert np.all(np.triu(z, 1) == 0)  # causal: nothing after the query

    tok = load("seq2seq-dates").tokenizer
    q, k, z = heat(figure_of(executed, 'head_view("seq2seq-dates"'))
    assert k == tok.convert_ids_to_tokens(tok("3 March 2021")["input_ids"])  # columns: the source it reads
    assert len(q) == z.shape[0] > 1 and np.allclose(z.sum(axis=1), 1, atol=1e-4)


def test_the_stored_notebook_has_no_outputs():
    """Kept clean in git: outputs are made by running it (they would carry ~100 kB of figures per cell)."""
    nb = json.loads(NOTEBOOK.read_text())
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
