"""The Training studio page through AppTest: a tiny job runs in the background and draws its charts; a second
start in the same session is refused; cancel saves a model the picker lists."""
import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP
from viz.train import studio as S

PAGE = "pages/studio.py"


@pytest.fixture
def studio(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZ_USER_MODELS", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()  # app.py first (st.navigation), then the page: as a browser gets there
    at.switch_page(PAGE)
    for key, value in dict(studio_steps=30, studio_n=200, studio_every=10, studio_batch=16).items():
        at.session_state[key] = value
    at.run()
    assert not at.exception
    return at


def _job(at):
    return at.session_state["studio_job"]


def test_tiny_job_runs_and_draws(studio, tmp_path):
    at = studio
    assert at.button(key="studio_start").disabled is False
    at.session_state["studio_name"] = "page-run"
    at.button(key="studio_start").click().run()
    assert not at.exception and not at.error
    job = _job(at)
    assert job.wait(90).status == "done", job.error
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 5  # loss, accuracy, tokens/s, head grid, statistic over steps
    assert any("Finished at step 30" in s.value for s in at.success)
    assert at.select_slider(key="studio_step").value == 30
    at.select_slider(key="studio_step").set_value(0).run()
    at.radio(key="studio_stat").set_value("prev").run()
    assert not at.exception and len(at.get("plotly_chart")) == 5
    # the model is in the picker of every page
    assert str(tmp_path / "page-run") in at.sidebar.selectbox(key="model_choice").options
    at.button(key="studio_use").click().run()
    assert at.session_state["model_choice"] == str(tmp_path / "page-run")


def test_second_start_is_refused_and_cancel_saves(studio, held_at):
    at = studio
    reached, release = held_at(2)  # the job waits after step 2 until the test has looked: no race with the clock
    at.session_state["studio_steps"] = 5000
    at.session_state["studio_every"] = 100
    at.session_state["studio_name"] = "long"
    at.button(key="studio_start").click().run()
    assert not at.error
    job = _job(at)
    assert job.running
    try:
        # while it runs the form folds away under a new label (it stayed open over the live charts) and its
        # Start is disabled; a start that still gets through (a double click) is refused with a message
        assert at.button(key="studio_start").disabled
        assert any(e.label.startswith("New training run (when this one has ended") for e in at.expander)
        at.session_state["studio_request"] = "start"
        at.run()
        assert not at.exception
        assert any("already running" in w.value for w in at.warning)
        assert _job(at) is job
    finally:
        assert reached.wait(300)
        at.button(key="studio_cancel").click().run()
        release.set()
    assert job.wait(300).status == "cancelled", job.error
    assert job.saved_step == 3  # the step after the cancel
    at.run()
    assert any("Cancelled at step" in s.value for s in at.success)

    at.session_state["studio_every"] = 1  # 5000 steps, a snapshot each: refused with the interval that works
    at.session_state["studio_name"] = "too-many"
    at.button(key="studio_start").click().run()
    assert any("every 25 steps or more" in e.value for e in at.error) and _job(at) is job
    assert at.selectbox(key="studio_resume_pick").value.name == "long"


@pytest.mark.parametrize("task, arch", [("mlm", "BERT"), ("dates", "BART"), ("denoise", "BART"), ("repeat", "Llama"),
                                        ("clm", "Llama")])
def test_start_from_names_the_model_the_task_builds(studio, task, arch):
    """The greyed 'Start from' said 'Random weights (a small BERT)' for the Llama decoder tasks (and the BART
    encoder–decoders): it names what train_clm / train_seq2seq / the denoiser / the masked LM build."""
    at = studio
    at.selectbox(key="studio_task").set_value(task).run()
    assert not at.exception
    assert at.radio(key="studio_init").options[0] == f"Random weights (a small {arch})"


@pytest.mark.parametrize("task", ["dates", "denoise"])
def test_encoder_decoder_job_runs_and_draws_cross_attention(studio, tmp_path, task):
    at = studio
    at.selectbox(key="studio_task").set_value(task).run()
    assert not at.exception
    assert at.radio(key="studio_init").disabled  # an encoder–decoder starts from random weights
    if task == "dates":  # a synthetic task: no corpus, a held-out example as the probe
        assert "studio_corpus" not in [r.key for r in at.radio]
        src, tgt = at.selectbox(key="studio_probe_dates").value
        assert "-" in tgt
    at.session_state["studio_name"] = f"page-{task}"
    at.button(key="studio_start").click().run()
    assert not at.exception and not at.error
    job = _job(at)
    assert job.config.task == task and job.wait(120).status == "done", job.error
    at.run()
    assert not at.exception
    # loss, accuracy, tokens/s, encoder grid, cross-attention grid, statistic over steps
    assert len(at.get("plotly_chart")) == 6
    assert "Held-out token accuracy" in [m.label for m in at.metric]
    assert any("Finished at step 30" in s.value and "Encoder–decoder page" in s.value for s in at.success)
    at.select_slider(key="studio_step").set_value(10).run()
    assert not at.exception and len(at.get("plotly_chart")) == 6
    assert str(tmp_path / f"page-{task}") in at.sidebar.selectbox(key="model_choice").options


def test_resume_a_cancelled_run_from_the_page(studio, held_at):
    at = studio
    reached, release = held_at(2)
    at.session_state["studio_name"] = "cut"
    at.button(key="studio_start").click().run()
    job = _job(at)
    assert reached.wait(300)
    job.cancel()
    release.set()
    assert job.wait(300).status == "cancelled" and job.saved_step == 3, job.error
    at.run()
    assert at.selectbox(key="studio_resume_pick").value.name == "cut"
    at.button(key="studio_resume").click().run()
    assert not at.exception and not at.error
    again = _job(at)
    assert again is not job and again.wait(90).status == "done", again.error
    assert again.history[-1]["step"] == 30 and again.saved_step == 30


@pytest.mark.parametrize("task", ["repeat", "clm"])
def test_decoder_job_runs_and_draws_its_head_scores(studio, tmp_path, task):
    """A tiny decoder run of each new task: its working defaults fill the form, the replay draws the best-head
    score curves, the in-context curves and the per-head score lines; the replay slider moves."""
    at = studio
    at.selectbox(key="studio_task").set_value(task).run()
    assert not at.exception
    assert at.radio(key="studio_init").disabled  # a decoder starts from random weights
    defaults = S.decoder.DEFAULTS[task]
    assert at.number_input(key="studio_steps").value == defaults["steps"]
    assert at.select_slider(key="studio_heads").value == defaults["heads"] == 4
    assert at.select_slider(key="studio_batch").value == defaults["batch"]
    if task == "repeat":  # no corpus: a held-out repeated sequence is the probe
        assert "studio_corpus" not in [r.key for r in at.radio]
        assert any("Probe (held out" in c.value for c in at.caption)
    else:
        assert at.text_input(key="studio_probe_clm").value == S.decoder.CLM_PROBE
    for key, value in dict(studio_steps=30, studio_every=10, studio_batch=16, studio_heads=2).items():
        at.session_state[key] = value
    at.session_state["studio_name"] = f"page-{task}"
    at.button(key="studio_start").click().run()
    assert not at.exception and not at.error
    job = _job(at)
    assert job.config.task == task and job.wait(180).status == "done", job.error
    at.run()
    assert not at.exception
    # loss, accuracy, tokens/s, probe grid, best-head scores, in-context curves, score per head over steps
    assert len(at.get("plotly_chart")) == 7
    assert "Held-out next-token top-1" in [m.label for m in at.metric]
    assert any(c.value.startswith("Phase change:") for c in at.caption)
    assert at.radio(key="studio_stat").options == ["induction score", "previous-token score", "duplicate-token score"]
    at.select_slider(key="studio_step").set_value(10).run()
    at.radio(key="studio_stat").set_value("previous").run()
    assert not at.exception and len(at.get("plotly_chart")) == 7
    assert str(tmp_path / f"page-{task}") in at.sidebar.selectbox(key="model_choice").options
