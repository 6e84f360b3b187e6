"""Train small encoder–decoder models (original-Transformer layout) on tasks with known alignment.

`train_seq2seq("dates", steps=..., seed=..., out_dir=...)` builds a word-level tokenizer and a
`BartForConditionalGeneration` from a config (a few layers, d_model 128–256, eager attention),
trains it from scratch on freshly generated examples, measures it on the held-out split with
`evaluate` and saves an ordinary Hugging Face checkpoint: config.json, generation_config.json,
model.safetensors (fp16), tokenizer files and task.json (task, config, metrics).

Load a shipped checkpoint with `load_seq2seq(dir)` (float32, eager, offline). The CLI hooks
are `add_arguments(parser)` and `main(args)`: `python -m viz train seq2seq --task dates ...`.

Shapes: `input_ids`/`attention_mask` [batch, src_len] (words + </s>); `labels`
[batch, tgt_len] (words + </s>, padding = -100); decoder inputs are the labels shifted
right after `decoder_start_token_id` = <s>. Cross-attentions [batch, head, tgt_len, src_len].
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from viz.train.mlm import save_state, start_state
from viz.train.seq2seq_tasks import (  # re-exported: the task registry lives beside the trainer
                                     BOS_ID, EOS_ID, PAD_ID, TASKS, build_tokenizer, get_task, make_dates, make_reverse, words)

__all__ = ["TASKS", "make_dates", "make_reverse", "words", "build_tokenizer", "build_model",
           "fit_seq2seq", "train_seq2seq", "evaluate", "token_accuracy", "load_seq2seq", "add_arguments", "main"]

MAX_POSITIONS = 32  # longest source/target here is 12 words + </s>; BART adds an offset of 2


def build_model(vocab_size: int, *, d_model: int = 256, layers: int = 2, heads: int = 4,
                ffn: int | None = None, seed: int = 0):
    """A from-scratch `BartForConditionalGeneration` with `layers` encoder and decoder layers.

    Post-norm BART blocks are the original Transformer's layout (plus a LayerNorm after the
    embeddings). No dropout: every step sees fresh synthetic examples, nothing to overfit.
    """
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig

    cfg = BartConfig(
        vocab_size=vocab_size, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=ffn or 2 * d_model, decoder_ffn_dim=ffn or 2 * d_model,
        max_position_embeddings=MAX_POSITIONS, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        decoder_start_token_id=BOS_ID, forced_eos_token_id=None, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = BartForConditionalGeneration._from_config(cfg, attn_implementation="eager")
    model.generation_config = GenerationConfig(
        decoder_start_token_id=BOS_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID, max_length=MAX_POSITIONS - 2, num_beams=1, do_sample=False)
    return model


def encode(tokenizer, examples) -> dict[str, torch.Tensor]:
    """Examples -> padded tensors: input_ids, attention_mask [B, S]; labels [B, T] (-100 = pad)."""
    enc = tokenizer([s for s, _, _ in examples], padding=True, return_tensors="pt")
    lab = tokenizer(text_target=[t for _, t, _ in examples], padding=True, return_tensors="pt")
    labels = lab["input_ids"].masked_fill(lab["attention_mask"] == 0, -100)
    return dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)


@torch.inference_mode()
def evaluate(model, tokenizer, task: str, n: int = 500, seed: int = 12345,
             batch_size: int = 100) -> dict:
    """Held-out exact match and cross-attention alignment on `n` test-split examples.

    exact_match: greedy `generate` ids == reference target ids (up to </s>), per example.
    alignment: the last decoder layer's cross-attention, averaged over heads, teacher-forced on
    the reference target; for each target token i that has an aligned source word j, the weight
    the query that *predicts* token i (decoder input position i, whose input is token i-1)
    puts on source token j; averaged over all such target tokens. Word level == token level.
    Also: per_layer [L] and per_head [L][H] versions of the same fraction, and `uniform`: the
    mean of 1/src_len (src_len counts </s>) over the same target tokens, the chance level.
    """
    model.eval()
    examples = get_task(task)["make_examples"](n, seed, split="test")
    hits, on_aligned, uniform, count = 0, None, 0.0, 0
    for b in range(0, n, batch_size):
        batch = examples[b:b + batch_size]
        enc = encode(tokenizer, batch)
        gen = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             max_length=enc["labels"].shape[1] + 5)
        for row, ref in zip(gen.tolist(), enc["labels"].tolist()):
            hits += trim_ids(row[1:]) == trim_ids(ref)
        out = model(**enc, output_attentions=True)
        cross = torch.stack(out.cross_attentions, 1)  # [B, layer, head, T, S]
        src_len = enc["attention_mask"].sum(1)  # [B]
        for k, (src, _, align) in enumerate(batch):
            if int(src_len[k]) != len(words(src)) + 1:  # the metric assumes word i == token i
                raise ValueError(f"tokenizer is not word-level for {src!r}: evaluate needs the "
                                 "tokenizer saved with the checkpoint (build_tokenizer)")
            for i, j in enumerate(align):
                if j is None:
                    continue
                w = cross[k, :, :, i, j].double()  # [layer, head]
                on_aligned = w if on_aligned is None else on_aligned + w
                uniform += 1.0 / float(src_len[k])
                count += 1
    per_head = (on_aligned / count).tolist()
    per_layer = [sum(h) / len(h) for h in per_head]
    return dict(task=task, n=n, seed=seed, exact_match=hits / n, alignment=per_layer[-1],
                per_layer=per_layer, per_head=per_head, uniform=uniform / count,
                aligned_tokens=count)


@torch.inference_mode()
def token_accuracy(model, batch: dict[str, torch.Tensor]) -> float:
    """Teacher-forced next-token accuracy of the decoder on `batch` (labels != -100)."""
    was_training = model.training
    model.eval()
    logits = model(**batch).logits  # [B, T, V]
    keep = batch["labels"] != -100
    acc = (logits.argmax(-1)[keep] == batch["labels"][keep]).float().mean().item()
    model.train(was_training)
    return acc


def trim_ids(ids: list[int]) -> list[int]:
    """Token ids up to and including the first </s>, without padding / -100."""
    out = []
    for t in ids:
        if t in (PAD_ID, -100):
            continue
        out.append(t)
        if t == EOS_ID:
            break
    return out


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Learning-rate factor for 0-based update `step`: linear warm-up, then cosine decay to 0 at `steps`."""
    return min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1))))


def fit_seq2seq(model, make_batch: Callable[[int], dict], *, steps: int, lr: float = 1e-3, warmup: int = 100,
                on_progress: Callable[[dict], None] | None = None,
                should_stop: Callable[[], bool] | None = None, progress_every: int = 25,
                evaluate_fn: Callable[[object], float] | None = None, eval_every: int = 0,
                state_dir: str | Path | None = None, resume: bool = True) -> dict:
    """The encoder–decoder training loop (AdamW, betas 0.9/0.98, clip 1.0; `lr_factor` schedule) behind
    `train_seq2seq` and the training studio. Trains `model` in place; returns the state dict
    (step, elapsed_s, tokens, curve).

    make_batch(k) -> dict(input_ids, attention_mask, labels) for 1-based step k: a pure function of k, so a
    resumed run sees the batches an uninterrupted one would. evaluate_fn(model) -> a held-out score, run every
    `eval_every` steps and at the end (its time is not counted as training time). With `state_dir`, model +
    optimizer + state are saved to state_dir/state.pt after each evaluation and when the loop stops, and
    (resume=True) the loop continues from there. on_progress(dict(step, steps, loss, loss_smooth, lr,
    elapsed_s, tokens_per_s, eval)) every `progress_every` steps, at evaluations and at the end; eval is None
    except on evaluation steps. should_stop() is polled every step; True ends the loop after that step.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    path, state = start_state(state_dir, model, opt, resume)  # the masked-LM loop's checkpoint format
    model.train()
    t0, elapsed0, tokens0 = time.perf_counter(), state["elapsed_s"], state["tokens"]
    smooth = state.get("loss_smooth")
    while state["step"] < steps:
        step = state["step"] + 1
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(step - 1, steps, warmup)
        batch = make_batch(step)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        smooth = loss.item() if smooth is None else 0.9 * smooth + 0.1 * loss.item()
        state.update(step=step, loss_smooth=smooth, elapsed_s=elapsed0 + time.perf_counter() - t0,
                     tokens=state["tokens"] + int(batch["attention_mask"].sum()) + int((batch["labels"] >= 0).sum()))
        stop = bool(should_stop and should_stop())
        last = step == steps or stop
        score = None
        if evaluate_fn is not None and ((eval_every and step % eval_every == 0) or last):
            t_eval = time.perf_counter()
            score = evaluate_fn(model)
            model.train()
            t0 += time.perf_counter() - t_eval  # evaluation time is not training time
            state["curve"].append(dict(step=step, minutes=state["elapsed_s"] / 60, loss=smooth, score=score))
            save_state(path, model, opt, state)
        elif last:
            save_state(path, model, opt, state)
        if on_progress and (step % progress_every == 0 or last or score is not None):
            on_progress(dict(step=step, steps=steps, loss=loss.item(), loss_smooth=smooth,
                             lr=opt.param_groups[0]["lr"], elapsed_s=state["elapsed_s"],
                             tokens_per_s=(state["tokens"] - tokens0) / max(1e-9, time.perf_counter() - t0),
                             eval=score))
        if stop:
            break
    model.eval()
    return state


def train_seq2seq(task: str, *, steps: int, seed: int, out_dir: str | Path | None,
                  on_progress: Callable[[dict], None] | None = None,
                  should_stop: Callable[[], bool] | None = None, d_model: int = 256,
                  layers: int = 2, heads: int = 4, ffn: int | None = None,
                  batch_size: int = 64, lr: float = 1e-3, warmup: int = 100,
                  eval_n: int = 1000, progress_every: int = 25):
    """Train a fresh model on `task` for `steps` AdamW steps; return (model, tokenizer, metrics).

    Deterministic for a given seed and thread count: the batch for step k is
    `make_examples(batch_size, seed * 1_000_003 + k)`, and weights come from `torch.manual_seed`.
    Learning rate: linear warm-up for `warmup` steps, then cosine decay to 0 (`fit_seq2seq`).
    `on_progress(dict(step, steps, loss, loss_smooth, lr, elapsed_s, task, ...))` is called every
    `progress_every` steps and at the end; `should_stop()` returning True ends training early
    (the model is still evaluated and saved). `out_dir=None` skips saving.
    """
    spec = get_task(task)
    tokenizer = build_tokenizer(spec["vocab"]())
    model = build_model(len(tokenizer), d_model=d_model, layers=layers, heads=heads, ffn=ffn,
                        seed=seed)
    cpu0 = time.process_time()
    state = fit_seq2seq(
        model, lambda k: encode(tokenizer, spec["make_examples"](batch_size, seed * 1_000_003 + k)),
        steps=steps, lr=lr, warmup=warmup, should_stop=should_stop, progress_every=progress_every,
        on_progress=(lambda p: on_progress(dict(p, task=task))) if on_progress else None)
    train_s, train_cpu_s = state["elapsed_s"], time.process_time() - cpu0
    metrics = evaluate(model, tokenizer, task, n=eval_n, seed=seed + 777) if eval_n else {}
    info = dict(task=task, description=spec["description"], steps_done=state["step"], steps=steps,
                seed=seed, batch_size=batch_size, lr=lr, warmup=warmup, final_loss=state.get("loss_smooth"),
                train_cpu_minutes=round(train_cpu_s / 60, 2),
                train_wall_minutes=round(train_s / 60, 2), torch_threads=torch.get_num_threads(),
                config=dict(d_model=d_model, layers=layers, heads=heads,
                            ffn=model.config.encoder_ffn_dim,
                            params=sum(p.numel() for p in model.parameters())),
                metrics=metrics)
    if out_dir is not None:
        save_checkpoint(model, tokenizer, info, out_dir)
    return model, tokenizer, info


def save_checkpoint(model, tokenizer, info: dict, out_dir: str | Path) -> Path:
    """Save fp16 weights + tokenizer + task.json. The config records dtype float32 so that a
    plain `from_pretrained(dir)` upcasts the fp16 weights back to float32."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out)
    model.to(torch.float32)
    cfg = json.loads((out / "config.json").read_text())
    cfg["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out)
    (out / "task.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def load_seq2seq(path: str | Path):
    """Load a checkpoint saved here: offline, eager attention, float32. -> (model, tokenizer, info)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    path = Path(path)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        path, attn_implementation="eager", dtype=torch.float32, local_files_only=True,
        trust_remote_code=False, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    info_file = path / "task.json"
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    return model, tokenizer, info


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `python -m viz train seq2seq` (checked by argparse: viz/cli/common.py)."""
    from viz.core.checks import non_negative_float, non_negative_int, output_dir, positive_int

    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--steps", type=positive_int, default=1000)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--out", type=output_dir, required=True, help="checkpoint directory to write")
    parser.add_argument("--d-model", type=positive_int, default=256, help="a multiple of --heads")
    parser.add_argument("--layers", type=positive_int, default=2)
    parser.add_argument("--heads", type=positive_int, default=4)
    parser.add_argument("--ffn", type=positive_int, default=None, help="default 2 * d_model")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=non_negative_float, default=1e-3)
    parser.add_argument("--eval-n", type=non_negative_int, default=1000, help="held-out examples to score (0: none)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (machine is shared)")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run training from parsed arguments; progress and the final metrics go to stderr."""
    if args.d_model % args.heads:
        print(f"error: --d-model {args.d_model} is not a multiple of --heads {args.heads} "
              f"(each head gets d_model / heads dimensions)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)

    def report(p: dict) -> None:
        print(f"[{p['task']}] step {p['step']}/{p['steps']} loss {p['loss_smooth']:.4f} "
              f"lr {p['lr']:.2e} {p['elapsed_s']:.0f}s", file=sys.stderr, flush=True)

    _, _, info = train_seq2seq(
        args.task, steps=args.steps, seed=args.seed, out_dir=args.out, on_progress=report,
        d_model=args.d_model, layers=args.layers, heads=args.heads, ffn=args.ffn,
        batch_size=args.batch_size, lr=args.lr, eval_n=args.eval_n)
    m = info["metrics"]
    if m:
        print(f"held-out exact match {m['exact_match']:.4f}; last-layer cross-attention on the "
              f"aligned source {m['alignment']:.3f} (per layer "
              f"{', '.join(f'{x:.3f}' for x in m['per_layer'])}; uniform {m['uniform']:.3f})",
              file=sys.stderr)
    print(f"saved to {args.out} ({info['train_cpu_minutes']} CPU min, "
          f"{info['train_wall_minutes']} wall min)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(add_arguments(argparse.ArgumentParser(description=__doc__)).parse_args()))
