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


def test_mlm_page_sweep():
    at = page("pages/mlm.py", text="The cat sat on the mat.")
    at.button(key="mlm_sweep_run").click().run()
    assert not at.exception
    assert any(m.label == "Pseudo-log-likelihood" for m in at.metric)


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
    assert len(at.get("plotly_chart")) == 5  # head grid, base, variant, diff, KL
    assert any("KL" in m.label for m in at.metric)
