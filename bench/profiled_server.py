"""`streamlit run` with every script run timed (and optionally profiled); used by bench_load.py --profile.

    python bench/profiled_server.py OUT.json [--cprofile OUT.prof] -- <streamlit run arguments>

As it happens, it appends to OUT.json.events one line per rerun request received (`rerun SESSION T`) and per
script_finished message the server queues for a session (`finished SESSION T`), T on CLOCK_MONOTONIC (Python's
perf_counter, the same clock in every process of the machine): the server's own time for a submit, whatever
the browsers and the bench process were doing meanwhile.

Per script run it records the page, wall seconds and the thread's CPU seconds; on SIGTERM it writes
them to OUT.json (and, with --cprofile, the cumulative cProfile stats of all runs to OUT.prof, and each
run's own stats to OUT.prof.runs/<n>.prof, named by the run's `prof` entry in OUT.json, so a bench can
merge the runs of one stretch: the first runs load the model and import half of transformers).
"""

from __future__ import annotations

import atexit
import cProfile
import json
import os
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
        # the thread's CPU clock: on a shared machine the wall clock mostly measures waiting for a core or the GIL
        prof = cProfile.Profile(time.thread_time) if prof_path else None
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
                    runs[-1]["prof"] = f"{prof_path}.runs/{len(profiles)}.prof"

    sr.ScriptRunner._run_script = timed

    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from streamlit.runtime import app_session as aps

    events = open(out + ".events", "a", buffering=1)  # line-buffered: the bench reads it while we run
    succeeded = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_SUCCESSFULLY")
    handle, enqueue = aps.AppSession.handle_backmsg, aps.AppSession._enqueue_forward_msg

    def on_backmsg(self, msg):
        if msg.WhichOneof("type") == "rerun_script":
            events.write(f"rerun {self.id} {time.perf_counter():.6f}\n")
        return handle(self, msg)

    def on_forward(self, msg):
        if msg.WhichOneof("type") == "script_finished" and msg.script_finished == succeeded:
            events.write(f"finished {self.id} {time.perf_counter():.6f}\n")
        return enqueue(self, msg)

    aps.AppSession.handle_backmsg, aps.AppSession._enqueue_forward_msg = on_backmsg, on_forward

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
                os.makedirs(prof_path + ".runs", exist_ok=True)
                for i, p in enumerate(profiles, 1):
                    p.dump_stats(f"{prof_path}.runs/{i}.prof")

    atexit.register(dump)  # streamlit stops cleanly on SIGTERM, so exit handlers run
    from streamlit.web.cli import main as streamlit_main

    sys.argv = ["streamlit", *rest]
    streamlit_main()


if __name__ == "__main__":
    main()
