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
2. Memory: a fresh process per corpus size runs the whole job and reports its peak RSS (VmHWM; not
   ru_maxrss, which in a child started by a bigger parent begins at the parent's peak), the peak RSS
   reached by each tenth of the corpus, and the tracemalloc peak of Python allocations during the
   job (torch tensors are not Python allocations: RSS covers them). Target: flat from 1,000 to 10,000 sentences.

3. Engines (`--engines`): the file job (`viz.atlas.job.run_job`, chunks of --chunk-sentences) over
   `--engine-n` sentences (20,000) with the embedded engine and with Ray at 1 and 2 workers (local cluster,
   1 torch thread per worker; the embedded engine on 1 thread too). Throughput counts the job only (model
   loaded, workers started); start-up is reported beside it. Then the peak RSS of the *driver* (the process
   running run_job: for Ray it holds no model) on `--driver-mem` corpora (10,000 and 100,000 sentences),
   each in a fresh process, with `--driver-model` (tiny-bert: the driver's memory does not depend on the
   model's compute). Target: flat, within +10 %.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_atlas.py --engines --skip-throughput --mem

Sentences are made by recombining clauses of the bundled sample corpus (data/sample_sentences.txt, or a
small built-in list when it is absent), seeded, so lengths vary like real text.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    from viz.tasks.corpus import CorpusError, sample_corpus

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
    from viz.atlas.core import iter_batches, runner

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
    from viz.atlas.core import TokenClasses, iter_batches, process_batch, runner

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
    from viz.atlas.chunks import run_atlas
    from viz.core.models import load_model

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
    from viz.atlas.chunks import run_atlas
    from viz.core.models import load_model

    bundle = load_model(args.model)
    sents = make_sentences(n)
    run_atlas(bundle, sents[:64], batch_size=args.batch_size, max_tokens=args.max_tokens)  # warm-up allocations
    rss_before = vm("VmHWM")
    marks: dict[int, float] = {}

    def progress(done: int, total: int) -> None:  # peak RSS so far at every tenth of the corpus
        tenth = 10 * done // total
        if tenth not in marks:
            marks[tenth] = round(vm("VmHWM"), 1)

    tracemalloc.start()
    res = run_atlas(bundle, sents, batch_size=args.batch_size, max_tokens=args.max_tokens, progress=progress)
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = vm("VmHWM")
    return {"sentences": n, "tokens": res.n_tokens, "seconds": round(res.seconds, 1),
            "peak_rss_mb_before_job": round(rss_before, 1), "peak_rss_mb": round(rss_peak, 1),
            "tracemalloc_peak_mb": round(py_peak / 2**20, 2),
            "peak_rss_mb_by_tenth": [marks[k] for k in sorted(marks)]}


def write_corpus(n: int, folder: Path) -> Path:
    path = folder / f"bench-{n}.txt"
    if not path.is_file():
        path.write_text("".join(s + "\n" for s in make_sentences(n)))
    return path


def engines(args) -> dict:
    """Throughput of the file job: embedded vs Ray with 1 and 2 workers, on the same corpus and chunks."""
    import tempfile

    from viz.atlas.job import EmbeddedExecutor, JobSpec, run_job, write_csv

    out: dict = {"model": args.model, "sentences": args.engine_n, "chunk_sentences": args.chunk_sentences}
    with tempfile.TemporaryDirectory() as tmp:
        spec = JobSpec(model=args.model, corpus=str(write_corpus(args.engine_n, Path(tmp))), out=f"{tmp}/s.csv",
                       batch_size=args.batch_size, max_tokens=args.max_tokens, chunk_sentences=args.chunk_sentences)
        runs = [("embedded", 0)] + [("ray", w) for w in args.ray_workers]
        for name, workers in runs:
            t0 = time.perf_counter()
            if name == "embedded":
                ex = EmbeddedExecutor(spec)
            else:
                from viz.atlas.ray_engine import RayExecutor

                ex = RayExecutor(spec, workers=workers, threads=1).start()
            started = time.perf_counter() - t0
            try:
                res = run_job(spec, ex)
            finally:
                ex.close()
            write_csv(res, spec)  # as the CLI does: the CSV, and the checkpoints removed
            key = name if name == "embedded" else f"ray_{workers}"
            out[key] = {"startup_s": round(started, 1), "job_s": round(res.seconds, 1),
                        "sent_per_s": round(res.n_sentences / res.seconds, 1)}
            print(json.dumps({key: out[key]}), flush=True)
    base = out["embedded"]["sent_per_s"]
    for w in args.ray_workers:
        out[f"ratio_ray_{w}_over_embedded"] = round(out[f"ray_{w}"]["sent_per_s"] / base, 2)
    return out


def driver_child(n: int, args) -> dict:
    """One job over n sentences in this (fresh) process; peak RSS of this process, the driver."""
    import tempfile

    from viz.atlas.job import EmbeddedExecutor, JobSpec, Progress, run_job

    with tempfile.TemporaryDirectory() as tmp:
        spec = JobSpec(model=args.driver_model, corpus=str(write_corpus(n, Path(tmp))), out=f"{tmp}/s.csv",
                       batch_size=args.batch_size, max_tokens=args.max_tokens, chunk_sentences=args.chunk_sentences)
        rss0 = vm("VmHWM")  # not ru_maxrss: a child forked from a big parent inherits the parent's
        if args.driver_engine == "ray":
            from viz.atlas.ray_engine import RayExecutor

            ex = RayExecutor(spec, workers=2, threads=1).start()
        else:
            ex = EmbeddedExecutor(spec)
        rss_started = vm("VmHWM")
        now = [vm("VmRSS")]  # the high-water mark is often set by start-up: also sample the RSS at every chunk
        try:
            res = run_job(spec, ex, progress=Progress(None), on_chunk=lambda p: now.append(vm("VmRSS")))
        finally:
            ex.close()
    return {"engine": args.driver_engine, "model": args.driver_model, "sentences": n,
            "chunks": -(-n // args.chunk_sentences),
            "seconds": round(res.seconds, 1), "peak_rss_mb_before": round(rss0, 1),
            "peak_rss_mb_started": round(rss_started, 1),
            "peak_rss_mb": round(vm("VmHWM"), 1),
            "rss_mb_at_start": round(now[0], 1), "rss_mb_max_during": round(max(now), 1)}


def vm(field: str) -> float:
    """VmRSS (resident now) or VmHWM (its peak) of this process, in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def driver_memory(args) -> list[dict]:
    rows = []
    for engine in args.driver_engines:
        for n in args.driver_mem:
            cmd = [sys.executable, __file__, "--driver-child", str(n), "--driver-engine", engine, "--driver-model",
                   args.driver_model, "--chunk-sentences", str(args.chunk_sentences), "--batch-size",
                   str(args.batch_size), "--max-tokens", str(args.max_tokens)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
            print(json.dumps(rows[-1]), flush=True)
        a, b = rows[-len(args.driver_mem)], rows[-1]
        print(f"driver ({engine}): {a['sentences']:,} -> {b['sentences']:,} sentences: peak RSS {a['peak_rss_mb']} -> "
              f"{b['peak_rss_mb']} MB ({100 * (b['peak_rss_mb'] / a['peak_rss_mb'] - 1):+.1f} %, target <= +10 %); "
              f"RSS sampled per chunk, max {a['rss_mb_max_during']} -> {b['rss_mb_max_during']} MB "
              f"({100 * (b['rss_mb_max_during'] / a['rss_mb_max_during'] - 1):+.1f} %)")
    return rows


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
    ap.add_argument("--engines", action="store_true", help="embedded vs Ray throughput and driver memory (section 3)")
    ap.add_argument("--engine-n", type=int, default=20_000, help="sentences for the engine comparison")
    ap.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--chunk-sentences", type=int, default=1024)
    ap.add_argument("--driver-mem", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--driver-engines", nargs="*", default=["ray", "embedded"])
    ap.add_argument("--driver-model", default="tiny-bert")
    ap.add_argument("--driver-only", action="store_true", help="only the driver-memory part of section 3")
    ap.add_argument("--driver-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--driver-engine", default="ray", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from viz.core.env import quiet

    quiet()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args)))
        return 0
    if args.driver_child:
        print(json.dumps(driver_child(args.driver_child, args)))
        return 0
    if args.driver_only:
        driver_memory(args)
    if args.engines:
        r = engines(args)
        print(json.dumps(r))
        print("throughput (sent/s, job only): embedded " + str(r["embedded"]["sent_per_s"]) + "; " + "; ".join(
            f"ray {w} worker{'s' * (w > 1)} {r[f'ray_{w}']['sent_per_s']} ({r[f'ratio_ray_{w}_over_embedded']}x)"
            for w in args.ray_workers))
        driver_memory(args)
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
