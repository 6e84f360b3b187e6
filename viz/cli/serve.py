"""`attention-atlas` (bare) or `python -m viz serve`: the dashboard, served as `make run` serves it.

Streamlit itself runs the app (`streamlit run <app.py>` in this process, viz.app.serving.run_server), so every Streamlit option works as it
does there: flags (`--server.port 8502`), environment variables (`STREAMLIT_SERVER_PORT=8502`) and config files.
The project's settings (loopback address, headless, no file watcher, no usage statistics, minimal toolbar) come
from the `.streamlit/config.toml` beside app.py, which Streamlit reads as the script's own config: anything the
user sets in a flag, the environment, or their own config wins over it.
"""

from __future__ import annotations

import argparse

SERVE_HELP = """\
Every option is Streamlit's, exactly as after `streamlit run app.py` (`streamlit run --help` lists them):
  attention-atlas                          http://127.0.0.1:8501 (the settings of .streamlit/config.toml)
  attention-atlas --server.port 8502       another port (or STREAMLIT_SERVER_PORT=8502 attention-atlas)
  attention-atlas --server.address 0.0.0.0 serve the network, not only this machine"""


def add_serve(sub) -> None:
    """Listed in --help; `viz.cli.main` hands `serve` and bare `--server.*`-style options to `serve` itself (argparse
    would refuse Streamlit's options)."""
    sub.add_parser("serve", help="serve the dashboard (the default: `attention-atlas` alone); Streamlit's options "
                   "pass through", description="Serve the dashboard in a browser.", epilog=SERVE_HELP,
                   formatter_class=argparse.RawDescriptionHelpFormatter)


def is_serve(argv: list[str]) -> bool:
    """`serve ...`, or options only (`--server.port 8502`): the dashboard. `--help`/`-h` stay the CLI's help."""
    if not argv:
        return True
    if argv[0] == "serve":
        return argv[1:2] not in (["--help"], ["-h"])
    return argv[0].startswith("--") and argv[0] not in ("--help", "--version")


def serve(argv: list[str], prog: str = "attention-atlas") -> int:
    """Run Streamlit on the app (viz.app.serving.run_server); returns (or exits with) Streamlit's status."""
    from viz.app.serving import run_server

    return run_server(argv[1:] if argv and argv[0] == "serve" else argv, prog)
