"""AppTest for the Layer flow page: real MiniLM default, an encoder-decoder and a decoder, bad input."""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamlit.testing.v1 import AppTest  # noqa: E402

from viz.app.ui import EXAMPLES  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _run(at: AppTest, **state) -> AppTest:
    # Under AppTest the shared sidebar's widgets are gone from the second run on (its `text` and
    # `model_choice` drop out of session_state), so every run re-seeds them.
    state = {"text": EXAMPLES[0], **state}
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def _flow_page(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/flow.py")
    return _run(at, **state)


def _specs(at: AppTest) -> str:
    """Every chart's figure JSON, non-ASCII characters as themselves (the spec escapes them)."""
    return " ".join(json.dumps(json.loads(c.proto.spec), ensure_ascii=False) for c in at.get("plotly_chart"))


def test_flow_page_minilm_default():
    at = _flow_page()
    assert not at.exception, at.exception
    assert at.title[0].value == "Layer flow"
    # flow view, rollout heatmap, raw, norm, residual+LN norm, 2 journey heatmaps, similarity, PCA
    assert len(at.get("plotly_chart")) >= 9
    assert not at.warning
    assert "residual + LayerNorm" in _specs(at)


def test_flow_page_follow_token_and_flow_method():
    at = _flow_page()
    at.selectbox(key="flow_token").set_value(1)
    at.radio(key="flow_method").set_value("flow")
    _run(at)
    assert not at.exception, at.exception
    assert "What flows into" in _specs(at) and "Attention flow" in _specs(at)
    assert '"name":"max-flow"' in _specs(at).replace(" ", "")  # the max-flow bars, on their own axis
    assert "max-flow value" in _specs(at)
    _run(at)  # memoised flow with a progress bar: a second run must not replay element calls
    assert not at.exception, at.exception
    assert "What flows into" in _specs(at)


def test_flow_page_follow_a_node_below_the_top():
    at = _flow_page()
    _run(at, flow_token=2, flow_level=3)  # what a click on node (level 3, token 2) sets
    assert not at.exception, at.exception
    assert "output of L2" in _specs(at)


def test_flow_page_forgets_the_followed_token_when_the_text_changes():
    """The Follow token box showed the old text's token after the text changed: it starts over at all links."""
    at = _flow_page(flow_token=3)
    assert "What flows into" in _specs(at)
    _run(at, text="A completely different sentence here.")
    assert not at.exception, at.exception
    assert at.selectbox(key="flow_token").value == -1 and "What flows into" not in _specs(at)
    assert at.selectbox(key="flow_token").format_func(-1) == "— all links —"


def test_flow_page_names_levels_by_the_convention():
    at = _flow_page()
    slider = at.select_slider(key="flow_sim_level")
    assert list(slider.options) == ["emb", "L0", "L1", "L2", "L3", "L4", "L5"] and slider.value == "L5"
    assert "Token-by-token cosine · L5" in _specs(at)


@pytest.mark.parametrize("model", ["tiny-bart", "tiny-t5", "tiny-gpt2"])
def test_flow_page_other_kinds(model):
    at = _flow_page(model_choice=model)
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) >= 8
    if model != "tiny-gpt2":  # encoder-decoder: decoder rollout, and cross-attention raw vs norm
        assert any("self-attention only" in i.value for i in at.info)
        at.radio(key="flow_stack").set_value("decoder")
        at.radio(key="flow_norm_stack").set_value("cross")
        _run(at, model_choice=model)
        assert not at.exception, at.exception
        assert "Decoder masked self-attention" in " ".join(c.value for c in at.caption)
        assert len(at.get("plotly_chart")) >= 8


def test_flow_page_empty_text_warns():
    at = _flow_page(text="   ")
    assert not at.exception, at.exception
    assert at.warning and "empty" in at.warning[0].value
    assert not at.get("plotly_chart")
