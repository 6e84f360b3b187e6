"""`python -m viz atlas`: per-head statistics over a corpus of any size, embedded or on Ray, to CSV."""

from __future__ import annotations

import argparse
import sys

from viz.cli.common import add_device_args


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
    from viz.tasks.corpus import SAMPLE_PATH

    corpus = str(os.environ.get("VIZ_SAMPLE_CORPUS") or SAMPLE_PATH) if args.corpus == "sample" else args.corpus
    if args.chunk_sentences < 1:
        raise ValueError("--chunk-sentences must be at least 1.")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ValueError(f"--out: folder '{out.parent}' does not exist.")
    from viz.core.models import model_key

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
    from viz.tasks.corpus import CorpusError
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
