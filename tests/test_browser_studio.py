"""Real browser, real server: start a tiny training job on /studio and watch the page refresh itself to the end."""

from conftest import wait_for_chart
from layout import measure, problems, settle
from test_browser_layout import LONG
from viz.train import studio as S


def _set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    settle(page)  # the rerun has ended before the next widget
    assert box.input_value() == str(value)


def test_start_a_tiny_job_and_watch_it_finish(app_url, browser_page):
    page = browser_page
    page.goto(f"{app_url}/studio")
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.wait_for()
    page.get_by_text("Training studio").first.wait_for()
    _set_number(page, "Steps", 30)
    _set_number(page, "Snapshot every K steps", 10)
    _set_number(page, "Training sentences (bundled)", 200)
    probe = page.get_by_label("Probe sentence (its attention is recorded at every snapshot)")
    probe.fill(LONG)  # a ~60-token probe: the replay's grids must still read
    probe.press("Enter")
    page.get_by_role("button", name="Start training").click()
    wait_for_chart(page)  # the live loss curve, drawn by the auto-refreshing fragment
    # no interaction from here: the fragment polls the job and reruns the page when it ends
    page.get_by_text("Finished at step 30").wait_for(timeout=240_000)  # the shared CPU can be very busy
    page.get_by_text("Replay: how each head changed").wait_for()
    page.wait_for_function(
        """() => document.querySelectorAll('[data-testid="stPlotlyChart"] .main-svg').length >= 5""",
        timeout=60_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    settle(page)
    assert page.get_by_label("Pretext task").is_visible()  # the form is back, open
    assert not problems(measure(page)), problems(measure(page))
    # the new model is in the sidebar's picker on every page
    page.get_by_role("button", name="Use this model in the other pages").click()
    picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"] input[aria-label="Model"]')
    page.wait_for_function("""() => document.querySelector('[data-testid="stSidebar"] input[aria-label="Model"]')
                                        .value.includes('studio-')""", timeout=30_000)
    assert "user_models" in picker.input_value()


def test_the_form_folds_away_while_a_job_runs(app_url, browser_page):
    """The "New training run" form stayed open over the live charts."""
    page = browser_page
    page.goto(f"{app_url}/studio")
    page.get_by_text("Training studio").first.wait_for()
    _set_number(page, "Steps", 5000)
    _set_number(page, "Snapshot every K steps", 1000)
    _set_number(page, "Training sentences (bundled)", 200)
    page.get_by_role("button", name="Start training").click()
    page.get_by_role("button", name="Cancel").wait_for()
    page.get_by_text("New training run (when this one has ended)").wait_for()
    assert not page.get_by_label("Pretext task").is_visible()
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("Cancelled at step").wait_for(timeout=120_000)
    page.get_by_label("Pretext task").wait_for()  # back, open, for the next run
    assert page.locator('[data-testid="stException"]').count() == 0


def test_train_a_dates_encoder_decoder_and_see_its_cross_attention(app_url, browser_page):
    page = browser_page
    page.goto(f"{app_url}/studio")
    page.get_by_text("Training studio").first.wait_for()
    page.get_by_label("Pretext task").click()  # the page's own selectbox (the sidebar's is labelled Model)
    page.get_by_role("option", name=S.TASKS["dates"], exact=True).click()
    page.get_by_text("Probe example").wait_for()
    # the task change reruns the page: wait until the stale copy of the form is gone
    page.wait_for_function("""() => [...document.querySelectorAll('input[aria-label="Steps"]')].length === 1""",
                           timeout=30_000)
    settle(page)
    _set_number(page, "Steps", 30)
    _set_number(page, "Snapshot every K steps", 10)
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Finished at step 30").wait_for(timeout=240_000)
    page.get_by_text("Replay: how each head changed").wait_for()
    page.get_by_text("Cross-attention: decoder").first.wait_for(timeout=60_000)  # the cross-attention grid's title
    assert page.locator('[data-testid="stException"]').count() == 0
    settle(page)
    # the encoder and cross-attention grids fill their boxes (they collapsed to ~60x100 px when `</s>` went
    # into the figure unescaped) and every tick, `</s>` included, reads
    charts = measure(page)
    assert len(charts) >= 6 and not problems(charts), problems(charts)


def test_watch_an_induction_head_form_in_the_browser(app_url, browser_page, tmp_path):
    """Repeated random tokens with the page's defaults for that task: the live view marks the phase change,
    cancel keeps the model of that step, and the replay draws the score curves and the probe's heads."""
    page = browser_page
    page.goto(f"{app_url}/studio")
    page.get_by_text("Training studio").first.wait_for()
    page.get_by_label("Pretext task").click()
    page.get_by_role("option", name=S.TASKS["repeat"], exact=True).click()
    page.get_by_text("Probe (held out").wait_for()
    page.wait_for_function("""() => [...document.querySelectorAll('input[aria-label="Steps"]')].length === 1
                                    && document.querySelector('input[aria-label="Steps"]').value === '600'""",
                           timeout=30_000)  # the task's defaults are in the form
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Best head per score over training").first.wait_for(timeout=240_000)
    # the live view marks the step where the best induction score first reaches 0.5 (a few minutes on a busy CPU)
    page.get_by_text("the best induction score first reached 0.5 at step").wait_for(timeout=600_000)
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("Cancelled at step").wait_for(timeout=120_000)
    page.get_by_text("Replay: how each head changed").wait_for()
    page.wait_for_function(
        """() => document.querySelectorAll('[data-testid="stPlotlyChart"] .main-svg').length >= 7""",
        timeout=60_000)
    assert page.get_by_text("Causal self-attention:").count() >= 1  # the probe grid's title
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(tmp_path / "studio-phase.png"), full_page=True)
