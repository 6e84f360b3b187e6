"""The process around the library: quiet logs (transformers' progress bars drown CLI output and test logs)."""

from __future__ import annotations

import os


def quiet() -> None:
    """Silence transformers' progress bars and advisory logs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
