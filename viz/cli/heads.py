"""`python -m viz heads`: induction, previous-token, duplicate-token and sink scores of a decoder's heads."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from viz.cli.common import add_device_args, int_range, load_for


HEADS_HELP = """\
JSON (--json): {"layers": L, "heads": H, "induction": [[...]], "previous": [[...]], "duplicate": [[...]],
  "first_token": [[...]], "seed", "length", "sequences", "loss_first_copy", "loss_second_copy",
  "sink_sentences", "lengths", "induction_length": [[...]], "by_length": {"10": {...}, ...}}; every [[...]]
  is L lists of H numbers (scores in [0, 1]).
  induction     on [BOS] t_1..t_L t_1..t_L (random tokens, repeated once): mean attention from each token
                of the second copy to the token right after its earlier occurrence (Olsson et al. 2022)
  duplicate     the same rows, attention to the earlier occurrence itself
  previous      every row i >= 1 of those sequences, attention to i - 1
  first_token   the bundled sample sentences: mean attention on position 0 over rows i >= 1 (the sink)
  loss_*_copy   mean next-token loss (nats) on each copy: in-context copying makes the second far lower
Copy lengths: by default one length, L = 50 random tokens per copy (--length; the scores as they have always
  been). --lengths 10,25,50 measures each of those the model's positions and vocabulary allow and each head
  reports its best: a head that copies at one length can read ~0 at another (a model trained on short copies
  reads 0.01 at 50). Chance (attention spread evenly): about 0.05-0.09 at L = 10, 0.01-0.02 at 50.
  lengths          the lengths measured
  length           the one where the best induction head scored: loss_*_copy are measured there
  induction_length per head, the length its induction score comes from
  by_length        per length: induction, previous, duplicate ([[...]]), loss_first_copy, loss_second_copy"""


def _lengths(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be integers separated by commas (got {text!r})") from None
    if not out or min(out) < 2:
        raise argparse.ArgumentTypeError(f"every length must be at least 2 (got {text!r})")
    return out


def _heads(args) -> int:
    import json

    from viz.core.capture import CaptureError
    from viz.tasks.heads import head_scores
    from viz.core.models import ModelLoadError

    try:
        bundle = load_for(args)
        if args.length is not None and args.lengths is not None:
            raise CaptureError("give --length (one copy length) or --lengths (a sweep), not both")
        length = args.length
        if length is None and args.lengths is None:  # the contract: 50, or the longest a shorter model takes
            from viz.tasks.heads import sweep_lengths

            length = sweep_lengths(bundle, (50,))[0]
        res = head_scores(bundle, seed=args.seed, length=length, sequences=args.sequences, lengths=args.lengths)
    except (ModelLoadError, CaptureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res.to_json()))
        return 0
    print(f"{bundle.name}: {res.n_layers} layers x {res.n_heads} heads; {res.sequences} sequences of "
          f"{'/'.join(map(str, res.lengths))} random tokens repeated once (seed {res.seed}"
          + ("; each head's best length" if len(res.lengths) > 1 else "")
          + f"); at {res.length}: loss on copy 1 {res.loss_first:.2f}, copy 2 {res.loss_second:.2f} nats")
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
    p.add_argument("--length", type=int_range(2), default=None,
                   help="random tokens per copy (default 50, or the longest a shorter model takes: sequences of 1 + 2 x 50 tokens)")
    p.add_argument("--lengths", type=_lengths, default=None,
                   help="copy lengths to sweep instead, comma-separated (e.g. 10,25,50; those the model takes); "
                        "each head reports its best")
    p.add_argument("--sequences", type=int_range(1), default=10, help="sequences averaged (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON (keys below)")
    add_device_args(p)
    p.set_defaults(func=_heads)
