"""Process-wide settings for the dashboard server, which answers many sessions at once (app.py: `setup()`).

Measured on the 2-core machine with other jobs running (bench/bench_load.py --profile, MiniLM, short texts):

- torch threads: a 19-token capture took 13 ms with one torch thread and 361 ms with two (502 tokens:
  458 vs 3,099 ms): intra-op threads spin against every other busy process. Sessions are served by
  threads of their own, so one torch thread per forward is the right default. `VIZ_TORCH_THREADS`
  overrides it (a quiet machine serving one person with long texts may prefer 2).
- garbage collection: Streamlit runs a full `gc.collect()` after every script run, and with torch,
  transformers, plotly and a model loaded that walks ~450k objects: 0.2 s of CPU, holding the GIL,
  per rerun (0.8 s per rerun under load; eight sessions rerunning together wait on each other's
  collections). `settle()` moves what exists after imports and model loads into the permanent
  generation (`gc.freeze`), so those collections only walk what the scripts themselves create.
  Streamlit's collection still runs (and still frees each rerun's cyclic garbage: Plotly figures
  are cycles). `refresh()` unfreezes, collects and freezes again: after a model is evicted, so its
  cycles, if any, are not kept forever.
"""

from __future__ import annotations

import gc
import os

from viz.app.memory import keep_freed_memory

DEFAULT_TORCH_THREADS = 1
_done = False


def torch_threads() -> int:
    raw = os.environ.get("VIZ_TORCH_THREADS", "").strip()
    try:
        return max(1, int(raw)) if raw else DEFAULT_TORCH_THREADS
    except ValueError:
        return DEFAULT_TORCH_THREADS


def setup() -> None:
    """Once per process, before the first page runs; later calls do nothing. torch's thread count set
    here is inherited by every thread started afterwards (each Streamlit script run is one)."""
    global _done
    if _done:
        return
    _done = True
    import torch

    keep_freed_memory()
    torch.set_num_threads(torch_threads())
    settle()


def settle() -> None:
    """Collect once, then exclude every object alive now from future collections (see module doc)."""
    gc.collect()
    gc.freeze()


def refresh() -> None:
    """Let the collector see everything again, collect, and freeze what is left."""
    gc.unfreeze()
    settle()


def run_server(streamlit_args: list[str], prog: str = "attention-atlas") -> int:
    """`streamlit run <app.py> ARGS` in this process (the `attention-atlas` command, viz/cli/serve.py): every
    Streamlit flag, STREAMLIT_* variable and config file works as it does there; the packaged app's own
    .streamlit/config.toml (loopback, headless, no file watcher) sits beside app.py, below all of them."""
    from streamlit.web import cli as streamlit_cli

    from viz.core.paths import APP

    return streamlit_cli.main.main(args=["run", str(APP), *streamlit_args], prog_name=prog)
