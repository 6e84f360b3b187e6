"""Attention Atlas library: load models, capture attention, analyse, build figures.

Nothing in here imports streamlit except `viz.app.cache` and `viz.app.ui`.
"""


def quiet() -> None:
    """Silence transformers' progress bars and advisory logs (they drown CLI output and test logs)."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
