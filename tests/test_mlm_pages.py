"""Masked LM and Compare masking pages through AppTest, on the shipped minilm-mlm."""

import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP


def page(path: str, model: str = "minilm-mlm", text: str = "She poured a cup of [MASK] and read the paper.", **state):
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["model_choice"] = model
    at.session_state["text"] = text
    for k, v in state.items():
        at.session_state[k] = v
    return at.switch_page(path).run()


def test_mlm_page_predicts_with_the_real_model():
    at = page("pages/mlm.py")
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 2  # top-k bars + layer x rank
    assert any("position 6" in h.value for h in at.subheader)


def test_mlm_page_masks_chosen_tokens_and_tracks_the_original():
    at = page("pages/mlm.py", text="The cat sat on the mat.", mlm_positions=[2])
    assert not at.exception
    assert any("was 'cat'" in h.value for h in at.subheader)
    assert len(at.get("plotly_chart")) == 3  # + the original token through the layers


def test_unknown_words_can_be_masked():
    """An emoji is [UNK] on MiniLM: it is a word the user typed, so the picker offers it like any other."""
    at = page("pages/mlm.py", text="I love 🍕 so much.")
    assert not at.exception
    picker = at.multiselect(key="mlm_positions")
    assert any(o.startswith("[UNK]") for o in picker.options)


def test_mlm_page_sweep():
    at = page("pages/mlm.py", text="The cat sat on the mat.")
    at.button(key="mlm_sweep_run").click().run()
    assert not at.exception
    assert any(m.label == "Pseudo-log-likelihood" for m in at.metric)
    assert spec(at, "mlm_sweep_fig")["layout"]["title"]["text"] == "p(true token) with only that token masked"


def test_mlm_page_sweep_says_typed_masks_stay():
    """A typed [MASK] is not swept: it stays masked while each other token takes its turn, and the chart says so."""
    at = page("pages/mlm.py", text="The cat sat on the [MASK].")
    at.session_state["model_choice"], at.session_state["text"] = "minilm-mlm", "The cat sat on the [MASK]."
    at.button(key="mlm_sweep_run").click().run()
    assert not at.exception
    assert "the 1 typed [MASK] stay masked" in spec(at, "mlm_sweep_fig")["layout"]["title"]["text"]


def test_mlm_page_levels_follow_the_convention():
    """Per-level predictions and the original token are named emb, L0 … L5, as on every page (was 'layer 1–6')."""
    at = page("pages/mlm.py", text="The cat sat on the mat.", mlm_positions=[2], mlm_topk=20)
    assert not at.exception
    table = spec(at, "mlm_layers_2")
    assert table["data"][0]["x"] == ["emb", "L0", "L1", "L2", "L3", "L4", "L5"]
    assert len(table["data"][0]["y"]) == 20  # twenty ranks down, not twenty squeezed columns
    assert spec(at, "mlm_orig_2")["data"][0]["x"] == ["emb", "L0", "L1", "L2", "L3", "L4", "L5"]


@pytest.mark.parametrize("text,expected", [
    ("No mask in this sentence.", "No mask"),
    ("[MASK] [MASK]", "Every token is masked"),
    ("word " * 600 + "[MASK]", "at most 512"),
])
def test_mlm_page_bad_input(text, expected):
    at = page("pages/mlm.py", text=text)
    assert not at.exception
    assert any(expected in w.value for w in at.warning)


def test_mlm_page_refuses_a_model_without_head():
    at = page("pages/mlm.py", model="minilm")
    assert not at.exception
    assert any("no masked-LM head" in e.value and "minilm-mlm" in e.value for e in at.error)
    assert at.button(key="switch_mlm")


@pytest.mark.parametrize("variant,state", [
    ("mask", {"cmp_positions": [6]}),
    ("causal", {}),
    ("ablate", {"cmp_heads": [(0, 3), (1, 7)]}),
])
def test_compare_page_variants(variant, state):
    at = page("pages/compare.py", text="She poured a cup of coffee and read the paper.", cmp_variant=variant, **state)
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 3  # head grid, both runs + difference in one figure, KL
    assert any("KL" in m.label for m in at.metric)


def spec(at, key: str) -> dict:
    import json

    return json.loads(next(c for c in at.get("plotly_chart") if c.key == key).proto.spec)


@pytest.mark.parametrize("variant", ["mask", "ablate"])
def test_compare_page_draws_nothing_until_something_is_chosen(variant):
    """No tokens or heads chosen: both runs are the same. No all-zero grid, no table of zeros, no empty KL chart."""
    at = page("pages/compare.py", text="She poured a cup of coffee and read the paper.", cmp_variant=variant)
    assert not at.exception and not at.error
    assert not at.get("plotly_chart") and not at.dataframe and not at.metric
    assert any("Pick" in i.value for i in at.info)


def test_compare_page_opens_the_head_that_moved_most_and_follows_new_runs():
    from viz.app import cache

    text = "She poured a cup of coffee and read the paper."
    at = page("pages/compare.py", text=text, cmp_variant="mask", cmp_positions=[6])
    best = cache.get_comparison("minilm-mlm", text, "mask", (6,), frozenset()).top_heads(1)[0]
    assert (at.number_input(key="cmp_layer").value, at.number_input(key="cmp_head").value) == best[:2]
    at.session_state["model_choice"], at.session_state["text"] = "minilm-mlm", text  # AppTest drops the sidebar
    at.number_input(key="cmp_layer").set_value(3).run()  # the user's choice holds while the comparison stays
    assert at.number_input(key="cmp_layer").value == 3
    at.session_state["model_choice"], at.session_state["text"] = "minilm-mlm", text
    at.session_state["cmp_positions"] = [2]
    at.run()  # a new comparison: its own most-changed head, not the first run's layer and head
    best = cache.get_comparison("minilm-mlm", text, "mask", (2,), frozenset()).top_heads(1)[0]
    assert (at.number_input(key="cmp_layer").value, at.number_input(key="cmp_head").value) == best[:2]
    assert f"L{best[0]} H{best[1]}" in spec(at, "cmp_pair")["layout"]["title"]["text"]


def test_compare_page_kl_axis_fits_its_bars():
    at = page("pages/compare.py", text="She poured a cup of coffee and read the paper.", cmp_variant="ablate",
              cmp_heads=[(0, 3)])
    y = spec(at, "cmp_kl")["layout"]["yaxis"]
    assert "range" not in y and y["tickformat"] == ".3~g"
