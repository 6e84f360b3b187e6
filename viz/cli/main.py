"""`python -m viz ...` and the `attention-atlas` command: the dispatcher. Each subcommand lives in its own module of
viz.cli and registers itself with an `add_<name>(subparsers)` function listed in COMMANDS; the contracts (flags,
output keys) are stable."""

from __future__ import annotations

import argparse
import sys

from viz.cli.atlas import add_atlas
from viz.cli.attribute import add_attribute
from viz.cli.capture import add_capture
from viz.cli.common import OneLineParser, run_guarded
from viz.cli.generate import add_generate
from viz.cli.heads import add_heads
from viz.cli.inside import add_inside
from viz.cli.mask import add_mask
from viz.cli.match import add_match
from viz.cli.patch import add_patch
from viz.cli.qk import add_qk
from viz.cli.routes import add_routes
from viz.cli.serve import add_serve, is_serve, serve
from viz.cli.train import add_train

COMMANDS = [add_capture, add_mask, add_train, add_generate, add_atlas, add_heads, add_inside, add_match, add_qk,
            add_routes, add_serve, add_attribute, add_patch]


def build_parser(prog: str = "python -m viz") -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description="Attention Atlas: the dashboard (serve) and its computations "
                           "without the browser.", epilog=f"`{prog} serve` (or `attention-atlas` alone) serves the "
                           f"dashboard; `{prog} COMMAND --help` documents each command.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m viz") -> int:
    from viz.core.env import quiet
    from viz.app.memory import keep_freed_memory

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "serve" and is_serve(argv):
        return serve(argv, prog)
    args = build_parser(prog).parse_args(argv)  # first: a bad flag is answered before anything heavy loads
    quiet()
    keep_freed_memory()
    return run_guarded(lambda: args.func(args))


def console(argv: list[str] | None = None) -> int:
    """The `attention-atlas` command (pyproject's entry point): alone, or with Streamlit's options only
    (`--server.port 8502`), it serves the dashboard; otherwise it is `python -m viz`, subcommands unchanged."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if is_serve(argv):
        return serve(argv)
    return main(argv, prog="attention-atlas")
