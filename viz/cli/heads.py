"""`python -m viz heads`: induction, previous-token, duplicate-token and sink scores of a decoder's heads."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from viz.cli.common import add_device_args, int_range, load_for


HEADS_HELP = """\
JSON (--json): {"layers": L, "heads": H, "induction": [[...]], "previous": [[...]], "duplicate": [[...]],
  "first_token": [[...]], "seed", "length", "sequences", "loss_first_copy", "loss_second_copy",
  "sink_sentences"}; every [[...]] is L lists of H numbers in [0, 1].
  induction     on [BOS] t_1..t_L t_1..t_L (random tokens, repeated once): mean attention from each token
                of the second copy to the token right after its earlier occurrence (Olsson et al. 2022)
  duplicate     the same rows, attention to the earlier occurrence itself
  previous      every row i >= 1 of those sequences, attention to i - 1
  first_token   the bundled sample sentences: mean attention on position 0 over rows i >= 1 (the sink)
  loss_*_copy   mean next-token loss (nats) on each copy: in-context copying makes the second far lower"""


def _heads(args) -> int:
    import json

    from viz.core.capture import CaptureError
    from viz.tasks.heads import head_scores
    from viz.core.models import ModelLoadError

    try:
        bundle = load_for(args)
        res = head_scores(bundle, seed=args.seed, length=args.length, sequences=args.sequences)
    except (ModelLoadError, CaptureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res.to_json()))
        return 0
    print(f"{bundle.name}: {res.n_layers} layers x {res.n_heads} heads; {res.sequences} x {res.length} random "
          f"tokens repeated once (seed {res.seed}); loss on copy 1 {res.loss_first:.2f}, copy 2 "
          f"{res.loss_second:.2f} nats")
    for score in ("induction", "previous", "duplicate", "first"):
        a = getattr(res, score)
        order = np.argsort(-a, axis=None)[:3]
        best = ", ".join(f"L{i // res.n_heads}H{i % res.n_heads} {a.flat[i]:.2f}" for i in order)
        print(f"{score:10s} best: {best}")
    return 0


def add_heads(sub) -> None:
    p = sub.add_parser("heads", help="induction, previous-token, duplicate-token and sink scores of a decoder",
                       description="Score every head of a causal decoder on random token sequences repeated "
                                   "once (and the sink share on the bundled sample sentences).",
                       epilog=HEADS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="atlas-lm", help="a decoder: atlas-lm, tiny-llama, tiny-gpt2, a folder, ...")
    p.add_argument("--seed", type=int_range(0), default=0, help="random-token seed (default 0)")
    p.add_argument("--length", type=int_range(2), default=50,
                   help="random tokens per copy (default 50: sequences of 1 + 2 x 50 tokens)")
    p.add_argument("--sequences", type=int_range(1), default=10, help="sequences averaged (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON (keys below)")
    add_device_args(p)
    p.set_defaults(func=_heads)
