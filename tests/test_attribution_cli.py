"""`python -m viz attribute`: the JSON contract, the help that defines every method, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from viz.causal.attribution import attribute
from viz.causal.attribution_catalog import METHODS


def run(*args):
    return subprocess.run([sys.executable, "-m", "viz", "attribute", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_json_equals_the_library(load):
    text = "She poured a cup of [MASK] and sat down."
    r = run("--model", "minilm-mlm", "--text", text, "--methods", "occlusion,attention,grad_x_input",
            "--faithfulness", "--seeds", "3", "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    lib = attribute(load("minilm-mlm"), text, methods="occlusion,attention,grad_x_input", with_faithfulness=True,
                    seeds=3)
    assert j["tokens"] == lib.tokens and j["target"] == lib.problem.target and j["position"] == lib.problem.position
    for m in ("occlusion", "attention", "grad_x_input"):
        np.testing.assert_allclose(j["scores"][m], lib.scores[m], atol=2e-6)
        assert j["faithfulness"][m]["comprehensiveness"] == pytest.approx(
            lib.faithfulness.methods[m].comprehensiveness, abs=2e-6)
    assert j["random"]["comprehensiveness"] == pytest.approx(lib.faithfulness.random.comprehensiveness, abs=2e-6)
    assert j["random"]["seeds"] == 3 and j["completeness_gap"] is None
    assert j["agreement"]["occlusion"]["attention"] == pytest.approx(lib.agreement["occlusion"]["attention"], abs=2e-6)


def test_encoder_decoder_and_contrast():
    r = run("--model", "seq2seq-dates", "--text", "3 March 2021", "--position", "2", "--foil", "04",
            "--methods", "occlusion,attention", "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["output_tokens"][:5] == ["2021", "-", "03", "-", "03"] and j["target"] == "03" and j["foil"] == "04"
    assert j["tokens"] == ["3", "march", "2021", "</s>"]
    assert max(range(4), key=lambda i: j["scores"]["attention"][i]) == 1  # the month's number reads "march"


def test_table_without_json():
    r = run("--model", "atlas-lm", "--text", "The cat sat on the", "--methods", "occlusion,rollout")
    assert r.returncode == 0, r.stderr
    assert "target 'Ġ" in r.stdout and "occlusion" in r.stdout and "Ġcat" in r.stdout


def test_help_defines_every_method_f_and_the_replacement():
    r = run("--help")
    assert r.returncode == 0
    flat = " ".join(r.stdout.split())
    for m in METHODS.values():
        assert m.name in r.stdout and " ".join(m.definition.split())[:60] in flat
    for phrase in ("f(x) = log p(target | x)", "logit(target) - logit(foil)", "the mask token for a masked LM",
                   "else the pad token, else the end-of-text token", "comprehensiveness", "Kendall"):
        assert phrase in flat, phrase


@pytest.mark.parametrize("args, says", [
    (["--model", "minilm-mlm", "--text", "   "], "The text is empty"),
    (["--model", "minilm-mlm", "--text", "The [MASK] sat.", "--target", "unbelievableness"], "split by this tokenizer"),
    (["--model", "minilm", "--text", "The [MASK] sat."], "no masked-LM head"),
    (["--model", "minilm-mlm", "--text", "The cat sat."], "No [MASK]"),
    (["--model", "minilm-mlm", "--text", "x", "--methods", "occlusion,lime"], "Unknown method 'lime'"),
    (["--model", "minilm-mlm", "--text", "x", "--steps", "0"], "--steps"),
])
def test_errors_are_one_line(args, says):
    r = run(*args)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
