"""The Patching page under AppTest on the three shipped models: what it draws against patches written here with
plain hooks on the real model (one forward per cell, the metric from the model's full logits), its downloads,
its examples (each shows something: the metric moves by more than one logit or nat), and its one-sentence
answers to bad input."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from apptest import open_page, rerun
from conftest import chart_spec
from viz.causal.examples import SHIPPED, replace_word, words
from viz.causal.task import make_task
from viz.core.models import load_model

# the module paths of the shipped models, written by hand: a block, and the output projection of a head's layer
BLOCK = {"atlas-lm": "model.layers.{l}", "minilm-mlm": "bert.encoder.layer.{l}",
         "seq2seq-dates": "model.decoder.layers.{l}"}
HEADS_OUT = {"atlas-lm": "model.layers.{l}.self_attn.o_proj", "minilm-mlm": "bert.encoder.layer.{l}.attention.output.dense",
             "seq2seq-dates": "model.decoder.layers.{l}.encoder_attn.out_proj"}  # the page's default: cross heads


class Reference:
    """One patched forward per cell with a plain (pre-)hook; the metric from the full logits."""

    def __init__(self, name: str, task):
        self.name, self.task, self.model = name, task, load_model(name).model
        self.H = load_model(name).n_heads("decoder" if name != "minilm-mlm" else "encoder")

    def metric(self, which: str, hook=None) -> float:
        t = self.task
        kw = {"input_ids": torch.tensor([t.clean_ids if which == "clean" else t.corrupt_ids])}
        if t.kind == "encoder-decoder":
            kw["decoder_input_ids"] = torch.tensor([t.decoder_ids])
        handle = hook() if hook else None
        try:
            with torch.inference_mode():
                row = self.model(**kw, use_cache=False).logits[0, -1 if t.kind == "decoder" else t.answer_position]
        finally:
            if handle:
                handle.remove()
        if t.kind == "encoder":
            lp = row.double().log_softmax(-1)
            return float(lp[t.target] - lp[t.foil])
        return float(row[t.target] - row[t.foil])

    def patched(self, path: str, layer: int, select) -> float:
        """`select(x, clean)` puts the clean value into the corrupted input of module `path` (a pre-hook)."""
        mod = self.model.get_submodule(path.format(l=layer))
        kept = {}

        def keep(m, a, kw):
            kept["x"] = (a[0] if a else kw["hidden_states"]).clone()

        def put(m, a, kw):
            x = (a[0] if a else kw["hidden_states"]).clone()
            select(x, kept["x"])
            return ((x, *a[1:]), kw) if a else (a, {**kw, "hidden_states": x})

        self.metric("clean", lambda: mod.register_forward_pre_hook(keep, with_kwargs=True))
        return self.metric("corrupt", lambda: mod.register_forward_pre_hook(put, with_kwargs=True))

    def effect(self, m: float) -> float:
        c, k = self.metric("clean"), self.metric("corrupt")
        return (m - k) / (c - k)


def run(model: str):
    at = open_page("patching", model_choice=model)
    if at.button(key="patch_run").disabled:  # every result already cached (another test ran this example)
        return at
    at.button(key="patch_run").click()
    return rerun(at, model_choice=model)


@pytest.mark.parametrize("model", sorted(BLOCK))
def test_the_page_draws_what_explicit_hooks_measure(model, downloads):
    at = run(model)
    ex = SHIPPED[model][0]
    task = make_task(load_model(model), ex.clean, ex.corrupt, ex.target or None, ex.foil or None)
    ref = Reference(model, task)
    shown = at.success[0].value
    assert f"**{ref.metric('clean'):.2f}** clean, **{ref.metric('corrupt'):.2f}** corrupted" in shown
    stack = "encoder" if model == "minilm-mlm" else "decoder"
    resid = chart_spec(at, f"patch_{stack}_resid_pre_fig")["data"][0]["z"]
    L, T = resid.shape
    for l in range(L):
        for p in range(T):
            def pos(x, clean, p=p):
                x[:, p] = clean[:, p]
            assert abs(resid[l, p] - ref.effect(ref.patched(BLOCK[model], l, pos))) < 2e-4, (l, p)
    grid = chart_spec(at, "patch_head_fig")["data"][0]["z"]
    for l, h in np.ndindex(grid.shape):
        def head(x, clean, h=h):
            d = x.shape[-1] // grid.shape[1]
            x[..., h * d:(h + 1) * d] = clean[..., h * d:(h + 1) * d]
        assert abs(grid[l, h] - ref.effect(ref.patched(HEADS_OUT[model], l, head))) < 2e-4, (l, h)
    assert np.abs(resid).max() > 0.4  # the example shows something (dates: 0.42 reaches the decoder by layer 1)

    # the AtP scatter's exact coordinates are the heatmaps' numbers; its caption's r is theirs
    scatter = {t["name"]: t for t in chart_spec(at, "patch_atp_fig")["data"] if t.get("mode") == "markers"}
    np.testing.assert_allclose(np.sort(scatter["head"]["x"]), np.sort(grid.ravel()), atol=1e-4)
    r = np.corrcoef(scatter["resid_pre"]["x"], scatter["resid_pre"]["y"])[0, 1]
    assert f"resid_pre r = {r:.2f}" in " ".join(c.value for c in at.caption)

    # downloads: the head CSV and the NPZ hold what the charts show
    rows, cols, values = downloads.matrix("patch_head_csv")
    assert rows == [f"L{i}" for i in range(grid.shape[0])] and cols == [f"H{i}" for i in range(grid.shape[1])]
    np.testing.assert_allclose(values, grid, atol=1e-4)
    z = downloads.npz("patch_npz")
    np.testing.assert_allclose(z[f"{stack}_resid_pre_exact"], resid, atol=1e-4)
    assert z[f"{stack}_resid_pre_atp"].shape == resid.shape
    assert downloads.check_html(at) == len(at.get("plotly_chart"))


@pytest.mark.parametrize("model", sorted(SHIPPED))
def test_every_example_shows_something(model):
    bundle = load_model(model)
    for ex in SHIPPED[model]:
        task = make_task(bundle, ex.clean, ex.corrupt, ex.target or None, ex.foil or None)
        assert abs(task.metric_clean - task.metric_corrupt) > 1.0, ex.label
        assert task.metric_clean > task.metric_corrupt, ex.label  # the clean input favours the answer
        assert not task.notes, (ex.label, task.notes)


def test_bad_input_gets_one_sentence():
    at = open_page("patching", model_choice="atlas-lm", patch_mode="Replace a word")
    at = rerun(at, model_choice="atlas-lm", patch_mode="Replace a word", patch_word=1, patch_new="locksmiths")
    n = len(load_model("atlas-lm").tokenizer("The locksmiths to the cabinet")["input_ids"])
    assert n != 7
    assert [w.value for w in at.warning] == [
        f"The clean input has 7 tokens and the corrupted one {n}: patching puts position i of one run into position "
        "i of the other, so both need the same number of tokens (replace a word by one of the same token length)."]
    assert not at.get("plotly_chart")
    at = rerun(at, model_choice="atlas-lm", patch_mode="Type both", patch_clean=" ")
    assert [w.value for w in at.warning] == ["The clean input is empty: type a sentence first."]
    at = rerun(at, model_choice="atlas-lm", patch_clean="The keys to the cabinet", patch_target="cabinetmakers")
    notes = [i.value for i in at.info]
    assert any(n.startswith("The answer 'cabinetmakers' is ") and "the metric uses the first" in n for n in notes)
    at = open_page("patching", model_choice="minilm")
    assert "no masked-LM head" in at.error[0].value and not at.get("plotly_chart")


def test_replacing_a_word_makes_the_corrupted_input():
    assert words("The keys  to the cabinet") == ["The", "keys", "to", "the", "cabinet"]
    assert replace_word("The keys  to the cabinet", 1, " key ") == "The key  to the cabinet"
    at = open_page("patching", model_choice="atlas-lm")
    at = rerun(at, model_choice="atlas-lm", patch_mode="Replace a word", patch_word=1, patch_new="key")
    assert any(c.value == "Corrupted input: The key to the cabinet" for c in at.caption)
    assert at.success and "Both inputs have 7 tokens" in at.success[0].value


def test_a_cancelled_run_keeps_nothing():
    pair = dict(patch_mode="Type both", patch_clean="The keys to the old cabinet", patch_corrupt="The key to the old "
                "cabinet", patch_target="are", patch_foil="is")  # a pair no other test has run (results are shared)
    at = open_page("patching", model_choice="atlas-lm")
    at = rerun(at, model_choice="atlas-lm", **pair)
    assert "Press **Run patching**" in at.info[-1].value
    key = ("atlas-lm", pair["patch_clean"], pair["patch_corrupt"], "are", "is", None)
    at = rerun(at, model_choice="atlas-lm", **pair, patch_running=True, patch_cancel=key)  # Cancel pressed mid-run
    assert [w.value for w in at.warning] == ["Cancelled: nothing was kept. Press Run patching to start again."]
    assert not at.get("plotly_chart")


def test_cli_prints_the_documented_keys(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "p.npz"
    r = subprocess.run([sys.executable, "-m", "viz", "patch", "--model", "seq2seq-dates", "--clean", "3 March 2021",
                        "--corrupt", "3 April 2021", "--site", "head_pos", "--json", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    assert {"clean_tokens", "corrupt_tokens", "target", "foil", "answer_position", "metric", "site", "method", "rows",
            "cols", "effect"} <= set(js)
    assert (js["target"], js["foil"], js["site"], js["stack"]) == ("03", "04", "head_pos", "cross")
    assert js["rows"] == ["L0", "L1"] and js["cols"] == ["H0", "H1", "H2", "H3"]
    eff = np.array(js["effect"], dtype=float)
    assert eff.shape == (2, 4, 3)
    with np.load(io.BytesIO(out.read_bytes())) as z:
        np.testing.assert_allclose(z["effect"], eff, atol=1e-6)
    bad = subprocess.run([sys.executable, "-m", "viz", "patch", "--model", "atlas-lm", "--clean", "The cat sat",
                          "--corrupt", "The big cat sat"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "has 4 tokens and the corrupted one 5" in bad.stderr
    helped = subprocess.run([sys.executable, "-m", "viz", "patch", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert "FIRST token" in helped.stdout and "effect[layer][head][position]" in helped.stdout


def test_a_link_reopens_the_same_pair():
    from streamlit.testing.v1 import AppTest

    from conftest import APP

    at = open_page("patching", model_choice="minilm-mlm")
    at = rerun(at, model_choice="minilm-mlm", patch_example="France/Italy → capital")
    at.selectbox(key="patch_example").set_value("bakery/library → buy").run()
    query = dict(at.query_params)
    assert query.get("clean") == "He went to the bakery to buy some [MASK]." and query.get("target") == "bread"
    again = AppTest.from_file(APP, default_timeout=240)
    again.switch_page("pages/patching.py")
    again.query_params.update(query)
    again.run()
    assert not again.exception, [e.value for e in again.exception]
    assert again.session_state["patch_clean"] == "He went to the bakery to buy some [MASK]."
    assert again.session_state["patch_corrupt"] == "He went to the library to buy some [MASK]."
    assert "answer 'bread', foil 'books'" in again.success[0].value
