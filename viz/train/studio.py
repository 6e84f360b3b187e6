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

The job owns its model (never the `st.cache_resource` bundle other sessions read) and its own state; a page
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
import random
import re
import shutil
import threading
import time
import traceback
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from viz.train import clm, denoise, mlm, seq2seq
from viz.train import studio_decoder as decoder

STATS = ("entropy", "prev", "next", "cls", "sep")  # the subset of viz.analysis.head_stats.STATS snapshots keep
STAT_LABELS = {"entropy": "entropy (nats)", "prev": "previous-token share", "next": "next-token share",
               "cls": "[CLS] share", "sep": "[SEP] share"}
PROBE_SENTENCE = "The cat sat on the mat because it was tired."
REPO = Path(__file__).resolve().parent.parent.parent
CORPUS_TRAIN = REPO / "data" / "corpus" / "train.txt.gz"
CORPUS_TEST = REPO / "data" / "corpus" / "test.txt"
TASKS = {"mlm": "Masked LM (BERT: 15% of tokens, 80/10/10)",
         "denoise": "Denoising (BART text infilling: Poisson(3) spans -> one [MASK], 30%; encoder–decoder)",
         "dates": "Synthetic seq2seq: dates -> YYYY - MM - DD (encoder–decoder, word-level)",
         "reverse": "Synthetic seq2seq: reverse a 3-12 word sequence (encoder–decoder, word-level)",
         **decoder.TASKS}
DECODER = tuple(decoder.TASKS)  # causal decoders (a small Llama) trained from random weights
SCORES = decoder.SCORES  # per-head scores decoder snapshots keep beside (instead of) STATS
SCALARS = ("icl", "eval_loss", "first_half_loss")  # per-snapshot figures of decoder runs
ENCODER_DECODER = ("denoise", "dates", "reverse")
SYNTHETIC = ("dates", "reverse")  # generate their own data: no corpus; the probe is one of their test examples
SYNTHETIC_EVAL_SEED = 12345  # the held-out examples a synthetic run is scored on
INITS = {"scratch": "Random weights (a small BERT)", "minilm": "Bundled MiniLM (6 layers, 12 heads, 384 wide)"}
MAX_SNAPSHOTS = 200  # each snapshot also runs the held-out evaluation and writes train_mlm's resumable state
RUNNING, DONE, CANCELLED, FAILED, PENDING = "running", "done", "cancelled", "failed", "pending"


class JobAlreadyRunning(RuntimeError):
    """A session may run one job at a time."""


# Run folders some job of this process is writing: no second job (another session's resume, the same typed
# name) may write there at the same time.
_ACTIVE: set[Path] = set()
_ACTIVE_LOCK = threading.Lock()
MAX_JOBS = int(os.environ.get("VIZ_STUDIO_MAX_JOBS", "2"))  # per server process: the CPU is shared by everyone


@dataclass
class StudioConfig:
    """Everything a run depends on (saved to training/job.json, so a resume rebuilds the same run)."""

    name: str = ""
    task: str = "mlm"
    init: str = "scratch"  # "scratch" | "minilm"
    layers: int = 2
    heads: int = 2
    hidden: int = 64
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    snapshot_every: int = 25
    seed: int = 0
    probe: str = PROBE_SENTENCE
    probe_target: str = ""  # encoder–decoders: the probe's reference output (denoising: the probe itself)
    threads: int = 1  # the machine is shared: one torch thread (see train_mlm)

    def check(self) -> "StudioConfig":
        if self.task not in TASKS:
            raise ValueError(f"Unknown pretext task '{self.task}'; available: {', '.join(TASKS)}.")
        if self.init not in INITS:
            raise ValueError(f"Unknown start '{self.init}'; pick one of {', '.join(INITS)}.")
        if self.task in ENCODER_DECODER + DECODER and self.init != "scratch":
            raise ValueError(f"'{self.task}' trains {'a decoder' if self.task in DECODER else 'an encoder–decoder'} "
                             "from random weights; the bundled MiniLM is an encoder only. Pick 'Random weights'.")
        if self.init == "scratch" and self.hidden % self.heads:
            raise ValueError(f"Width {self.hidden} is not divisible by {self.heads} heads; pick a multiple.")
        if self.steps < 1 or self.snapshot_every < 1 or self.batch_size < 1:
            raise ValueError("Steps, batch size and snapshot interval must be at least 1.")
        if self.steps / self.snapshot_every > MAX_SNAPSHOTS:
            raise ValueError(f"{self.steps} steps with a snapshot every {self.snapshot_every} would take more than "
                             f"{MAX_SNAPSHOTS} snapshots (each also evaluates and checkpoints); snapshot every "
                             f"{-(-self.steps // MAX_SNAPSHOTS)} steps or more.")
        if not self.probe.strip():
            raise ValueError("The probe sentence is empty: type one whose attention you want to watch.")
        if self.task == "denoise":
            self.probe_target = self.probe
        if self.task == "repeat":  # the probe is a held-out repeated sequence of the task's own words
            self.probe = decoder.repeat_probe(decoder.repeat_tokenizer())
        if self.task in SYNTHETIC and not self.probe_target.strip():
            raise ValueError(f"The '{self.task}' probe needs its reference output (probe_target).")
        self.name = run_name(self.name)
        return self


def run_name(name: str) -> str:
    """A safe folder name: letters, digits, '-', '_' (a typed name is data, never a path)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", name or "").strip("-")[:60]
    return name or time.strftime("studio-%Y%m%d-%H%M%S")


# ----------------------------------------------------------------------------------------------- data
def bundled_corpus(n_train: int, n_eval: int = 200, n_probe: int = 32, seed: int = 0):
    """(train, eval, probe) sentence lists from data/corpus: a seeded sample of train.txt.gz; the held-out
    evaluation and the probe corpus come from disjoint parts of test.txt."""
    train = mlm.read_sentences(str(CORPUS_TRAIN))
    train = random.Random(seed).sample(train, min(n_train, len(train)))
    test = mlm.read_sentences(str(CORPUS_TEST))
    return train, test[:n_eval], test[n_eval:n_eval + n_probe]


def synthetic_data(task: str, n_eval: int = 200, n_probe: int = 32):
    """(train, eval, probe) for a synthetic task: training examples are generated per step, so train is empty;
    eval and probe are sources of its held-out split (eval targets are regenerated from the same seed)."""
    test = seq2seq.get_task(task)["make_examples"](n_eval + n_probe, SYNTHETIC_EVAL_SEED, split="test")
    return [], [s for s, _, _ in test[:n_eval]], [s for s, _, _ in test[n_eval:]]


def synthetic_probes(task: str, n: int = 8) -> list[tuple[str, str]]:
    """A few held-out (source, target) pairs to offer as the probe of a synthetic task."""
    return [(s, t) for s, t, _ in seq2seq.get_task(task)["make_examples"](n, SYNTHETIC_EVAL_SEED + 1, split="test")]


def split_corpus(lines: list[str], n_eval: int = 200, n_probe: int = 32, seed: int = 0):
    """(train, eval, probe) from one user text (one sentence per line): up to 10% held out for evaluation,
    the probe corpus taken from the held-out part."""
    lines = [x.strip() for x in lines if x.strip()]
    if len(lines) < 20:
        raise ValueError(f"The corpus has {len(lines)} non-empty lines; give at least 20 (one sentence a line).")
    lines = lines[:]
    random.Random(seed).shuffle(lines)
    k = max(2, min(n_eval, len(lines) // 10))
    held, train = lines[:k], lines[k:]
    return train, held, held[:n_probe]


# ----------------------------------------------------------------------------------------------- model
def build_model(cfg: StudioConfig, train_sentences: list[str] | None = None):
    """(model in eager attention, tokenizer) for the config's task and start: a BertForMaskedLM (masked-LM) or
    a BartForConditionalGeneration (denoising: MiniLM WordPiece vocabulary; synthetic tasks: their word-level
    vocabulary) or a LlamaForCausalLM (decoder tasks: a BPE learned on `train_sentences`, or the repeat task's
    words), width `hidden`, feed-forward 4x wider."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from viz.train.delta import build_minilm_mlm, minilm_dir

    if cfg.task in DECODER:
        return decoder.build(cfg.task, cfg.hidden, cfg.layers, cfg.heads, cfg.seed, train_sentences or [])
    if cfg.task in SYNTHETIC:
        tok = seq2seq.build_tokenizer(seq2seq.get_task(cfg.task)["vocab"]())
        with torch.random.fork_rng(devices=[]):  # build_model seeds torch: keep other sessions' RNG untouched
            model = seq2seq.build_model(len(tok), d_model=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
                                        ffn=4 * cfg.hidden, seed=cfg.seed)
        return model.eval(), tok
    if cfg.init == "minilm":
        return build_minilm_mlm()
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    if cfg.task == "denoise":
        return denoise.build_model(tok, d_model=cfg.hidden, layers=cfg.layers, heads=cfg.heads, seed=cfg.seed), tok
    bert = BertConfig(vocab_size=len(tok), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                      num_attention_heads=cfg.heads, intermediate_size=4 * cfg.hidden,
                      max_position_embeddings=mlm.MAX_LEN + 64, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, tie_word_embeddings=True, pad_token_id=tok.pad_token_id)
    bert._attn_implementation = "eager"  # attention weights for the snapshots
    with torch.random.fork_rng(devices=[]):  # seeded init without reseeding the process for other sessions
        torch.manual_seed(cfg.seed)
        model = BertForMaskedLM(bert)
    return model.eval(), tok


def training_kwargs(cfg: StudioConfig, model) -> dict:
    """train_mlm options: a scratch model trains everything; MiniLM keeps its embeddings (tied to the decoder)
    and trains its encoder at a tenth of the head's rate."""
    if cfg.init == "minilm":
        return dict(unfreeze_layers=model.config.num_hidden_layers, lr_head=cfg.lr, lr_encoder=cfg.lr / 10)
    return dict(unfreeze_layers=None, lr_head=cfg.lr, lr_encoder=cfg.lr)


# ----------------------------------------------------------------------------------------------- snapshots
def head_stats(attn: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor, cls_id: int, sep_id: int) -> dict:
    """Per-head statistics of a padded batch, with the Head atlas's definitions (viz.analysis.head_stats,
    Clark et al. 2019 §3): attn [B, L, H, T, T], mask [B, T] bool, ids [B, T] -> {stat: [L, H] numpy}.
    Rows of [CLS]/[SEP] are not counted; prev/next count only rows whose neighbour is a real token;
    a head's value is the mean over all counted rows (token-weighted)."""
    from viz.analysis.head_stats import row_stats, row_weights

    is_cls, is_sep = ids == cls_id, ids == sep_id
    groups = torch.stack([is_cls, is_sep, torch.zeros_like(mask)], -1)  # punctuation is not tracked here
    per_row = row_stats(attn, mask, groups)  # {stat: [B, L, H, T]}
    weights = row_weights(mask, mask & ~(is_cls | is_sep))  # {stat: [B, T]}
    out = {}
    for s in STATS:
        w = weights[s][:, None, None, :]  # [B, 1, 1, T]
        out[s] = ((per_row[s] * w).sum((0, 3)) / w.sum((0, 3)).clamp_min(1)).numpy()  # [L, H]
    return out


def special_ids(tokenizer) -> tuple[int, int]:
    """(start, end) ids whose share the statistics report as cls / sep: [CLS]/[SEP] for WordPiece, <s>/</s> for
    the word-level seq2seq vocabularies (whose sources carry only </s>, so their cls share is 0)."""
    if tokenizer.cls_token_id is not None:
        return tokenizer.cls_token_id, tokenizer.sep_token_id
    return tokenizer.bos_token_id, tokenizer.eos_token_id


def target_ids(tokenizer, task: str, target: str) -> list[int]:
    """The decoder's labels for `target`: WordPiece ids without the leading [CLS] (denoising: the decoder
    starts from [CLS]); word-level ids ending in </s> (synthetic tasks)."""
    if task == "denoise":
        return mlm.encode(tokenizer, [target])[0][1:]
    return tokenizer(text_target=[target])["input_ids"][0]


@torch.inference_mode()
def take_snapshot_encdec(model, tokenizer, task: str, probe: str, probe_target: str,
                         probe_corpus: list[str]) -> dict:
    """An encoder–decoder's heads now -> dict(probe_attn [L, H, T, T] (encoder self-attention), probe_cross
    [L, H, U, T] (teacher-forced on the probe's target; row u = the decoder position whose input is
    decoder_inputs[u]), <stat> [L, H] over the probe corpus (encoder))."""
    was_training = model.training
    model.eval()
    try:
        src = tokenizer([probe], truncation=True, max_length=mlm.MAX_LEN, return_tensors="pt")
        labels = torch.tensor([target_ids(tokenizer, task, probe_target)[: mlm.MAX_LEN]])
        dec_in = torch.cat([torch.tensor([[model.config.decoder_start_token_id]]), labels[:, :-1]], 1)
        out = model(**src, decoder_input_ids=dec_in, output_attentions=True)
        probe_attn = torch.stack([a[0] for a in out.encoder_attentions]).float().numpy()  # [L, H, T, T]
        probe_cross = torch.stack([a[0] for a in out.cross_attentions]).float().numpy()  # [L, H, U, T]
        enc = tokenizer(probe_corpus or [probe], truncation=True, max_length=mlm.MAX_LEN)["input_ids"]
        ids, mask = mlm.collate(enc, tokenizer.pad_token_id)
        attn = torch.stack(list(model.get_encoder()(input_ids=ids, attention_mask=mask,
                                                    output_attentions=True).attentions), dim=1)  # [B, L, H, T, T]
        stats = head_stats(attn, mask.bool(), ids, *special_ids(tokenizer))
    finally:
        model.train(was_training)
    return dict(probe_attn=probe_attn, probe_cross=probe_cross, **stats)


def seq2seq_batches(cfg: StudioConfig, tokenizer, train_sentences: list[str]):
    """make_batch(k) for fit_seq2seq: the same batches `python -m viz train seq2seq` uses (synthetic tasks) or
    BART infilling of the corpus (denoising)."""
    if cfg.task == "denoise":
        return denoise.batch_maker(mlm.encode(tokenizer, train_sentences), tokenizer, cfg.batch_size, cfg.seed)
    make = seq2seq.get_task(cfg.task)["make_examples"]
    return lambda k: seq2seq.encode(tokenizer, make(cfg.batch_size, cfg.seed * 1_000_003 + k))


def seq2seq_eval_batch(cfg: StudioConfig, tokenizer, eval_sentences: list[str]) -> dict:
    """The fixed held-out batch whose teacher-forced token accuracy the curve shows."""
    if cfg.task == "denoise":
        return denoise.make_batch(mlm.encode(tokenizer, eval_sentences), tokenizer, seed=mlm.EVAL_SEED)
    test = seq2seq.get_task(cfg.task)["make_examples"](len(eval_sentences), SYNTHETIC_EVAL_SEED, split="test")
    return seq2seq.encode(tokenizer, test)


@torch.inference_mode()
def take_snapshot(model, tokenizer, probe: str, probe_corpus: list[str]) -> dict:
    """The model's heads now -> dict(probe_attn [L, H, T, T] float32, <stat> [L, H]). Leaves train/eval mode
    as it found it (eval inside: no dropout in what we record)."""
    was_training = model.training
    model.eval()
    try:
        enc = tokenizer([probe], truncation=True, max_length=mlm.MAX_LEN, return_tensors="pt")
        out = model.base_model(**enc, output_attentions=True)
        probe_attn = torch.stack([a[0] for a in out.attentions]).float().numpy()  # [L, H, T, T]
        ids, mask = mlm.collate(mlm.encode(tokenizer, probe_corpus or [probe]), tokenizer.pad_token_id)
        out = model.base_model(input_ids=ids, attention_mask=mask, output_attentions=True)
        attn = torch.stack(list(out.attentions), dim=1)  # [B, L, H, T, T]
        stats = head_stats(attn, mask.bool(), ids, tokenizer.cls_token_id, tokenizer.sep_token_id)
    finally:
        model.train(was_training)
    return dict(probe_attn=probe_attn, **stats)


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
        from viz.models import user_models_dir

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
        if self.config.task in SYNTHETIC:  # the Encoder–decoder page offers the task's examples (viz.generate)
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
    from viz.models import user_models_dir

    root = Path(root or user_models_dir())
    if not root.is_dir():
        return []
    with _ACTIVE_LOCK:
        busy = set(_ACTIVE)
    return sorted(d for d in root.iterdir() if (d / "training" / "state.pt").exists()
                  and (d / "training" / "job.json").exists() and d.resolve() not in busy)


def snapshot_arrays(snaps: list[dict]) -> dict[str, np.ndarray]:
    """Snapshots -> arrays: steps [S], eval_top1 [S] (NaN where none), probe_attn [S, L, H, T, T], <stat> [S, L, H],
    probe_cross [S, L, H, U, T] for an encoder–decoder; a decoder's <score> [S, L, H] and icl, eval_loss,
    first_half_loss [S] instead of the statistics."""
    out = {"steps": np.array([s["step"] for s in snaps]),
           "eval_top1": np.array([np.nan if s["eval_top1"] is None else s["eval_top1"] for s in snaps]),
           "probe_attn": np.stack([s["probe_attn"] for s in snaps]).astype(np.float32)}
    if "probe_cross" in snaps[0]:
        out["probe_cross"] = np.stack([s["probe_cross"] for s in snaps]).astype(np.float32)
    for stat in STATS + SCORES:
        if stat in snaps[0]:
            out[stat] = np.stack([s[stat] for s in snaps])
    for key in SCALARS:
        if key in snaps[0]:
            out[key] = np.array([s[key] for s in snaps], dtype=np.float64)
    return out


def load_snapshots(path: str | Path) -> list[dict]:
    if not Path(path).exists():
        return []
    z = np.load(path)
    extra = [k for k in ("probe_cross",) + STATS + SCORES + SCALARS if k in z.files]
    return [dict(step=int(z["steps"][i]), eval_top1=None if np.isnan(z["eval_top1"][i]) else float(z["eval_top1"][i]),
                 probe_attn=z["probe_attn"][i], **{s: z[s][i] if z[s].ndim > 1 else float(z[s][i]) for s in extra})
            for i in range(len(z["steps"]))]


def head_keys(arrays: dict) -> tuple[str, ...]:
    """The per-head [S, L, H] series a run's snapshots hold: encoder statistics, or decoder scores."""
    return tuple(k for k in SCORES + STATS if k in arrays)


def launch(store: MutableMapping, job: TrainingJob, key: str = "studio_job") -> TrainingJob:
    """Start `job` as the session's job (`store` is st.session_state or a dict); refuse while one is running."""
    current = store.get(key)
    if current is not None and current.running:
        raise JobAlreadyRunning(f"A training job ('{current.config.name}') is already running in this session: "
                                "wait for it to finish or cancel it before starting another.")
    job.start()
    store[key] = job
    return job
