"""Attention flow vs rollout on the real MiniLM (6 layers x 12 heads), by sequence length.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_flow.py [--full-budget 90]

One run per size, torch and BLAS pinned to one thread (the machine is shared; see
ARCHITECTURE.md). Prints, per token count:
  rollout    all layers, [layer, q, q]
  flow row   one token's flow to every input token at the last layer (q max-flow problems):
             what the page computes when a token is followed (our Dinic solver)
  nx row     the same with networkx's shortest augmenting path (the reference), up to 64 tokens
  flow full  the whole [q, q] flow matrix at the last layer (q^2 problems): measured while the
             estimate (row time x q) is under --full-budget seconds, else printed as an estimate
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEXT = ("The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat near the door, "
        "and the old man reads the morning paper with a cup of coffee before walking to the station. ") * 8
SIZES = (16, 32, 64, 96, 128)
INTERACTIVE_S = 3.0  # what "returns within seconds" is taken to mean


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-budget", type=float, default=90.0, help="measure the full matrix only below this estimate")
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import viz

    viz.quiet()
    from viz.analysis.flow import attention_flow, attention_rollout
    from viz.core.capture import capture
    from viz.core.models import load_model

    bundle = load_model("minilm")
    print(f"{'tokens':>6} {'rollout ms':>11} {'flow row s':>11} {'nx row s':>9} {'flow full s':>14}")
    rows = []
    for n in args.sizes:
        attn = capture(bundle, TEXT, max_tokens=n).attentions["encoder"]
        assert attn.shape[-1] == n, attn.shape
        t = time.perf_counter()
        attention_rollout(attn)
        t_roll = time.perf_counter() - t
        t = time.perf_counter()
        attention_flow(attn, queries=[n // 2], max_tokens=None)
        t_row = time.perf_counter() - t
        t_nx = float("nan")
        if n <= 64:
            t = time.perf_counter()
            attention_flow(attn, queries=[n // 2], max_tokens=None, solver="networkx")
            t_nx = time.perf_counter() - t
        est = t_row * n
        if est <= args.full_budget:
            t = time.perf_counter()
            attention_flow(attn, max_tokens=None)
            full, mark = time.perf_counter() - t, ""
        else:
            full, mark = est, " (est.)"
        rows.append((n, t_roll, t_row, full))
        print(f"{n:>6} {1000 * t_roll:>11.2f} {t_row:>11.2f} {t_nx:>9.2f} {full:>10.1f}{mark:<7}", flush=True)
    row_ok = [n for n, _, r, _ in rows if r <= INTERACTIVE_S]
    full_ok = [n for n, _, _, f in rows if f <= INTERACTIVE_S]
    print(f"interactive (<= {INTERACTIVE_S:.0f} s): flow row up to {max(row_ok, default=0)} tokens, "
          f"full flow matrix up to {max(full_ok, default=0)} tokens (of the sizes measured)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
