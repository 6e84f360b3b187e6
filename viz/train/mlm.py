"""Masked-LM training for BERT-style encoders: masking, a resumable training loop, evaluation, CLI.

Works for any `BertForMaskedLM` (the bundled MiniLM with a fresh head, or a tiny random model trained from
scratch by the training studio): nothing here knows about MiniLM except `main`, which builds it.

Reference: Devlin et al. 2019, "BERT", section 3.1 (15% of tokens chosen; 80% [MASK], 10% random, 10% kept).

Shapes: B = batch, T = padded sequence length, M = number of masked positions in the batch, V = vocab size.
"""
from __future__ import annotations

import argparse
import gzip
import math
import os
import sys
import time
from collections import Counter
from typing import Callable

import torch
import torch.nn.functional as F

IGNORE = -100  # label value that cross_entropy ignores
EVAL_SEED = 0  # one fixed held-out masking, whatever the training seed, so runs are comparable
MAX_LEN = 64  # sentences are short; longer ones are truncated (the corpus median is ~12 tokens)


# ----------------------------------------------------------------------------------------------- data
def read_sentences(path: str) -> list[str]:
    """One sentence per line; `.gz` is read transparently. Blank lines dropped."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def encode(tokenizer, sentences: list[str], max_len: int = MAX_LEN) -> list[list[int]]:
    """Tokenize once up front: list of id lists with [CLS] ... [SEP], truncated to max_len."""
    return tokenizer(sentences, truncation=True, max_length=max_len)["input_ids"]


def collate(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest in the batch. Returns input_ids [B, T] long and attention_mask [B, T] long."""
    t = max(len(x) for x in ids)
    out = torch.full((len(ids), t), pad_id, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x)
    return out, (out != pad_id).long()


def token_counts(encoded: list[list[int]], vocab_size: int) -> torch.Tensor:
    """Unigram counts [V] float over encoded sentences (specials included; they are never labels)."""
    c = Counter(i for x in encoded for i in x)
    counts = torch.zeros(vocab_size)
    counts[list(c.keys())] = torch.tensor(list(c.values()), dtype=torch.float)
    return counts


def init_output_bias(model, counts: torch.Tensor) -> None:
    """Set the MLM output bias to log unigram frequencies (add-0.5 smoothed).

    Why: a zero bias starts the head at uniform over 30k tokens; the log-prior starts it at the
    word-frequency baseline, so the first hundreds of steps learn context instead of frequencies.
    """
    p = (counts + 0.5) / (counts + 0.5).sum()
    with torch.no_grad():
        model.get_output_embeddings().bias.copy_(p.log())


# ----------------------------------------------------------------------------------------------- masking
def mask_tokens(input_ids: torch.Tensor, tokenizer, generator: torch.Generator, prob: float = 0.15,
                mask_all: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking. input_ids [B, T] long -> (masked_ids [B, T], labels [B, T]) with labels = IGNORE where
    the token was not chosen. Special tokens and padding are never chosen. Of the chosen: 80% -> [MASK],
    10% -> a random non-special token, 10% unchanged. `mask_all=True` (evaluation) puts [MASK] on all chosen.
    At least one token per batch is chosen when any is maskable, so the loss is never an empty mean (NaN).
    """
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    maskable = ~torch.isin(input_ids, special)  # [B, T] bool; padding is the [PAD] special
    chosen = (torch.rand(input_ids.shape, generator=generator) < prob) & maskable
    if not chosen.any() and maskable.any():
        flat = maskable.flatten().nonzero().squeeze(1)
        pick = flat[torch.randint(len(flat), (1,), generator=generator)]
        chosen.view(-1)[pick] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    masked = input_ids.clone()
    u = torch.rand(input_ids.shape, generator=generator)  # one draw decides mask / random / keep
    to_mask = chosen & (u < 0.8) if not mask_all else chosen
    masked[to_mask] = tokenizer.mask_token_id
    if not mask_all:
        to_random = chosen & (u >= 0.8) & (u < 0.9)
        # Random replacements come from the non-special vocab so [CLS]/[SEP]/[PAD] never appear mid-sentence.
        allowed = torch.ones(len(tokenizer), dtype=torch.bool)
        allowed[special] = False
        pool = allowed.nonzero().squeeze(1)
        rnd = pool[torch.randint(len(pool), input_ids.shape, generator=generator)]
        masked[to_random] = rnd[to_random]
    return masked, labels


# ----------------------------------------------------------------------------------------------- model
def masked_logits(model, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [M, V] and targets [M] only at masked positions.

    Why not `model(labels=...)`: the 384x30522 decoder costs as much as the whole 6-layer encoder per token;
    running it on the 15% masked positions only roughly halves a training step.
    """
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, H]
    sel = labels != IGNORE  # [B, T]
    return model.cls(hidden[sel]), labels[sel]


def trainable_groups(model, unfreeze_layers: int | None, lr_head: float, lr_encoder: float) -> list[dict]:
    """Freeze/unfreeze and build AdamW groups.

    unfreeze_layers=None: train everything (a model trained from scratch). An int K: train the MLM head and the
    top K encoder layers; embeddings stay frozen because the decoder is tied to them (so a delta stays small).
    """
    base = model.base_model
    layers = base.encoder.layer
    for p in model.parameters():
        p.requires_grad = unfreeze_layers is None
    head = [p for n, p in model.named_parameters() if n.startswith("cls.")]  # decoder weight is tied: not listed
    if unfreeze_layers is None:
        head_ids = {id(p) for p in head}
        enc = [p for p in model.parameters() if id(p) not in head_ids]
    else:
        enc = [p for layer in list(layers)[len(layers) - unfreeze_layers:] for p in layer.parameters()] \
            if unfreeze_layers > 0 else []
    for p in head + enc:
        p.requires_grad = True
    groups = [{"params": head, "lr": lr_head, "name": "head"}]
    if enc:
        groups.append({"params": enc, "lr": lr_encoder, "name": "encoder"})
    return groups


def _bf16_default(device: torch.device) -> bool:
    """bfloat16 autocast on every CUDA GPU we target; on CPU only where it is faster."""
    return device.type == "cuda" or (device.type == "cpu" and bf16_is_faster())


def bf16_is_faster() -> bool:
    """bfloat16 autocast pays off only where the CPU has bf16 matmul units (AVX512-BF16 / AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return torch.backends.mkldnn.is_available() and ("avx512_bf16" in flags or "amx_bf16" in flags)


# ----------------------------------------------------------------------------------------------- evaluation
@torch.inference_mode()
def evaluate_mlm(model, tokenizer, sentences: list[str], seed: int = 0, *, batch_size: int = 128,
                 frequent_ids: torch.Tensor | None = None, bf16: bool | None = None) -> dict:
    """Top-1/top-5 accuracy at a FIXED masking of held-out sentences (same sentences + seed -> same masks).

    Every chosen token is replaced by [MASK] (no 80/10/10), so the figure answers "can it fill a blank".
    content_* counts only targets outside `frequent_ids` (default: the 100 most frequent ids in `sentences`),
    which exposes a model that only predicts "the", "," and ".". Returns dict(top1, top5, content_top1,
    content_top5, n, n_content) with accuracies in [0, 1].
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    bf16 = _bf16_default(device) if bf16 is None else bf16
    enc = sorted(encode(tokenizer, sentences), key=len)  # stable: deterministic, and batches barely need padding
    if frequent_ids is None:
        frequent_ids = token_counts(enc, len(tokenizer)).topk(100).indices
    gen = torch.Generator().manual_seed(seed)
    hits = torch.zeros(2, 2)  # [overall|content, top1|top5]
    n = torch.zeros(2)
    for i in range(0, len(enc), batch_size):
        ids, attn = collate(enc[i:i + batch_size], tokenizer.pad_token_id)
        masked, labels = mask_tokens(ids, tokenizer, gen, mask_all=True)  # masks drawn on the CPU: same anywhere
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, target = masked_logits(model, masked.to(device), attn.to(device), labels.to(device))
        top5 = logits.float().topk(5, dim=-1).indices.cpu()  # [M, 5]
        target = target.cpu()
        ok1 = top5[:, 0] == target
        ok5 = (top5 == target[:, None]).any(-1)
        content = ~torch.isin(target, frequent_ids)
        hits[0] += torch.stack([ok1.sum(), ok5.sum()]).float()
        hits[1] += torch.stack([(ok1 & content).sum(), (ok5 & content).sum()]).float()
        n += torch.tensor([len(target), content.sum().item()], dtype=torch.float)
    model.train(was_training)
    acc = hits / n.clamp(min=1)[:, None]
    return dict(top1=acc[0, 0].item(), top5=acc[0, 1].item(), content_top1=acc[1, 0].item(),
                content_top5=acc[1, 1].item(), n=int(n[0]), n_content=int(n[1]))


# ----------------------------------------------------------------------------------------------- training
def _stream(start: int, count: int, n: int, seed: int) -> list[int]:
    """Positions start..start+count of an endless stream of sentence indices: a fresh permutation per epoch."""
    out, pos = [], start
    while len(out) < count:
        epoch, off = divmod(pos, n)
        perm = _perm(n, seed * 7919 + epoch)
        take = perm[off: off + count - len(out)]
        out += take
        pos += len(take)
    return out


_PERM_CACHE: dict[tuple[int, int], list[int]] = {}


def _perm(n: int, seed: int) -> list[int]:
    if (n, seed) not in _PERM_CACHE:
        _PERM_CACHE.clear()  # one epoch at a time is enough
        _PERM_CACHE[(n, seed)] = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return _PERM_CACHE[(n, seed)]


def batch_indices(step: int, batch_size: int, lengths: list[int], seed: int, bucket: int = 50) -> list[int]:
    """Indices of the step's batch, a pure function of (step, seed), so a resumed run sees exactly the
    batches an uninterrupted one would.

    Length bucketing: `bucket` batches' worth of the shuffled stream is sorted by length and cut into batches,
    whose order is shuffled. Why: sentences run 3-64 tokens (mean ~16); padding random batches to their longest
    wastes about two thirds of the compute.
    """
    chunk, j = divmod(step, bucket)
    idx = _stream(chunk * bucket * batch_size, bucket * batch_size, len(lengths), seed)
    idx.sort(key=lambda i: lengths[i])
    order = torch.randperm(bucket, generator=torch.Generator().manual_seed(seed * 104729 + chunk)).tolist()
    b = order[j]
    return idx[b * batch_size: (b + 1) * batch_size]


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0 at `steps`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))


def load_state(path: str | None, model, opt) -> dict | None:
    """Restore model + optimizer from a training checkpoint at `path` (if there is one) -> its state dict."""
    if not path or not os.path.exists(path):
        return None
    ck = torch.load(path, weights_only=False)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    return ck["state"]


def start_state(out_dir, model, opt, resume: bool) -> tuple[str | None, dict]:
    """(checkpoint path out_dir/state.pt or None, the loop's state): restored from that checkpoint when
    `resume` and it exists, else a fresh state at step 0."""
    path = os.path.join(out_dir, "state.pt") if out_dir else None
    state = load_state(path, model, opt) if resume else None
    return path, state or dict(step=0, elapsed_s=0.0, tokens=0, curve=[])


def save_state(path: str | None, model, opt, state: dict) -> None:
    """Write model + optimizer + state to `path` atomically (never a half-written checkpoint); None: skip."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        torch.save(dict(model=model.state_dict(), optimizer=opt.state_dict(), state=state), path + ".tmp")
        os.replace(path + ".tmp", path)


def train_mlm(model, tokenizer, train_sentences: list[str], eval_sentences: list[str] | None, *, steps: int,
              batch_size: int = 64, lr_head: float = 1e-3, lr_encoder: float = 1e-4,
              unfreeze_layers: int | None = None, seed: int = 0, out_dir: str | None = None,
              eval_every: int = 0, on_progress: Callable[[dict], None] | None = None,
              should_stop: Callable[[], bool] | None = None, resume: bool = True, warmup: int | None = None,
              bf16: bool | None = None, threads: int = 1, device: str | torch.device = "cpu",
              fit_minutes: float | None = None) -> dict:
    """Train `model` (a BertForMaskedLM) in place; returns the final state summary dict.

    Deterministic given `seed`: batch order and masks are functions of (seed, step). If `out_dir` is given the
    loop checkpoints model + optimizer + step + elapsed time + curve to `out_dir/state.pt` after each evaluation
    and when it stops, and (resume=True) continues from it. on_progress gets dict(step, steps, loss, elapsed_s,
    tokens_per_s, eval_top1, eval_top5, ...) after every step (eval_* only on evaluation steps, else None).
    should_stop() is polled every step; returning True checkpoints and returns early.

    fit_minutes: size the schedule to a time budget instead of trusting `steps`: after the warm-up the loop
    measures its own step rate and sets steps = what fits in `fit_minutes` of training (kept in the checkpoint,
    so a resume keeps it; rerunning with `--steps <that number>` repeats the run exactly). Why: on an unknown
    machine (a lent GPU) a guessed `steps` either stops mid-schedule at full learning rate or ends early.
    """
    # Why 1 thread by default: on the shared 2-core machine (load ~6) a 2-thread step ran at 73-615 tok/s against
    # 570-1390 tok/s with 1 thread, measured interleaved: OpenMP barriers stall whenever a thread is descheduled.
    torch.set_num_threads(threads)
    device = torch.device(device)
    bf16 = _bf16_default(device) if bf16 is None else bf16
    if fit_minutes:
        steps = 2**62  # placeholder until the warm-up has measured the step rate (default warm-up: 100)
    warmup = min(100, max(1, steps // 10)) if warmup is None else warmup
    model.to(device)
    groups = trainable_groups(model, unfreeze_layers, lr_head, lr_encoder)
    opt = torch.optim.AdamW(groups, weight_decay=0.01, fused=device.type == "cuda")
    base_lrs = [g["lr"] for g in groups]
    enc = encode(tokenizer, train_sentences)
    lengths = [len(x) for x in enc]
    path, state = start_state(out_dir, model, opt, resume)
    if state.get("fitted"):
        steps = state["steps"]  # a resumed run keeps the schedule it was fitted to
    state["steps"] = steps
    model.train()
    t0, elapsed0, tokens0 = time.perf_counter(), state["elapsed_s"], state["tokens"]
    loss_ema = None
    while state["step"] < steps:
        step = state["step"]
        if fit_minutes and step == warmup and not state.get("fitted"):
            rate = step / max(1e-9, state["elapsed_s"])  # steps per second, warm-up steps included
            # 3% spare: evaluations and checkpoints are not training time, but a caller's deadline counts them
            steps = state["steps"] = max(step + 1, int(rate * fit_minutes * 60 * 0.97))
            state["fitted"] = True
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * lr_factor(step, steps, warmup)
        ids, attn = collate([enc[i] for i in batch_indices(step, batch_size, lengths, seed)],
                            tokenizer.pad_token_id)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)  # masks: a pure function of (seed, step)
        masked, labels = mask_tokens(ids, tokenizer, gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, target = masked_logits(model, masked.to(device), attn.to(device), labels.to(device))
        loss = F.cross_entropy(logits.float(), target)  # fp32 softmax over 30k classes
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        state["step"] = step + 1
        state["tokens"] += int(attn.sum())
        state["elapsed_s"] = elapsed0 + time.perf_counter() - t0
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        info = dict(step=state["step"], steps=steps, loss=loss.item(), loss_ema=loss_ema,
                    elapsed_s=state["elapsed_s"],
                    tokens_per_s=(state["tokens"] - tokens0) / max(1e-9, time.perf_counter() - t0),
                    eval_top1=None, eval_top5=None)
        stop = bool(should_stop and should_stop())
        last = state["step"] == steps or stop
        if eval_sentences and ((eval_every and state["step"] % eval_every == 0) or last):
            t_eval = time.perf_counter()
            ev = evaluate_mlm(model, tokenizer, eval_sentences, EVAL_SEED, bf16=bf16)
            t0 += time.perf_counter() - t_eval  # evaluation time is not training time
            info.update(eval_top1=ev["top1"], eval_top5=ev["top5"], eval=ev)
            state["curve"].append(dict(step=state["step"], minutes=state["elapsed_s"] / 60, loss=loss_ema, **ev))
            save_state(path, model, opt, state)
        elif last:
            save_state(path, model, opt, state)
        if on_progress:
            on_progress(info)
        if stop:
            break
    model.eval()
    return state


# ----------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m viz train mlm` (checked by argparse: viz/cli/common.py)."""
    from viz.core.checks import (device, input_file, non_negative_float, non_negative_int, output_dir,
                                 positive_float, positive_int, probability)

    from viz.core.paths import CORPUS

    parser.add_argument("--train", type=input_file, default=str(CORPUS / "train.txt.gz"))
    parser.add_argument("--test", type=input_file, default=str(CORPUS / "test.txt"))
    parser.add_argument("--steps", type=non_negative_int, default=3000,
                        help="schedule length (cosine decay ends here); 0 with --minutes: fit it to the minutes")
    parser.add_argument("--minutes", type=positive_float, default=None,
                        help="stop (resumably) after this much training")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr-head", type=non_negative_float, default=1e-3)
    parser.add_argument("--lr-encoder", type=non_negative_float, default=1e-4)
    parser.add_argument("--unfreeze", type=non_negative_int, default=6,
                        help="top encoder layers to train (0 = head only)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--eval-every", type=positive_int, default=500)
    parser.add_argument("--eval-n", type=positive_int, default=2000, help="held-out sentences used for the curve")
    parser.add_argument("--out", type=output_dir, default="runs/minilm-mlm", help="checkpoint dir (state.pt, delta)")
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads; 1 is faster on a busy machine")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda, or auto (cuda when there is one)")
    parser.add_argument("--warmup", type=non_negative_int, default=None,
                        help="warm-up steps (default: 10%% of steps, <= 100)")
    parser.add_argument("--dropout", type=probability, default=0.0,
                        help="hidden and attention dropout while training (0: short CPU runs learn faster)")
    parser.add_argument("--init", type=input_file, default=None,
                        help="start from this delta (e.g. models/minilm-mlm/delta.safetensors) instead of a fresh "
                             "head; a fresh optimizer and schedule (a warm start, not a resume)")


def run_device(args: argparse.Namespace) -> str | None:
    """The device a training run uses (`--device auto` resolved), or None after a one-line error on stderr
    (`--steps 0` without `--minutes`, or CUDA asked for where torch sees none). Shared by the training CLIs."""
    if args.steps == 0 and not args.minutes:
        print("--steps 0 fits the schedule to --minutes: give --minutes too", file=sys.stderr)
        return None
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {device}: this torch sees no CUDA GPU; use --device cpu (or auto)", file=sys.stderr)
        return None
    return device


def main(args: argparse.Namespace) -> int:
    """Train the MiniLM masked-LM; write out/state.pt, out/delta.safetensors and out/curve.tsv."""
    from viz.core.delta import apply_delta, build_minilm_mlm, save_delta, minilm_dir

    device = run_device(args)
    if device is None:
        return 2
    model, tok = build_minilm_mlm(dropout=args.dropout)
    train = read_sentences(args.train)
    test = read_sentences(args.test)[: args.eval_n]
    if args.init:
        apply_delta(model, args.init)  # overwritten by a resumed state, like the bias below
    else:
        init_output_bias(model, token_counts(encode(tok, train), len(tok)))  # overwritten by a resumed state
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None

    def progress(p: dict) -> None:
        if p["eval_top1"] is not None or p["step"] % 20 == 0 or p["step"] == p["steps"]:
            ev = f" | eval top1 {p['eval_top1']:.3f} top5 {p['eval_top5']:.3f}" if p["eval_top1"] is not None else ""
            print(f"\rstep {p['step']}/{p['steps']} loss {p['loss_ema']:.3f} {p['elapsed_s'] / 60:.1f} min "
                  f"{p['tokens_per_s']:.0f} tok/s{ev}", end="\n" if ev else "", file=sys.stderr, flush=True)

    state = train_mlm(model, tok, train, test, steps=args.steps, batch_size=args.batch_size,
                      lr_head=args.lr_head, lr_encoder=args.lr_encoder, unfreeze_layers=args.unfreeze,
                      seed=args.seed, out_dir=args.out, eval_every=args.eval_every, on_progress=progress,
                      should_stop=(lambda: time.monotonic() > deadline) if deadline else None,
                      resume=not args.no_resume, bf16=False if args.no_bf16 else None,
                      threads=args.threads, device=device, warmup=args.warmup,
                      fit_minutes=args.minutes if args.steps == 0 else None)
    print(file=sys.stderr)
    save_delta(model, minilm_dir(), os.path.join(args.out, "delta.safetensors"))
    with open(os.path.join(args.out, "curve.tsv"), "w") as f:
        keys = ["step", "minutes", "loss", "top1", "top5", "content_top1", "content_top5", "n"]
        f.write("\t".join(keys) + "\n")
        for row in state["curve"]:
            f.write("\t".join(f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys) + "\n")
    print(f"done: step {state['step']}/{state['steps']}, {state['elapsed_s'] / 60:.1f} min on {device} "
          f"-> {args.out}", file=sys.stderr)
    return 0
