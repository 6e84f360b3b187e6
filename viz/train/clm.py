"""Causal-LM training for small Llama-architecture decoders: tokenizer, packed windows, a resumable loop, CLI.

`python -m viz train clm` trains the shipped `atlas-lm` from scratch on the bundled corpus: a byte-level BPE
tokenizer learned on the training split, sentences packed into fixed windows (so a context holds several
sentences), a `LlamaForCausalLM` (RoPE, RMSNorm, SwiGLU, grouped key/value heads) and the masked-LM loop's
resumable state, device handling and time-fitted cosine schedule (`--steps 0 --minutes M`).

Evaluation (`evaluate_clm`) and the n-gram baselines it is compared with live in viz/train/clm_eval.py.

Shapes: B = batch, W = window length in tokens, V = vocabulary size.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from viz.core.checks import non_negative_int, positive_float, positive_int, probability
from viz.train.mlm import _bf16_default, lr_factor, read_sentences, run_device, save_state, start_state

SEP = "<|endoftext|>"  # begins every sentence: BOS for a typed prompt, the separator inside a packed window
PAD = "<pad>"
WINDOW = 256


# ----------------------------------------------------------------------------------------------- tokenizer
def build_tokenizer(sentences: list[str], vocab_size: int = 8192):
    """A byte-level BPE (GPT-2 style pre-tokenizer, no unknown tokens) learned on `sentences`, wrapped as a
    `PreTrainedTokenizerFast` that prepends <|endoftext|> to every text it encodes (the model always saw
    that token before a sentence, so a typed prompt looks like training data and the sink has a home)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[SEP, PAD], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(sentences, trainer=trainer)
    sep = tok.token_to_id(SEP)
    tok.post_processor = processors.TemplateProcessing(single=f"{SEP} $A", pair=f"{SEP} $A {SEP} $B",
                                                       special_tokens=[(SEP, sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SEP, eos_token=SEP, pad_token=PAD,
                                   model_max_length=WINDOW, clean_up_tokenization_spaces=False)


def encode_sentences(tokenizer, sentences: list[str]) -> list[list[int]]:
    """Each sentence -> [<|endoftext|>, ids...] (the post-processor adds the separator)."""
    backend = tokenizer.backend_tokenizer
    return [e.ids for e in backend.encode_batch(sentences, add_special_tokens=True)]


# ----------------------------------------------------------------------------------------------- packing
def pack(encoded: list[list[int]], order: list[int], window: int = WINDOW, repeat_frac: float = 0.0,
         seed: int = 0) -> torch.Tensor:
    """Whole sentences, taken in `order`, laid end to end into windows of exactly `window` tokens -> [N, W] long.

    Every window starts at a sentence's <|endoftext|> (as a typed prompt does); the sentence that does not fit
    at a window's end fills it, truncated, and is not repeated (about 3% of tokens at W = 256). A sentence
    longer than a window is cut to one window.

    repeat_frac > 0: after each sentence, with that probability (random.Random(seed)), a copy of a sentence
    already in the current window follows it. Why: the bundled corpus is shuffled sentences without documents,
    so a context almost never repeats anything, while real text (names, phrases, quoted lines) does. Measured
    here: atlas-lm (trained without repeats) formed no induction head (best score 0.015), and 200 warm-started
    steps with repeat_frac 0.2 or 0.5 (lr 1e-3 / 1.5e-3) formed none either: copying from context is learned
    far later on text than on the studio's repeated random tokens.
    """
    rng = random.Random(seed)
    out, cur, placed = [], [], []
    queue = list(order)[::-1]
    while queue:
        i = queue.pop()
        ids = encoded[i if i >= 0 else ~i][:window]
        room = window - len(cur)
        if len(ids) >= room:
            cur += ids[:room]
            out.append(cur)
            cur, placed = [], []
            continue
        cur += ids
        if i >= 0:  # an original (a copy, marked by ~index, never triggers another copy)
            placed.append(i)
            if repeat_frac and rng.random() < repeat_frac:
                queue.append(~placed[rng.randrange(len(placed))])
    return torch.tensor(out, dtype=torch.long) if out else torch.zeros(0, window, dtype=torch.long)


class Windows:
    """The training stream: epoch e is the corpus shuffled with seed (seed, e) and packed; batch k is a pure
    function of (seed, k), so a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, encoded: list[list[int]], batch_size: int, seed: int, window: int = WINDOW,
                 repeat_frac: float = 0.0):
        self.encoded, self.batch_size, self.seed, self.window = encoded, batch_size, seed, window
        self.repeat_frac = repeat_frac
        self._epoch: tuple[int, torch.Tensor] | None = None
        self.per_epoch = len(self._windows(0)) // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"the corpus fills fewer than {batch_size} windows of {window} tokens: "
                             "give more text or a smaller batch")

    def _windows(self, epoch: int) -> torch.Tensor:
        if self._epoch is None or self._epoch[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            order = torch.randperm(len(self.encoded), generator=g).tolist()
            self._epoch = (epoch, pack(self.encoded, order, self.window, self.repeat_frac, self.seed * 7919 + epoch))
        return self._epoch[1]

    def batch(self, step: int) -> torch.Tensor:
        """Input ids [B, W] for 0-based `step`."""
        epoch, k = divmod(step, self.per_epoch)
        return self._windows(epoch)[k * self.batch_size:(k + 1) * self.batch_size]


# ----------------------------------------------------------------------------------------------- model
def build_decoder(vocab_size: int, *, d_model: int = 256, layers: int = 4, heads: int = 8, kv_heads: int = 4,
                  ffn: int | None = None, max_len: int = WINDOW, bos_id: int = 0, pad_id: int = 1,
                  seed: int = 0, tie: bool = True):
    """A from-scratch `LlamaForCausalLM`: RoPE, RMSNorm, SwiGLU MLP (ffn default: 8/3 d_model rounded up to
    a multiple of 64), `kv_heads` key/value heads shared by `heads` query heads, input and output
    embeddings tied (the embedding is most of a small model), no dropout, eager attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if d_model % heads or heads % kv_heads:
        raise ValueError(f"d_model {d_model} must divide into {heads} heads, and {heads} heads into "
                         f"{kv_heads} key/value groups")
    ffn = ffn or -(-d_model * 8 // 3 // 64) * 64
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=ffn,
                      max_position_embeddings=max_len, rms_norm_eps=1e-5, tie_word_embeddings=tie,
                      bos_token_id=bos_id, eos_token_id=bos_id, pad_token_id=pad_id, attention_dropout=0.0,
                      initializer_range=0.02)
    torch.manual_seed(seed)
    return LlamaForCausalLM._from_config(cfg, attn_implementation="eager")


def lm_loss(model, ids: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of ids [B, W] (fp32 softmax)."""
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids).logits[:, :-1]  # [B, W-1, V]
    return F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())


# ----------------------------------------------------------------------------------------------- training
def train_clm(model, batches: Callable[[int], torch.Tensor], *, steps: int, lr: float = 2e-3,
              warmup: int | None = None, weight_decay: float = 0.1, out_dir: str | None = None,
              resume: bool = True, evaluate_fn: Callable[[object], dict] | None = None, eval_every: int = 0,
              on_progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
              bf16: bool | None = None, threads: int = 1, device: str | torch.device = "cpu",
              fit_minutes: float | None = None, loss_fn: Callable | None = None) -> dict:
    """Train a causal LM in place on `batches(step)` -> ids [B, W]; returns the loop's state dict.

    The masked-LM loop's contract (viz.train.mlm.train_mlm): checkpoint out_dir/state.pt after every
    evaluation and when stopping, resume from it, `fit_minutes` sizes the cosine schedule to a time budget
    after the warm-up (kept in the checkpoint), evaluation time is not training time. AdamW betas 0.9/0.95,
    decay on matrices only, clip 1.0. evaluate_fn(model) -> dict with at least `loss`; on_progress gets
    dict(step, steps, loss, loss_ema, lr, elapsed_s, tokens_per_s, eval) every step (eval None off-evaluation).
    loss_fn(model, ids, bf16) -> scalar replaces `lm_loss` (the studio's repeated-tokens task counts only the
    repeated half).
    """
    torch.set_num_threads(threads)
    device = torch.device(device)
    bf16 = _bf16_default(device) if bf16 is None else bf16
    if fit_minutes:
        steps = 2**62  # placeholder until the warm-up has measured the step rate
    warmup = min(200, max(1, steps // 10)) if warmup is None else warmup
    model.to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")
    path, state = start_state(out_dir, model, opt, resume)
    if state.get("fitted"):
        steps = state["steps"]
    state["steps"] = steps
    model.train()
    t0, elapsed0, tokens0 = time.perf_counter(), state["elapsed_s"], state["tokens"]
    loss_ema = state.get("loss_ema")
    while state["step"] < steps:
        step = state["step"]
        if fit_minutes and step == warmup and not state.get("fitted"):
            rate = step / max(1e-9, state["elapsed_s"])
            steps = state["steps"] = max(step + 1, int(rate * fit_minutes * 60 * 0.97))  # 3% for evaluations
            state["fitted"] = True
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(step, steps, warmup)
        ids = batches(step).to(device)
        loss = (loss_fn or lm_loss)(model, ids, bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()  # as train_mlm
        state.update(step=step + 1, tokens=state["tokens"] + ids.numel(), loss_ema=loss_ema,
                     elapsed_s=elapsed0 + time.perf_counter() - t0)
        info = dict(step=state["step"], steps=steps, loss=loss.item(), loss_ema=loss_ema,
                    lr=opt.param_groups[0]["lr"], elapsed_s=state["elapsed_s"],
                    tokens_per_s=(state["tokens"] - tokens0) / max(1e-9, time.perf_counter() - t0), eval=None)
        stop = bool(should_stop and should_stop())
        last = state["step"] == steps or stop
        if evaluate_fn is not None and ((eval_every and state["step"] % eval_every == 0) or last):
            t_eval = time.perf_counter()
            ev = evaluate_fn(model)
            model.train()
            t0 += time.perf_counter() - t_eval  # evaluation time is not training time
            info["eval"] = ev
            state["curve"].append(dict(step=state["step"], minutes=state["elapsed_s"] / 60, train_loss=loss_ema,
                                       tokens=state["tokens"], **ev))
            save_state(path, model, opt, state)
        elif last:
            save_state(path, model, opt, state)
        if on_progress:
            on_progress(info)
        if stop:
            break
    model.eval()
    return state


# ----------------------------------------------------------------------------------------------- saving
def save_decoder(model, tokenizer, info: dict, out_dir: str | Path) -> Path:
    """A normal Hugging Face folder: fp16 safetensors (config says float32, so a plain `from_pretrained`
    upcasts), tokenizer files and training.json (recipe, curve, figures)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = next(model.parameters()).dtype
    model.to(torch.float16).save_pretrained(out)
    model.to(dtype)
    cfg = json.loads((out / "config.json").read_text())
    cfg["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


# ----------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m viz train clm`."""
    from viz.core.paths import CORPUS

    pos_int, pos_float = positive_int, positive_float
    parser.add_argument("--train", default=str(CORPUS / "train.txt.gz"))
    parser.add_argument("--test", default=str(CORPUS / "test.txt"))
    parser.add_argument("--steps", type=non_negative_int, default=2000,
                        help="schedule length (cosine decay ends here); 0 with --minutes: fit it to the minutes")
    parser.add_argument("--minutes", type=pos_float, default=None, help="stop (resumably) after this much training")
    parser.add_argument("--batch-size", type=pos_int, default=16, help="windows per step")
    parser.add_argument("--window", type=pos_int, default=WINDOW, help="tokens per packed window")
    parser.add_argument("--vocab-size", type=pos_int, default=8192, help="byte-level BPE size (new tokenizer)")
    parser.add_argument("--tokenizer", default=None, help="use this tokenizer folder instead of training one")
    parser.add_argument("--d-model", type=pos_int, default=256)
    parser.add_argument("--layers", type=pos_int, default=4)
    parser.add_argument("--heads", type=pos_int, default=8)
    parser.add_argument("--kv-heads", type=pos_int, default=4)
    parser.add_argument("--ffn", type=pos_int, default=None, help="SwiGLU width (default 8/3 d_model)")
    parser.add_argument("--lr", type=pos_float, default=2e-3)
    parser.add_argument("--warmup", type=non_negative_int, default=None, help="default: 10%% of steps, <= 200")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=non_negative_int, default=250)
    parser.add_argument("--eval-n", type=non_negative_int, default=0,
                        help="held-out windows for the curve (0: the whole test split)")
    parser.add_argument("--out", default="runs/atlas-lm", help="checkpoint dir (state.pt, tokenizer/)")
    parser.add_argument("--save", default=None, help="write the finished model here (default: OUT/model)")
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--threads", type=pos_int, default=1, help="torch threads; 1 is faster on a busy machine")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when there is one)")
    parser.add_argument("--repeat-frac", type=probability, default=0.0,
                        help="after each training sentence, the chance that a copy of a sentence already in its "
                             "window follows (0: none); gives the model repeats to learn copying from")
    parser.add_argument("--init", default=None,
                        help="warm start from this saved model folder (its weights and tokenizer) with a fresh "
                             "optimizer and schedule; the size options are ignored")


def main(args: argparse.Namespace) -> int:
    """Train a causal LM on the corpus; write OUT/state.pt (resumable) and the finished HF folder."""
    from viz.train.clm_eval import evaluate_clm, ngram_baselines

    device = run_device(args)
    if device is None:
        return 2
    for name in ("train", "test"):
        if not os.path.isfile(getattr(args, name)):
            print(f"--{name} {getattr(args, name)}: no such file", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    train, test = read_sentences(args.train), read_sentences(args.test)
    tok_dir = Path(args.out) / "tokenizer"
    if args.init and not (Path(args.init) / "config.json").is_file():
        print(f"--init {args.init}: not a saved model folder (no config.json)", file=sys.stderr)
        return 2
    if args.init:
        tok = load_tokenizer(args.init)
    elif args.tokenizer:
        tok = load_tokenizer(args.tokenizer)
    elif (tok_dir / "tokenizer.json").is_file() and not args.no_resume:
        tok = load_tokenizer(tok_dir)  # a resumed run must keep the ids its checkpoint was trained on
    else:
        print(f"training a {args.vocab_size}-token byte-level BPE on {len(train)} sentences", file=sys.stderr)
        tok = build_tokenizer(train, args.vocab_size)
        tok.save_pretrained(tok_dir)
    enc = encode_sentences(tok, train)
    test_windows = pack(encode_sentences(tok, test), list(range(len(test))), args.window)
    curve_windows = test_windows[: args.eval_n] if args.eval_n else test_windows
    try:
        if args.init:  # overwritten by a resumed state, like fresh weights are
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(args.init, dtype=torch.float32, attn_implementation="eager",
                                                         local_files_only=True, use_safetensors=True)
        else:
            model = build_decoder(len(tok), d_model=args.d_model, layers=args.layers, heads=args.heads,
                                  kv_heads=args.kv_heads, ffn=args.ffn, max_len=args.window,
                                  bos_id=tok.bos_token_id, pad_id=tok.pad_token_id, seed=args.seed)
        stream = Windows(enc, args.batch_size, args.seed, args.window, args.repeat_frac)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f}M parameters, {sum(map(len, enc)) / 1e6:.2f}M training tokens, "
          f"{stream.per_epoch} steps per epoch", file=sys.stderr)
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None

    def progress(p: dict) -> None:
        ev = p["eval"]
        if ev or p["step"] % 10 == 0 or p["step"] == p["steps"]:
            tail = f" | held-out loss {ev['loss']:.3f} ppl {ev['ppl']:.1f} top1 {ev['top1']:.3f}" if ev else ""
            print(f"step {p['step']}/{p['steps']} loss {p['loss_ema']:.3f} lr {p['lr']:.2e} "
                  f"{p['elapsed_s'] / 60:.1f} min {p['tokens_per_s']:.0f} tok/s{tail}", file=sys.stderr, flush=True)

    cpu0 = time.process_time()
    state = train_clm(model, stream.batch, steps=args.steps, lr=args.lr, warmup=args.warmup, out_dir=args.out,
                      resume=not args.no_resume, evaluate_fn=lambda m: evaluate_clm(m, curve_windows),
                      eval_every=args.eval_every, on_progress=progress,
                      should_stop=(lambda: time.monotonic() > deadline) if deadline else None,
                      bf16=False if args.no_bf16 else None, threads=args.threads, device=device,
                      fit_minutes=args.minutes if args.steps == 0 else None)
    model.to("cpu").float()
    final = evaluate_clm(model, test_windows)
    base = ngram_baselines(enc, test_windows, len(tok))
    recipe = {k: v for k, v in vars(args).items() if k != "func"}
    info = dict(recipe=dict(recipe, params=n_params, train_tokens=sum(map(len, enc)),
                            steps_per_epoch=stream.per_epoch, device=device),
                steps_done=state["step"], steps=state["steps"], train_minutes=round(state["elapsed_s"] / 60, 2),
                process_cpu_minutes_this_call=round((time.process_time() - cpu0) / 60, 2),
                tokens_seen=state["tokens"], curve=state["curve"], heldout=final, baselines=base,
                test_windows=len(test_windows), window=args.window)
    out = save_decoder(model, tok, info, args.save or Path(args.out) / "model")
    print(f"done: step {state['step']}/{state['steps']}, {state['elapsed_s'] / 60:.1f} min; held-out ppl "
          f"{final['ppl']:.1f} top1 {final['top1']:.3f} top5 {final['top5']:.3f} | bigram ppl "
          f"{base['bigram']['ppl']:.1f} top1 {base['bigram']['top1']:.3f} | unigram ppl {base['unigram']['ppl']:.1f} "
          f"-> {out}", file=sys.stderr)
    return 0
