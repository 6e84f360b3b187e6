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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from viz.core.arch import DECODER
from viz.core.errors import CaptureError
from viz.core.models import ModelBundle

DEFAULT_SEQUENCES = 10
DEFAULT_LENGTH = 50
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
        first_token, seed, length, sequences, loss_first_copy, loss_second_copy."""
        r = lambda a: np.round(a.astype(float), digits).tolist()  # noqa: E731
        return {"layers": self.n_layers, "heads": self.n_heads, "induction": r(self.induction),
                "previous": r(self.previous), "duplicate": r(self.duplicate), "first_token": r(self.first),
                "seed": self.seed, "length": self.length, "sequences": self.sequences,
                "loss_first_copy": round(self.loss_first, digits), "loss_second_copy": round(self.loss_second, digits),
                "sink_sentences": self.sink_sentences}


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


def head_scores(bundle: ModelBundle, *, seed: int = 0, length: int = DEFAULT_LENGTH,
                sequences: int = DEFAULT_SEQUENCES, sink_sentences: list[str] | None = None) -> HeadScores:
    """All four scores of every head of a decoder. `sink_sentences` default: the first 64 bundled sample
    sentences (data/sample_sentences.txt)."""
    if seed < 0 or length < 2 or sequences < 1:
        raise HeadScoreError("seed must be >= 0, length >= 2 and sequences >= 1")
    scores, l1, l2, example, tokens = repeat_scores(bundle, seed=seed, length=length, sequences=sequences)
    if sink_sentences is None:
        from viz.tasks.corpus import sample_corpus

        sink_sentences = sample_corpus().sentences[:DEFAULT_SINK_SENTENCES]
    first = sink_share(bundle, sink_sentences)
    return HeadScores(bundle.name, scores["induction"], scores["previous"], scores["duplicate"], first, seed, length,
                      sequences, l1, l2, len(sink_sentences), example, tokens)
