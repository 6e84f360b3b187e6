"""Benchmark (not a test): capture overhead and model-view payload, measured in one run.

1. MiniLM: `capture()` (recorded attention + q/k/v + hidden states + numpy) over transformers' plain
   eager forward with `output_attentions=True` (tokenisation included in both), at 14/122/512 tokens,
   interleaved, each call in a fresh thread as Streamlit runs a page; with the app's malloc tuning
   (viz/app/memory.py) and, in a child process, with glibc's defaults. The baseline is a second copy
   of MiniLM loaded with `attn_implementation="eager"` and never given our attention function: a
   loaded bundle runs SDPA when nothing records, and SDPA returns no weights (`output_attentions`
   then gives `()`), so the bundle itself cannot be the baseline. Its SDPA forward (no weights) is
   printed beside, for scale.
2. Model view of a random bert-base-shaped model (12 layers x 12 heads) at 512 tokens:
   figure JSON size and build time, beside what sending every weight would cost.

Ratios, not absolute times, are the result: timings on a shared 2-core machine are noisy.
Run: .venv/bin/python bench/bench_capture.py          (or `... bench_capture.py 14 122`: those lengths only)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from viz.core.env import quiet  # noqa: E402
from viz.core.capture import capture  # noqa: E402
from viz.figures.attention import figure_json_bytes, model_view  # noqa: E402
from viz.core.models import ModelBundle, load_model  # noqa: E402
from viz.core.arch import arch_for  # noqa: E402

REPEATS = 31
TOKENS = (14, 122, 512)  # 14 and 122: a short and a long sentence as the pages see them


def text_of(tokens: int, tok) -> str:
    words = ("the model reads every word and attends to the others in turn " * 200).split()
    lo, hi = 1, len(words)
    while lo < hi:  # shortest prefix whose tokenisation reaches the target length
        mid = (lo + hi) // 2
        if len(tok(" ".join(words[:mid]))["input_ids"]) >= tokens:
            hi = mid
        else:
            lo = mid + 1
    return " ".join(words[:lo])


def plain(bundle: ModelBundle, text: str, model=None):
    """A plain forward with `output_attentions=True`: of `model` (the eager baseline) or of the bundle's own
    model (SDPA when nothing records: no weights)."""
    with bundle.lock, torch.inference_mode():
        inputs = bundle.tokenizer(text, return_tensors="pt", truncation=True, max_length=bundle.max_tokens)
        return (model or bundle.model)(**inputs, output_attentions=True)


def eager_copy():
    """MiniLM as transformers loads it with eager attention, untouched by viz (no `atlas` function)."""
    from transformers import AutoModel

    from viz.core.models import minilm_dir

    return AutoModel.from_pretrained(minilm_dir(), attn_implementation="eager", use_safetensors=True).eval()


def timed(fn, *args, cpu: list | None = None) -> float:
    """Seconds `fn(*args)` takes in a new thread (a Streamlit script run is one); with `cpu`, the thread's own
    CPU seconds are appended to it (with one torch thread the forward runs in the calling thread, so this is
    the work itself, and moves far less than the wall clock when other jobs share the cores)."""
    out = []

    def run():
        t, c = time.perf_counter(), time.thread_time()
        fn(*args)
        out.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.thread_time() - c)

    th = threading.Thread(target=run)
    th.start()
    th.join()
    return out[0]


def bench_capture(tokens=TOKENS, repeats: int = REPEATS) -> None:
    from viz.app.memory import keep_freed_memory

    tuned = keep_freed_memory()
    bundle = load_model("minilm")
    eager = eager_copy()
    probe = plain(bundle, "a b c", eager)
    assert len(probe.attentions) == 6 and probe.attentions[0].shape[1] == 12, "the baseline returns no weights"
    print("capture vs a plain eager forward with output_attentions (MiniLM, 1 torch thread, median of "
          f"{repeats}, interleaved, each call in a new thread; malloc tuning "
          f"{'on' if tuned else 'off (glibc defaults)'}; load avg {open('/proc/loadavg').read().split()[0]})")
    print(f"{'tokens':>6} {'eager ms':>9} {'capture ms':>11} {'ratio':>6} {'sdpa ms':>8}   thread CPU: "
          f"{'eager ms':>9} {'capture ms':>11} {'ratio':>6}")
    for n in tokens:
        text = text_of(n, bundle.tokenizer)
        for _ in range(3):  # warm up every path
            plain(bundle, text, eager), capture(bundle, text), plain(bundle, text)
        a, b, c, ca, cb = [], [], [], [], []
        for _ in range(repeats):
            a.append(timed(plain, bundle, text, eager, cpu=ca))
            b.append(timed(capture, bundle, text, cpu=cb))
            c.append(timed(plain, bundle, text))
        pa, pb, pc, qa, qb = (statistics.median(x) * 1e3 for x in (a, b, c, ca, cb))
        print(f"{n:>6} {pa:>9.1f} {pb:>11.1f} {pb / pa:>6.2f}x {pc:>8.1f}   thread CPU: {qa:>9.1f} {qb:>11.1f} "
              f"{qb / qa:>6.2f}x", flush=True)


def bench_model_view() -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(attn_implementation="eager")).eval()  # bert-base shape, random weights
    bundle = ModelBundle("random-bert-base", model, load_model("minilm").tokenizer, arch_for("bert"))
    cap = capture(bundle, text_of(512, bundle.tokenizer))
    attn = cap.attentions["encoder"]
    times = []
    for _ in range(5):
        t = time.perf_counter()
        fig = model_view(attn)
        payload = figure_json_bytes(fig)  # serialisation is part of what the page pays
        times.append(time.perf_counter() - t)
    print(f"\nmodel view, {attn.shape[0]} layers x {attn.shape[1]} heads x {attn.shape[2]} tokens")
    print(f"  figure JSON {payload / 1e6:.2f} MB (every weight as float32 would be {attn.nbytes / 1e6:.0f} MB raw)")
    print(f"  build + serialise {statistics.median(times):.3f} s (median of 5)")


if __name__ == "__main__":
    quiet()
    torch.set_num_threads(1)
    only = [int(a) for a in sys.argv[1:] if a.isdigit()]  # e.g. `bench_capture.py 14 122`: those lengths only
    bench_capture(tuple(only) or TOKENS)
    if "--capture-only" not in sys.argv and not only:
        print()
        subprocess.run([sys.executable, __file__, "--capture-only"], check=True,
                       env={**os.environ, "VIZ_MALLOC_TUNING": "0"})
        bench_model_view()
