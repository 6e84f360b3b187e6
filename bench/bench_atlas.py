"""Head-atlas benchmark: throughput against a plain batched forward, and peak memory vs corpus size.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_atlas.py [--model minilm] [--n 1000] [--mem 1000 10000]

1. Throughput over `--n` sentences, measured two ways. Paired: batch by batch, the plain forward and the
   atlas work on the same batch back to back (the headline ratio: both see the same machine load).
   End to end: the atlas job (`run_atlas`: tokenize, length-sorted batches, forward
   with capture hooks, per-head statistics) against a plain batched forward of the same model over the
   *same* batches (`iter_batches` + `model(...)`, no hooks, no statistics). Both include tokenization.
   Rounds alternate (plain, atlas, plain, atlas, ...) and the best of each is kept, because the machine is
   shared; torch runs on one thread. A plain forward over corpus-order (unsorted) batches is shown too:
   it is what length bucketing saves. Target: atlas / plain >= 0.8.
2. Memory: a fresh process per corpus size runs the whole job and reports its peak RSS (ru_maxrss), the
   peak RSS reached by each tenth of the corpus, and the tracemalloc peak of Python allocations during the
   job (torch tensors are not Python allocations: RSS covers them). Target: flat from 1,000 to 10,000 sentences.

Sentences are made by recombining clauses of the bundled sample corpus (data/sample_sentences.txt, or a
small built-in list when it is absent), seeded, so lengths vary like real text.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

BUILTIN = [
    "The cat sat on the mat because it was tired.", "The keys to the cabinet are on the table.",
    "She poured a cup of coffee and read the morning paper.",
    "The animal didn't cross the street because it was too wide.",
    "Attention is all you need, said the paper from 2017.", "We walked along the river; the water was cold.",
    "Unbelievably, the committee postponed the decision again!", "Is this the way to the station?",
    "My grandmother's recipe needs three eggs, some flour and a little patience.",
    "Nobody knew why the lights went out at midnight.", "Trains leave every ten minutes, except on Sundays.",
    "After the storm, the fishermen repaired their nets and counted the missing boats.",
]


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """n sentences recombined from clauses of the sample corpus (seeded)."""
    from viz.corpus import CorpusError, sample_corpus

    try:
        base = list(sample_corpus().sentences)
    except CorpusError:
        base = BUILTIN
    clauses = [c.strip(" .!?;") for s in base for c in re.split(r"[,;:]| and | because | but ", s) if c.strip()]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.choice([1, 1, 2, 2, 3, 4]))
        parts = [clauses[i] for i in rng.integers(len(clauses), size=k)]
        out.append(", ".join(parts).capitalize() + rng.choice([".", "!", "?"]))
    return out


def plain_forward(bundle, sentences, batch_size, max_tokens, sort=True) -> float:
    from viz.atlas import iter_batches, runner

    model = runner(bundle)
    t = time.perf_counter()
    with torch.inference_mode():
        for b in iter_batches(bundle, sentences, batch_size, max_tokens, sort=sort):
            model(input_ids=b.ids, attention_mask=b.mask.long())
    return time.perf_counter() - t


def paired(bundle, sentences, batch_size, max_tokens, words=False) -> tuple[float, float]:
    """Per batch, back to back: the plain forward, then the atlas work on the same batch (forward with
    hooks + statistics). Pairing puts both under the same load of a shared machine. Tokenization is
    shared, so neither side counts it. -> (plain seconds, atlas seconds) summed over batches."""
    from viz.atlas import TokenClasses, iter_batches, process_batch, runner

    model, tc = runner(bundle), TokenClasses(bundle.tokenizer, bundle.lock)
    acc = wacc = None
    plain = atlas = 0.0
    for i, b in enumerate(iter_batches(bundle, sentences, batch_size, max_tokens, words=words)):
        order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate who goes first (caches, frequency)
        for which in order:
            t = time.perf_counter()
            if which == 0:
                with torch.inference_mode():
                    model(input_ids=b.ids, attention_mask=b.mask.long())
                plain += time.perf_counter() - t
            else:
                acc, wacc = process_batch(bundle, b, tc, acc, wacc, words)
                atlas += time.perf_counter() - t
    return plain, atlas


def throughput(args) -> dict:
    from viz.atlas import run_atlas
    from viz.models import load_model

    bundle = load_model(args.model)
    sents = make_sentences(args.n)
    plain_forward(bundle, sents[:64], args.batch_size, args.max_tokens)  # warm-up
    run_atlas(bundle, sents[:64], batch_size=args.batch_size, max_tokens=args.max_tokens)
    plain, atlas, words = [], [], []
    for _ in range(args.rounds):
        plain.append(plain_forward(bundle, sents, args.batch_size, args.max_tokens))
        atlas.append(run_atlas(bundle, sents, batch_size=args.batch_size, max_tokens=args.max_tokens).seconds)
    words.append(run_atlas(bundle, sents, batch_size=args.batch_size, max_tokens=args.max_tokens, words=True).seconds)
    unsorted = plain_forward(bundle, sents, args.batch_size, args.max_tokens, sort=False)
    p, a = min(plain), min(atlas)
    pp, pa = paired(bundle, sents, args.batch_size, args.max_tokens)
    wp, wa = paired(bundle, sents, args.batch_size, args.max_tokens, words=True)
    return {"model": args.model, "sentences": args.n, "batch_size": args.batch_size, "threads": 1,
            "paired_plain_s": round(pp, 2), "paired_atlas_s": round(pa, 2), "paired_ratio": round(pp / pa, 3),
            "paired_words_ratio": round(wp / wa, 3),
            "plain_s": [round(x, 2) for x in plain], "atlas_s": [round(x, 2) for x in atlas],
            "plain_sent_per_s": round(args.n / p, 1), "atlas_sent_per_s": round(args.n / a, 1),
            "ratio_atlas_over_plain": round(p / a, 3),
            "atlas_words_s": round(words[0], 2), "ratio_words_over_plain": round(p / words[0], 3),
            "plain_unsorted_s": round(unsorted, 2), "bucketing_speedup": round(unsorted / p, 2)}


def memory_child(n: int, args) -> dict:
    from viz.atlas import run_atlas
    from viz.models import load_model

    bundle = load_model(args.model)
    sents = make_sentences(n)
    run_atlas(bundle, sents[:64], batch_size=args.batch_size, max_tokens=args.max_tokens)  # warm-up allocations
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    marks: dict[int, float] = {}

    def progress(done: int, total: int) -> None:  # peak RSS so far at every tenth of the corpus
        tenth = 10 * done // total
        if tenth not in marks:
            marks[tenth] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    tracemalloc.start()
    res = run_atlas(bundle, sents, batch_size=args.batch_size, max_tokens=args.max_tokens, progress=progress)
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"sentences": n, "tokens": res.n_tokens, "seconds": round(res.seconds, 1),
            "peak_rss_mb_before_job": round(rss_before, 1), "peak_rss_mb": round(rss_peak, 1),
            "tracemalloc_peak_mb": round(py_peak / 2**20, 2),
            "peak_rss_mb_by_tenth": [marks[k] for k in sorted(marks)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--n", type=int, default=1000, help="sentences for the throughput comparison")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--mem", type=int, nargs="*", default=[1000, 10000], help="corpus sizes for the memory test")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from viz import quiet

    quiet()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args)))
        return 0
    if not args.skip_throughput:
        r = throughput(args)
        print(json.dumps(r))
        print(f"paired per batch: plain forward {r['paired_plain_s']} s, atlas {r['paired_atlas_s']} s -> ratio "
              f"{r['paired_ratio']} (target >= 0.8); with word level {r['paired_words_ratio']}")
        print(f"end to end (best of {args.rounds}): atlas {r['atlas_sent_per_s']} sent/s vs plain forward {r['plain_sent_per_s']} sent/s "
              f"-> ratio {r['ratio_atlas_over_plain']} (target >= 0.8); with word level {r['ratio_words_over_plain']}; "
              f"length bucketing makes the plain forward {r['bucketing_speedup']}x faster than corpus order")
    rows = []
    for n in args.mem:
        cmd = [sys.executable, __file__, "--memory-child", str(n), "--model", args.model,
               "--batch-size", str(args.batch_size), "--max-tokens", str(args.max_tokens)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(json.dumps(rows[-1]))
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"memory: {a['sentences']:,} -> {b['sentences']:,} sentences: peak RSS {a['peak_rss_mb']} -> "
              f"{b['peak_rss_mb']} MB ({b['peak_rss_mb'] - a['peak_rss_mb']:+.1f} MB), tracemalloc peak "
              f"{a['tracemalloc_peak_mb']} -> {b['tracemalloc_peak_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
