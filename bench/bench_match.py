"""Matching benchmark: `match_models(minilm, minilm-mlm)` against the Head atlas pass over the same corpus, and one
head's q/k projection.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_match.py [--n 300] [--repeats 5]

1. Side by side, interleaved (atlas, match, atlas, match, ...), one torch thread: the atlas pass
   (`viz.atlas.chunks.run_atlas` on minilm: tokenize, length-sorted batches, forward with capture, per-head
   statistics) and the matching (`viz.atlas.match.match_models(minilm, minilm-mlm)`: the same batches through both
   models, then every head pair's JSD sums). Both over the first --n bundled sample sentences. Reported: each
   round's ratio match / atlas, and the median ratio. Target: <= 2.5 (both models' forwards are included in it).
   The matching's own split (forwards vs pair sums) is measured once beside it.
2. A head's projection: gathering layer 3's q/k over the corpus (one forward, reported apart), then for one head
   the normalisation + PCA, and the figure built from it (`viz.figures.qk.qk_scatter`, hover texts included), and
   its JSON size. Target: normalisation + PCA + figure < 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from viz.atlas.chunks import run_atlas
    from viz.atlas.core import forward_attention, iter_batches
    from viz.atlas.match import match_models
    from viz.analysis.match import SimilarityAccumulator
    from viz.core.models import load_model
    from viz.tasks.corpus import sample_corpus

    sentences = list(sample_corpus().sentences[: args.n])
    a, b = load_model("minilm"), load_model("minilm-mlm")
    run_atlas(a, sentences[:20]), match_models(a, b, sentences[:20])  # warm-up
    ratios = []
    for r in range(args.repeats):
        t = time.perf_counter()
        run_atlas(a, sentences)
        atlas = time.perf_counter() - t
        t = time.perf_counter()
        res = match_models(a, b, sentences)
        match = time.perf_counter() - t
        ratios.append(match / atlas)
        print(f"round {r + 1}: atlas {atlas:.2f} s, match {match:.2f} s, ratio {match / atlas:.2f}", flush=True)
    print(f"median ratio match / atlas over {args.repeats} rounds: {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}); {res.n_rows} rows, level {res.level}")

    fwd = pairs = 0.0
    acc = SimilarityAccumulator(72, 72)
    for batch in iter_batches(a, sentences):
        t = time.perf_counter()
        x, y = forward_attention(a, batch), forward_attention(b, batch)
        fwd += time.perf_counter() - t
        t = time.perf_counter()
        cells = (batch.mask[:, :, None] & batch.mask[:, None, :]).reshape(-1)
        acc.add(x.permute(1, 2, 0, 3, 4).reshape(72, -1)[:, cells], y.permute(1, 2, 0, 3, 4).reshape(72, -1)[:, cells],
                int(batch.mask.sum()))
        pairs += time.perf_counter() - t
    print(f"matching split: both forwards {fwd:.2f} s, pack + pair sums {pairs:.2f} s")

    from viz.app.qk_view import hover_texts
    from viz.atlas.qk import CLASSES, gather_qk, head_points
    from viz.figures.attention import figure_json_bytes
    from viz.figures.qk import qk_scatter

    t = time.perf_counter()
    data = gather_qk(a, sentences, [3])
    gather = time.perf_counter() - t
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        pts = head_points(data, 3, 0, "pca")
        t_pca = time.perf_counter() - t
        fig = qk_scatter(pts.coords, pts.kind, pts.position, pts.token_class, CLASSES, hover_texts(data, pts),
                         pts.sentence, "kind")
        fig.to_json()
        times.append((t_pca, time.perf_counter() - t))
    med = statistics.median(x[1] for x in times)
    print(f"qk: gather layer 3 over {data.n_sentences} sentences {gather:.2f} s; one head: normalise + PCA "
          f"{statistics.median(x[0] for x in times):.3f} s, + figure and its JSON {med:.3f} s "
          f"({len(pts.kind):,} points, {figure_json_bytes(fig) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
