"""Load benchmark (not a test): K real browser sessions on the Attention page of a real server.

Every session (its own Chromium context, so its own Streamlit session) submits a distinct text at
the same moment as the others; we time, per session, from the Ctrl+Enter that commits the text to
*that session's own* model view drawn: the model view chart in its page holds exactly the image the
library computes for its text (shape, and sum of the uint8 thumbnails within 0.05 %) and its one-head
heatmap's token axis holds its own tokens (in order; a long text's axis labels every n-th one). While waiting,
every token axis a page shows is checked; one that is not drawn from one of the session's own texts
is cross-talk, and the run fails.
The server's RSS is sampled every 0.2 s throughout.

    .venv/bin/python bench/bench_load.py                      # K = 1, 4, 8; 3 rounds each (short texts)
    .venv/bin/python bench/bench_load.py --sessions 8 --rounds 5
    .venv/bin/python bench/bench_load.py --memory 30          # one session, 30 distinct ~420-word texts
    .venv/bin/python bench/bench_load.py --memory 30 --cache-mb 256   # the same under another VIZ_CACHE_MB

Times on a shared 2-core machine are noisy: the load average is printed beside every result.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
MODEL = "minilm"

# In the page: the model view is the chart whose scatter carries [layer, head] customdata (an image, or a
# heatmap before the PNG); the one-head heatmap is the chart keyed attn_head_fig, its x the key tokens. STATE returns what the page shows
# now; DRAWN waits (in the browser, checking on DOM changes) until it shows `view` and `tokens`, keeps every
# token list it saw that is not in `own` in window.__foreign, and returns performance.now() at that moment.
STATE_JS = """() => {
  const out = {view: null, tokens: null, running: !!document.querySelector('[data-testid="stStatusWidget"]')};
  for (const gd of document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')) {
    if (!gd.data || !gd._fullData || !gd._fullData.length || !gd.querySelector('.main-svg')) continue;
    const kind = gd.data[0].type;
    const isView = gd.data.length > 1 && gd.data[1].customdata !== undefined && (kind === 'image' || kind === 'heatmap');
    if (isView && out.view === null && kind === 'image' && gd.querySelector('.imagelayer image')) {
      out.view = gd.data[0].meta;  // [rows, cols, sum of the uint8 thumbnails] of the PNG it drew
    } else if (isView && out.view === null && kind === 'heatmap') {  // before the PNG (--app-root of an older tree)
      const z = gd._fullData[0].z;
      if (gd.__benchZ !== z) {  // sum each drawn image once, not on every poll
        let sum = 0, rows = 0, cols = 0;
        for (const row of z) { rows += 1; cols = row.length; for (const v of row) sum += v; }
        gd.__benchZ = z; gd.__benchView = [rows, cols, sum];
      }
      out.view = gd.__benchView;
    } else if (!isView && out.tokens === null && gd.closest('.st-key-attn_head_fig') && gd.data[0].x) {
      out.tokens = Array.from(gd.data[0].x);  // the one-head heatmap's key tokens, "token (i)"
    }
  }
  return out;
}"""
DRAWN_JS = """(arg) => new Promise((resolve) => {
  const state = %s;
  // a long text's axis labels every n-th token: its labels must be an ordered subsequence of the tokens
  const within = (shown, all) => { let j = 0; for (const t of shown) { while (j < all.length && all[j] !== t) j++;
                                     if (j++ >= all.length) return false; } return shown.length > 0; };
  window.__foreign = window.__foreign || [];
  let done = false;
  const check = () => {
    if (done) return;
    const s = state();
    if (s.tokens !== null && !arg.own.some(o => within(s.tokens, o))) {
      const key = s.tokens.join(' ');
      if (!window.__foreign.includes(key)) window.__foreign.push(key);
    }
    // the image must be this text's (same shape, same sum up to a few pixels' rounding: the server's
    // forward may differ from ours in the last float bits) and the head heatmap must show its tokens
    if (s.view !== null && s.view[0] === arg.view[0] && s.view[1] === arg.view[1]
        && Math.abs(s.view[2] - arg.view[2]) <= arg.tol && s.tokens !== null && within(s.tokens, arg.tokens)) {
      done = true; observer.disconnect(); clearInterval(slow); resolve(performance.now());
    }
  };
  // checked on every DOM change (Plotly's drawing is DOM changes), so polling costs the page nothing
  const observer = new MutationObserver(check);
  observer.observe(document.body, {childList: true, subtree: true});
  const slow = setInterval(check, 100);
  setTimeout(() => { if (!done) { done = true; observer.disconnect(); clearInterval(slow); resolve(-1); } },
             arg.timeout_ms);
  check();
})""" % STATE_JS


# ----------------------------------------------------------------------------- texts and expectations
def corpus_sentences() -> list[str]:
    lines = [s.strip() for s in (ROOT / "data" / "corpus" / "test.txt").read_text().splitlines()]
    if len(lines) < 2000:  # the held-out split is small; fall back to the training corpus
        with gzip.open(ROOT / "data" / "corpus" / "train.txt.gz", "rt") as f:
            lines += [s.strip() for s in f]
    return [s for s in lines if s]


def short_texts(n: int, seed: int = 0) -> list[str]:
    """n distinct texts of 10-20 words (two corpus sentences; no text repeats)."""
    rng = random.Random(seed)
    pool = [s for s in corpus_sentences() if 4 <= len(s.split()) <= 12]
    rng.shuffle(pool)
    texts, i = [], 0
    while len(texts) < n:
        t = f"{pool[i]} {pool[i + 1]}"
        i += 2
        if 10 <= len(t.split()) <= 24 and t not in texts:
            texts.append(t)
    return texts


def long_texts(n: int, words: int = 420, seed: int = 1) -> list[str]:
    """n distinct texts of about `words` words each, built from consecutive corpus sentences."""
    rng = random.Random(seed)
    pool = corpus_sentences()
    rng.shuffle(pool)
    texts, cur = [], []
    for s in pool:
        cur.append(s)
        if sum(len(c.split()) for c in cur) >= words:
            texts.append(" ".join(cur))
            cur = []
            if len(texts) == n:
                break
    return texts


class Expect:
    """What the page must show for a text: the model view's (rows, cols, sum) and the head's tokens."""

    def __init__(self) -> None:
        import torch

        from viz.core.capture import capture
        from viz.figures.attention import model_view, token_labels
        from viz.core.models import load_model

        torch.set_num_threads(1)  # as the server runs its forwards (viz/app/serving.py)

        self._bundle = load_model(MODEL)
        self._capture, self._model_view, self._labels = capture, model_view, token_labels
        self._memo: dict[str, tuple] = {}

    def __call__(self, text: str) -> tuple[tuple[int, int, int], list[str]]:
        if text not in self._memo:
            cap = self._capture(self._bundle, text)
            view = tuple(self._model_view(cap.attentions["encoder"]).data[0].meta)
            self._memo[text] = (view, self._labels(cap.tokens))
        return self._memo[text]


# ----------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 when it is gone)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root: int, exclude: int) -> list[int]:
    """Every live process below `root` (here: the Playwright driver and Chromium), minus `exclude`'s tree."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c != exclude:
                out.append(c)
                todo.append(c)
    return out


def client_cpu(server_pid: int) -> float:
    return sum(cpu_seconds(p) for p in descendants(os.getpid(), server_pid))


class Server:
    """`streamlit run app.py` on loopback, with an RSS sampler (seconds since start, MB). With `profile`,
    the server runs under bench/profiled_server.py: every script run's wall and CPU time is recorded."""

    def __init__(self, env: dict[str, str], profile: str | None = None, app_root: Path = ROOT,
                 niceness: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bench_load_", suffix=".log", delete=False)
        # always through profiled_server.py: it writes the server's own clock of every rerun request and
        # script_finished (OUT.events); with `profile`, each script run's time too (and cProfile stats)
        self.runs_path = self.log.name[:-4] + "_runs.json"
        cmd = [sys.executable, str(ROOT / "bench" / "profiled_server.py"), self.runs_path]
        cmd += ["--cprofile", profile, "--"] if profile else ["--"]
        self.proc = subprocess.Popen(
            cmd + ["run", str(app_root / "app.py"), "--server.port", str(self.port),
                   "--server.address", "127.0.0.1", "--server.headless", "true",
                   "--browser.gatherUsageStats", "false"],
            cwd=app_root, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.setpriority(os.PRIO_PROCESS, 0, niceness)) if niceness else None)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(self.url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
            if self.proc.poll() is not None:
                raise RuntimeError("streamlit exited: see " + self.log.name)
        else:
            raise RuntimeError("streamlit did not become healthy: see " + self.log.name)
        self.t0 = time.perf_counter()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set() and self.proc.poll() is None:
            self.samples.append((time.perf_counter() - self.t0, rss_mb(self.proc.pid)))
            self._stop.wait(0.2)

    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def events(self) -> dict[str, list[tuple[str, float]]]:
        """session id -> [(kind, time)], kind 'rerun' (a request received) or 'finished' (a script_finished
        queued for the browser), as the server logged them (CLOCK_MONOTONIC, as our perf_counter)."""
        out: dict[str, list[tuple[str, float]]] = {}
        try:
            lines = Path(self.runs_path + ".events").read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            parts = line.split()
            if len(parts) == 3:
                out.setdefault(parts[1], []).append((parts[0], float(parts[2])))
        return out

    def own_times(self, session: "Session", sent: float) -> float | None:
        """The server's own time for the submit sent at `sent`: from the first rerun request of that session it
        received after `sent` to the first script_finished it queued for that session after that request."""
        ev = self.events().get(session.server_id, [])
        got = next((t for k, t in ev if k == "rerun" and t >= sent), None)
        if got is None:
            return None
        done = next((t for k, t in ev if k == "finished" and t > got), None)
        return None if done is None else done - got

    def runs(self) -> list[dict]:
        """Script runs recorded by profiled_server.py (after stop())."""
        if self.runs_path is None or not os.path.exists(self.runs_path):
            return []
        return json.loads(Path(self.runs_path).read_text())

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ----------------------------------------------------------------------------- one browser session
def forward_msg(payload):
    """A small websocket frame from the server as a ForwardMsg, else None. Only frames under 8 kB are parsed
    (script_finished is a few bytes, new_session a few hundred; figures are hundreds of kB): the bench process
    must not compete with the server for the CPU."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > 8192:
        return None
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    try:
        return ForwardMsg.FromString(bytes(payload))
    except Exception:  # noqa: BLE001 - not a ForwardMsg
        return None


def finished_ok(msg) -> bool:
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    return (msg.WhichOneof("type") == "script_finished"
            and msg.script_finished == ForwardMsg.ScriptFinishedStatus.Value("FINISHED_SUCCESSFULLY"))


class Session:
    def __init__(self, index: int, page) -> None:
        self.index, self.page = index, page
        self.own_tokens: list[list[str]] = []  # every token list this session may legitimately show
        self.finished: list[float] = []  # perf_counter() of every script_finished this session's websocket got
        self.extra_runs = 0
        self.server_id = ""
        self.sent: list[float] = []  # perf_counter() of each submit's Ctrl+Enter
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        t = time.perf_counter()
        msg = forward_msg(payload)
        if msg is None:
            return
        if finished_ok(msg):
            self.finished.append(t)
        elif msg.WhichOneof("type") == "new_session":
            self.server_id = msg.new_session.initialize.session_id  # the server's own events name it

    async def server_time(self, t0: float, timeout: float = 60.0) -> float:
        """Seconds from `t0` (the submit, perf_counter) to the first script_finished (successful) this session's
        server sent after it: the end of the run the submit started, its work and its queueing behind other
        sessions included, the browser's drawing excluded. A run interrupted by another rerun reports another
        status and is not counted. Waits until the page is idle and a finish has arrived; `self.extra_runs`
        counts finishes beyond the first (a page that reruns itself after a submit)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            after = [t for t in self.finished if t > t0]
            if after and not (await self.state())["running"]:
                self.extra_runs += len(after) - 1
                return min(after) - t0
            await asyncio.sleep(0.05)
        raise TimeoutError(f"session {self.index}: no script_finished after the submit")

    async def state(self) -> dict:
        return await self.page.evaluate(STATE_JS)

    async def foreign(self) -> list[str]:
        return await self.page.evaluate("() => window.__foreign || []")

    async def submit(self, text: str, expect: Expect, timeout: float = 180.0) -> tuple[float, float]:
        """Type `text`, commit it; (seconds (page clock) until this session's own model view is drawn,
        seconds (bench clock) until the server sent this session's script_finished)."""
        view, tokens = expect(text)
        self.own_tokens.append(tokens)
        box = self.page.get_by_label("Text")
        await box.fill(text)
        waiting = asyncio.ensure_future(self.page.evaluate(
            DRAWN_JS, {"view": list(view), "tokens": tokens, "own": self.own_tokens, "timeout_ms": timeout * 1000,
                       "tol": max(8 * 255, view[2] // 2000)}))
        await asyncio.sleep(0.05)  # let the watcher reach the page before the key does
        t0 = await self.page.evaluate("() => performance.now()")
        sent = time.perf_counter()
        self.sent.append(sent)
        await box.press("Control+Enter")
        done = await waiting
        if done < 0:
            raise TimeoutError(f"session {self.index}: own model view not drawn after {timeout} s; "
                               f"page shows {await self.state()}")
        return (done - t0) / 1000, await self.server_time(sent)


async def open_sessions(browser, url: str, k: int) -> list[Session]:
    """k fresh sessions, each with its first page (the app's default text) drawn."""
    sessions = []
    for i in range(k):
        ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await ctx.new_page()
        page.set_default_timeout(180_000)
        s = Session(i, page)  # listens to the page's websocket: before it opens
        await page.goto(url)
        while True:
            st = await s.state()
            if st["view"] is not None and st["tokens"] is not None and not st["running"]:
                break
            await asyncio.sleep(0.05)
        s.own_tokens.append(st["tokens"])
        sessions.append(s)
    return sessions


def renice_renderers(niceness: int) -> int:
    """Set every Chromium renderer below this process to `niceness` (the page's JavaScript, layout and
    drawing), so the server's own time is measured with the browsers out of its way. Returns how many."""
    n = 0
    for pid in descendants(os.getpid(), -1):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"--type=renderer" in cmd:
            try:
                os.setpriority(os.PRIO_PROCESS, pid, niceness)
                n += 1
            except OSError:
                pass
    return n


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q / 100 * len(xs) + 0.5)) - 1))]


def load_avg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


async def run_load(ks: list[int], rounds: int, env: dict[str, str], profile: str | None = None,
                   app_root: Path = ROOT, nice: int = 19, server_nice: int = 0) -> dict:
    from playwright.async_api import async_playwright

    expect = Expect()
    texts = iter(short_texts(sum(ks) * rounds + 8))
    results = {}
    server = Server(env, profile, app_root, server_nice)
    windows = {}
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for k in ks:
                sessions = await open_sessions(browser, server.url, k)
                reniced = renice_renderers(nice) if nice else 0
                times, server_times, own_times, rss_before = [], [], [], server.rss()
                cpu0, client0, t0 = server.cpu(), client_cpu(server.proc.pid), time.perf_counter()
                for r in range(rounds):
                    batch = [next(texts) for _ in sessions]
                    for s, t in zip(sessions, batch):
                        expect(t)  # computed before the clock starts
                    load0 = load_avg()
                    got = await asyncio.gather(*(s.submit(t, expect) for s, t in zip(sessions, batch)))
                    own = [server.own_times(s, s.sent[-1]) for s in sessions]
                    if any(o is None for o in own):
                        raise RuntimeError(f"the server logged no rerun/finish for {own.count(None)} submits")
                    times += [g[0] for g in got]
                    server_times += [g[1] for g in got]
                    own_times += own
                    print(f"  K={k} round {r + 1}: server's own max {max(own):.2f} s, seen by the bench max "
                          f"{max(g[1] for g in got):.2f} s, drawn max {max(g[0] for g in got):.2f} s; "
                          f"load avg {load0} -> {load_avg()}", flush=True)
                windows[k] = (t0, time.perf_counter())
                n = len(times)
                foreign = [f for s in sessions for f in await s.foreign()]
                extra = sum(s.extra_runs for s in sessions)
                results[k] = dict(extra_runs=extra, p50=statistics.median(times), p95=pct(times, 95), max=max(times), n=n,
                                  server_p50=statistics.median(server_times), server_p95=pct(server_times, 95),
                                  server_max=max(server_times), nice=nice, reniced=reniced,
                                  own_p50=statistics.median(own_times), own_p95=pct(own_times, 95),
                                  own_max=max(own_times),
                                  rss_before=rss_before, rss_after=server.rss(), cross_talk=len(foreign),
                                  server_cpu_per_submit=(server.cpu() - cpu0) / n,
                                  client_cpu_per_submit=(client_cpu(server.proc.pid) - client0) / n,
                                  load=load_avg())
                print(f"K={k}: server's own clock (rerun request received -> its script_finished queued) p50 "
                      f"{results[k]['own_p50']:.2f} s, p95 {results[k]['own_p95']:.2f} s, max "
                      f"{results[k]['own_max']:.2f} s; as the bench saw it (Ctrl+Enter -> script_finished on that "
                      f"session's websocket) p50 {results[k]['server_p50']:.2f} s, "
                      f"p95 {results[k]['server_p95']:.2f} s, max {results[k]['server_max']:.2f} s; "
                      f"drawn p50 {results[k]['p50']:.2f} s, p95 {results[k]['p95']:.2f} s, "
                      f"max {results[k]['max']:.2f} s over {n} submits ({reniced} renderers at nice {nice}); "
                      "CPU per submit: server "
                      f"{results[k]['server_cpu_per_submit']:.3f} s, "
                      f"browser {results[k]['client_cpu_per_submit']:.3f} s; "
                      f"RSS {rss_before:.0f} -> {results[k]['rss_after']:.0f} MB; cross-talk {len(foreign)}; "
                      f"runs after the submit's own: {extra}; "
                      f"load avg {load_avg()}", flush=True)
                for s in sessions:
                    await s.page.context.close()
            await browser.close()
    finally:
        server.stop()
    results["rss_curve"] = server.samples[::5]
    runs = server.runs()
    for k, (a, b) in windows.items():
        mine = [r for r in runs if a <= r["start"] <= b]  # perf_counter is CLOCK_MONOTONIC: one clock for both
        if mine:
            walls, cpus = [r["wall"] for r in mine], [r["cpu"] for r in mine]
            results[k]["script_runs"] = dict(n=len(mine), wall_p50=statistics.median(walls), wall_p95=pct(walls, 95),
                                             cpu_mean=statistics.fmean(cpus))
            print(f"K={k}: {len(mine)} script runs, wall p50 {statistics.median(walls):.3f} s, "
                  f"p95 {pct(walls, 95):.3f} s, thread CPU mean {statistics.fmean(cpus):.3f} s")
            files = [r["prof"] for r in mine if r.get("prof") and os.path.exists(r["prof"])]
            if files:  # the cProfile stats of these runs only (not the sessions' first pages and the model load)
                import pstats

                stats = pstats.Stats(files[0])
                for f in files[1:]:
                    stats.add(f)
                out = f"{profile[:-5] if profile.endswith('.prof') else profile}-K{k}.prof"
                stats.dump_stats(out)
                print(f"K={k}: cProfile of those runs in {out}")
    return results


async def run_memory(n: int, words: int, env: dict[str, str]) -> dict:
    from playwright.async_api import async_playwright

    expect = Expect()
    texts = long_texts(n, words)
    server = Server(env)
    curve = []
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            (s,) = await open_sessions(browser, server.url, 1)
            base = server.rss()
            print(f"after the first page: RSS {base:.0f} MB", flush=True)
            for i, t in enumerate(texts, 1):
                secs, _ = await s.submit(t, expect)
                curve.append((i, server.rss()))
                print(f"text {i:2d} ({len(t.split())} words): drawn in {secs:.2f} s, RSS {curve[-1][1]:.0f} MB "
                      f"(+{curve[-1][1] - base:.0f})", flush=True)
            foreign = await s.foreign()
            await browser.close()
    finally:
        server.stop()
    peak = max(r for _, r in server.samples)
    print(f"RSS growth: {curve[-1][1] - base:.0f} MB at the end, {peak - base:.0f} MB at the peak "
          f"(first page {base:.0f} MB); cross-talk {len(foreign)}; load avg {load_avg()}")
    return dict(base=base, curve=curve, peak=peak, cross_talk=len(foreign))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8], help="K values (default 1 4 8)")
    ap.add_argument("--rounds", type=int, default=3, help="submits per session for each K (default 3)")
    ap.add_argument("--memory", type=int, default=0, metavar="N",
                    help="instead: one session submitting N distinct long texts, RSS after each")
    ap.add_argument("--words", type=int, default=420, help="words per long text (--memory)")
    ap.add_argument("--cache-mb", type=int, default=None, help="VIZ_CACHE_MB for the server (default: the app's)")
    ap.add_argument("--profile", nargs="?", const="", default=None, metavar="OUT.prof",
                    help="time every script run on the server (and write cProfile stats to OUT.prof)")
    ap.add_argument("--app-root", type=Path, default=ROOT,
                    help="serve app.py from this checkout instead (before/after comparisons; e.g. a `git archive` "
                         "of an older commit, run with this repository's .venv)")
    ap.add_argument("--nice", type=int, default=19,
                    help="niceness given to the Chromium renderers once the sessions are open (default 19: the "
                         "server's time is then the server's; 0 leaves them as they are)")
    ap.add_argument("--server-nice", type=int, default=0,
                    help="niceness of the server process (default 0; a negative value needs root): on a machine "
                         "shared with other jobs, -5 approximates a quiet one for the server (say so beside the result)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VIZ_USER_MODELS": tempfile.mkdtemp(prefix="bench_load_models_")}
    if args.cache_mb is not None:
        env["VIZ_CACHE_MB"] = str(args.cache_mb)
    from viz.core.env import quiet

    quiet()
    print(f"load average at start: {load_avg()} ({os.cpu_count()} CPUs); server at nice {args.server_nice}, "
          f"browsers' renderers at nice {args.nice}", flush=True)
    if args.memory:
        res = asyncio.run(run_memory(args.memory, args.words, env))
        bad = res["cross_talk"]
    else:
        res = asyncio.run(run_load(args.sessions, args.rounds, env, args.profile, args.app_root.resolve(), args.nice,
                                   args.server_nice))
        bad = sum(v["cross_talk"] for k, v in res.items() if isinstance(k, int))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if bad:
        print(f"FAIL: {bad} observations of another session's tokens")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
