"""`python -m viz ...`: the same captures the pages use, without a browser.

Subcommands register themselves through small `add_<name>(subparsers)` functions so each
issue's command lives beside its code; the contracts (flags, output keys) are stable.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from viz.cli_args import OneLineParser, float_range, int_range, output_file, positive_float, positive_int, run_guarded

CAPTURE_KEYS = """\
output keys (numpy .npz):
  tokens                    [token]                         input (encoder / decoder-only) tokens
  input_ids                 [token]                         their ids in the model's vocabulary
  special                   [token] bool                    special tokens ([CLS], [SEP], </s>, padding)
  word_spans                [word, 2]                       [start, end) of each word's pieces
  target_tokens             [target]                        decoder input tokens (encoder-decoder only)
  encoder_attentions        [layer, head, token, token]     encoder self-attention (encoders, enc-dec)
  encoder_hidden_states     [layer+1, token, dim]           embeddings first
  decoder_attentions        [layer, head, target, target]   masked self-attention (decoders, enc-dec)
  decoder_hidden_states     [layer+1, target, dim]
  cross_attentions          [layer, head, target, token]    decoder -> encoder (enc-dec only)
  <stack>_queries           [layer, head, row, head_dim]    queries as the attention function received them
                                                            (after RoPE for rotary models)
  <stack>_keys|values       [layer, kv_head, token, head_dim]  keys/values at the model's own kv-head count
  <stack>_kv_heads          [head]                          kv head each query head reads (grouped-query
                                                            attention; arange(head) otherwise)
  <stack>_first_share       [layer, head]                   mean attention on the first token over rows >= 1
                                                            (the "attention sink" share)
  <stack>_layers            [layer]                         which model layer each slice is (--layers)
  <stack>_rows              [row]                           which query position each row is (--rows)
Decoder-only models (GPT-2, Llama, ...) use the decoder_* keys with `tokens` on both axes.
With --layers/--rows the attention arrays are [len(layers), head, len(rows), token] and hidden
states [layer+1, len(rows), dim] (every layer, chosen rows). Rows of every attention matrix sum to 1."""


def index_list(value: str) -> list[int] | None:
    """argparse type for --layers/--rows: 'all' or comma-separated integers (negative: from the end)."""
    value = value.strip().lower()
    if value == "all":
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not 'all' or a comma-separated list of integers "
                                         "(e.g. 0,5,-1)") from None
    if not out:
        raise argparse.ArgumentTypeError("give 'all' or at least one index")
    return out


def add_device_args(p) -> None:
    """--device/--dtype, the same on every command that loads a model."""
    from viz.cli_args import device

    p.add_argument("--device", default="auto", type=device,
                   help="auto (CUDA or MPS where present, else cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto (bfloat16 on a GPU, float32 on the CPU), float32, bfloat16 or float16")


def load_for(args):
    """The model a command asked for, on its --device in its --dtype."""
    from viz.models import load_model

    return load_model(args.model, dtype=getattr(args, "dtype", None), device=getattr(args, "device", None))


def _capture(args) -> int:
    from viz.capture import CaptureError, capture, to_arrays
    from viz.models import ModelLoadError

    try:
        bundle = load_for(args)
        cap = capture(bundle, args.text, args.target, layers=args.layers, rows=args.rows)
    except (ModelLoadError, CaptureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cap.truncated:
        print(f"warning: text truncated from {cap.n_input_tokens} to {len(cap.tokens)} tokens", file=sys.stderr)
    arrays = to_arrays(cap)
    np.savez_compressed(args.out, **arrays)
    for k, v in arrays.items():
        print(f"{k:28s} {str(v.shape):24s} {v.dtype}")
    return 0


def add_capture(sub) -> None:
    p = sub.add_parser("capture", help="capture attentions and hidden states to an .npz file",
                       description="Run TEXT through MODEL and save every head's attention.",
                       epilog=CAPTURE_KEYS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="bundled name (minilm, tiny-bert, ...), HF id or local folder")
    p.add_argument("--text", required=True, help="input text (source text for encoder-decoders)")
    p.add_argument("--target", default=None, help="decoder text for encoder-decoders (teacher forcing); "
                                                   "default: the model's own greedy output")
    p.add_argument("--out", required=True, type=output_file,
                   help="output .npz path (its folder must exist; checked before the model runs)")
    p.add_argument("--layers", type=index_list, default=None,
                   help="attention layers to keep: 'all' (default) or indices like 0,5,-1 (negative: from the end)")
    p.add_argument("--rows", type=index_list, default=None,
                   help="query positions to keep: 'all' (default) or indices like -1 (the last token)")
    add_device_args(p)
    p.set_defaults(func=_capture)


def _mask(args) -> int:
    import json

    from viz.mlm import MaskError, predict
    from viz.models import ModelLoadError

    try:
        bundle = load_for(args)
        if args.top_k > len(bundle.tokenizer):
            raise MaskError(f"--top-k {args.top_k} is more than the model's vocabulary "
                            f"({len(bundle.tokenizer)} tokens).")
        result = predict(bundle, args.text, top_k=args.top_k, layers=args.layers)
    except (ModelLoadError, MaskError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    masks = []
    for p in result.predictions:
        item = {"position": p.position, "top_k": [{"token": t, "prob": pr} for t, pr in p.top]}
        if args.layers:
            item["layers"] = [[{"token": t, "prob": pr} for t, pr in row] for row in p.layer_top]
        masks.append(item)
    if args.json:
        print(json.dumps({"tokens": result.capture.tokens, "masks": masks}, ensure_ascii=False))
    else:
        for m in masks:
            print(f"mask at {m['position']}: " + ", ".join(f"{x['token']} {x['prob']:.1%}" for x in m["top_k"]))
    return 0


def add_mask(sub) -> None:
    p = sub.add_parser("mask", help="top-k predictions for each [MASK] in the text",
                       description="Predict every mask token in TEXT with a masked-LM model.",
                       epilog="JSON: {\"tokens\": [...], \"masks\": [{\"position\": i, \"top_k\": [{\"token\", \"prob\"}], "
                              "\"layers\": [[{\"token\", \"prob\"}] per layer, embeddings first] (with --layers)}]}. "
                              "Masks are listed in text order. [MASK] and <mask> both work.")
    p.add_argument("--model", default="minilm-mlm", help="a model with a masked-LM head (default: minilm-mlm)")
    p.add_argument("--text", required=True, help="text with one or more [MASK]")
    p.add_argument("--top-k", type=positive_int, default=5, dest="top_k", help="predictions per mask (default 5)")
    p.add_argument("--layers", action="store_true", help="add per-layer predictions (MLM head on every layer)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_device_args(p)
    p.set_defaults(func=_mask)


def add_train(sub) -> None:
    p = sub.add_parser("train", help="self-supervised / synthetic training that produces checkpoints")
    tsub = p.add_subparsers(dest="task", required=True)
    for name, module in (("mlm", "viz.train.mlm"), ("seq2seq", "viz.train.seq2seq"), ("clm", "viz.train.clm")):
        try:
            mod = __import__(module, fromlist=["main"])
        except ImportError:
            continue
        tp = tsub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else None)
        mod.add_arguments(tp)
        tp.set_defaults(func=mod.main)


seed_int = int_range(0, 2**63 - 1)  # a random seed
temperature = positive_float  # a sampling temperature (1 = the model's own)
top_p = float_range(0.0, 1.0, lo_open=True)  # a nucleus-sampling mass (1 = no cut)


def generate_method(args) -> tuple[str, int]:
    """(method, beams) from --method/--num-beams, or a ValueError saying which flags clash."""
    beams = args.num_beams
    method = args.method or ("beam" if beams and beams > 1 else "greedy")
    if method == "beam":
        beams = 4 if beams is None else beams
        if beams < 2:
            raise ValueError("beam search needs --num-beams 2 or more")
    elif beams not in (None, 1):
        raise ValueError(f"--num-beams {beams} needs --method beam (or no --method)")
    sampling = [f for f, v in (("--temperature", args.temperature), ("--top-p", args.top_p), ("--seed", args.seed))
                if v is not None]
    if sampling and method != "sample":
        raise ValueError(f"{', '.join(sampling)} only {'apply' if len(sampling) > 1 else 'applies'} to --method sample")
    return method, beams or 1


def _generate(args) -> int:
    import json

    from viz.capture import CaptureError
    from viz.generate import generate
    from viz.models import ModelLoadError

    try:
        method, beams = generate_method(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        bundle = load_for(args)
        if bundle.kind == "decoder":
            return _generate_lm(args, bundle, method, beams)
        if bundle.kind == "encoder":
            raise CaptureError(f"'{bundle.name}' is an encoder model: it does not generate. Pick a decoder (e.g. "
                               "tiny-llama, tiny-gpt2) or an encoder–decoder (e.g. tiny-bart), or use the Attention page.")
        if method == "sample":
            raise CaptureError("--method sample is for decoder-only models; encoder–decoders take greedy or beam.")
        gen = generate(bundle, args.text, method, num_beams=beams, max_new_tokens=args.max_new_tokens,
                       top_k=args.top_k)
    except (ModelLoadError, CaptureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if gen.truncated:
        print(f"warning: source truncated from {gen.n_source_tokens} to {len(gen.source_tokens)} tokens",
              file=sys.stderr)
    if args.json:
        print(json.dumps(gen.to_json()))
        return 0
    print("source:", " ".join(gen.source_tokens))
    print("output:", " ".join(gen.output_tokens))
    for s in gen.steps:
        cross = s.cross[-1].mean(axis=0)
        j = int(cross.argmax())
        print(f"{s.index:3d} {s.token:>14s} p={s.prob:.3f}{' (forced)' if s.forced else ''}  "
              f"most attended source: {gen.source_tokens[j]} ({cross[j]:.2f})")
    return 0


def _generate_lm(args, bundle, method: str, beams: int) -> int:
    """Decoder-only generation (viz.generate_lm): the encoder–decoder JSON plus attention and lens ranks."""
    import json

    from viz.generate_lm import generate_lm

    gen = generate_lm(bundle, args.text, method, max_new_tokens=args.max_new_tokens, top_k=args.top_k,
                      temperature=1.0 if args.temperature is None else args.temperature,
                      top_p=1.0 if args.top_p is None else args.top_p, seed=args.seed or 0, num_beams=beams)
    if args.json:
        print(json.dumps(gen.to_json()))
        return 0
    print("prompt:", " ".join(gen.prompt_tokens))
    print("output:", " ".join(gen.output_tokens))
    for b in gen.beams:
        print(f"beam score {b.score:8.4f} log p {b.log_prob:9.4f}: {' '.join(b.tokens)}")
    for s in gen.steps:
        att = s.attention[-1].mean(axis=0)
        j = int(att.argmax())
        lens = "" if s.lens_rank is None else "  lens rank by layer: " + " ".join(str(int(r)) for r in s.lens_rank)
        print(f"{s.index:3d} {s.token:>14s} p={s.prob:.3f}{' (forced)' if s.forced else ''}  "
              f"most attended: {gen.tokens[j]} ({att[j]:.2f}){lens}")
    return 0


def add_generate(sub) -> None:
    p = sub.add_parser(
        "generate", help="generate step by step (decoders, encoder-decoders) and print what each step attended to",
        description="Generate from TEXT one token at a time and report, per step, the token, its top-k "
                    "probabilities and what it attended to: the cross-attention over the source "
                    "(encoder-decoders) or the attention over the context and a logit lens (decoder-only models).",
        epilog="--json prints {source_tokens, output_tokens, finished, steps: [{token, prob, forced, "
               "cross_attention: [one weight per source token: last layer, mean over heads], "
               "top_k: [{token, prob}]}]}. Decoder-only models: source_tokens is the prompt and each step has, "
               "instead of cross_attention, attention: [one weight per context token (prompt and earlier output): "
               "last layer, mean over heads] and lens_rank: [rank of the token under the logit lens of each "
               "layer, embeddings first; 1 = top]; plus settings {max_new_tokens, do_sample, temperature, top_p, "
               "seed, num_beams, beam, rules}, and with --method beam, beams: [{tokens, score, log_prob, "
               "token_logprobs, finished}] best first (score = log_prob / length ** length_penalty).")
    p.add_argument("--model", default="tiny-bart",
                   help="a decoder (tiny-llama, tiny-gpt2, ...) or an encoder-decoder (seq2seq-dates, tiny-t5, "
                        "tiny-bart, ...)")
    p.add_argument("--text", required=True, help="source text (encoder-decoders) or prompt (decoders)")
    p.add_argument("--max-new-tokens", type=positive_int, default=20, 
                   help="longest output (default 20; at most what the decoder's positions allow)")
    p.add_argument("--method", choices=("greedy", "sample", "beam"), default=None,
                   help="greedy (default), sample (decoders) or beam; without it --num-beams > 1 means beam")
    p.add_argument("--num-beams", type=positive_int, default=None,
                   help="beams for beam search (default 4 with --method beam; 1 = greedy)")
    p.add_argument("--temperature", type=temperature, default=None, help="sampling temperature > 0 (default 1)")
    p.add_argument("--top-p", type=top_p, default=None, dest="top_p",
                   help="nucleus sampling: keep the smallest set of tokens with this probability mass (default 1)")
    p.add_argument("--seed", type=seed_int, default=None, help="random seed for sampling (default 0)")
    p.add_argument("--top-k", type=positive_int, default=5, help="next-token candidates to report per step")
    p.add_argument("--json", action="store_true", help="machine-readable output (see below)")
    add_device_args(p)
    p.set_defaults(func=_generate)


ATLAS_HELP = """\
output: one CSV row per (layer, head), columns
  layer, head   0-based indices
  entropy       mean over rows of -sum_j a_ij ln a_ij, in nats (uniform over n keys = ln n)
  distance      mean over rows of sum_j a_ij |i - j|, in token positions (word positions for word_*)
  cls           mean share of a row's attention on the start token: [CLS] / <s> / BOS
  sep           mean share on separator / end tokens: [SEP] / </s> / EOS
  punct         mean share on tokens made only of Unicode punctuation (categories P*; ##/Ġ/▁ markers
                ignored; special tokens never count)
  self          mean a_ii
  prev          mean a_i,i-1, over rows whose previous position is a real token
  next          mean a_i,i+1, over rows whose next position is a real token
  first         mean share on the first real token, whatever it is, over the rows after it (the
                "attention sink"; equals cls on those rows when the first token is [CLS]/<s>/BOS)
  role          label from thresholds: the share furthest above its threshold among
                prev>0.5, next>0.5, self>0.5, cls>0.5, sep>0.5, punct>0.3; else 'broad' when
                entropy >= 0.8 x mean ln(#keys) (the uniform maximum); else 'mixed'
  word_*        with --words: the same on word-level attention, pieces merged as in Clark et al.
                2019 (sum over key pieces, mean over query pieces); special tokens are their own words
which rows and keys count:
  rows (attending tokens): every real token except special ones ([CLS], [SEP], <s>, </s>, padding);
  [UNK] and [MASK] count as ordinary tokens. Keys: every real token, special ones included.
  Padding is excluded everywhere: each row is renormalised over its real keys. Each head's value
  is the mean over all counted rows of the corpus (token-weighted, Clark et al. 2019).
  Attention read: encoder self-attention (encoders, encoder-decoders); causal self-attention
  (decoder-only models).
corpus: .txt (one sentence per line), .csv or .jsonl (choose --column), optionally gzip-compressed
  (.txt.gz, ...), of any size: read one chunk of --chunk-sentences at a time, so memory stays flat
  (the page's upload stops at 10,000 sentences; run bigger corpora here and open the CSV on the page).
  Sentences are cut at 1,000 characters and then at --max-tokens tokens.
engines:
  embedded      (default) chunks computed in this process, one after the other
  ray           chunks computed by --workers Ray actors, each loading MODEL itself (pip install -r
                requirements-ray.txt). No --address: a local Ray is started and stopped here; --address
                auto or ray://host:port uses a running cluster. Both engines write the same CSV.
  Each finished chunk is saved in OUT.parts/ (removed once OUT is written); after an interruption
  --resume computes only the chunks not saved there. Progress (chunks, sentences, rate, ETA) on stderr."""


def _atlas_spec(args):
    import os
    from pathlib import Path

    from viz.atlas.job import JobSpec
    from viz.corpus import SAMPLE_PATH

    corpus = str(os.environ.get("VIZ_SAMPLE_CORPUS") or SAMPLE_PATH) if args.corpus == "sample" else args.corpus
    if args.chunk_sentences < 1:
        raise ValueError("--chunk-sentences must be at least 1.")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ValueError(f"--out: folder '{out.parent}' does not exist.")
    from viz.models import model_key

    return JobSpec(model=model_key(args.model, args.device, args.dtype), corpus=corpus, out=args.out, column=args.column, words=args.words,
                   max_tokens=args.max_tokens, batch_size=args.batch_size, chunk_sentences=args.chunk_sentences)


def _atlas_executor(args, spec):
    import torch

    from viz.atlas.job import EmbeddedExecutor

    if args.engine == "ray":
        from viz.atlas.ray_engine import RayExecutor

        return RayExecutor(spec, address=args.address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                           threads=args.threads or 1).start()
    if args.threads:
        torch.set_num_threads(args.threads)
    return EmbeddedExecutor(spec)


def _atlas(args) -> int:
    import signal

    from viz.atlas.job import JobError, Progress, parts_dir, run_job, write_csv
    from viz.corpus import CorpusError
    from viz.atlas.stream import iter_sentences

    def stop(signum, frame):  # `kill` stops the run like Ctrl-C: Ray shut down, checkpoints kept
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    executor = None
    try:
        spec = _atlas_spec(args)
        next(iter_sentences(spec.corpus, spec.column), None)  # unreadable corpus or bad column: before any cluster
        executor = _atlas_executor(args, spec)
        signal.signal(signal.SIGTERM, stop)  # again: ray.init installs its own (abort) handler in the driver
        progress = Progress(None if args.quiet else sys.stderr)
        res = run_job(spec, executor, resume=args.resume, progress=progress, reorder=args.reverse_chunks)
        write_csv(res, spec, None if args.decimals < 0 else args.decimals)
    except CorpusError as e:
        where = ""
        if args.engine == "ray":  # with `ray job submit` the driver is on the head node, not where you typed
            import socket

            where = f" (the driver reads the corpus, here on {socket.gethostname()})"
        print(f"error: {e}{where}", file=sys.stderr)
        return 2
    except (JobError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: finished chunks are saved in {parts_dir(args.out)}; run the same command with "
              "--resume to continue.", file=sys.stderr)
        return 130
    finally:
        if executor is not None:
            executor.close()
        signal.signal(signal.SIGTERM, old)
    print(f"{res.n_sentences} sentences, {res.n_tokens} tokens ({res.n_truncated} truncated) in "
          f"{res.seconds:.1f} s -> {args.out} ({res.n_layers} layers x {res.n_heads} heads)")
    return 0


def add_atlas(sub) -> None:
    p = sub.add_parser("atlas", help="per-head attention statistics over a corpus, to CSV",
                       description="Run every sentence of CORPUS through MODEL in padded, length-sorted batches "
                                   "and write what every head does on average (Clark et al. 2019).",
                       epilog=ATLAS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="bundled name (minilm, tiny-bert, ...), HF id or local folder")
    p.add_argument("--corpus", required=True, help="corpus file (.txt/.csv/.jsonl, optionally .gz), or 'sample' for "
                                                   "the bundled one")
    p.add_argument("--column", default=None, help="column of a .csv / key of a .jsonl holding the sentences")
    p.add_argument("--out", required=True, help="output .csv path")
    p.add_argument("--words", action="store_true", help="also compute word-level statistics (word_* columns)")
    p.add_argument("--max-tokens", type=int, default=128, help="truncate sentences to this many tokens (128)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch (32)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (embedded default: torch's choice; "
                                                          "ray: per worker, default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--engine", choices=["embedded", "ray"], default="embedded", help="where chunks are computed")
    p.add_argument("--address", default=None, help="ray: a running cluster (auto, host:port or ray://host:port); "
                                                   "default: start a local one")
    p.add_argument("--workers", type=int, default=2, help="ray: worker actors, each with its own model (2)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per worker, e.g. 1 or 0.5 (0)")
    p.add_argument("--chunk-sentences", type=int, default=4096, help="sentences per chunk, the unit of work and of "
                                                                      "checkpoints (4096)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.parts/")
    p.add_argument("--decimals", type=int, default=6, help="decimals in the CSV (6; -1: full precision)")
    p.add_argument("--reverse-chunks", type=int, default=0, help=argparse.SUPPRESS)  # tests: submit windows reversed
    add_device_args(p)
    p.set_defaults(func=_atlas)


HEADS_HELP = """\
JSON (--json): {"layers": L, "heads": H, "induction": [[...]], "previous": [[...]], "duplicate": [[...]],
  "first_token": [[...]], "seed", "length", "sequences", "loss_first_copy", "loss_second_copy",
  "sink_sentences", "lengths", "induction_length": [[...]], "by_length": {"10": {...}, ...}}; every [[...]]
  is L lists of H numbers (scores in [0, 1]).
  induction     on [BOS] t_1..t_L t_1..t_L (random tokens, repeated once): mean attention from each token
                of the second copy to the token right after its earlier occurrence (Olsson et al. 2022)
  duplicate     the same rows, attention to the earlier occurrence itself
  previous      every row i >= 1 of those sequences, attention to i - 1
  first_token   the bundled sample sentences: mean attention on position 0 over rows i >= 1 (the sink)
  loss_*_copy   mean next-token loss (nats) on each copy: in-context copying makes the second far lower
Copy lengths: by default the three scores are measured at L = 10, 25 and 50 random tokens per copy (--lengths;
  those the model's positions and vocabulary allow) and each head reports its best: a head that copies at one
  length can read ~0 at another (a model trained on short copies). --length N measures N only (the scores
  before the sweep: --length 50). Chance (attention spread evenly): about 0.05-0.09 at L = 10, 0.01-0.02 at 50.
  lengths          the lengths measured
  length           the one where the best induction head scored: loss_*_copy are measured there
  induction_length per head, the length its induction score comes from
  by_length        per length: induction, previous, duplicate ([[...]]), loss_first_copy, loss_second_copy"""


def _lengths(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be integers separated by commas (got {text!r})") from None
    if not out or min(out) < 2:
        raise argparse.ArgumentTypeError(f"every length must be at least 2 (got {text!r})")
    return out


def _heads(args) -> int:
    import json

    from viz.capture import CaptureError
    from viz.heads import head_scores
    from viz.models import ModelLoadError

    try:
        bundle = load_for(args)
        res = head_scores(bundle, seed=args.seed, length=args.length, sequences=args.sequences, lengths=args.lengths)
    except (ModelLoadError, CaptureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res.to_json()))
        return 0
    print(f"{bundle.name}: {res.n_layers} layers x {res.n_heads} heads; {res.sequences} sequences of "
          f"{'/'.join(map(str, res.lengths))} random tokens repeated once (seed {res.seed}; each head's best "
          f"length); at {res.length}: loss on copy 1 {res.loss_first:.2f}, copy 2 {res.loss_second:.2f} nats")
    for score in ("induction", "previous", "duplicate", "first"):
        a = getattr(res, score)
        order = np.argsort(-a, axis=None)[:3]
        best = ", ".join(f"L{i // res.n_heads}H{i % res.n_heads} {a.flat[i]:.2f}" for i in order)
        print(f"{score:10s} best: {best}")
    return 0


def add_heads(sub) -> None:
    p = sub.add_parser("heads", help="induction, previous-token, duplicate-token and sink scores of a decoder",
                       description="Score every head of a causal decoder on random token sequences repeated "
                                   "once (and the sink share on the bundled sample sentences).",
                       epilog=HEADS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="atlas-lm", help="a decoder: atlas-lm, tiny-llama, tiny-gpt2, a folder, ...")
    p.add_argument("--seed", type=int_range(0), default=0, help="random-token seed (default 0)")
    p.add_argument("--length", type=int_range(2), default=None,
                   help="random tokens per copy, this one length only (sequences of 1 + 2 x N tokens; the scores "
                        "before the length sweep: --length 50)")
    p.add_argument("--lengths", type=_lengths, default=None,
                   help="copy lengths to sweep, comma-separated (default 10,25,50; those the model takes); each "
                        "head reports its best")
    p.add_argument("--sequences", type=int_range(1), default=10, help="sequences averaged (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON (keys below)")
    add_device_args(p)
    p.set_defaults(func=_heads)



def add_inside(sub) -> None:
    from viz.inside.cli import add_inside as add

    add(sub)


COMMANDS = [add_capture, add_mask, add_train, add_generate, add_atlas, add_heads, add_inside]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m viz", description="Attention Atlas without the browser.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from viz import quiet
    from viz.app.memory import keep_freed_memory

    args = build_parser().parse_args(argv)  # first: a bad flag is answered before anything heavy loads
    quiet()
    keep_freed_memory()
    return run_guarded(lambda: args.func(args))
