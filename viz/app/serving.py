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
  `refresh()` unfreezes, collects and freezes again: after a model is evicted, so its cycles, if any,
  are not kept forever.
- Streamlit's own full collection after every script run (`runner.postScriptGC`) is switched off in
  .streamlit/config.toml: even over the unfrozen objects it was 11 % of the GIL's time with eight
  sessions submitting together (py-spy --gil, bench/bench_load.py), each session's collection stalling
  the other seven. Python's generational collector still frees a run's young cycles (Plotly figures
  are cycles) as it goes, and `collect_now_and_then()` runs a full collection every COLLECT_EVERY
  seconds from a thread of its own, so cyclic garbage that reached the oldest generation is freed
  within seconds, once for the whole class instead of once per submit.
- Streamlit polls its config files every 0.2 s from a thread pool, forever (1.67, even with
  fileWatcherType "none"): ~5 % of the GIL's samples in the same profile. Every CONFIG_POLL_SECONDS
  is enough for a server whose config does not change while it runs.
"""

from __future__ import annotations

import gc
import os
import threading
import time

from viz.app.memory import keep_freed_memory

DEFAULT_TORCH_THREADS = 1
COLLECT_EVERY = 10.0  # seconds between full collections (collect_now_and_then)
CONFIG_POLL_SECONDS = 5.0
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
    collect_now_and_then()
    poll_config_slowly()


def settle() -> None:
    """Collect once, then exclude every object alive now from future collections (see module doc)."""
    gc.collect()
    gc.freeze()


def refresh() -> None:
    """Let the collector see everything again, collect, and freeze what is left."""
    gc.unfreeze()
    settle()


def collect_now_and_then(every: float = COLLECT_EVERY) -> threading.Thread:
    """A daemon thread that runs a full collection every `every` seconds (see the module doc)."""
    def loop() -> None:
        while True:
            time.sleep(every)
            gc.collect()

    thread = threading.Thread(target=loop, name="viz-gc", daemon=True)
    thread.start()
    return thread


def poll_config_slowly(seconds: float = CONFIG_POLL_SECONDS) -> bool:
    """Streamlit's config-file watchers poll every 0.2 s; make it `seconds`. False if this Streamlit has no
    such knob (then nothing changes)."""
    try:
        from streamlit.watcher import polling_path_watcher
    except ImportError:
        return False
    if not hasattr(polling_path_watcher, "_POLLING_PERIOD_SECS"):
        return False
    polling_path_watcher._POLLING_PERIOD_SECS = seconds  # read by each poll as it is scheduled
    return True


def run_server(streamlit_args: list[str], prog: str = "attention-atlas") -> int:
    """`streamlit run <app.py> ARGS` in this process (the `attention-atlas` command, viz/cli/serve.py): every
    Streamlit flag, STREAMLIT_* variable and config file works as it does there; the packaged app's own
    .streamlit/config.toml (loopback, headless, no file watcher) sits beside app.py, below all of them."""
    from streamlit.web import cli as streamlit_cli

    from viz.core.paths import APP

    return streamlit_cli.main.main(args=["run", str(APP), *streamlit_args], prog_name=prog)
