"""Keep freed memory in the process (glibc malloc tuning) so big attention tensors stop page-faulting.

Why: a capture at 512 tokens allocates ~75 MB of attention weights per forward (MiniLM: 6 layers x 12 heads
x 512 x 512 float32) plus the same again to stack them. glibc serves blocks over 128 KB-32 MB with fresh
`mmap`s and returns them on free, and a Streamlit script thread allocates from its own 64 MB arena, so
every capture faults all of those pages in again. Measured in one run (bench/bench_capture.py, MiniLM,
512 tokens, in threads as Streamlit runs pages): capture / plain forward 2.00x with glibc's defaults, 1.09x
with this tuning, and the plain forward itself got faster (141 -> 131 ms).

What it sets (mallopt): M_MMAP_THRESHOLD and M_TRIM_THRESHOLD to 1 GiB (blocks come from, and go back to,
the heap, which keeps up to 1 GiB free at its top) and M_ARENA_MAX to 1 (threads share the main heap,
which can grow past the 64 MB of a thread arena). The cost: the process keeps its peak heap instead of
returning it to the OS. Off with VIZ_MALLOC_TUNING=0; a no-op on non-glibc systems.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
ONE_GIB = 1 << 30
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the tuning once per process; True when it is in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("VIZ_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): leave the allocator alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = all(mallopt(param, value) == 1 for param, value in
                ((M_MMAP_THRESHOLD, ONE_GIB), (M_TRIM_THRESHOLD, ONE_GIB), (M_ARENA_MAX, 1)))
    return _done
