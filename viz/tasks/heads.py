"""Head scores for causal decoders: induction, previous-token, duplicate-token and first-token (sink) share.

Induction heads (Olsson et al. 2022, "In-context learning and induction heads", and TransformerLens'
`head_detector`) are found on sequences of random tokens repeated once: [BOS] t_1..t_L t_1..t_L. A query at
position i of the second copy (i = L+1 .. 2L) has seen its token before at i - L;

- induction: its attention to i - L + 1, the token that came *after* the earlier occurrence (what an
  induction head copies forward);
- duplicate-token: its attention to i - L, the earlier occurrence itself;
- previous-token: attention of every position i >= 1 (both copies) to i - 1;
- first-token share ("attention sink", Xiao et al. 2023): attention on position 0 on ordinary text (the
  bundled sample sentences), over rows i >= 1.

Each score is a mean over the counted rows and the sequences -> [layer, head] in [0, 1]. Random tokens come
from the non-special vocabulary, drawn without replacement within a sequence (so every repeat is the only
earlier occurrence), from `torch.Generator().manual_seed(seed)`: the same seed gives the same scores.

Also reported: the model's next-token loss on each copy (`loss_first`, `loss_second`): a model that uses its
induction heads predicts the repeated half far better than the first (in-context copying).

Copy length. A head that copies at one length may read nothing at another: a studio model trained on copies of
8-20 tokens had an induction head of 0.93 at 15 tokens per copy and 0.01 at 50 (its positions beyond ~41 were
never trained). So by default every score is measured at each of DEFAULT_LENGTHS (10, 25 and 50 tokens per
copy, those the model's positions and vocabulary allow) and each head reports its best length:
induction/previous/duplicate = the per-head maximum over lengths, `by_length` keeps every length's values,
`induction_length` says which length gave each head its induction score, and `length` is the length of the
best induction head (where `loss_first`/`loss_second` and the example are measured). `length=N` measures one
length only (the behaviour before the sweep: `length=50`). Chance level: a head spreading its attention evenly
scores about 1/(i + 1) at row i, 0.05-0.09 at 10 tokens per copy, 0.01-0.02 at 50.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from viz.core.arch import DECODER
from viz.core.errors import CaptureError
from viz.core.models import ModelBundle

DEFAULT_SEQUENCES = 10
DEFAULT_LENGTH = 50  # the one length scored before the sweep (and still what length=None fell back to)
DEFAULT_LENGTHS = (10, 25, 50)
DEFAULT_SINK_SENTENCES = 64
RECORD_BYTES = 256 << 20  # attention weights recorded per forward; larger models record layers in groups


class HeadScoreError(CaptureError):
    """The request cannot be scored (not a decoder, sequence too long, vocabulary too small)."""


@dataclass
class HeadScores:
    """Per-head scores of one model. Arrays are [layer, head] in [0, 1]."""

    model_name: str
    induction: np.ndarray
    previous: np.ndarray
    duplicate: np.ndarray
    first: np.ndarray  # sink share on ordinary text
    seed: int
    length: int
    sequences: int
    loss_first: float  # mean next-token loss (nats) on the first copy's tokens 2..L
    loss_second: float  # on the second copy's tokens 2..L (the first one of each copy is unpredictable)
    sink_sentences: int
    example_attn: np.ndarray | None = None  # [layer, head, T, T] float16: the first repeated sequence
    example_tokens: list[str] | None = None  # its T tokens
    lengths: tuple[int, ...] = ()  # copy lengths measured (one: a fixed length; several: the sweep)
    by_length: dict | None = None  # {L: dict(induction, previous, duplicate [layer, head], loss_first, loss_second)}
    induction_length: np.ndarray | None = None  # [layer, head] int: the length of each head's induction score

    @property
    def n_layers(self) -> int:
        return int(self.induction.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.induction.shape[1])

    def best(self, score: str = "induction") -> tuple[int, int, float]:
        """(layer, head, value) of the highest-scoring head."""
        a = getattr(self, score)
        li, hi = np.unravel_index(int(np.argmax(a)), a.shape)
        return int(li), int(hi), float(a[li, hi])

    def to_json(self, digits: int = 4) -> dict:
        """`python -m viz heads --json`: layers, heads, induction, previous, duplicate ([layer][head]) plus
        first_token, seed, length, sequences, loss_first_copy, loss_second_copy, sink_sentences, and (the
        length sweep) lengths, induction_length ([layer][head]) and by_length ({"L": {induction, previous,
        duplicate, loss_first_copy, loss_second_copy}})."""
        r = lambda a: np.round(np.asarray(a).astype(float), digits).tolist()  # noqa: E731
        lengths = list(self.lengths) or [self.length]
        ind_len = self.induction_length if self.induction_length is not None else np.full(self.induction.shape,
                                                                                         self.length)
        by = self.by_length or {self.length: dict(induction=self.induction, previous=self.previous,
                                                  duplicate=self.duplicate, loss_first=self.loss_first,
                                                  loss_second=self.loss_second)}
        return {"layers": self.n_layers, "heads": self.n_heads, "induction": r(self.induction),
                "previous": r(self.previous), "duplicate": r(self.duplicate), "first_token": r(self.first),
                "seed": self.seed, "length": self.length, "sequences": self.sequences,
                "loss_first_copy": round(self.loss_first, digits), "loss_second_copy": round(self.loss_second, digits),
                "sink_sentences": self.sink_sentences, "lengths": lengths,
                "induction_length": np.asarray(ind_len).astype(int).tolist(),
                "by_length": {str(L): {"induction": r(v["induction"]), "previous": r(v["previous"]),
                                       "duplicate": r(v["duplicate"]),
                                       "loss_first_copy": round(float(v["loss_first"]), digits),
                                       "loss_second_copy": round(float(v["loss_second"]), digits)}
                              for L, v in by.items()}}


# ----------------------------------------------------------------------------------------------- inputs
def prefix_ids(tokenizer) -> list[int]:
    """The token a decoder's inputs start with: BOS where the tokenizer has one, else [CLS], else nothing."""
    for name in ("bos_token_id", "cls_token_id"):
        i = getattr(tokenizer, name, None)
        if i is not None:
            return [int(i)]
    return []


def ordinary_ids(tokenizer, vocab_size: int) -> torch.Tensor:
    """Ids that may appear in a random sequence: below the model's vocabulary size and the tokenizer's,
    not special. [n] long."""
    n = min(int(vocab_size), len(tokenizer))
    allowed = torch.ones(n, dtype=torch.bool)
    special = [i for i in tokenizer.all_special_ids if i is not None and i < n]
    allowed[special] = False
    return allowed.nonzero().squeeze(1)


def repeated_sequences(pool: torch.Tensor, n: int, length: int, seed: int, prefix: list[int]) -> torch.Tensor:
    """[n, len(prefix) + 2 * length] long: prefix, then `length` distinct random ids from `pool`, repeated."""
    if len(pool) < length:
        raise HeadScoreError(f"--length {length} needs at least {length} ordinary tokens; this vocabulary has "
                             f"{len(pool)}. Use a shorter --length.")
    g = torch.Generator().manual_seed(seed)
    rows = [pool[torch.randperm(len(pool), generator=g)[:length]] for _ in range(n)]
    half = torch.stack(rows)  # [n, L]
    pre = torch.tensor(prefix, dtype=torch.long).expand(n, len(prefix))
    return torch.cat([pre, half, half], dim=1)


# ----------------------------------------------------------------------------------------------- scores
def pattern_scores(attn: torch.Tensor, length: int, offset: int) -> dict[str, torch.Tensor]:
    """Scores from attention [n, layer, head, T, T] of repeated sequences (first copy starts at `offset`,
    T = offset + 2 * length) -> dict(induction, duplicate, previous) each [layer, head] (float64).

    Rows i of the second copy (offset + length .. T-1) score attn[i, i - length + 1] (induction) and
    attn[i, i - length] (duplicate); rows i >= 1 score attn[i, i - 1] (previous)."""
    T = attn.shape[-1]
    second = torch.arange(offset + length, T)
    a = attn.double()
    ind = a[..., second, second - length + 1].mean(dim=(0, -1))
    dup = a[..., second, second - length].mean(dim=(0, -1))
    rows = torch.arange(1, T)
    prev = a[..., rows, rows - 1].mean(dim=(0, -1))
    return dict(induction=ind, duplicate=dup, previous=prev)


def _layer_groups(bundle: ModelBundle, T: int) -> list[list[int]]:
    """Layers recorded per forward, so one forward keeps at most RECORD_BYTES of weights."""
    L, H = bundle.stack_layers(DECODER), bundle.n_heads(DECODER)
    per_layer = H * T * T * 4
    k = max(1, min(L, RECORD_BYTES // max(1, per_layer)))
    return [list(range(i, min(L, i + k))) for i in range(0, L, k)]


def _forward_attn(bundle: ModelBundle, ids: torch.Tensor, mask: torch.Tensor | None, layers: list[int]):
    """Run ids [b, T] once, recording `layers` -> (attention [b, len(layers), head, T, T] float32 on the CPU,
    logits [b, T, V] float32)."""
    from viz.core.capture import recording

    with bundle.lock, torch.inference_mode(), recording(bundle, layers={DECODER: frozenset(layers)},
                                                        qkv=False) as rec:
        out = bundle.model(input_ids=ids.to(bundle.device),
                           attention_mask=None if mask is None else mask.to(bundle.device))
    attn = torch.stack([a.float().cpu() for a in rec.data[(DECODER, "attn")]], dim=1)
    return attn, out.logits.float().cpu()


def _check_decoder(bundle: ModelBundle) -> None:
    if bundle.kind != "decoder":
        raise HeadScoreError(f"{bundle.name} is {'an' if bundle.kind[0] == 'e' else 'a'} {bundle.kind}: induction "
                             "and previous-token scores need a causal decoder (e.g. atlas-lm, tiny-llama, "
                             "tiny-gpt2).")


def repeat_scores(bundle: ModelBundle, *, seed: int = 0, length: int = DEFAULT_LENGTH,
                  sequences: int = DEFAULT_SEQUENCES) -> tuple[dict[str, np.ndarray], float, float, np.ndarray, list]:
    """Induction / duplicate / previous [layer, head] on `sequences` random sequences of `length` tokens
    repeated once, plus the mean next-token loss on each copy and the first sequence's attention
    [layer, head, T, T] (float16) and tokens -> (scores, loss_first, loss_second, example_attn, example_tokens)."""
    _check_decoder(bundle)
    prefix = prefix_ids(bundle.tokenizer)
    T = len(prefix) + 2 * length
    if T > bundle.max_tokens:
        raise HeadScoreError(f"--length {length} makes sequences of {T} tokens; {bundle.name} takes at most "
                             f"{bundle.max_tokens}. Use --length {max(1, (bundle.max_tokens - len(prefix)) // 2)} "
                             "or less.")
    vocab = getattr(bundle.config, "vocab_size", None) or len(bundle.tokenizer)
    ids = repeated_sequences(ordinary_ids(bundle.tokenizer, vocab), sequences, length, seed, prefix)
    sums, losses, example = None, torch.zeros(2, dtype=torch.float64), None
    off = len(prefix)
    for seq in ids:
        parts, logits = [], None
        for group in _layer_groups(bundle, T):
            attn, logits = _forward_attn(bundle, seq[None], None, group)
            parts.append(attn)
        attn = torch.cat(parts, dim=1)  # [1, layer, head, T, T]
        example = attn[0].half().numpy() if example is None else example
        s = pattern_scores(attn, length, off)
        sums = s if sums is None else {k: sums[k] + s[k] for k in s}
        nll = torch.nn.functional.cross_entropy(logits[0, :-1], seq[1:], reduction="none").double()  # [T-1]
        # predicting copy positions 2..L of each copy (position p is predicted by row p-1)
        losses += torch.stack([nll[off:off + length - 1].mean(), nll[off + length:off + 2 * length - 1].mean()])
    scores = {k: (v / len(ids)).numpy() for k, v in sums.items()}
    losses /= len(ids)
    tokens = bundle.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    return scores, float(losses[0]), float(losses[1]), example, tokens


def sink_share(bundle: ModelBundle, sentences: list[str], max_tokens: int = 64) -> np.ndarray:
    """Mean attention on position 0 over rows i >= 1 of each sentence (right padding excluded) ->
    [layer, head]. The share a head parks on the first token when nothing else is worth reading."""
    _check_decoder(bundle)
    tok = bundle.tokenizer
    total, count = None, 0
    for i in range(0, len(sentences), 16):
        with bundle.lock:
            enc = tok(sentences[i:i + 16], truncation=True, max_length=min(max_tokens, bundle.max_tokens),
                      padding=True, return_tensors="pt")
        mask = enc["attention_mask"]  # [b, T]
        if tok.padding_side == "left":  # row 0 must be the first real token: count it per row
            raise HeadScoreError("left-padded tokenizers are not supported for the sink share")
        T = mask.shape[1]
        parts = [(_forward_attn(bundle, enc["input_ids"], mask, g)[0]) for g in _layer_groups(bundle, T)]
        attn = torch.cat(parts, dim=1).double()  # [b, L, H, T, T]
        first = attn[..., 1:, 0]  # [b, L, H, T-1]
        rows = mask[:, 1:].double()[:, None, None, :]  # real rows i >= 1
        s = (first * rows).sum(dim=(0, -1))
        total = s if total is None else total + s
        count += int(mask[:, 1:].sum())
    return (total / max(1, count)).numpy()


def sweep_lengths(bundle: ModelBundle, lengths=DEFAULT_LENGTHS) -> tuple[int, ...]:
    """The lengths of `lengths` this decoder can be scored at (1 + 2 L tokens within its positions, L ordinary
    tokens in its vocabulary); where none fits, the longest that does. Raises when not even L = 2 fits."""
    prefix = len(prefix_ids(bundle.tokenizer))
    vocab = getattr(bundle.config, "vocab_size", None) or len(bundle.tokenizer)
    longest = min((bundle.max_tokens - prefix) // 2, len(ordinary_ids(bundle.tokenizer, vocab)))
    if longest < 2:
        raise HeadScoreError(f"{bundle.name} takes too few tokens to repeat even 2 random tokens once.")
    fit = tuple(sorted({int(L) for L in lengths if 2 <= L <= longest}))
    return fit or (longest,)


def head_scores(bundle: ModelBundle, *, seed: int = 0, length: int | None = None, sequences: int = DEFAULT_SEQUENCES,
                sink_sentences: list[str] | None = None, lengths=None) -> HeadScores:
    """All four scores of every head of a decoder. `length`: score at that one copy length (what the scores were
    before the sweep; the CLI's --length). Otherwise each of `lengths` (default DEFAULT_LENGTHS, cut to what the
    model takes: `sweep_lengths`) and each head's best (module docstring). `sink_sentences` default: the first
    64 bundled sample sentences (data/sample_sentences.txt)."""
    if length is not None:
        todo = (int(length),)
    else:
        _check_decoder(bundle)
        todo = sweep_lengths(bundle, lengths or DEFAULT_LENGTHS)
    if seed < 0 or min(todo) < 2 or sequences < 1:
        raise HeadScoreError("seed must be >= 0, length >= 2 and sequences >= 1")
    runs = {L: repeat_scores(bundle, seed=seed, length=L, sequences=sequences) for L in todo}
    keys = ("induction", "previous", "duplicate")
    stack = {k: np.stack([runs[L][0][k] for L in todo]) for k in keys}  # [lengths, layer, head]
    best = {k: v.max(axis=0) for k, v in stack.items()}
    ind_len = np.asarray(todo)[stack["induction"].argmax(axis=0)]  # the first (shortest) length on a tie
    li, hi = np.unravel_index(int(np.argmax(best["induction"])), best["induction"].shape)
    shown = int(ind_len[li, hi])  # the best induction head's length: its losses and its example
    _, l1, l2, example, tokens = runs[shown]
    if sink_sentences is None:
        from viz.tasks.corpus import sample_corpus

        sink_sentences = sample_corpus().sentences[:DEFAULT_SINK_SENTENCES]
    first = sink_share(bundle, sink_sentences)
    by = {L: dict(runs[L][0], loss_first=runs[L][1], loss_second=runs[L][2]) for L in todo}
    return HeadScores(bundle.name, best["induction"], best["previous"], best["duplicate"], first, seed, shown,
                      sequences, l1, l2, len(sink_sentences), example, tokens, lengths=todo, by_length=by,
                      induction_length=ind_len)
