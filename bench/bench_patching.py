"""Benchmark (not a test): batched activation patching against plain batched forwards of the same shape.

A head sweep on MiniLM (6 layers x 12 heads = 72 patched runs, every head at all positions) at 16 tokens, run by
`viz.causal.patching.sweep`: its N patched variants are the rows of batched forwards (64 + 8 rows), the clean
head outputs read by one extra forward. MiniLM has no masked-LM head, so each run's readout is the encoder's
output as it is (the [CLS] vector's first feature): the cost measured is the forwards'. Beside it, interleaved,
the same 72 rows as plain batched forwards (64 + 8, no session, the same readout), on the same model (its
component hooks installed, idle) and on a copy that never had hooks installed.

    throughput = patched runs per second / plain rows per second (>= 0.5 is the goal)

Also: head_pos (72 x 16 = 1152 runs) the same way, and attribution patching (every site at once: one clean
forward + one forward and backward) against one exact head sweep. Medians of REPEATS interleaved repeats,
torch at 1 thread. Run: .venv/bin/python bench/bench_patching.py
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from viz import quiet  # noqa: E402
from viz.causal.patching import rows_per_forward, sweep  # noqa: E402
from viz.causal.task import PatchTask, model_inputs  # noqa: E402
from viz.core.models import ModelBundle, load_model  # noqa: E402

REPEATS = 9
TOKENS = 16
CLEAN = "the quick brown fox jumps over the lazy dog near the river bank today"
CORRUPT = "the quick brown cat jumps over the lazy dog near the river bank today"


def readout(bundle: ModelBundle, task: PatchTask, n: int) -> torch.Tensor:
    """The encoder's output as it is, one number per row (what a metric would read; MiniLM has no MLM head)."""
    return bundle.model(**model_inputs(bundle, task, "corrupt", n)).last_hidden_state[:, 0, 0]


def minilm_task(bundle: ModelBundle) -> PatchTask:
    tok = bundle.tokenizer
    a, b = tok(CLEAN)["input_ids"], tok(CORRUPT)["input_ids"]
    assert len(a) == len(b) == TOKENS, (len(a), len(b))
    with torch.inference_mode():
        base = PatchTask(bundle.name, "encoder", CLEAN, CORRUPT, tuple(a), tuple(b), tuple(tok.convert_ids_to_tokens(a)),
                         tuple(tok.convert_ids_to_tokens(b)), 0, 0, "", None, None, 0.0, 0.0)
        mc = float(bundle.model(input_ids=torch.tensor([a])).last_hidden_state[0, 0, 0])
        mk = float(readout(bundle, base, 1)[0])
    return PatchTask(**{**base.__dict__, "metric_clean": mc, "metric_corrupt": mk})


def plain_rows(bundle: ModelBundle, task: PatchTask, rows: int) -> float:
    """Seconds for `rows` plain rows in the same batches a sweep uses."""
    n = rows_per_forward(TOKENS)
    t = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, rows, n):
            readout(bundle, task, min(n, rows - start))
    return time.perf_counter() - t


def patched(bundle: ModelBundle, task: PatchTask, site: str) -> float:
    t = time.perf_counter()
    res = sweep(bundle, task, site, measure=readout)
    assert res.forwards == -(-res.effect.size // rows_per_forward(TOKENS))
    return time.perf_counter() - t


def main() -> None:
    torch.set_num_threads(1)
    quiet()
    bundle = load_model("minilm")
    fresh = ModelBundle("minilm-plain", copy.deepcopy(bundle.model), bundle.tokenizer, bundle.arch)
    task = minilm_task(bundle)
    runs = {"head": 6 * 12, "head_pos": 6 * 12 * TOKENS}
    sweep(bundle, task, "head", measure=readout)  # installs the hooks; warm-up
    times: dict[str, list[float]] = {}
    for _ in range(REPEATS):
        for site, rows in runs.items():
            times.setdefault(f"patched {site}", []).append(patched(bundle, task, site))
            times.setdefault(f"plain {site} (hooks idle)", []).append(plain_rows(bundle, task, rows))
            times.setdefault(f"plain {site} (no hooks)", []).append(plain_rows(fresh, task, rows))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"MiniLM, {TOKENS} tokens, {rows_per_forward(TOKENS)} rows per forward, median of {REPEATS}, 1 thread")
    for site, rows in runs.items():
        p, q, r = med[f"patched {site}"], med[f"plain {site} (hooks idle)"], med[f"plain {site} (no hooks)"]
        print(f"  {site:9s} {rows:5d} patched runs: {rows / p:8.1f} runs/s; plain rows {rows / q:8.1f}/s (hooks idle), "
              f"{rows / r:8.1f}/s (no hooks)  ->  throughput ratio {q / p:.2f} (vs no hooks {r / p:.2f})")

    mlm = load_model("minilm-mlm")
    from viz.causal.atp import attribution
    from viz.causal.task import make_task

    t = make_task(mlm, "The capital of France is [MASK].", "The capital of Italy is [MASK].")
    atp, exact = [], []
    for _ in range(REPEATS):
        s = time.perf_counter()
        attribution(mlm, t)
        atp.append(time.perf_counter() - s)
        s = time.perf_counter()
        sweep(mlm, t, "head_pos")
        exact.append(time.perf_counter() - s)
    a, e = statistics.median(atp), statistics.median(exact)
    print(f"minilm-mlm, {len(t.clean_ids)} tokens: attribution patching (every site) {a * 1000:.0f} ms, exact head_pos "
          f"sweep ({6 * 12 * len(t.clean_ids)} runs) {e * 1000:.0f} ms: {e / a:.0f}x")


if __name__ == "__main__":
    main()
