"""Contribution routes on the real MiniLM (6 layers x 12 heads, d 384), measured side by side.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_routes.py [--repeats 7] [--no-browser]

Torch and BLAS pinned to one thread; every pair is timed interleaved (A, B, A, B, ...) and the medians compared,
so a busy machine slows both sides alike (ARCHITECTURE.md). Prints:

1. route vs forward, 128 tokens: a plain forward (SDPA, nothing recorded) of the text, against
   - the captured forward the routes stand on (every layer's weights, values and hidden states), and
   - the route from the last real token: its parts at every layer, then only the tokens the route reaches
     (threshold 0.04), on that capture;   ratio (capture + route) / forward   (the brief: <= 3x)
2. the full table at 512 tokens (every layer, token, key and head: layers x T^2 x heads x d L1 numbers) against a
   plain torch reduction `(y[:, None] - parts).abs().sum(-1)` of that same shape, chunked the same way (the parts
   given, not even computed);   ratio table / reduction   (the brief: <= 2x);
   extra memory of the table: peak RSS over the RSS before it, in a process of its own (the brief: < 256 MB)
3. the page's graph from one chosen token at 512 tokens: the route on a cached capture + the figure + its JSON,
   and (unless --no-browser) Chromium drawing that figure from its HTML (the brief: < 2 s)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXT = ("The committee met on Tuesday to discuss the new budget, and after a long debate about schools, roads and "
        "hospitals they agreed to raise the library fund while cutting the parking budget by a small amount. ") * 20


def interleaved(a, b, repeats: int) -> tuple[float, float]:
    """Medians (s) of a and b, run alternately after one warm-up each."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def route_vs_forward(bundle, repeats: int) -> None:
    import torch

    from viz.causal.routes import route
    from viz.causal.routes_parts import Parts
    from viz.core.capture import capture

    cap = capture(bundle, TEXT, max_tokens=128, qkv=True)
    T = len(cap.tokens)
    ids = torch.as_tensor(cap.input_ids)[None]

    def forward():
        with torch.inference_mode():
            bundle.model(input_ids=ids, attention_mask=torch.ones_like(ids))

    state = {}

    def captured_route():
        c = capture(bundle, TEXT, max_tokens=128, qkv=True)
        state["r"] = route({"encoder": Parts(bundle, c, "encoder")}, "encoder", T - 2, 0.04)

    t_fwd, t_all = interleaved(forward, captured_route, repeats)
    t_fwd2, t_cap = interleaved(forward, lambda: capture(bundle, TEXT, max_tokens=128, qkv=True), repeats)
    r = state["r"]
    parts = {"encoder": Parts(bundle, capture(bundle, TEXT, max_tokens=128, qkv=True), "encoder")}
    t_fwd3, t_low = interleaved(forward, lambda: route(parts, "encoder", T - 2, 0.01), repeats)
    low = route(parts, "encoder", T - 2, 0.01)
    print(f"1. {T} tokens, route from token {T - 2} at threshold 0.04 (tokens decomposed per layer "
          f"{r.decomposed['encoder']}, {len(r.edges)} edges)")
    print(f"   plain forward {t_fwd * 1e3:7.1f} ms | captured forward {t_cap * 1e3:7.1f} ms ({t_cap / t_fwd2:.2f}x) | "
          f"capture + route {t_all * 1e3:7.1f} ms  ->  ratio {t_all / t_fwd:.2f}x (route alone ~{(t_all - t_cap) / t_fwd:.2f}x)")
    print(f"   at threshold 0.01 the route reaches {low.decomposed['encoder']} tokens per layer: the route alone "
          f"{t_low * 1e3:.1f} ms = {t_low / t_fwd3:.2f}x a forward")


def table_vs_reduction(bundle, repeats: int) -> None:
    import torch

    from viz.causal.contributions import CHUNK_MB, _rows_per_chunk
    from viz.causal.routes import table
    from viz.causal.routes_parts import Parts
    from viz.core.capture import capture

    cap = capture(bundle, TEXT, max_tokens=512, qkv=True)
    p = Parts(bundle, cap, "encoder")
    T, L, H, D = p.hidden.shape[1], p.n_layers, p.n_heads, p.hidden.shape[-1]
    step = _rows_per_chunk(H, T, D, CHUNK_MB)
    y = torch.randn(step, 1, D)
    parts = torch.randn(step, H * T, D)  # one chunk of parts, given: the reference never builds them
    chunks = L * -(-T // step)

    def reduction():
        for _ in range(chunks):
            (y - parts).abs().sum(-1)

    for layer in range(L):  # the transformed values of every layer, once (what a page's first click pays)
        p.transformed_values("encoder", layer)
    t_table, t_ref = interleaved(lambda: table(p), reduction, max(3, repeats // 2))
    n = L * T * T * H * D
    print(f"2. full table at {T} tokens: {L} x {T}^2 x {H} x {D} = {n / 1e9:.2f} G numbers, {chunks} chunks of {step} rows")
    print(f"   table {t_table:6.2f} s | (y - parts).abs().sum(-1) {t_ref:6.2f} s  ->  ratio {t_table / t_ref:.2f}x")
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import os, ctypes, threading, time, torch; "
              "torch.set_num_threads(1); from viz.core.env import quiet; quiet(); "
              "from viz.core.models import load_model; from viz.core.capture import capture; "
              "from viz.causal.routes_parts import Parts; from viz.causal.routes import table; "
              f"b = load_model('minilm'); c = capture(b, {TEXT!r}, max_tokens=512, qkv=True); "
              "p = Parts(b, c, 'encoder'); [p.transformed_values('encoder', l) for l in range(p.n_layers)]; "
              "ctypes.CDLL('libc.so.6').malloc_trim(0); page = os.sysconf('SC_PAGE_SIZE'); "
              "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * page; base = rss(); peak = [base]; "
              "stop = [False]\n"
              "def watch():\n    while not stop[0]:\n        peak[0] = max(peak[0], rss()); time.sleep(0.0005)\n"
              "w = threading.Thread(target=watch); w.start(); t = table(p); stop[0] = True; w.join(); "
              "out = sum(a.nbytes for a in t.values()); "
              "print(f'{(peak[0] - base) / 2**20:.0f} {out / 2**20:.0f}')")
    mb, out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                             cwd=ROOT).stdout.split()[-2:]
    print(f"   extra memory of the table: peak RSS +{mb} MB over the RSS before it (of which the table itself, "
          f"{out} MB, is the result)")


def page_graph(bundle, browser: bool) -> None:
    from viz.causal.routes import route
    from viz.causal.routes_parts import Parts
    from viz.core.capture import capture
    from viz.figures.routes import route_graph

    cap = capture(bundle, TEXT, max_tokens=512, qkv=True)
    T = len(cap.tokens)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        parts = {"encoder": Parts(bundle, cap, "encoder")}
        r = route(parts, "encoder", T - 2, 0.04)
        t_route = time.perf_counter() - t
        fig = route_graph(r.to_json(), r.tokens, r.n_layers, "encoder", r.token, title="route")
        spec = fig.to_json()
        times.append((t_route, time.perf_counter() - t, len(spec)))
    t_route, t_total, size = sorted(times)[1]
    print(f"3. the page's graph at {T} tokens: route {t_route:.2f} s (decomposed {r.decomposed['encoder']}), route + "
          f"figure + JSON {t_total:.2f} s, {size / 1e3:.0f} kB sent")
    if not browser:
        return
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as d:
        html = Path(d) / "graph.html"
        html.write_text(fig.to_html(include_plotlyjs=True))
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            draws = []
            for _ in range(3):
                t = time.perf_counter()
                page.goto(html.as_uri())
                page.wait_for_selector(".main-svg .scatterlayer .point")
                draws.append(time.perf_counter() - t)
            b.close()
    t_draw = statistics.median(draws)
    print(f"   Chromium draws it from the HTML (plotly.js parsed each time) in {t_draw:.2f} s; with the server's "
          f"part: {t_total + t_draw:.2f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from viz.core.env import quiet

    quiet()
    from viz.core.models import load_model

    bundle = load_model("minilm")
    route_vs_forward(bundle, args.repeats)
    table_vs_reduction(bundle, args.repeats)
    page_graph(bundle, not args.no_browser)
    return 0


if __name__ == "__main__":
    sys.exit(main())
