"""What every `python -m viz` subcommand shares: the one-line parser, --device/--dtype, loading the asked-for
model, index lists, and the CLI boundary (`run_guarded`: the library's user-facing exceptions and file errors
become `error: <message>` with exit status 2, never a traceback).

Subcommands (viz.cli.capture, viz.cli.mask, ...) import this module and the library, never viz.cli.main.
The argparse value checks (int_range, output_file, ...) live in viz.core.checks and are re-exported here.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

# re-exported: subcommands take their argparse types from here with the parser
from viz.core.checks import (device, float_range, input_file, int_range, non_negative_float,  # noqa: F401
                             non_negative_int, output_dir, output_file, positive_float, positive_int, probability)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line: `prog: error: message (see prog --help)`, exit status 2.
    Subparsers made by `add_subparsers().add_parser` are of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------- shared options
def index_list(value: str) -> list[int] | None:
    """argparse type for --layers/--rows: 'all' or comma-separated integers (negative: from the end)."""
    value = value.strip().lower()
    if value == "all":
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not 'all' or a comma-separated list of integers "
                                         "(e.g. 0,5,-1)") from None
    if not out:
        raise argparse.ArgumentTypeError("give 'all' or at least one index")
    return out


def add_device_args(p) -> None:
    """--device/--dtype, the same on every command that loads a model."""
    p.add_argument("--device", default="auto", type=device,
                   help="auto (CUDA or MPS where present, else cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto (bfloat16 on a GPU, float32 on the CPU), float32, bfloat16 or float16")


def load_for(args):
    """The model a command asked for, on its --device in its --dtype."""
    from viz.core.models import load_model

    return load_model(args.model, dtype=getattr(args, "dtype", None), device=getattr(args, "device", None))


# ----------------------------------------------------------------------------- the boundary
def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is written for the user (imported late: they live beside heavy modules)."""
    from viz.core.arch import UnsupportedArchitecture
    from viz.core.capture import CaptureError
    from viz.tasks.corpus import CorpusError
    from viz.tasks.mlm import MaskError
    from viz.core.models import ModelLoadError

    return ModelLoadError, CaptureError, MaskError, CorpusError, UnsupportedArchitecture


def run_guarded(func: Callable[[], int | None]) -> int:
    """Run a subcommand; user errors and file errors become `error: <message>` on stderr, exit status 2.
    Anything else is a bug: one line too (exit status 1), and the traceback only with VIZ_DEBUG=1."""
    try:
        return int(func() or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user gave that cannot be read or written
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the CLI boundary: never a traceback for the user
        if os.environ.get("VIZ_DEBUG"):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"error: unexpected {type(e).__name__}: {first} (a bug: VIZ_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
