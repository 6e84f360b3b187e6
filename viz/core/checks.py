"""Argument value checks (argparse `type=` functions): bad input gets one line naming the flag, never a traceback.

Numbers are checked by argparse itself (`type=positive_int` ...), so `--top-k 0` stops before a model
loads, with `python -m viz mask: error: argument --top-k: must be at least 1 (got 0)`. Output paths are
checked the same way (`type=output_file` / `output_dir`): an unwritable `--out` is refused before the model
runs, not after it. Used by every subcommand in viz.cli and by the trainers' own options (viz.train).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Callable


# ----------------------------------------------------------------------------- numbers
def _number(kind: type, text: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {'an integer' if kind is int else 'a number'} (got {text!r})") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text!r})")
    return value


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi] (either bound may be None)."""
    def parse(text: str) -> int:
        value = _number(int, text)
        if lo is not None and value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo} (got {value})")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi} (got {value})")
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number between lo and hi (open or closed at each end)."""
    def parse(text: str) -> float:
        value = _number(float, text)
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise argparse.ArgumentTypeError(f"must be {'above' if lo_open else 'at least'} {lo:g} (got {value:g})")
        if hi is not None and (value >= hi if hi_open else value > hi):
            raise argparse.ArgumentTypeError(f"must be {'below' if hi_open else 'at most'} {hi:g} (got {value:g})")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)
positive_float = float_range(0.0, lo_open=True)
non_negative_float = float_range(0.0)
probability = float_range(0.0, 1.0, hi_open=True)  # dropout, masking rates: [0, 1)


# ----------------------------------------------------------------------------- paths
def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def output_file(text: str) -> str:
    """An argparse type: a file path we can create or overwrite (its folder exists and is writable)."""
    path = Path(text).expanduser()
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a file path")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is a folder; give a file path inside it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder '{folder}' does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write '{text}': permission denied")
    return text


def output_dir(text: str) -> str:
    """An argparse type: a folder we can write into (it exists, or can be created under a writable one)."""
    path = Path(text).expanduser()
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a folder path")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is a file, not a folder")
    base = _nearest_existing(path.absolute())
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create '{text}': '{base}' is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write into '{base}': permission denied")
    return text


def device(text: str) -> str:
    """An argparse type: cpu, auto, cuda, cuda:N or mps."""
    if re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", text.strip()):
        return text.strip()
    raise argparse.ArgumentTypeError(f"must be cpu, cuda, cuda:N, mps or auto (got {text!r})")


def input_file(text: str) -> str:
    """An argparse type: an existing, readable file."""
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"'{text}' is not a file" if path.exists() else f"'{text}' does not exist")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read '{text}': permission denied")
    return text
