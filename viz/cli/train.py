"""`python -m viz train mlm|seq2seq|clm`: the trainers register their own options (viz.train.*)."""

from __future__ import annotations


def add_train(sub) -> None:
    from viz.train import clm, mlm, seq2seq  # each trainer owns its options (add_arguments) and its main

    p = sub.add_parser("train", help="self-supervised / synthetic training that produces checkpoints")
    tsub = p.add_subparsers(dest="task", required=True)
    for name, mod in (("mlm", mlm), ("seq2seq", seq2seq), ("clm", clm)):
        tp = tsub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else None)
        mod.add_arguments(tp)
        tp.set_defaults(func=mod.main)
