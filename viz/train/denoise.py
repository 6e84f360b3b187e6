"""BART-style denoising (text infilling) on plain sentences, for small encoder–decoders trained from scratch.

Reference: Lewis et al. 2020, "BART", section 2.2: spans with Poisson(λ=3) lengths are each replaced by ONE
mask token (a 0-length span inserts a mask), until about 30% of the tokens are masked; the decoder
reconstructs the whole original sentence. Sentence permutation and document rotation need multi-sentence
documents: our corpus has one sentence per line, so only infilling is used.

The model is a `BartForConditionalGeneration` over the MiniLM WordPiece vocabulary: [CLS] is BOS and the
decoder start, [SEP] is EOS, [PAD] pads, [MASK] marks a corrupted span.

Shapes: B = batch, S = source (corrupted) length, T = target length; labels [B, T] with -100 at padding.
"""
from __future__ import annotations

import math
import random

import torch

from viz.train import mlm

MASK_RATIO = 0.3  # BART's best infilling setting
SPAN_LAMBDA = 3.0


def poisson(rng: random.Random, lam: float) -> int:
    """One Poisson(lam) draw (Knuth's method; lam is small here)."""
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def infill(ids: list[int], mask_id: int, rng: random.Random, ratio: float = MASK_RATIO,
           lam: float = SPAN_LAMBDA) -> list[int]:
    """Corrupt one encoded sentence ([CLS] w1..wn [SEP]): Poisson-length spans of the words become a single
    `mask_id` each (a 0-length span inserts one) until round(ratio * n) words are covered; the first and last
    ids are kept. Deterministic given `rng`."""
    head, body, tail = ids[:1], ids[1:-1], ids[-1:]
    n = len(body)
    budget = max(1, round(ratio * n)) if n else 0
    hidden = [False] * n
    insert_before: set[int] = set()
    covered, tries = 0, 0
    while covered < budget and tries < 10 * n + 10:
        tries += 1
        length = min(poisson(rng, lam), budget - covered)
        start = rng.randrange(n)
        if length == 0:
            insert_before.add(start)
            continue
        for i in range(start, min(n, start + length)):
            if not hidden[i]:
                hidden[i] = True
                covered += 1
    out = list(head)
    for i, t in enumerate(body):
        if i in insert_before and not hidden[i]:
            out.append(mask_id)
        if hidden[i]:
            if not (i > 0 and hidden[i - 1]):
                out.append(mask_id)  # one mask for the whole span
        else:
            out.append(t)
    return out + list(tail)


def make_batch(encoded: list[list[int]], tokenizer, seed: int) -> dict[str, torch.Tensor]:
    """Encoded sentences -> dict(input_ids [B, S], attention_mask [B, S], labels [B, T]).

    Source: the infilled sentence. Labels: the original without its leading [CLS] (the decoder starts from
    [CLS] = decoder_start_token_id, so it predicts w1 .. wn [SEP]); -100 at padding."""
    rng = random.Random(seed)
    src, mask = mlm.collate([infill(x, tokenizer.mask_token_id, rng) for x in encoded], tokenizer.pad_token_id)
    tgt, tmask = mlm.collate([x[1:] for x in encoded], tokenizer.pad_token_id)
    return dict(input_ids=src, attention_mask=mask, labels=tgt.masked_fill(tmask == 0, -100))


def batch_maker(encoded: list[list[int]], tokenizer, batch_size: int, seed: int):
    """make_batch(k) for `fit_seq2seq`: step k's batch (length-bucketed, as in masked-LM training) and its
    corruption are pure functions of (seed, k)."""
    lengths = [len(x) for x in encoded]

    def make(step: int) -> dict[str, torch.Tensor]:
        idx = mlm.batch_indices(step - 1, batch_size, lengths, seed)
        return make_batch([encoded[i] for i in idx], tokenizer, seed * 1_000_003 + step)

    return make


def build_model(tokenizer, *, d_model: int = 64, layers: int = 2, heads: int = 2, seed: int = 0):
    """A from-scratch `BartForConditionalGeneration` over the tokenizer's vocabulary (eager attention, no
    dropout, embeddings tied), with a generation config that decodes from [CLS] to [SEP]."""
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig

    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    cfg = BartConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model, max_position_embeddings=mlm.MAX_LEN + 16, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, pad_token_id=pad, bos_token_id=cls, eos_token_id=sep,
        decoder_start_token_id=cls, forced_eos_token_id=None, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):  # seeded init without reseeding the process for other sessions
        torch.manual_seed(seed)
        model = BartForConditionalGeneration._from_config(cfg, attn_implementation="eager")
    model.generation_config = GenerationConfig(
        decoder_start_token_id=cls, bos_token_id=cls, eos_token_id=sep, pad_token_id=pad,
        max_length=mlm.MAX_LEN, num_beams=1, do_sample=False)
    return model.eval()
