"""`python -m viz ...`: the dispatcher. Each subcommand lives in its own module of viz.cli and registers itself
with an `add_<name>(subparsers)` function listed in COMMANDS; the contracts (flags, output keys) are stable."""

from __future__ import annotations

import argparse

from viz.cli.atlas import add_atlas
from viz.cli.capture import add_capture
from viz.cli.common import OneLineParser, run_guarded
from viz.cli.generate import add_generate
from viz.cli.heads import add_heads
from viz.cli.inside import add_inside
from viz.cli.mask import add_mask
from viz.cli.patch import add_patch
from viz.cli.train import add_train

COMMANDS = [add_capture, add_mask, add_train, add_generate, add_atlas, add_heads, add_inside, add_patch]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m viz", description="Attention Atlas without the browser.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from viz.core.env import quiet
    from viz.app.memory import keep_freed_memory

    args = build_parser().parse_args(argv)  # first: a bad flag is answered before anything heavy loads
    quiet()
    keep_freed_memory()
    return run_guarded(lambda: args.func(args))
