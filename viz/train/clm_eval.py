"""Held-out next-token figures of a causal LM and the n-gram baselines they are compared with.

Every figure is computed on the same targets: all next-token positions 1..W-1 of the test windows
(`viz.train.clm.pack` of the test sentences in file order), so the model, the unigram and the bigram
baselines answer exactly the same questions.

Shapes: N = windows, W = window length, V = vocabulary size.
"""
from __future__ import annotations

import math

import torch

from viz.train.mlm import _bf16_default


@torch.inference_mode()
def evaluate_clm(model, windows: torch.Tensor, *, batch_size: int = 16, bf16: bool | None = None) -> dict:
    """Next-token loss (nats), perplexity, top-1 and top-5 accuracy of `model` on windows [N, W] long.
    -> dict(loss, ppl, top1, top5, n) over the N * (W - 1) predicted positions."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    bf16 = _bf16_default(device) if bf16 is None else bf16
    nll, hit1, hit5, n = 0.0, 0, 0, 0
    for i in range(0, len(windows), batch_size):
        ids = windows[i:i + batch_size].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids).logits[:, :-1]
        logits = logits.float().flatten(0, 1)  # [B*(W-1), V]
        target = ids[:, 1:].flatten()
        nll += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
        top5 = logits.topk(5, dim=-1).indices
        hit1 += int((top5[:, 0] == target).sum())
        hit5 += int((top5 == target[:, None]).any(-1).sum())
        n += len(target)
    model.train(was_training)
    loss = nll / max(1, n)
    return dict(loss=loss, ppl=math.exp(loss), top1=hit1 / max(1, n), top5=hit5 / max(1, n), n=n)


def ngram_counts(encoded: list[list[int]], vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unigram counts [V] and bigram counts [V, V] (float64) over training sentences as they are packed:
    each sentence [<|endoftext|>, ids...] follows the previous one, so the pair (last token, separator) counts
    as it does in a window."""
    flat = torch.tensor([t for x in encoded for t in x], dtype=torch.long)
    uni = torch.bincount(flat, minlength=vocab_size).double()
    pairs = flat[:-1] * vocab_size + flat[1:]
    bi = torch.bincount(pairs, minlength=vocab_size * vocab_size).double().view(vocab_size, vocab_size)
    return uni, bi


def ngram_baselines(encoded_train: list[list[int]], windows: torch.Tensor, vocab_size: int,
                    lambdas=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)) -> dict:
    """Unigram and bigram next-token figures on the targets of windows [N, W], from training counts.

    unigram: p(t) = (c(t) + 1) / (n + V) (add-one). bigram: interpolated with the unigram,
    p(t | s) = lam * c(s, t) / c(s) + (1 - lam) * p_uni(t) (Jelinek & Mercer 1980); top-k ranks by that
    same p. lam is chosen among `lambdas` by the lowest loss ON THESE TARGETS, which favours the baseline:
    a model that beats it beats every bigram of that family. -> dict(unigram=..., bigram=..., lam) with
    each figure dict(loss, ppl, top1, top5, n) as evaluate_clm returns.
    """
    uni, bi = ngram_counts(encoded_train, vocab_size)
    p_uni = (uni + 1) / (uni.sum() + vocab_size)  # [V]
    prev, target = windows[:, :-1].flatten(), windows[:, 1:].flatten()
    n = len(target)
    top_uni = p_uni.topk(5).indices
    out = {"unigram": dict(loss=-p_uni[target].log().mean().item(), top1=(target == top_uni[0]).double().mean().item(),
                           top5=torch.isin(target, top_uni).double().mean().item(), n=n)}
    row_tot = bi.sum(1, keepdim=True)  # [V, 1]
    best = None
    for lam in lambdas:
        nll = 0.0
        for i in range(0, n, 65536):  # [chunk, V] rows of the conditional table at a time
            s, t = prev[i:i + 65536], target[i:i + 65536]
            p = lam * bi[s] / row_tot[s].clamp(min=1) + (1 - lam) * p_uni  # [chunk, V]
            p = torch.where(row_tot[s] > 0, p, p_uni)  # an unseen previous token: unigram alone
            nll -= p.gather(1, t[:, None]).log().sum().item()
        if best is None or nll < best[1]:
            best = (lam, nll)
    lam = best[0]
    hit1 = hit5 = 0
    for i in range(0, n, 65536):
        s, t = prev[i:i + 65536], target[i:i + 65536]
        p = torch.where(row_tot[s] > 0, lam * bi[s] / row_tot[s].clamp(min=1) + (1 - lam) * p_uni, p_uni)
        top5 = p.topk(5, dim=-1).indices
        hit1 += int((top5[:, 0] == t).sum())
        hit5 += int((top5 == t[:, None]).any(-1).sum())
    out["bigram"] = dict(loss=best[1] / n, top1=hit1 / n, top5=hit5 / n, n=n)
    for v in out.values():
        v["ppl"] = math.exp(v["loss"])
    out["lam"] = lam
    return out
