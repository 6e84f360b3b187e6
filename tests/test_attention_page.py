"""The Attention page through Streamlit's AppTest, on the real bundled model."""

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP, plotly_array
from viz.app.ui import OTHER


@pytest.fixture
def app():
    at = AppTest.from_file(APP, default_timeout=180)
    return at.run()


def test_page_draws_on_real_minilm(app):
    assert not app.exception
    assert app.sidebar.selectbox(key="model_choice").value == "minilm"
    charts = app.get("plotly_chart")
    assert len(charts) == 4  # model view, first-token shares, one head, aggregate
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
    assert len(app.get("plotly_chart")) == 4


def test_empty_text_gets_a_message(app):
    app.sidebar.text_area(key="text").set_value("   ").run()
    assert not app.exception
    assert any("empty" in w.value for w in app.warning)
    assert not app.get("plotly_chart")


def test_too_long_text_is_truncated_with_notice(app):
    app.sidebar.text_area(key="text").set_value("attention " * 700).run()
    assert not app.exception
    assert any("512" in w.value and "first" in w.value for w in app.warning)
    assert len(app.get("plotly_chart")) == 4


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
    assert not at.exception and not at.error and len(at.get("plotly_chart")) == 4


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
    assert not at.exception and len(at.get("plotly_chart")) == 4


def _chart(at, index):
    """The figure the index-th chart sends to the browser, as a dict (what the user sees)."""
    import json

    fig = json.loads(at.get("plotly_chart")[index].proto.spec)
    for trace in fig["data"]:
        for k in ("z", "x", "y", "customdata"):
            if k in trace:
                trace[k] = plotly_array(trace[k])
    return fig


def test_sink_aware_toggle_shows_the_renormalised_rows_without_the_first_token(app):
    from viz.analysis.words import sink_aware
    from viz.core.capture import capture
    from viz.core.models import load_model

    app.number_input(key="attn_layer").set_value(2)
    app.number_input(key="attn_head").set_value(7)
    app.toggle(key="attn_sink").set_value(True).run()
    assert not app.exception
    shown = np.array(_chart(app, 2)["data"][0]["z"], dtype=float)  # the one-head heatmap
    cap = capture(load_model("minilm"), app.session_state["text"])
    want = sink_aware(cap.attentions["encoder"][2, 7])
    np.testing.assert_allclose(shown, want, atol=1e-6)
    assert shown.shape == (len(cap.tokens) - 1,) * 2 and np.allclose(shown.sum(-1), 1, atol=1e-5)


def test_grouped_query_heads_are_grouped_and_sink_shares_are_the_capture_s():
    from viz.core.capture import capture
    from viz.core.models import load_model

    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["model_choice"] = "tiny-llama"
    at.run()
    assert not at.exception
    assert any("2 key/value heads" in c.value for c in at.caption)
    view = _chart(at, 0)
    ticks = view["layout"]["xaxis"]["ticktext"]
    assert ticks[0].endswith("kv0") and ticks[2].endswith("kv1") and "kv" not in ticks[1]
    shares = np.array(_chart(at, 1)["data"][0]["z"], dtype=float)
    cap = capture(load_model("tiny-llama"), at.session_state["text"])
    np.testing.assert_allclose(shares, cap.first_share["decoder"], atol=1e-6)


def test_long_input_on_a_big_model_uses_thumbnails_and_one_layer(monkeypatch):
    """Over the page budget, the model view comes from pooled thumbnails and the opened head from a
    one-layer capture; what is drawn still equals the full capture."""
    from viz.core.capture import capture
    from viz.core.models import load_model

    monkeypatch.setenv("VIZ_PAGE_CAPTURE_MB", "0.01")
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["model_choice"] = "tiny-bert"
    at.session_state["text"] = "attention " * 100
    at.run()
    assert not at.exception
    assert any("thumbnails pooled inside the model" in i.value for i in at.info)
    at.number_input(key="attn_layer").set_value(1)
    at.number_input(key="attn_head").set_value(3).run()
    full = capture(load_model("tiny-bert"), "attention " * 100)
    shown = np.array(_chart(at, 2)["data"][0]["z"], dtype=float)
    np.testing.assert_allclose(shown, full.attentions["encoder"][1, 3], atol=1e-6)
    import torch

    from viz.figures.attention import model_view, png_pixels

    shown = png_pixels(_chart(at, 0)["data"][0]["source"])  # thumbnails pooled inside the model, as a PNG
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(full.attentions["encoder"]), 40).numpy()
    want = png_pixels(model_view(pooled)["data"][0]["source"])
    assert shown.shape == want.shape
    assert np.abs(shown.astype(int) - want.astype(int)).max() <= 8  # one uint8 level apart, through the colours



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
    cells = plotly_array(marker["customdata"])[:, :2].tolist()  # [layer, head, first-token share]
    i = cells.index([2, 5])
    x, y = plotly_array(marker["x"])[i], plotly_array(marker["y"])[i]
    assert frame["x0"] < x < frame["x1"] and frame["y0"] < y < frame["y1"]


def test_random_models_say_so():
    """A tiny model's near-uniform heads puzzled a student: the sidebar and the caption say the weights are random."""
    from apptest import open_page

    at = open_page("attention", model_choice="tiny-llama")
    assert any("has random weights" in w.value for w in at.sidebar.caption)
    assert any("tiny-llama (random weights)" in c.value for c in at.caption)
    at = open_page("attention")  # minilm: trained
    assert not any("random weights" in w.value for w in at.sidebar.caption)
