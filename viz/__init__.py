"""Attention Atlas library: load models, capture attention, analyse, build figures.

The package's face. What a script or a notebook needs first is importable from here::

    from viz import load_model, capture
    cap = capture(load_model("minilm"), "The cat sat on the mat.")

The house (lowest floor first; a module imports only its own package or a lower floor, tests/test_house.py):
viz.core (loading, family facts, the recorder, capture, edits) < viz.analysis, viz.figures (arrays in, numbers
or Plotly figures out) < viz.tasks, viz.inside (one computation per page) < viz.atlas, viz.train, viz.causal <
viz.app (the server side: the only streamlit importers besides pages/) < viz.cli (one module per subcommand).
Names are resolved on first use, so `import viz` stays light.
"""

from __future__ import annotations

import importlib

# public name -> the module that defines it
_FACE = {
    "quiet": "viz.core.env",
    "load_model": "viz.core.models", "ModelBundle": "viz.core.models", "ModelLoadError": "viz.core.errors",
    "capture": "viz.core.capture", "Capture": "viz.core.capture", "to_arrays": "viz.core.capture",
    "CaptureError": "viz.core.errors",
    "predict": "viz.tasks.mlm",
    "head_scores": "viz.tasks.heads",
    "generate_lm": "viz.tasks.generate_lm",
}

__all__ = sorted(_FACE)


def __getattr__(name: str):
    if name in _FACE:
        value = getattr(importlib.import_module(_FACE[name]), name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'viz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FACE))
