"""The Encoder–decoder page through Streamlit's AppTest.

Widget state is set through `at.session_state` before `at.run()` (see test_attention_page.py: after a run
that stopped early AppTest loses the sidebar)."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP

ENCDEC = "seq2seq-dates"  # shipped in models/: if it is missing the suite fails, it does not fall back to tiny-bart


def page(model: str = ENCDEC, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["model_choice"] = model
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    at.switch_page("pages/encdec.py")
    return at.run()


def charts(at):
    return at.get("plotly_chart")


def test_page_draws_steps_attentions_and_architecture():
    at = page()
    assert not at.exception and not at.error
    assert at.title[0].value == "Encoder–decoder"
    assert at.text_area(key="ed_source").value == "3 March 2021"
    assert any("2021 - 03 - 03" in m.value for m in at.markdown)
    # step: cross bars, self bars, top-k; attention: head + model view; alignment; architecture schematic
    assert len(charts(at)) == 7
    assert any("decoding steps" in c.value for c in at.caption)
    assert any("encoder layer, sublayer 1" in c.value for c in at.caption)
    labels = [d.label for d in at.get("download_button")]
    assert {"Steps (CSV)", "All attentions (NPZ)", "Data (CSV)"} <= set(labels)
    # every figure: a small HTML (plotly.js from its CDN) and a self-contained one, in its "Figure (HTML)" popover
    assert sum(lab.startswith("Small HTML") for lab in labels) == 7
    assert sum(lab.startswith("Self-contained HTML") for lab in labels) == 7
    arch = at.dataframe[-2].value
    assert "LayerNorm placement" in arch.index and arch.loc["LayerNorm placement", "this model"] == "post"


def test_decoder_view_shows_the_lookahead_mask_and_cross_the_alignment():
    at = page(ed_stack="decoder", ed_step=1)
    assert not at.exception
    assert any("future position is 0.0e+00" in c.value for c in at.caption)
    assert len(charts(at)) == 7  # the mask replaces the model view
    at.session_state["ed_stack"] = "cross"
    at.session_state["ed_align_layer"] = "layer 0"
    at.run()
    assert not at.exception and any("sublayer 2" in c.value for c in at.caption)


@pytest.mark.parametrize("mode,extra", [("beam", {"ed_beams": 3}), ("teacher", {"ed_target": "2021 - 03 - 03"})])
def test_beam_and_teacher_forcing(mode, extra):
    at = page(ed_mode=mode, ed_max_new=8, **extra)
    assert not at.exception and not at.warning
    assert len(charts(at)) == (8 if mode == "beam" else 7)  # beam search adds its hypotheses
    if mode == "beam":
        beams = json.loads(next(c for c in charts(at) if c.key == "ed_beams_fig").proto.spec)["data"][0]
        assert len(beams["y"]) == 3 and all("score" in row and "log p" in row for row in beams["y"])
        assert any("best beam" in c.value for c in at.caption)
    if mode == "teacher":
        assert any(m.value.startswith("**Target:**") for m in at.markdown)


def test_empty_source_gets_a_message():
    at = page(ed_source="   ")
    assert not at.exception
    assert any("source text is empty" in w.value for w in at.warning)
    assert not charts(at)


def test_too_long_target_gets_a_message():
    at = page(ed_mode="teacher", ed_target="word " * 300)
    assert not at.exception
    assert any("target has" in w.value and "at most" in w.value for w in at.warning)
    assert not charts(at)


def test_empty_target_gets_a_message():
    at = page(ed_mode="teacher", ed_target="")
    assert not at.exception and any("target text is empty" in w.value for w in at.warning)


@pytest.mark.parametrize("model,kind", [("minilm", "encoder-only"), ("tiny-gpt2", "decoder-only")])
def test_wrong_model_kind_links_to_the_right_page_and_offers_encdec(model, kind):
    at = page(model)
    assert not at.exception and not charts(at)
    assert any(kind in w.value and "Attention page" in w.value for w in at.warning)
    links = [link.proto.label for link in at.get("page_link")]
    assert "Attention" in links[0]
    assert links[1:] == (["Step through its generation on the Generate page"] if kind == "decoder-only" else [])
    pick = at.selectbox(key="ed_pick")
    assert "tiny-bart" in pick.options and "minilm" not in pick.options
    assert pick.options[0] == "seq2seq-dates"
    pick.set_value("tiny-t5")
    at.button(key="ed_use").click().run()  # the button switches the sidebar model and the page draws
    assert not at.exception and at.session_state["model_choice"] == "tiny-t5" and len(charts(at)) == 7


def test_the_page_says_it_reads_its_own_source_and_can_take_the_sidebar_text():
    """The sidebar's Text was ignored without a word: the page says so, and a button makes it the source (the
    decoding then reads it: its source tokens are the tokenizer's tokens of that text)."""
    from viz.core.models import load_model

    text = "The cat sat on the mat because it was tired."
    at = page(model="seq2seq-reverse", text=text)
    assert not at.exception
    assert at.text_area(key="ed_source").value != text
    assert any("not the sidebar's **Text**" in c.value for c in at.caption)
    at.button(key="ed_use_text").click().run()
    assert not at.exception and at.text_area(key="ed_source").value == text
    assert not any("not the sidebar's" in c.value for c in at.caption)  # nothing left to say
    tok = load_model("seq2seq-reverse").tokenizer
    expected = tok.convert_ids_to_tokens(tok(text)["input_ids"])
    encoder = next(json.loads(c.proto.spec) for c in charts(at)
                   if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Encoder self-attention"))
    keys = [k.rsplit(" (", 1)[0].replace("&lt;", "<").replace("&gt;", ">")
            for k in encoder["layout"]["xaxis"]["labelalias"]]
    assert keys == expected, (keys, expected)
