"""The Attention page through Streamlit's AppTest, on the real bundled model."""

import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP
from viz.ui import OTHER


@pytest.fixture
def app():
    at = AppTest.from_file(APP, default_timeout=180)
    return at.run()


def test_page_draws_on_real_minilm(app):
    assert not app.exception
    assert app.sidebar.selectbox(key="model_choice").value == "minilm"
    charts = app.get("plotly_chart")
    assert len(charts) == 3  # model view, one head, aggregate
    assert any("6 layers × 12 heads" in c.value for c in app.caption)
    downloads = app.get("download_button")
    assert len(downloads) >= 6  # an HTML download per figure + CSV/NPZ exports


def test_head_selection_and_toggles(app):
    app.number_input(key="attn_layer").set_value(5)
    app.number_input(key="attn_head").set_value(11)
    app.toggle(key="attn_words").set_value(True)
    app.toggle(key="attn_hide_special").set_value(True)
    app.radio(key="attn_agg").set_value("max")
    app.run()
    assert not app.exception
    assert len(app.get("plotly_chart")) == 3


def test_empty_text_gets_a_message(app):
    app.sidebar.text_area(key="text").set_value("   ").run()
    assert not app.exception
    assert any("empty" in w.value for w in app.warning)
    assert not app.get("plotly_chart")


def test_too_long_text_is_truncated_with_notice(app):
    app.sidebar.text_area(key="text").set_value("attention " * 700).run()
    assert not app.exception
    assert any("512" in w.value and "first" in w.value for w in app.warning)
    assert len(app.get("plotly_chart")) == 3


@pytest.mark.parametrize("name,expected", [
    ("no-such-org/no-such-model", "Hugging Face hub"),
    ("/etc", "outside the allowed"),
    ("not a model name!", "neither a bundled model"),
])
def test_bad_model_names_get_a_message_and_the_app_recovers(name, expected):
    # Widget state is set through session_state, the way a user's earlier choices would be.
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["model_choice"] = OTHER
    at.session_state["model_other"] = name
    at.run()
    assert not at.exception
    assert any(expected in e.value for e in at.error)
    assert not at.get("plotly_chart")
    at.session_state["model_choice"] = "minilm"
    at.run()
    assert not at.exception and not at.error and len(at.get("plotly_chart")) == 3


def test_encoder_decoder_offers_the_three_attentions():
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["model_choice"] = "tiny-bart"
    at.session_state["attn_target"] = "ein kleiner Test"
    at.run()
    assert not at.exception
    radio = at.radio(key="attn_stack")
    assert list(radio.options) == ["Encoder self-attention", "Decoder masked self-attention",
                                   "Cross-attention (decoder → encoder)"]
    radio.set_value("cross").run()
    assert not at.exception and len(at.get("plotly_chart")) == 3


def _spec(at, key):
    import json

    return json.loads(next(c for c in at.get("plotly_chart") if c.key == key).proto.spec)


def test_caption_counts_what_is_shown(app):
    """The caption counted word pieces after they were merged into words."""
    app.session_state["text"] = "Unbelievably, the committee postponed it."
    app.session_state["attn_words"] = True
    app.run()
    caption = next(c.value for c in app.caption if "layers ×" in c.value)
    n_tokens = len(_spec(app, "attn_head_fig")["data"][0]["x"])
    assert "tokens →" in caption and f"{n_tokens} words shown" in caption


def test_hide_special_tokens_keeps_unknown_words():
    """An emoji is [UNK] on MiniLM: hiding [CLS]/[SEP] must not make the word vanish."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["text"] = "I love 🍕 so much"
    at.session_state["attn_hide_special"] = True
    at.run()
    assert not at.exception
    keys = _spec(at, "attn_head_fig")["data"][0]["x"]
    assert any(k.startswith("[UNK]") for k in keys) and not any(k.startswith("[CLS]") for k in keys)


def test_the_open_head_is_framed_in_the_model_view(app):
    app.number_input(key="attn_layer").set_value(2)
    app.number_input(key="attn_head").set_value(5)
    app.run()
    (frame,) = _spec(app, "attn_model_view")["layout"]["shapes"]
    marker = _spec(app, "attn_model_view")["data"][1]
    import base64

    import numpy as np

    def arr(v):  # plotly 7 sends arrays as base64 typed arrays
        if isinstance(v, dict):
            shape = [int(n) for n in str(v.get("shape", "-1")).split(",")]
            return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).reshape(shape)
        return np.asarray(v)

    cells = arr(marker["customdata"]).reshape(-1, 2).tolist()
    i = cells.index([2, 5])
    x, y = arr(marker["x"])[i], arr(marker["y"])[i]
    assert frame["x0"] < x < frame["x1"] and frame["y0"] < y < frame["y1"]
