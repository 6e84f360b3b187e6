"""`streamlit run` with every script run timed (and optionally profiled); used by bench_load.py --profile.

    python bench/profiled_server.py OUT.json [--cprofile OUT.prof] -- <streamlit run arguments>

Per script run it records the page, wall seconds and the thread's CPU seconds; on SIGTERM it writes
them to OUT.json (and, with --cprofile, the cumulative cProfile stats of all runs to OUT.prof).
"""

from __future__ import annotations

import atexit
import cProfile
import json
import sys
import threading
import time


def main() -> None:
    out = sys.argv[1]
    rest = sys.argv[2:]
    prof_path = None
    if rest[:1] == ["--cprofile"]:
        prof_path, rest = rest[1], rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]

    from streamlit.runtime.scriptrunner import script_runner as sr

    runs: list[dict] = []
    lock = threading.Lock()
    profiles: list[cProfile.Profile] = []
    original = sr.ScriptRunner._run_script

    def timed(self, rerun_data):
        prof = cProfile.Profile() if prof_path else None
        wall, cpu = time.perf_counter(), time.thread_time()
        if prof:
            prof.enable()
        try:
            return original(self, rerun_data)
        finally:
            if prof:
                prof.disable()
            with lock:
                runs.append({"page": getattr(rerun_data, "page_script_hash", "") or "", "start": wall,
                             "wall": time.perf_counter() - wall, "cpu": time.thread_time() - cpu})
                if prof:
                    profiles.append(prof)

    sr.ScriptRunner._run_script = timed

    def dump():
        with lock:
            with open(out, "w") as f:
                json.dump(runs, f)
            if prof_path and profiles:
                import pstats

                stats = pstats.Stats(profiles[0])
                for p in profiles[1:]:
                    stats.add(p)
                stats.dump_stats(prof_path)

    atexit.register(dump)  # streamlit stops cleanly on SIGTERM, so exit handlers run
    from streamlit.web.cli import main as streamlit_main

    sys.argv = ["streamlit", *rest]
    streamlit_main()


if __name__ == "__main__":
    main()
