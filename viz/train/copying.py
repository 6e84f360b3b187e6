"""Training windows that reward in-context copying, and the probes that watch a decoder learn to copy.

The bundled corpus is shuffled sentences without documents: a packed window almost never repeats anything, so
a model trained on it has no reason to look back for an earlier occurrence (atlas-lm trained on it alone formed
no induction head, best score 0.015). `viz.train.clm.pack` can insert, after any sentence of a window:

- a sentence copy (`repeat_frac`, in clm.pack): a whole sentence already in the window, again;
- a span copy (`span_frac`): <|endoftext|> and a run of SPAN_LENGTHS tokens cut from a sentence already in
  the window (a recurring name or phrase: the first tokens are a surprise, the rest can be copied);
- a random-token repeat (`random_frac`): <|endoftext|>, L distinct random ordinary tokens and the same L
  tokens again, L uniform in RANDOM_LENGTHS. Why: on random tokens the only way to predict the second copy is
  an induction head (Olsson et al. 2022), the studio's repeated-tokens task forms one within a few hundred
  steps, and a varying L leaves no fixed positional offset to learn instead.

`CopyMix.after` draws those inserts from the packer's `random.Random`; the probes (`copy_probe`,
`text_repeat_losses`) measure a model on held-out repeats during and after training.

Shapes: n = sequences, L = tokens per copy, T = sequence length.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SPAN_LENGTHS = (3, 16)  # tokens in a span copy (cut to the sentence's length)
RANDOM_LENGTHS = (5, 60)  # random tokens per copy of a random-token repeat
PROBE_LENGTHS = (10, 25, 50)  # copy lengths the training curve's induction probe averages over
KINDS = ("sentence", "sentence_copy", "span_copy", "random_repeat")  # what a window's tokens can be


@dataclass(frozen=True)
class CopyMix:
    """What `pack` inserts after each original sentence: with probability `span_frac` a span copy, with
    probability `random_frac` a random-token repeat (ids drawn from [pool_lo, pool_hi), distinct within a copy).
    `sep` begins every insert, as it begins every sentence."""

    span_frac: float = 0.0
    random_frac: float = 0.0
    pool_lo: int = 2
    pool_hi: int = 0
    sep: int = 0
    span_lengths: tuple[int, int] = SPAN_LENGTHS
    random_lengths: tuple[int, int] = RANDOM_LENGTHS

    def __post_init__(self):
        if self.random_frac and self.pool_hi - self.pool_lo < self.random_lengths[1]:
            raise ValueError(f"random-token repeats of up to {self.random_lengths[1]} distinct tokens need that many "
                             f"ordinary ids; the pool [{self.pool_lo}, {self.pool_hi}) is too small")

    @property
    def active(self) -> bool:
        return bool(self.span_frac or self.random_frac)

    def after(self, rng: random.Random, window_sentences: list[list[int]]) -> list[tuple[str, list[int]]]:
        """Inserts to follow the sentence just placed -> [(kind, ids)], in the order they go into the window.
        window_sentences: the original sentences already in this window (each [sep, ids...]), the last one
        just placed. Draws nothing from `rng` for a share that is 0 (so other shares keep their streams)."""
        out = []
        if self.span_frac and rng.random() < self.span_frac:
            body = window_sentences[rng.randrange(len(window_sentences))][1:]
            if body:
                lo, hi = (min(len(body), k) for k in self.span_lengths)
                k = rng.randint(lo, hi)
                start = rng.randrange(len(body) - k + 1)
                out.append(("span_copy", [self.sep] + body[start:start + k]))
        if self.random_frac and rng.random() < self.random_frac:
            L = rng.randint(*self.random_lengths)
            half = rng.sample(range(self.pool_lo, self.pool_hi), L)
            out.append(("random_repeat", [self.sep] + half + half))
        return out


# ----------------------------------------------------------------------------------------------- probes
def _attn_eager(model):
    """Context: the model computes attention eagerly (output_attentions needs it; training may run sdpa)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        before = getattr(model.config, "_attn_implementation", "eager")
        if before != "eager":
            model.set_attn_implementation("eager")
        try:
            yield
        finally:
            if before != "eager":
                model.set_attn_implementation(before)
    return ctx()


@torch.inference_mode()
def copy_probe(model, pool: torch.Tensor, sep: int, *, lengths=PROBE_LENGTHS, sequences: int = 4,
               seed: int = 4242) -> dict:
    """The training curve's copying figures: on `sequences` random sequences [sep] t_1..t_L t_1..t_L per L in
    `lengths` (viz.heads.repeated_sequences, ids from `pool`), the best head's induction score at each L
    (viz.heads.pattern_scores), and the mean next-token loss on each copy (tokens 2..L) over all L
    -> dict(induction (max over L of the best head), induction_by_length {L: best}, copy_loss_first,
    copy_loss_second)."""
    from viz.tasks.heads import pattern_scores, repeated_sequences

    was_training = model.training
    model.eval()
    best, losses = {}, torch.zeros(2, dtype=torch.float64)
    try:
        with _attn_eager(model):
            for L in lengths:
                ids = repeated_sequences(pool, sequences, L, seed + L, [sep]).to(next(model.parameters()).device)
                out = model(input_ids=ids, output_attentions=True)
                attn = torch.stack([a.float().cpu() for a in out.attentions], dim=1)  # [n, layer, head, T, T]
                best[L] = float(pattern_scores(attn, L, 1)["induction"].max())
                nll = F.cross_entropy(out.logits[:, :-1].float().transpose(1, 2), ids[:, 1:],
                                      reduction="none").double().mean(0).cpu()  # [T-1]: index p-1 = target p
                losses += torch.stack([nll[1:L].mean(), nll[L + 1:2 * L].mean()]) / len(lengths)
    finally:
        model.train(was_training)
    return dict(induction=max(best.values()), induction_by_length=best, copy_loss_first=float(losses[0]),
                copy_loss_second=float(losses[1]))


@torch.inference_mode()
def text_repeat_losses(model, halves: list[list[int]], bos: int) -> list[tuple[float, float]]:
    """Each natural-text passage h (token ids, no BOS) as [bos] h h -> (mean next-token loss on the first
    copy's tokens 2..n, on the second copy's tokens 2..n) in nats. The first token of each copy is left out
    (nothing before it says what it is), as viz.heads leaves it out on random tokens."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for h in halves:
            n = len(h)
            ids = torch.tensor([[bos] + h + h], device=next(model.parameters()).device)
            nll = F.cross_entropy(model(input_ids=ids).logits[0, :-1].float(), ids[0, 1:], reduction="none")
            # target position p (1-based in ids) is nll[p - 1]; the first copy holds p = 1..n, the second n+1..2n
            out.append((float(nll[1:n].mean()), float(nll[n + 1:2 * n].mean())))
    finally:
        model.train(was_training)
    return out


def passages(encoded: list[list[int]], min_tokens: int = 48, count: int = 8) -> list[list[int]]:
    """Held-out natural text for `text_repeat_losses`: consecutive sentences (each [sep, ids...], kept whole with
    their separators after the first) joined until a passage holds at least `min_tokens` tokens -> `count`
    passages of token ids, the first one's leading separator dropped (the probe adds the BOS)."""
    out, cur = [], []
    for s in encoded:
        cur += s if cur else s[1:]
        if len(cur) >= min_tokens:
            out.append(cur)
            cur = []
            if len(out) == count:
                break
    return out


ICL_EARLY = (45, 55)  # target positions (0 = the window's first token) around token 50 ...
ICL_LATE = (195, 205)  # ... and around token 200 of a 256-token window


@torch.inference_mode()
def icl_score(model, windows: torch.Tensor, early=ICL_EARLY, late=ICL_LATE, batch_size: int = 16) -> dict:
    """In-context learning score (Olsson et al. 2022: loss at token 500 minus loss at token 50 of 512): over
    windows [N, W], the mean next-token loss at target positions late[0] <= p < late[1] minus the mean at
    early[0] <= p < early[1] -> dict(icl, loss_early, loss_late, windows). Negative: later tokens are predicted
    better, the context helps."""
    was_training = model.training
    model.eval()
    total = torch.zeros(windows.shape[1] - 1, dtype=torch.float64)
    try:
        for i in range(0, len(windows), batch_size):
            ids = windows[i:i + batch_size].to(next(model.parameters()).device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            total += F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").double().sum(0).cpu()
    finally:
        model.train(was_training)
    nll = total / len(windows)  # [W-1]: index p - 1 is target position p
    lo, hi = nll[early[0] - 1:early[1] - 1].mean(), nll[late[0] - 1:late[1] - 1].mean()
    return dict(icl=float(hi - lo), loss_early=float(lo), loss_late=float(hi), windows=len(windows))
