"""Attribution costs and numbers on the shipped minilm-mlm (issue 23's acceptance figures).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_attribution.py [--repeats 7] [--gaps 40] [--corpus 300]

torch and BLAS pinned to one thread (the machine is shared; ARCHITECTURE.md). Three parts:

ratio   one 20-token masked-LM example: every method but integrated gradients (attention-based, gradient x
        input, occlusion, value zeroing), and integrated gradients alone, against a plain forward + backward
        (the full model's forward, logits on every token, then `backward()` of log p(target): one training step
        without the optimizer) and against a forward + backward to the input embeddings only. Interleaved in
        one run, median of --repeats rounds; each round times every piece back to back.
gaps    integrated gradients' completeness gap |Σ IG - (f(x) - f(baseline))| / |f(x) - f(baseline)| at the
        default steps, over the seeded corpus examples of the first --gaps sample sentences.
corpus  occlusion vs the random ranking (comprehensiveness and sufficiency, AOPC) over the first --corpus sample
        sentences (300 = all of data/sample_sentences.txt), with 95 % bootstrap intervals.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEXT = "The old fisherman walked slowly along the [MASK] bank of the river, looking for a place."  # 20 tokens


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ratio_part(bundle, repeats: int) -> None:
    import torch

    from viz.causal.attribution_attention import attention_scores
    from viz.causal.attribution_methods import grad_x_input, integrated_gradients, occlusion
    from viz.causal.attribution_target import prepare
    from viz.causal.attribution_vz import value_zeroing
    from viz.causal.faithfulness import faithfulness

    problem = prepare(bundle, TEXT)
    model, ids, pos, t = bundle.model, problem.ids[None], problem.position, problem.target_id
    print(f"example: {problem.n} tokens, mask at {pos}, target {problem.target!r}")

    def plain():
        for p in model.parameters():
            p.grad = None
        lp = model(input_ids=ids).logits[0, pos].log_softmax(-1)[t]
        lp.backward()

    def to_embeddings():
        e = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        lp = model(inputs_embeds=e).logits[0, pos].log_softmax(-1)[t]
        torch.autograd.grad(lp, e)

    pieces = {"attention-based (4)": lambda: attention_scores(problem), "grad_x_input": lambda: grad_x_input(problem),
              "occlusion": lambda: occlusion(problem), "value_zeroing": lambda: value_zeroing(problem)}
    scores = {"occlusion": occlusion(problem), "grad_x_input": grad_x_input(problem)}
    for fn in [plain, to_embeddings, *pieces.values()]:  # warm up
        fn()
    integrated_gradients(problem)
    rows: dict[str, list[float]] = {k: [] for k in ["plain", "to_embeddings", *pieces, "all but IG",
                                                     "integrated_gradients", "faithfulness (2 methods)"]}
    for _ in range(repeats):
        rows["plain"].append(timed(plain))
        rows["to_embeddings"].append(timed(to_embeddings))
        total = 0.0
        for k, fn in pieces.items():
            dt = timed(fn)
            rows[k].append(dt)
            total += dt
        rows["all but IG"].append(total)
        rows["integrated_gradients"].append(timed(lambda: integrated_gradients(problem)))
        rows["faithfulness (2 methods)"].append(timed(lambda: faithfulness(problem, scores)))
        for p in model.parameters():
            p.grad = None
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\n{'piece':<28} {'median ms':>10} {'x plain':>8} {'x to-emb':>9}")
    for k, v in med.items():
        print(f"{k:<28} {v * 1000:>10.1f} {v / med['plain']:>8.2f} {v / med['to_embeddings']:>9.2f}")
    print(f"\nratio (all methods but IG) / plain forward+backward: {med['all but IG'] / med['plain']:.2f}")


def gaps_part(bundle, n: int) -> None:
    import numpy as np

    from viz.causal.attribution_corpus import example_problem
    from viz.causal.attribution_methods import IG_STEPS, integrated_gradients
    from viz.tasks.corpus import sample_corpus

    rel = []
    for i, s in enumerate(sample_corpus().sentences[:n]):
        p = example_problem(bundle, s, i)
        if p is not None:
            rel.append(integrated_gradients(p).relative_gap)
    rel = np.array(rel)
    print(f"\nintegrated gradients, {IG_STEPS} steps, {len(rel)} examples: relative completeness gap median "
          f"{np.median(rel):.2e}, mean {rel.mean():.2e}, max {rel.max():.2e}; under 5 %: {(rel < 0.05).mean():.0%}")


def corpus_part(bundle, n: int) -> None:
    from viz.causal.attribution_corpus import run_corpus
    from viz.tasks.corpus import sample_corpus

    t = time.perf_counter()
    res = run_corpus(bundle, sample_corpus().sentences[:n], ["occlusion"])
    s = res.summary().set_index("method")
    print(f"\ncorpus: {len(res.examples)} examples ({res.skipped} skipped), {time.perf_counter() - t:.0f} s")
    for m in ("occlusion", "random"):
        r = s.loc[m]
        print(f"{m:<10} comprehensiveness {r.comprehensiveness:.3f} [{r.comprehensiveness_lo:.3f}, "
              f"{r.comprehensiveness_hi:.3f}] sd {r.comprehensiveness_std:.3f}   sufficiency {r.sufficiency:.3f} "
              f"[{r.sufficiency_lo:.3f}, {r.sufficiency_hi:.3f}] sd {r.sufficiency_std:.3f}")
    r = s.loc["occlusion"]
    print(f"occlusion beats random: comprehensiveness on {r.comprehensiveness_beats_random:.0%} of examples, "
          f"sufficiency on {r.sufficiency_beats_random:.0%}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--gaps", type=int, default=40, help="sample sentences for the completeness gaps (0: skip)")
    ap.add_argument("--corpus", type=int, default=300, help="sample sentences for occlusion vs random (0: skip)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import viz

    viz.quiet()
    from viz.core.models import load_model

    bundle = load_model("minilm-mlm")
    ratio_part(bundle, args.repeats)
    if args.gaps:
        gaps_part(bundle, args.gaps)
    if args.corpus:
        corpus_part(bundle, args.corpus)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
