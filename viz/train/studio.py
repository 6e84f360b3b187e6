"""Training studio: a pretraining job that runs in a background thread and records how heads form.

Tasks: masked-LM (BERT), denoising by text infilling (BART, an encoder–decoder), the synthetic seq2seq tasks
(dates, reversal) and two decoder pretexts (viz.train.studio_decoder: causal LM, repeated random tokens), whose
snapshots add per-head induction / previous-token / duplicate scores and the in-context learning score.
`TrainingJob` wraps the loops behind `python -m viz train` (`viz.train.mlm.train_mlm`,
`viz.train.seq2seq.fit_seq2seq`, `viz.train.clm.train_clm`; no loop of its own): their `on_progress` callback
keeps the live curve and, every `snapshot_every` steps, takes a *snapshot*: the attention of one fixed probe sentence for every head (for
an encoder–decoder: the encoder's self-attention and the decoder's cross-attention, teacher-forced on the
probe's target), and per-head statistics (of the encoder) over a small probe corpus. Cancel goes through the
loop's `should_stop`; the job then saves the model as it was at that last snapshot.

The run's setup (tasks, `StudioConfig`, data, the starting model) is viz.train.studio_setup; its snapshots,
viz.train.snapshots. The job owns its model (never the `st.cache_resource` bundle other sessions read) and its own state; a page
keeps one job per session with `launch(store, ...)`. When it ends the model is saved with `save_pretrained`
(safetensors) + tokenizer into `user_models_dir()/<name>`, where every page's model picker finds it.

Layout of a run folder (user_models_dir()/<name>):
    config.json, model.safetensors, tokenizer*   the Hugging Face checkpoint (written when the job stops)
    training/job.json                            StudioConfig, history (one row per step), status
    training/snapshots.npz                       steps [S], probe_attn [S, L, H, T, T], <stat> [S, L, H],
                                                 probe_cross [S, L, H, U, T] (encoder–decoders),
                                                 <score> [S, L, H] and icl, eval_loss, first_half_loss [S]
                                                 (decoders)
    training/{train,eval,probe}.txt              the sentences used (so a resume sees the same data)
    training/state.pt                            the loop's resumable state (removed when a run completes)

Shapes: S = snapshots, L = layers, H = heads, T = probe (source) tokens, U = probe target tokens (decoder
inputs), B = probe sentences.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import traceback
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from viz.train import clm, mlm, seq2seq
from viz.train import studio_decoder as decoder
# The studio in one place for the page: the setup and snapshot names re-exported beside the job.
from viz.train.snapshots import (head_keys, head_stats, load_snapshots, snapshot_arrays,  # noqa: F401
                                 special_ids, take_snapshot, take_snapshot_encdec, target_ids)
from viz.train.studio_setup import (CORPUS_TEST, CORPUS_TRAIN, DECODER, ENCODER_DECODER, INITS,  # noqa: F401
                                    MAX_SNAPSHOTS, PROBE_SENTENCE, SCALARS, SCORES, STAT_LABELS, STATS,
                                    SYNTHETIC, SYNTHETIC_EVAL_SEED, TASKS, StudioConfig, build_model,
                                    bundled_corpus, run_name, seq2seq_batches, seq2seq_eval_batch, split_corpus,
                                    synthetic_data, synthetic_probes, training_kwargs)

RUNNING, DONE, CANCELLED, FAILED, PENDING = "running", "done", "cancelled", "failed", "pending"


class JobAlreadyRunning(RuntimeError):
    """A session may run one job at a time."""


# Run folders some job of this process is writing: no second job (another session's resume, the same typed
# name) may write there at the same time.
_ACTIVE: set[Path] = set()
_ACTIVE_LOCK = threading.Lock()
MAX_JOBS = int(os.environ.get("VIZ_STUDIO_MAX_JOBS", "2"))  # per server process: the CPU is shared by everyone


# ----------------------------------------------------------------------------------------------- the job
@dataclass
class TrainingJob:
    """One background training run. Read `status`, `history`, `snapshots`, `error` from any thread.

    history rows: step, loss, loss_ema, elapsed_s, tokens_per_s (train_mlm's figure since this start, which
    includes the snapshot time but not the evaluation time), eval_top1/eval_top5 (at snapshot steps only).
    A job whose session ends keeps running to the end and saves its model.
    """

    config: StudioConfig
    train_sentences: list[str] = field(repr=False)
    eval_sentences: list[str] = field(repr=False)
    probe_corpus: list[str] = field(repr=False)
    root: Path | None = None  # default: user_models_dir()
    status: str = PENDING
    error: str | None = None
    history: list[dict] = field(default_factory=list, repr=False)  # one row per step
    snapshots: list[dict] = field(default_factory=list, repr=False)  # step, eval_top1, probe_attn, <stat>
    probe_tokens: list[str] = field(default_factory=list)
    probe_target_tokens: list[str] = field(default_factory=list)  # encoder–decoders: the decoder's input tokens
    saved_step: int | None = None  # the step the HF checkpoint in run_dir holds
    resume: bool = False

    def __post_init__(self):
        from viz.core.models import user_models_dir

        self.config.check()
        self.root = Path(self.root or user_models_dir())
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ paths
    @property
    def run_dir(self) -> Path:
        return self.root / self.config.name

    @property
    def train_dir(self) -> Path:
        return self.run_dir / "training"

    @property
    def running(self) -> bool:
        return self.status in (PENDING, RUNNING) and self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ control
    def start(self) -> "TrainingJob":
        if self._thread is not None:
            raise JobAlreadyRunning("This job has already been started.")
        if not self.resume and (self.run_dir / "config.json").exists():
            raise FileExistsError(f"A model named '{self.config.name}' already exists in {self.root}; "
                                  "pick another run name.")
        with _ACTIVE_LOCK:
            if self.run_dir.resolve() in _ACTIVE:
                raise JobAlreadyRunning(f"Another job is writing '{self.config.name}' right now (another session?); "
                                        "pick another run name, or wait for it to finish.")
            if len(_ACTIVE) >= MAX_JOBS:
                raise JobAlreadyRunning(f"{len(_ACTIVE)} training jobs are already running on this server (the limit "
                                        f"is {MAX_JOBS}, VIZ_STUDIO_MAX_JOBS); try again when one finishes.")
            _ACTIVE.add(self.run_dir.resolve())
        self.status = RUNNING
        self._thread = threading.Thread(target=self._run, name=f"studio-{self.config.name}", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop after the current step; the model of that step is snapshotted and saved."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> "TrainingJob":
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    def view(self) -> tuple[list[dict], list[dict]]:
        """Copies of (history, snapshots), safe to read while the job appends."""
        with self._lock:
            return list(self.history), list(self.snapshots)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        # train_mlm sets torch's thread count, which is also the default of threads started later (Streamlit's
        # script threads): put back what this thread inherited when the job ends.
        inherited = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            cfg = self.config
            model, tok = build_model(cfg, self.train_sentences)
            self.probe_tokens = tok.convert_ids_to_tokens(
                tok(cfg.probe, truncation=True, max_length=mlm.MAX_LEN)["input_ids"])
            if cfg.task in ENCODER_DECODER:
                labels = target_ids(tok, cfg.task, cfg.probe_target)[: mlm.MAX_LEN]
                self.probe_target_tokens = tok.convert_ids_to_tokens(
                    [model.config.decoder_start_token_id] + labels[:-1])
            elif cfg.init == "scratch" and cfg.task not in DECODER:
                # a masked LM starts at word frequencies (overwritten by a resumed state)
                mlm.init_output_bias(model, mlm.token_counts(mlm.encode(tok, self.train_sentences), len(tok)))
            self._prepare_dir()
            if not self.snapshots:
                self._snapshot(model, tok, step=0, eval_top1=None)
            if cfg.task in DECODER:
                state = self._fit_decoder(model, tok)
            elif cfg.task in ENCODER_DECODER:
                state = self._fit_seq2seq(model, tok)
            else:
                state = mlm.train_mlm(
                    model, tok, self.train_sentences, self.eval_sentences, steps=cfg.steps,
                    batch_size=cfg.batch_size, seed=cfg.seed, out_dir=str(self.train_dir),
                    eval_every=cfg.snapshot_every, on_progress=lambda p: self._progress(p, model, tok),
                    should_stop=self._should_stop, resume=self.resume, threads=cfg.threads,
                    **training_kwargs(cfg, model))
            self._save_model(model, tok, state["step"])
            if state["step"] >= cfg.steps:
                (self.train_dir / "state.pt").unlink(missing_ok=True)  # nothing left to resume; ~3x model size
                self.status = DONE
            else:
                self.status = CANCELLED
        except Exception as e:  # shown on the page; the thread must never die silently
            self.error = f"{type(e).__name__}: {e}"
            self._trace = traceback.format_exc()
            self.status = FAILED
        finally:
            self._write_job()
            torch.set_num_threads(inherited)
            with _ACTIVE_LOCK:
                _ACTIVE.discard(self.run_dir.resolve())

    def _fit_seq2seq(self, model, tok) -> dict:
        """fit_seq2seq with the studio's callbacks; its progress rows are mapped onto train_mlm's keys
        (loss_ema = the loop's smoothed loss, eval_top1 = held-out teacher-forced token accuracy)."""
        cfg = self.config
        held_out = seq2seq_eval_batch(cfg, tok, self.eval_sentences)

        def progress(p: dict) -> None:
            self._progress(dict(p, loss_ema=p["loss_smooth"], eval_top1=p["eval"], eval_top5=None), model, tok)

        return seq2seq.fit_seq2seq(
            model, seq2seq_batches(cfg, tok, self.train_sentences), steps=cfg.steps, lr=cfg.lr,
            warmup=min(100, max(1, cfg.steps // 10)), on_progress=progress, should_stop=self._should_stop,
            progress_every=1, evaluate_fn=lambda m: seq2seq.token_accuracy(m, held_out),
            eval_every=cfg.snapshot_every, state_dir=self.train_dir, resume=self.resume)

    def _fit_decoder(self, model, tok) -> dict:
        """The causal-LM loop (viz.train.clm.train_clm) with the studio's callbacks. Held-out figures (loss and
        top-1 on the counted positions, the in-context learning score) come with every snapshot."""
        cfg = self.config
        held_out = decoder.eval_batch(cfg.task, tok, self.eval_sentences)

        def progress(p: dict) -> None:
            ev = p["eval"] or {}
            self._eval = ev or self._eval
            self._progress(dict(p, eval_top1=ev.get("top1"), eval_top5=ev.get("top5")), model, tok)

        self._eval = {}
        return clm.train_clm(
            model, decoder.batches(cfg.task, tok, self.train_sentences, cfg.batch_size, cfg.seed), steps=cfg.steps,
            lr=cfg.lr, warmup=min(100, max(1, cfg.steps // 10)), out_dir=str(self.train_dir), resume=self.resume,
            evaluate_fn=lambda m: decoder.held_out_figures(m, cfg.task, held_out), eval_every=cfg.snapshot_every,
            on_progress=progress, should_stop=self._should_stop, bf16=False, threads=cfg.threads,
            loss_fn=decoder.lm_loss_unpadded(tok.pad_token_id))

    def _should_stop(self) -> bool:
        self._stopping = self._cancel.is_set()  # what train_mlm saw: it stops after this step's progress call
        return self._stopping

    def _progress(self, p: dict, model, tok) -> None:
        row = {k: p[k] for k in ("step", "loss", "loss_ema", "elapsed_s", "tokens_per_s", "eval_top1", "eval_top5")}
        with self._lock:
            self.history.append(row)
        if p["step"] % self.config.snapshot_every == 0 or p["step"] == p["steps"] or self._stopping:
            self._snapshot(model, tok, p["step"], p["eval_top1"])
            self._write_job()

    def _snapshot(self, model, tok, step: int, eval_top1: float | None) -> None:
        cfg = self.config
        if cfg.task in DECODER:
            held = decoder.held_out_figures(model, cfg.task, decoder.eval_batch(cfg.task, tok, self.eval_sentences)) \
                if step == 0 else getattr(self, "_eval", {})  # later steps: the figures train_clm just measured
            snap = dict(decoder.take_snapshot(model, tok, cfg.probe),
                        **{k: held.get(k if k != "eval_loss" else "loss", float("nan")) for k in SCALARS})
            eval_top1 = held.get("top1") if eval_top1 is None else eval_top1
        elif cfg.task in ENCODER_DECODER:
            snap = take_snapshot_encdec(model, tok, cfg.task, cfg.probe, cfg.probe_target, self.probe_corpus)
        else:
            snap = take_snapshot(model, tok, cfg.probe, self.probe_corpus)
        snap.update(step=step, eval_top1=eval_top1)
        with self._lock:
            self.snapshots.append(snap)

    # ------------------------------------------------------------------ files
    def _prepare_dir(self) -> None:
        self.train_dir.mkdir(parents=True, exist_ok=True)
        for stem, lines in (("train", self.train_sentences), ("eval", self.eval_sentences),
                            ("probe", self.probe_corpus)):
            (self.train_dir / f"{stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _write_job(self) -> None:
        history, snaps = self.view()
        info = dict(config=asdict(self.config), status=self.status, error=self.error, history=history,
                    probe_tokens=self.probe_tokens, probe_target_tokens=self.probe_target_tokens,
                    saved_step=self.saved_step)
        try:
            self.train_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.train_dir / "job.json.tmp"
            tmp.write_text(json.dumps(info), encoding="utf-8")
            os.replace(tmp, self.train_dir / "job.json")
            if snaps:
                arrays = snapshot_arrays(snaps)
                with open(self.train_dir / "snapshots.tmp.npz", "wb") as f:
                    np.savez_compressed(f, **arrays)
                os.replace(self.train_dir / "snapshots.tmp.npz", self.train_dir / "snapshots.npz")
        except OSError:
            pass  # the in-memory job is still complete; a full disk must not kill the training thread

    def _save_model(self, model, tok, step: int) -> None:
        """save_pretrained (safetensors) + tokenizer; files moved in with config.json last, so the model picker
        never lists a half-written folder."""
        tmp = self.run_dir / ".saving"
        shutil.rmtree(tmp, ignore_errors=True)
        model.eval()
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if self.config.task in SYNTHETIC:  # the Encoder–decoder page offers the task's examples (viz.tasks.encdec)
            (tmp / "task.json").write_text(json.dumps(dict(task=self.config.task, studio=asdict(self.config))))
        names = sorted(os.listdir(tmp), key=lambda n: n == "config.json")
        for n in names:
            os.replace(tmp / n, self.run_dir / n)
        tmp.rmdir()
        self.saved_step = step

    # ------------------------------------------------------------------ resume
    @classmethod
    def resume_from(cls, run_dir: str | Path) -> "TrainingJob":
        """A job that continues a cancelled run (its training/ folder) where it stopped; call start()."""
        run_dir = Path(run_dir)
        tdir = run_dir / "training"
        if not (tdir / "state.pt").exists():
            raise FileNotFoundError(f"{run_dir} has no resumable state (training/state.pt): it finished, or it "
                                    "never reached its first snapshot.")
        info = json.loads((tdir / "job.json").read_text(encoding="utf-8"))
        cfg = StudioConfig(**{f.name: info["config"][f.name] for f in fields(StudioConfig)
                              if f.name in info["config"]})
        read = lambda stem: mlm.read_sentences(str(tdir / f"{stem}.txt"))  # noqa: E731
        job = cls(cfg, read("train"), read("eval"), read("probe"), root=run_dir.parent, resume=True)
        step = torch.load(tdir / "state.pt", weights_only=False)["state"]["step"]
        job.history = [h for h in info["history"] if h["step"] <= step]
        job.snapshots = [s for s in load_snapshots(tdir / "snapshots.npz") if s["step"] <= step]
        job.probe_tokens = info.get("probe_tokens", [])
        job.probe_target_tokens = info.get("probe_target_tokens", [])
        return job


def resumable_runs(root: str | Path | None = None) -> list[Path]:
    """Run folders under the user model directory that a cancelled job left resumable."""
    from viz.core.models import user_models_dir

    root = Path(root or user_models_dir())
    if not root.is_dir():
        return []
    with _ACTIVE_LOCK:
        busy = set(_ACTIVE)
    return sorted(d for d in root.iterdir() if (d / "training" / "state.pt").exists()
                  and (d / "training" / "job.json").exists() and d.resolve() not in busy)


def launch(store: MutableMapping, job: TrainingJob, key: str = "studio_job") -> TrainingJob:
    """Start `job` as the session's job (`store` is st.session_state or a dict); refuse while one is running."""
    current = store.get(key)
    if current is not None and current.running:
        raise JobAlreadyRunning(f"A training job ('{current.config.name}') is already running in this session: "
                                "wait for it to finish or cancel it before starting another.")
    job.start()
    store[key] = job
    return job
