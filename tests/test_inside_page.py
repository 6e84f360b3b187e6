"""The Inside a layer page (AppTest), its figures and the `python -m viz inside` contract."""

import json
import subprocess
import sys

import numpy as np
from streamlit.testing.v1 import AppTest

from conftest import APP, ROOT
from viz.figures.inside import head_figure, layer_figure
from viz.inside.walk import head_walk, inside, pick_keys

LONG = " ".join(["the old cat sat on the warm mat"] * 9)  # 74 tokens


def open_inside(model: str, text: str = "The cat sat on the mat because it was tired.", **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page("pages/inside.py")
    at.session_state["model_choice"] = model
    at.session_state["text"] = text
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def test_a_head_of_the_attention_page_opens_inside_that_head():
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.number_input(key="attn_layer").set_value(2)
    at.number_input(key="attn_head").set_value(5)
    at.run()
    at.button(key="attn_inside").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="inside_layer").value == 2 and at.number_input(key="inside_head").value == 5
    assert any("layer 2 · head 5" in h.value for h in at.subheader)
    assert len(at.get("plotly_chart")) == 3  # the head, the layer diagram, the heads' contributions
    assert any(m.label == "Recomposition error" and float(m.value) <= 1e-4 for m in at.metric)


def test_cross_attention_on_the_dates_model():
    at = open_inside("seq2seq-dates", "3 March 2021", inside_stack="cross", inside_layer=1, inside_token=3)
    assert not at.exception, [e.value for e in at.exception]
    assert any("cross-attention (decoder → encoder) · layer 1" in h.value for h in at.subheader)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Weights vs the model"]) <= 1e-6 and float(metrics["Recomposition error"]) <= 1e-4
    assert any("both attentions" in c.value for c in at.caption)


def test_a_long_input_shows_a_screenful_of_keys_and_says_so():
    at = open_inside("minilm", LONG, inside_token=40)
    assert not at.exception
    said = [c.value for c in at.caption if "keys of" in c.value]
    assert said and said[0].startswith("The 24 keys of 74 with the highest weight")
    head = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(head["layout"]["yaxis3"]["categoryarray"]) == 24
    at.radio(key="inside_keys").set_value("around the query").run()
    head = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t.split("(")[-1].rstrip(")") for t in head["layout"]["yaxis3"]["categoryarray"]][0] == "28"


def test_choices_out_of_range_after_a_model_switch_are_clamped():
    at = open_inside("tiny-bert", inside_layer=5, inside_head=11, inside_token=40)
    assert not at.exception
    assert at.number_input(key="inside_layer").value == 1 and at.number_input(key="inside_head").value == 3


def test_a_family_without_a_recipe_says_so(monkeypatch):
    from viz.inside import recipes

    monkeypatch.delitem(recipes.RECIPES, "bert")  # AppTest runs the page in this process
    at = open_inside("tiny-bert", "A text no other test walks, so nothing cached answers.")
    assert not at.exception, [e.value for e in at.exception]
    assert any("layer walk is not available for 'bert'" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 2  # the head and the heads' contributions still draw


def test_figures_stay_screen_sized_on_a_long_input(load):
    run = inside(load("minilm"), LONG, layer=3, token=40)
    w = head_walk(run, 7)
    idx, _ = pick_keys(w.weights, 40, "highest weights", 24)
    fig = head_figure([str(i) for i in idx], w.query_token, w.query, w.keys[idx], w.scores[idx], w.mask[idx],
                      w.weights[idx], w.values[idx], w.head_output, query_row=None)
    assert len(fig.to_json()) < 200_000 and fig.layout.height < 900
    steps = run.layer_walk.steps
    lf = layer_figure([s.label for s in steps], [s.kind for s in steps], [s.sublayer for s in steps],
                      [s.detail for s in steps], [s.norm for s in steps])
    norms = [a.text for a in lf.layout.annotations if a.text.startswith("‖v‖")]
    assert len(norms) == 9  # one per arrow: 7 along the walk, 2 residual connections
    assert f"‖v‖ {steps[0].norm:.3g}" in norms


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "viz", "inside", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def cli(capsys, *args) -> tuple[int, str, str]:
    """The same command in this process (`viz.cli.main.main`): no interpreter start-up per case."""
    from viz.cli.main import main

    try:
        rc = main(["inside", *args])
    except SystemExit as e:  # --help
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_json_contract_and_help_document_every_key(capsys):
    r = run_cli("--model", "tiny-gpt2", "--text", "The cat sat on the mat.", "--layer", "1", "--head", "2",
                "--token", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("tokens", "query", "keys", "values", "scores", "mask", "weights", "head_output",
                "recomposition_error"):
        assert key in out
    assert out["mask"][:4] == [0.0] * 4 and out["mask"][4:] == [None] * (len(out["tokens"]) - 4)  # causal: null = -inf
    assert abs(sum(out["weights"]) - 1) < 1e-6 and out["recomposition_error"] <= 1e-4
    assert len(out["keys"]) == len(out["tokens"]) and len(out["keys"][0]) == len(out["query"])
    rc, helptext, _ = cli(capsys, "--help")
    missing = [k for k in out if k not in helptext]
    assert rc == 0 and not missing, missing


def test_cli_errors_are_one_line(capsys, tmp_path):
    rc, _, err = cli(capsys, "--model", "tiny-bert", "--text", "hi", "--layer", "9")
    assert rc == 2 and err.startswith("error: There is no layer 9") and "Traceback" not in err
    rc, _, err = cli(capsys, "--model", "tiny-bert", "--text", "hi", "--stack", "cross")
    assert rc == 2 and "no cross-attention" in err
    out = tmp_path / "walk.npz"
    rc, text, _ = cli(capsys, "--model", "tiny-t5", "--text", "a b c", "--target", "x y", "--stack", "cross",
                      "--npz", str(out))
    assert rc == 0 and "recomposition error" in text
    z = np.load(out)
    assert z["step_vectors"].shape[0] == len(z["step_labels"]) and z["keys"].shape[0] == len(z["tokens"])
