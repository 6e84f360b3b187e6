"""The studio's runs before they start: the pretext tasks, `StudioConfig` (everything a run depends on), the
sentences it trains and is scored on (bundled corpus, an upload, or a synthetic task's own examples) and the model
it starts from. viz.train.studio runs it; viz.train.snapshots records its heads."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass

import torch

from viz.core.paths import CORPUS
from viz.train import denoise, mlm, seq2seq
from viz.train import studio_decoder as decoder

STATS = ("entropy", "prev", "next", "cls", "sep")  # the subset of viz.analysis.head_stats.STATS snapshots keep
STAT_LABELS = {"entropy": "entropy (nats)", "prev": "previous-token share", "next": "next-token share",
               "cls": "[CLS] share", "sep": "[SEP] share"}
PROBE_SENTENCE = "The cat sat on the mat because it was tired."
CORPUS_TRAIN = CORPUS / "train.txt.gz"
CORPUS_TEST = CORPUS / "test.txt"
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

    from viz.core.delta import build_minilm_mlm, minilm_dir

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
