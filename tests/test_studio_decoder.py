"""The studio's decoder pretexts: repeated random tokens form an induction head (the phase change), the causal
LM trains on the corpus, snapshots hold the per-head scores and the in-context learning score, cancel + resume."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from viz.train import studio as S
from viz.train import studio_decoder as D


def test_repeat_batches_vary_their_length_and_repeat_exactly():
    tok = D.repeat_tokenizer()
    assert len(tok) == D.REPEAT_VOCAB + 3
    ids = D.repeat_train_batch(tok, 64, seed=7)
    assert ids.shape == (64, 1 + 2 * D.REPEAT_LENGTH) and (ids[:, 0] == tok.bos_token_id).all()
    lengths = set()
    for row in ids:
        n = int((row != tok.pad_token_id).sum()) - 1
        L = n // 2
        lengths.add(L)
        assert n == 2 * L and torch.equal(row[1:1 + L], row[1 + L:1 + n])
        assert len(set(row[1:1 + L].tolist())) == L  # distinct: the earlier occurrence is unique
        assert (row[1 + n:] == tok.pad_token_id).all()
    assert min(lengths) >= D.REPEAT_MIN and max(lengths) <= D.REPEAT_LENGTH and len(lengths) > 5
    assert torch.equal(ids, D.repeat_train_batch(tok, 64, seed=7))  # a pure function of the seed (resume)
    # the probe is typed text that tokenizes back to a repeated sequence
    probe = tok(D.repeat_probe(tok))["input_ids"]
    assert len(probe) == 1 + 2 * D.REPEAT_LENGTH and probe[1:21] == probe[21:]


def test_padding_is_not_learned():
    tok = D.repeat_tokenizer()
    model, _ = D.build("repeat", 32, 1, 2, 0, [])
    ids = D.repeat_train_batch(tok, 4, seed=1)
    loss = D.lm_loss_unpadded(tok.pad_token_id)(model, ids, False)
    logits = model(input_ids=ids).logits[:, :-1]
    keep = ids[:, 1:] != tok.pad_token_id
    ref = torch.nn.functional.cross_entropy(logits[keep], ids[:, 1:][keep])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_icl_score_and_phase_step_hand_computed():
    # W = 20: early targets 2..3 (indices 1..2), late targets 16..19 (indices 15..18)
    nll = torch.full((19,), 9.0)
    nll[1:3] = 5.0
    nll[15:] = 1.0
    assert D.icl_score(nll) == pytest.approx(1.0 - 5.0)
    steps = np.array([0, 25, 50, 75])
    assert D.phase_change_step(steps, np.array([0.02, 0.3, 0.5, 0.9])) == 50
    assert D.phase_change_step(steps, np.array([0.02, 0.3, 0.4, 0.45])) is None


@pytest.fixture(scope="module")
def phase_run(tmp_path_factory):
    """The page's default repeated-tokens run (2 layers, 4 heads, width 64, batch 64, lr 3e-3, 600 steps),
    cancelled as soon as a snapshot shows the best induction score at 0.5 or more: the shortened version."""
    d = D.DEFAULTS["repeat"]
    cfg = S.StudioConfig(name="phase", task="repeat", layers=d["layers"], heads=d["heads"], hidden=d["hidden"],
                         steps=d["steps"], batch_size=d["batch"], lr=d["lr"], snapshot_every=d["every"])
    root = tmp_path_factory.mktemp("user_models")
    job = S.TrainingJob(cfg, [], [], [], root=root).start()
    seen = 0
    while job.running:
        job.wait(0.5)
        _, snaps = job.view()
        if len(snaps) > seen:
            seen = len(snaps)
            if snaps[-1]["induction"].max() >= 0.5:
                job.cancel()
    job.wait(600)
    return job, root


def test_induction_head_forms_in_a_phase_change(phase_run):
    job, _ = phase_run
    assert job.status in ("cancelled", "done"), job.error
    a = S.snapshot_arrays(job.snapshots)
    best = a["induction"].max(axis=(1, 2))  # [S]
    assert best[0] < 0.1 and best[-1] >= 0.5, best
    phase = D.phase_change_step(a["steps"], best)
    assert phase is not None and phase < D.DEFAULTS["repeat"]["steps"]
    # the loss on the repeated half falls sharply around the same step: its largest drop between two snapshots
    # lies within two snapshots of the phase change, and it has fallen by more than 1.5 nats by then
    loss = a["eval_loss"]
    i = list(a["steps"]).index(phase)
    drop = int(np.argmax(loss[:-1] - loss[1:])) + 1
    assert abs(drop - i) <= 2, (drop, i, loss)
    assert loss[0] - loss[i] > 1.5, loss
    assert a["icl"][i] < -1.0 < a["icl"][0]  # the context now helps: late loss well below early loss
    # the replay's probe grid shows the stripe appear: the best head's attention on the probe (a held-out
    # repeated sequence) from each second-copy token to the token after its first occurrence
    li, hi = np.unravel_index(a["induction"][-1].argmax(), a["induction"].shape[1:])
    L = D.REPEAT_LENGTH
    rows = np.arange(1 + L, 1 + 2 * L)
    stripe = a["probe_attn"][:, li, hi][:, rows, rows - L + 1].mean(-1)  # [S]
    assert stripe[0] < 0.1 and stripe[-1] >= 0.5, stripe
    # the first copy stays unpredictable (random words): the model did not memorise sequences
    assert a["first_half_loss"][i] > 0.8 * np.log(D.REPEAT_VOCAB)


def test_the_saved_studio_model_has_the_induction_head_the_cli_finds(phase_run, monkeypatch, capsys):
    """Cancel saved the model at the rise; `python -m viz heads` on it finds the head the snapshot scored."""
    import json

    from viz.cli.main import main

    job, root = phase_run
    monkeypatch.setenv("VIZ_MODEL_ROOTS", str(root))
    assert main(["heads", "--model", str(job.run_dir), "--json", "--length", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    ind = np.array(out["induction"])
    assert ind.shape == (2, 4) and ind.max() >= 0.5
    snap = job.snapshots[-1]["induction"]
    assert np.unravel_index(ind.argmax(), ind.shape) == np.unravel_index(snap.argmax(), snap.shape)
    assert out["loss_second_copy"] < out["loss_first_copy"] - 1.0


def test_causal_lm_task_trains_snapshots_and_resumes(tmp_path):
    train, held, probe = S.bundled_corpus(300, n_eval=60, n_probe=8)
    cfg = S.StudioConfig(name="clm", task="clm", layers=1, heads=2, hidden=32, steps=40, batch_size=8, lr=3e-3,
                         snapshot_every=10, probe=D.CLM_PROBE)
    job = S.TrainingJob(cfg, train, held, probe, root=tmp_path)
    original = job._should_stop  # cancel after step 20 (polled before that step's progress row is kept)
    job._should_stop = lambda: (len(job.history) >= 19 and job.cancel()) or original()
    job.start().wait(300)
    assert job.status == "cancelled", job.error
    assert (job.train_dir / "state.pt").exists()
    again = S.TrainingJob.resume_from(job.run_dir)
    assert again.config.probe == D.CLM_PROBE and [s["step"] for s in again.snapshots] == [0, 10, 20]
    again.start().wait(300)
    assert again.status == "done", again.error
    a = S.snapshot_arrays(again.snapshots)
    assert list(a["steps"]) == [0, 10, 20, 30, 40]
    assert a["induction"].shape == (5, 1, 2) and a["probe_attn"].shape[1:3] == (1, 2)
    assert set(S.head_keys(a)) == set(S.SCORES)
    assert np.isfinite(a["icl"]).all() and np.isnan(a["first_half_loss"]).all()
    assert a["eval_loss"][-1] < a["eval_loss"][0]  # it learned something about the corpus
    tokens = again.probe_tokens
    assert tokens[0] == "<|endoftext|>" and a["probe_attn"].shape[-1] == len(tokens)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(again.run_dir)
    assert model.config.model_type == "llama" and model.config.num_key_value_heads == 1


def test_decoder_tasks_refuse_minilm():
    with pytest.raises(ValueError, match="a decoder"):
        S.StudioConfig(task="repeat", init="minilm").check()
    cfg = S.StudioConfig(task="repeat").check()
    assert len(cfg.probe.split()) == 2 * D.REPEAT_LENGTH
