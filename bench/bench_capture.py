"""Benchmark (not a test): capture overhead and model-view payload, measured in one run.

1. MiniLM: `capture()` (hooks + q/k/v + hidden states + numpy) over transformers' plain eager
   forward with `output_attentions=True` (tokenisation included in both), at 16/128/512 tokens,
   each call in a fresh thread as Streamlit runs a page; with the app's malloc tuning
   (viz/app/memory.py) and, in a child process, with glibc's defaults.
2. Model view of a random bert-base-shaped model (12 layers x 12 heads) at 512 tokens:
   figure JSON size and build time, beside what sending every weight would cost.

Ratios, not absolute times, are the result: timings on a shared 2-core machine are noisy.
Run: .venv/bin/python bench/bench_capture.py
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

REPEATS = 15


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


def plain(bundle: ModelBundle, text: str):
    with bundle.lock, torch.inference_mode():
        inputs = bundle.tokenizer(text, return_tensors="pt", truncation=True, max_length=bundle.max_tokens)
        return bundle.model(**inputs, output_attentions=True)


def timed(fn, *args) -> float:
    """Seconds `fn(*args)` takes in a new thread (a Streamlit script run is one)."""
    out = []

    def run():
        t = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - t)

    th = threading.Thread(target=run)
    th.start()
    th.join()
    return out[0]


def bench_capture() -> None:
    from viz.app.memory import keep_freed_memory

    tuned = keep_freed_memory()
    bundle = load_model("minilm")
    print("capture vs plain eager forward with output_attentions (MiniLM, 1 torch thread, median of "
          f"{REPEATS}, interleaved, each call in a new thread; malloc tuning "
          f"{'on' if tuned else 'off (glibc defaults)'})")
    print(f"{'tokens':>6} {'plain ms':>9} {'capture ms':>11} {'ratio':>6}")
    for n in (16, 128, 512):
        text = text_of(n, bundle.tokenizer)
        for _ in range(3):  # warm up both paths
            plain(bundle, text), capture(bundle, text)
        a, b = [], []
        for _ in range(REPEATS):
            a.append(timed(plain, bundle, text))
            b.append(timed(capture, bundle, text))
        pa, pb = statistics.median(a) * 1e3, statistics.median(b) * 1e3
        print(f"{n:>6} {pa:>9.1f} {pb:>11.1f} {pb / pa:>6.2f}x")


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
    bench_capture()
    if "--capture-only" not in sys.argv:
        print()
        subprocess.run([sys.executable, __file__, "--capture-only"], check=True,
                       env={**os.environ, "VIZ_MALLOC_TUNING": "0"})
        bench_model_view()
