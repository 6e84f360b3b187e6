"""The studio's decoder pretexts: causal LM on a corpus, and repeated random tokens (in-context copying).

Both train a small `LlamaForCausalLM` (viz.train.clm.build_decoder: RoPE, RMSNorm, SwiGLU, half as many
key/value heads as query heads) with the causal-LM loop `viz.train.clm.train_clm`. Snapshots record what
Olsson et al. (2022, "In-context learning and induction heads") watch during training:

- per head, the induction, previous-token and duplicate-token scores (viz.tasks.heads.pattern_scores) on held-out
  random sequences repeated once;
- the in-context learning score: the held-out loss late in the context minus the loss early in it
  (Olsson et al. use token 500 minus token 50 of 512; here the mean over positions [0.8 W, W) minus
  [0.1 W, 0.2 W) of a W-token context). It drops below zero as the model uses its context;
- the probe's attention for every head (the replay slider shows the induction stripe appear).

"Repeated random tokens": [<s>] t_1..t_L t_1..t_L with L distinct words drawn from a 200-word vocabulary;
the loss counts only the repeated half (the first half is unpredictable by construction). A 2-layer, 4-head
model forms an induction head within a few hundred steps: a sudden drop of that loss (the phase change).

Shapes: B = batch, W = context length, L = layers, H = heads, T = probe tokens.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from viz.tasks.heads import ordinary_ids, pattern_scores, repeated_sequences
from viz.train import clm

TASKS = {"clm": "Causal LM (a small Llama decoder: next token of the corpus)",
         "repeat": "Repeated random tokens (a small Llama decoder copies a sequence it saw: induction heads)"}
REPEAT_VOCAB = 200  # words of the repeated-tokens task
REPEAT_LENGTH = 20  # random tokens per copy (the longest in training; every score and held-out figure uses it)
REPEAT_MIN = 8  # the shortest copy in training
CLM_WINDOW = 64  # tokens per packed window of the studio's causal LM
CLM_VOCAB = 2048  # byte-level BPE learned on the run's training sentences
PROBE_MAX = 64  # probe tokens kept (the studio's mlm.MAX_LEN: the page labels them from the same cut)
SCORE_SEQUENCES = 8  # held-out repeated sequences the head scores average over
SCORE_SEED = 12345  # ... drawn with this seed (training batches use seed * 1_000_003 + step)
EVAL_SEED = 54321
CLM_PROBE = "The cat sat on the mat because it was tired. The cat sat on the mat because it was tired."
SCORES = ("induction", "previous", "duplicate")
SCORE_LABELS = {"induction": "induction score", "previous": "previous-token score",
                "duplicate": "duplicate-token score"}
# What picking a task in the studio sets (each can still be changed). "repeat": measured here, the default
# 2-layer, 4-head run reaches induction 0.66 at step 300 of 600 (best 0.03 at step 0) in about 3 minutes on a
# busy 2-core machine.
DEFAULTS = {"repeat": dict(layers=2, heads=4, hidden=64, steps=600, lr=3e-3, batch=64, every=25),
            "clm": dict(layers=2, heads=4, hidden=64, steps=300, lr=3e-3, batch=16, every=25)}
_WORDS_FILE = Path(__file__).with_name("words_1000.txt")


# ----------------------------------------------------------------------------------------------- tokenizers
def repeat_tokenizer(n_words: int = REPEAT_VOCAB):
    """Word-level tokenizer over the `n_words` most frequent English words (readable probe labels), specials
    <s>=0 <pad>=1 <unk>=2, prepending <s> to every text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "<unk>": 2}
    for w in _WORDS_FILE.read_text().split():
        if len(vocab) >= n_words + 3:
            break
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", unk_token="<unk>",
                                   model_max_length=1 + 2 * 64, clean_up_tokenization_spaces=False)


def build(task: str, hidden: int, layers: int, heads: int, seed: int, train_sentences: list[str]):
    """(model, tokenizer) for a decoder task: the repeat vocabulary, or a byte-level BPE learned on the run's
    training sentences (small corpora get a smaller vocabulary: at most one token per 20 training words)."""
    if task == "repeat":
        tok, max_len = repeat_tokenizer(), 1 + 2 * REPEAT_LENGTH
    else:
        words = sum(len(s.split()) for s in train_sentences)
        tok, max_len = clm.build_tokenizer(train_sentences, max(300, min(CLM_VOCAB, words // 20))), 4 * CLM_WINDOW
    with torch.random.fork_rng(devices=[]):  # build_decoder seeds torch: keep other sessions' RNG untouched
        model = clm.build_decoder(len(tok), d_model=hidden, layers=layers, heads=heads,
                                  kv_heads=heads // 2 if heads % 2 == 0 else heads, ffn=4 * hidden,
                                  max_len=max(max_len, 128), bos_id=tok.bos_token_id, pad_id=tok.pad_token_id,
                                  seed=seed)
    return model.eval(), tok


# ----------------------------------------------------------------------------------------------- data
def repeat_batch(tok, n: int, seed: int, length: int = REPEAT_LENGTH) -> torch.Tensor:
    """[n, 1 + 2 * length]: <s>, `length` distinct random words, the same words again."""
    return repeated_sequences(ordinary_ids(tok, len(tok)), n, length, seed, [tok.bos_token_id])


def repeat_train_batch(tok, n: int, seed: int, lengths: tuple[int, int] = (REPEAT_MIN, REPEAT_LENGTH)) -> torch.Tensor:
    """[n, 1 + 2 * max length]: like `repeat_batch` but each sequence draws its own length L in `lengths`
    (inclusive) and is right-padded with <pad>. Why: at one fixed L, position i + 1 always repeats position
    i + 1 - L, and a model learns that fixed offset from the positions alone instead of an induction head
    (measured here: loss on the repeated half 0.00 with every induction score under 0.06). A varying L leaves
    only the content route: find the earlier occurrence of the current token and copy what followed it."""
    g = torch.Generator().manual_seed(seed)
    pool = ordinary_ids(tok, len(tok))
    out = torch.full((n, 1 + 2 * lengths[1]), tok.pad_token_id, dtype=torch.long)
    out[:, 0] = tok.bos_token_id
    for r in range(n):
        L = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=g))
        half = pool[torch.randperm(len(pool), generator=g)[:L]]
        out[r, 1:1 + 2 * L] = torch.cat([half, half])
    return out


def repeat_probe(tok, length: int = REPEAT_LENGTH) -> str:
    """A held-out repeated sequence as text (the probe whose attention snapshots record)."""
    ids = repeat_batch(tok, 1, SCORE_SEED + 1, length)[0, 1:]
    return " ".join(tok.convert_ids_to_tokens(ids.tolist()))


def batches(task: str, tok, train_sentences: list[str], batch_size: int, seed: int):
    """batches(step) -> ids [B, W] for train_clm: a pure function of (seed, step), so a resume continues the
    same stream."""
    if task == "repeat":
        return lambda step: repeat_train_batch(tok, batch_size, seed * 1_000_003 + step)
    return clm.Windows(clm.encode_sentences(tok, train_sentences), batch_size, seed, CLM_WINDOW).batch


def eval_batch(task: str, tok, eval_sentences: list[str]) -> torch.Tensor:
    """The fixed held-out ids [B, W] whose loss, top-1 and in-context learning score the curves show."""
    if task == "repeat":
        return repeat_batch(tok, 64, EVAL_SEED)
    enc = clm.encode_sentences(tok, eval_sentences)
    windows = clm.pack(enc, list(range(len(enc))), CLM_WINDOW)
    if not len(windows):
        raise ValueError(f"The held-out sentences fill less than one window of {CLM_WINDOW} tokens; give more text.")
    return windows


def loss_start(task: str) -> int:
    """First target position the loss counts: the repeated half for "repeat" (position 1 + L), else 1."""
    return 1 + REPEAT_LENGTH if task == "repeat" else 1


# ----------------------------------------------------------------------------------------------- measures
def position_losses(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, W] -> (mean loss per target position [W-1], top-1 / top-5 hit rate per target position
    [2, W-1]); index p - 1 is target position p."""
    logits = model(input_ids=ids).logits[:, :-1].float()  # [B, W-1, V]
    target = ids[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(0)  # [W-1]
    top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
    hits = torch.stack([(top5[..., 0] == target).float().mean(0), (top5 == target[..., None]).any(-1).float().mean(0)])
    return nll, hits


def icl_score(nll: torch.Tensor) -> float:
    """Loss late in the context minus loss early in it (Olsson et al. 2022): mean over target positions
    [0.8 W, W) minus mean over [0.1 W, 0.2 W), for nll [W-1] indexed by target position - 1."""
    W = len(nll) + 1
    early = nll[max(0, W // 10 - 1): max(1, W // 5 - 1)]
    late = nll[int(0.8 * W) - 1:]
    return float(late.mean() - early.mean())


@torch.inference_mode()
def held_out_figures(model, task: str, held_out: torch.Tensor) -> dict:
    """The curves' held-out figures -> dict(loss, top1, top5) on the counted positions (the repeated half for
    "repeat"), icl (in-context learning score) and first_half_loss ("repeat": the unpredictable first copy)."""
    was_training = model.training
    model.eval()
    try:
        nll, hits = position_losses(model, held_out)
    finally:
        model.train(was_training)
    start = loss_start(task) - 1
    return dict(loss=float(nll[start:].mean()), top1=float(hits[0, start:].mean()),
                top5=float(hits[1, start:].mean()), icl=icl_score(nll),
                first_half_loss=float(nll[:REPEAT_LENGTH].mean()) if task == "repeat" else float("nan"))


@torch.inference_mode()
def take_snapshot(model, tok, probe: str) -> dict:
    """The decoder's heads now -> dict(probe_attn [L, H, T, T], induction / previous / duplicate [L, H] on
    SCORE_SEQUENCES held-out random sequences of REPEAT_LENGTH tokens repeated once)."""
    was_training = model.training
    model.eval()
    try:
        enc = tok([probe], truncation=True, max_length=PROBE_MAX, return_tensors="pt")
        out = model(input_ids=enc["input_ids"], output_attentions=True)
        probe_attn = torch.stack([a[0] for a in out.attentions]).float().numpy()  # [L, H, T, T]
        seqs = repeat_batch(tok, SCORE_SEQUENCES, SCORE_SEED)
        attn = torch.stack(list(model(input_ids=seqs, output_attentions=True).attentions), dim=1)
        scores = {k: v.float().numpy() for k, v in pattern_scores(attn, REPEAT_LENGTH, 1).items()}
    finally:
        model.train(was_training)
    return dict(probe_attn=probe_attn, **scores)


def lm_loss_unpadded(pad_id: int):
    """The loss train_clm minimises here: mean next-token cross-entropy over every target that is not <pad>
    (right padding: no real token ever attends to one under the causal mask)."""
    def loss(model, ids: torch.Tensor, bf16: bool) -> torch.Tensor:
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids).logits[:, :-1]
        return F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(), ignore_index=pad_id)
    return loss


def phase_change_step(steps: np.ndarray, best_induction: np.ndarray, threshold: float = 0.5) -> int | None:
    """The first snapshot step where the best head's induction score reaches `threshold` (None: never)."""
    hit = np.nonzero(best_induction >= threshold)[0]
    return int(steps[hit[0]]) if len(hit) else None
