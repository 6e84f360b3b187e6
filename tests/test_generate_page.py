"""The Generate page (decoder-only step-through generation) through Streamlit's AppTest.

Widget state is set through `at.session_state` before `at.run()` (see test_encdec_page.py)."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP

DECODER = "atlas-lm"  # the shipped decoder (a missing folder fails loudly)


def page(model: str = DECODER, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["model_choice"] = model
    at.session_state["gen_prompt"] = "The cat sat on the mat and the dog"
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    at.switch_page("pages/generate.py")
    return at.run()


def charts(at):
    return at.get("plotly_chart")


def figure(at, i) -> dict:
    return json.loads(charts(at)[i].proto.spec)


def test_page_steps_through_greedy_generation():
    at = page(gen_step=2, gen_max_new=6)
    assert not at.exception and not at.error and not at.warning
    assert at.title[0].value == "Generate"
    # head grid, one head, top-k, lens table, lens ranks over steps
    assert len(charts(at)) == 5
    grid, lens = figure(at, 0), figure(at, 3)
    assert grid["layout"]["title"]["text"].startswith("Step 2: every layer × head")
    assert lens["layout"]["title"]["text"].startswith("Step 2: top-5 by layer")
    L = len(lens["data"][0]["y"]) - 1
    assert lens["data"][0]["y"][0] == "emb" and lens["data"][0]["y"][-1] == f"L{L - 1}"
    assert len(grid["data"][0]["y"]) == L * 8  # a row per (layer, head): atlas-lm has 8 query heads
    assert any("6 new tokens" in c.value and "stopped at the length limit" in c.value for c in at.caption)
    assert any(m.value.startswith("Context:") for m in at.markdown)
    labels = [d.label for d in at.get("download_button")]
    assert {"Steps (CSV)", "Lens table (CSV)", "Steps (JSON, as `python -m viz generate --json`)"} <= set(labels)
    # every figure: a small HTML (plotly.js from its CDN) and a self-contained one, in its "Figure (HTML)" popover
    assert sum(lab.startswith("Small HTML") for lab in labels) == 5
    assert sum(lab.startswith("Self-contained HTML") for lab in labels) == 5


def test_sampling_settings_reach_the_generation():
    at = page(gen_method="sample", gen_temperature=0.7, gen_top_p=0.8, gen_seed=5, gen_max_new=4)
    assert not at.exception and not at.warning
    rules = next(c.value for c in at.caption if "rules applied" in c.value)
    assert "Temperature(temperature=0.7)" in rules and "TopP(top_p=0.8)" in rules
    first = [m.value for m in at.markdown if m.value.startswith("**Prompt:**")]
    at.run()  # the same seed draws the same tokens
    assert [m.value for m in at.markdown if m.value.startswith("**Prompt:**")] == first


def test_beam_search_lists_the_beams_and_steps_through_the_chosen_one():
    at = page(gen_method="beam", gen_beams=3, gen_beam=2, gen_max_new=4)
    assert not at.exception and not at.warning
    beams = at.dataframe[0].value
    assert len(beams) == 3 and {"ending", "text", "log p", "score"} <= set(beams.columns)
    assert all(e.startswith("…") for e in beams["ending"]) or len(set(beams["text"].str[:1])) > 1
    assert list(beams["score"]) == sorted(beams["score"], reverse=True)
    at.session_state["gen_beams"] = 2  # fewer beams than the one shown: the page falls back to the last
    at.run()
    assert not at.exception and at.session_state["gen_beam"] == 1


def test_an_encoder_gets_a_message_and_a_switch():
    at = page("minilm")  # the real bundled model: an encoder, so the page says what it needs
    assert not at.exception and not charts(at)
    assert any("decoder-only" in w.value for w in at.warning)
    assert "tiny-llama" in at.selectbox(key="gen_pick").options
    at.selectbox(key="gen_pick").set_value("tiny-gpt2")
    at.button(key="gen_use").click().run()
    assert not at.exception and at.session_state["model_choice"] == "tiny-gpt2"
    assert len(charts(at)) == 5


def test_empty_prompt_gets_a_message():
    at = page(gen_prompt="   ")
    assert not at.exception and not charts(at)
    assert any("prompt is empty" in w.value for w in at.warning)


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-gemma2"])
def test_other_decoder_families(model):
    at = page(model, gen_max_new=3, gen_step=1, gen_layer=0, gen_head=1)
    assert not at.exception and not at.warning
    assert len(charts(at)) == 5
    assert figure(at, 1)["layout"]["title"]["text"].startswith("Layer 0 · head 1")


def test_the_encoder_decoder_page_points_decoders_here():
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["model_choice"] = "tiny-llama"
    at.run()
    at.switch_page("pages/encdec.py")
    at.run()
    assert not at.exception
    assert "Step through its generation on the Generate page" in [e.proto.label for e in at.get("page_link")]


def test_prompt_follows_the_sidebar_text_without_its_full_stop():
    """The prompt went stale when the sidebar text changed; and a finished sentence made atlas-lm end at once."""
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["model_choice"] = DECODER
    at.session_state["text"] = "The cat sat on the mat."
    at.run()
    at.switch_page("pages/generate.py").run()
    assert at.text_area(key="gen_prompt").value == "The cat sat on the mat"
    at.session_state["text"] = "A long road led to the old house!"
    at.run()
    assert at.text_area(key="gen_prompt").value == "A long road led to the old house"
    at.text_area(key="gen_prompt").set_value("My own prompt").run()  # an edit stays while the text stays
    at.run()
    assert at.text_area(key="gen_prompt").value == "My own prompt"
    assert not at.exception
    said = [m.value for m in at.markdown if m.value.startswith("**Prompt:**")]
    assert said and "**Generated:**" in said[0] and "only special tokens" not in said[0]


def test_a_long_prompt_goes_on_past_end_of_text():
    """A 60-word prompt on atlas-lm generated '.' then end-of-text: by default the page now goes on (the next
    sentence), shows where the end-of-text fell, and the steps are the library's with stop_at_eos=False."""
    from test_generate_lm import LONG
    from viz.core.models import load_model
    from viz.tasks.generate_lm import generate_lm

    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["model_choice"] = DECODER
    at.session_state["text"] = LONG + "."
    at.run()
    at.switch_page("pages/generate.py").run()
    assert not at.exception and not at.warning
    want = generate_lm(load_model(DECODER), LONG, "greedy", max_new_tokens=20, lens=False, stop_at_eos=False)
    shown = [m.value for m in at.markdown if m.value.startswith("**Prompt:**")][0]
    assert len(want.steps) == 20 and "⟨<|endoftext|>⟩" in shown  # went on past the end of the text
    caption = [c.value for c in at.caption if "new tokens" in c.value][0]
    assert "20 new tokens" in caption and "went on past" in caption
    at.toggle(key="gen_stop").set_value(True).run()  # on: stops there, as model.generate does
    caption = [c.value for c in at.caption if "new tokens" in c.value][0]
    assert "ended on end-of-sequence" in caption and "20 new tokens" not in caption
