"""Training studio library: snapshot statistics, a tiny run that changes its heads, cancel -> loadable checkpoint,
resume (== the uninterrupted run, weight for weight), one job per session. Tiny BertForMaskedLM from scratch
(2 layers, 2 heads, width 64), real tokenizer. No test waits on the clock: a job is held at a chosen step
(`held_at`) and cancelled there, so where it stops never depends on how fast this machine is."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from viz.train import studio as S

TINY = dict(layers=2, heads=2, hidden=64, batch_size=16, lr=3e-3)


@pytest.fixture(scope="module")
def corpus():
    return S.bundled_corpus(200, n_eval=100, n_probe=16)


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory):
    """The acceptance run: 2 layers, 2 heads, 100 steps on 200 sentences (its speed is bench/'s business)."""
    cfg = S.StudioConfig(name="tiny", steps=100, snapshot_every=25, **TINY)
    job = S.TrainingJob(cfg, *corpus, root=tmp_path_factory.mktemp("user_models"))
    return job.start().wait(600)


def test_head_stats_hand_computed():
    # one sentence [CLS] a b [SEP] + one padding position; one layer, one head
    ids = torch.tensor([[101, 7, 8, 102, 0]])
    mask = ids != 0
    a = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0],   # [CLS] row: not counted
                      [0.5, 0.0, 0.5, 0.0, 0.0],   # 'a': cls .5 (= prev), next .5
                      [0.0, 1.0, 0.0, 0.0, 0.0],   # 'b': prev 1
                      [0.25, 0.25, 0.25, 0.25, 0.0],
                      [0.2, 0.2, 0.2, 0.2, 0.2]])  # padding row: not counted
    st = S.head_stats(a[None, None, None], mask, ids, 101, 102)
    assert st["cls"][0, 0] == pytest.approx(0.25)  # (0.5 + 0) / 2
    assert st["sep"][0, 0] == pytest.approx(0.0)
    assert st["prev"][0, 0] == pytest.approx(0.75)  # (0.5 on [CLS], the previous token of 'a' + 1) / 2
    assert st["next"][0, 0] == pytest.approx(0.25)  # (0.5 + 0) / 2
    assert st["entropy"][0, 0] == pytest.approx(np.log(2) / 2)


def test_config_is_checked():
    with pytest.raises(ValueError, match="divisible"):
        S.StudioConfig(heads=3, hidden=64).check()
    with pytest.raises(ValueError, match="task"):
        S.StudioConfig(task="gpt").check()
    with pytest.raises(ValueError, match="every 50 steps"):
        S.StudioConfig(steps=10_000, snapshot_every=1).check()
    assert S.run_name("../../etc/x y") == "etc-x-y"  # a typed name never escapes the user folder
    with pytest.raises(ValueError, match="at least 20"):
        S.split_corpus(["one line"] * 5)


def test_tiny_run_learns_and_changes_heads(tiny_run, monkeypatch):
    job = tiny_run
    assert job.status == S.DONE, job.error
    history, snaps = job.view()
    assert [h["step"] for h in history] == list(range(1, 101))
    losses = [h["loss"] for h in history]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.3  # loss falls
    assert [s["step"] for s in snaps] == [0, 25, 50, 75, 100]
    assert all(s["eval_top1"] is not None for s in snaps[1:])
    first, last = snaps[0], snaps[-1]
    assert first["probe_attn"].shape[:2] == (2, 2) and first["probe_attn"].shape[2] == len(job.probe_tokens)
    assert np.abs(last["entropy"] - first["entropy"]).max() > 0.1  # some head's entropy moved
    for s in S.STATS:
        assert last[s].shape == (2, 2) and np.isfinite(last[s]).all()
    # the finished model is a normal HF checkpoint in the user folder, and it is what the last snapshot saw
    monkeypatch.setenv("VIZ_USER_MODELS", str(job.root))
    from viz.core.capture import capture
    from viz.core.models import builtin_names, load_model

    assert (job.run_dir / "model.safetensors").exists() and not (job.train_dir / "state.pt").exists()
    assert str(job.run_dir) in builtin_names()
    bundle = load_model(str(job.run_dir))
    assert bundle.has_mlm_head and bundle.model.config.num_hidden_layers == 2
    cap = capture(bundle, job.config.probe)
    np.testing.assert_allclose(cap.attentions["encoder"], last["probe_attn"], atol=1e-5)


def test_snapshot_files_round_trip(tiny_run):
    job = tiny_run
    snaps = S.load_snapshots(job.train_dir / "snapshots.npz")
    assert [s["step"] for s in snaps] == [0, 25, 50, 75, 100]
    np.testing.assert_allclose(snaps[-1]["entropy"], job.snapshots[-1]["entropy"])


def test_cancel_leaves_a_loadable_checkpoint_and_resumes(corpus, tmp_path, monkeypatch, held_at):
    monkeypatch.setenv("VIZ_USER_MODELS", str(tmp_path))
    job = S.TrainingJob(S.StudioConfig(name="cut", steps=30, snapshot_every=5, **TINY), *corpus)
    assert job.root == tmp_path
    reached, release = held_at(3)
    job.start()
    assert reached.wait(300)
    job.cancel()
    release.set()
    job.wait(300)
    assert job.status == S.CANCELLED, job.error
    stopped = job.history[-1]["step"]
    assert stopped == 4 and job.snapshots[-1]["step"] == stopped == job.saved_step  # the step after the cancel
    from viz.core.capture import capture
    from viz.core.models import load_model

    bundle = load_model(str(job.run_dir))  # usable: the model of the last snapshot
    np.testing.assert_allclose(capture(bundle, job.config.probe).attentions["encoder"],
                               job.snapshots[-1]["probe_attn"], atol=1e-5)
    assert S.resumable_runs() == [job.run_dir]

    again = S.TrainingJob.resume_from(job.run_dir)
    assert [s["step"] for s in again.snapshots] == [s["step"] for s in job.snapshots]
    again.start().wait(60)
    assert again.status == S.DONE, again.error
    assert [h["step"] for h in again.history] == list(range(1, 31))
    assert again.snapshots[-1]["step"] == 30 and again.saved_step == 30
    assert S.resumable_runs() == []


def test_second_job_in_a_session_is_refused(corpus, tmp_path):
    store = {}
    first = S.launch(store, S.TrainingJob(S.StudioConfig(name="a", steps=5000, **TINY), *corpus, root=tmp_path))
    try:
        with pytest.raises(S.JobAlreadyRunning, match="already running"):
            S.launch(store, S.TrainingJob(S.StudioConfig(name="b", steps=10, **TINY), *corpus, root=tmp_path))
        assert store["studio_job"] is first
    finally:
        first.cancel()
        first.wait(60)
    assert first.status == S.CANCELLED
    with pytest.raises(FileExistsError, match="already exists"):  # a finished name is never overwritten
        S.TrainingJob(S.StudioConfig(name="a", steps=5, **TINY), *corpus, root=tmp_path).start()


def test_figures(tiny_run):
    from viz.figures import studio as F

    job = tiny_run
    history, snaps = job.view()
    arrays = S.snapshot_arrays(snaps)
    assert len(F.loss_curve(history).data) == 2
    assert list(F.accuracy_curve(snaps).data[0].x) == [25, 50, 75, 100]  # no accuracy before training
    assert len(F.throughput_curve(history * 10).data[0].x) <= F.MAX_POINTS + 1  # long curves are thinned
    grid = F.probe_grid(arrays["probe_attn"][-1], job.probe_tokens)
    assert len(grid.data) == 4 and grid.data[0].zmax == 1  # one labelled heatmap per head, fixed colour range
    big = F.probe_grid(np.random.default_rng(0).dirichlet(np.ones(12), (6, 12, 12)), [f"t{i}" for i in range(12)])
    assert big.data[0].type == "image" and big.data[0].source.startswith("data:image/png")  # many heads: thumbnails
    lines = F.stat_over_steps(arrays["steps"], arrays["entropy"], "entropy", mark_step=50)
    assert len(lines.data) == 4 and list(lines.data[0].x) == [0, 25, 50, 75, 100]


def test_minilm_start_runs(corpus, tmp_path):
    """From the bundled MiniLM: its 6 x 12 heads are snapshotted; embeddings stay frozen (tied decoder)."""
    train, ev, probe = corpus
    job = S.TrainingJob(S.StudioConfig(name="mini", init="minilm", steps=2, batch_size=8, lr=1e-3,
                                       snapshot_every=1), train, ev[:20], probe[:4], root=tmp_path)
    job.start().wait(120)
    assert job.status == S.DONE, job.error
    assert [s["step"] for s in job.snapshots] == [0, 1, 2]
    assert job.snapshots[-1]["probe_attn"].shape[:2] == (6, 12)
    assert (tmp_path / "mini" / "model.safetensors").exists()


def test_two_sessions_never_write_one_run_folder(corpus, tmp_path, held_at):
    reached, release = held_at(30)
    a = S.TrainingJob(S.StudioConfig(name="same", steps=5000, **TINY), *corpus, root=tmp_path).start()
    try:
        with pytest.raises(S.JobAlreadyRunning, match="Another job"):
            S.TrainingJob(S.StudioConfig(name="same", steps=5, **TINY), *corpus, root=tmp_path).start()
        assert reached.wait(300)  # past the first snapshot: state.pt exists, but the run is busy
        assert (tmp_path / "same" / "training" / "state.pt").exists() and S.resumable_runs(tmp_path) == []
    finally:
        a.cancel()
        release.set()
        a.wait(300)
    assert S.resumable_runs(tmp_path) == [tmp_path / "same"]


def test_server_wide_job_limit(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(S, "MAX_JOBS", 1)
    a = S.TrainingJob(S.StudioConfig(name="one", steps=5000, **TINY), *corpus, root=tmp_path).start()
    try:
        with pytest.raises(S.JobAlreadyRunning, match="limit is 1"):
            S.TrainingJob(S.StudioConfig(name="two", steps=5, **TINY), *corpus, root=tmp_path).start()
    finally:
        a.cancel()
        a.wait(60)


def test_split_an_uploaded_corpus():
    lines = [f"sentence number {i} ." for i in range(100)] + ["", "   "]
    train, held, probe = S.split_corpus(lines)
    assert len(held) == 10 and len(train) == 90 and probe == held  # 10% held out; the probe comes from it
    assert not set(train) & set(held) and "" not in train
    assert S.split_corpus(lines) == (train, held, probe)  # seeded


# ----------------------------------------------------------------------------------------------- encoder–decoders
def _encdec_job(task, corpus, root, **kw):
    if task in S.SYNTHETIC:
        data = S.synthetic_data(task, n_eval=100, n_probe=16)
        src, tgt = S.synthetic_probes(task)[0]
        kw = dict(probe=src, probe_target=tgt, **kw)
    else:
        data = corpus
    cfg = S.StudioConfig(name=f"ed-{task}", task=task, **{**TINY, "hidden": 32, **kw})
    return S.TrainingJob(cfg, *data, root=root)


@pytest.mark.parametrize("task", ["denoise", "dates", "reverse"])
def test_encoder_decoder_run_learns_records_cross_attention_and_generates(task, corpus, tmp_path, monkeypatch):
    job = _encdec_job(task, corpus, tmp_path, steps=100, snapshot_every=25)
    job.start().wait(120)
    assert job.status == S.DONE, job.error
    history, snaps = job.view()
    assert [h["step"] for h in history] == list(range(1, 101))
    losses = [h["loss"] for h in history]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.3
    assert [s["step"] for s in snaps] == [0, 25, 50, 75, 100]
    first, last = snaps[0], snaps[-1]
    T, U = len(job.probe_tokens), len(job.probe_target_tokens)
    assert first["probe_attn"].shape == (2, 2, T, T) and first["probe_cross"].shape == (2, 2, U, T)
    np.testing.assert_allclose(last["probe_cross"].sum(-1), 1, atol=1e-5)  # each decoder row is a distribution
    assert np.abs(last["entropy"] - first["entropy"]).max() > 0.05  # some encoder head moved
    if task == "dates":  # learns fast (reversal and denoising need far more than 100 steps to show it)
        assert snaps[-1]["eval_top1"] > max(0.3, snaps[1]["eval_top1"])
    arrays = S.snapshot_arrays(snaps)
    assert arrays["probe_cross"].shape == (5, 2, 2, U, T)
    assert [s["step"] for s in S.load_snapshots(job.train_dir / "snapshots.npz")] == [0, 25, 50, 75, 100]
    # a normal HF seq2seq checkpoint: the picker loads it and the Encoder–decoder code generates with it
    monkeypatch.setenv("VIZ_USER_MODELS", str(tmp_path))
    from viz.core.capture import capture
    from viz.tasks.encdec import generate
    from viz.core.models import load_model

    bundle = load_model(str(job.run_dir))
    assert bundle.model.config.is_encoder_decoder
    cap = capture(bundle, job.config.probe, target=job.config.probe_target)
    np.testing.assert_allclose(cap.attentions["encoder"], last["probe_attn"], atol=1e-5)
    gen = generate(bundle, job.config.probe, "greedy", max_new_tokens=8)
    assert gen.steps


def test_encoder_decoder_cancel_and_resume(corpus, tmp_path, held_at):
    job = _encdec_job("dates", corpus, tmp_path, steps=40, snapshot_every=5)
    reached, release = held_at(3)
    job.start()
    assert reached.wait(300)
    job.cancel()
    release.set()
    job.wait(300)
    assert job.status == S.CANCELLED and job.saved_step == job.history[-1]["step"] == 4
    again = S.TrainingJob.resume_from(job.run_dir)
    assert again.probe_target_tokens == job.probe_target_tokens
    again.start().wait(60)
    assert again.status == S.DONE, again.error
    assert [h["step"] for h in again.history] == list(range(1, 41)) and again.saved_step == 40
    assert "probe_cross" in again.snapshots[0] and "probe_cross" in again.snapshots[-1]


def test_encoder_decoder_config_is_checked():
    with pytest.raises(ValueError, match="random weights"):
        S.StudioConfig(task="denoise", init="minilm").check()
    with pytest.raises(ValueError, match="probe_target"):
        S.StudioConfig(task="dates", probe="3 March 2021").check()
    assert S.StudioConfig(task="denoise", probe="a b c").check().probe_target == "a b c"


@pytest.mark.parametrize("task", ["mlm", "dates"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(task, corpus, tmp_path, held_at):
    """Cancelled after step 5, resumed to step 12: every tensor of the saved model, and every step's loss, equal
    those of the same run never interrupted (batches and masks are functions of (seed, step); the optimizer and
    schedule state travel in training/state.pt)."""
    from safetensors.torch import load_file

    def job(name):
        if task == "mlm":
            return S.TrainingJob(S.StudioConfig(name=name, steps=12, snapshot_every=4, **TINY), *corpus, root=tmp_path)
        return _encdec_job("dates", corpus, tmp_path / name, steps=12, snapshot_every=4)

    whole = job("whole").start().wait(600)
    reached, release = held_at(4)
    cut = job("cut").start()
    assert reached.wait(300)
    cut.cancel()
    release.set()
    cut.wait(300)
    assert whole.status == S.DONE and cut.status == S.CANCELLED and cut.saved_step == 5, (whole.error, cut.error)
    again = S.TrainingJob.resume_from(cut.run_dir).start().wait(600)
    assert again.status == S.DONE and again.saved_step == 12, again.error
    a, b = load_file(whole.run_dir / "model.safetensors"), load_file(again.run_dir / "model.safetensors")
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["loss"] for h in again.history] == [h["loss"] for h in whole.history]
