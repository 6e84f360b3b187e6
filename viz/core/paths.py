"""Where the dashboard, its pages, the shipped models and the data live, in a checkout and when installed.

In a checkout (and after `pip install -e .`) they sit beside the package: `app.py`, `pages/`, `models/`, `data/`
and `.streamlit/config.toml` in the repository root. A built wheel (`pip install .`) carries copies of the same
files inside the package, in `viz/_bundle/` (setup.py's build step puts them there), so the installed command
finds them in site-packages. Every module that needs one of these files asks here, never `Path(__file__)`.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the `viz` package directory
BUNDLE = PACKAGE / "_bundle"  # what a wheel carries (setup.py: BUNDLED)
INSTALLED = (BUNDLE / "app.py").is_file()
ROOT = BUNDLE if INSTALLED else PACKAGE.parent  # holds app.py, pages/, models/, data/
APP = ROOT / "app.py"
PAGES = ROOT / "pages"
MODELS = ROOT / "models"
DATA = ROOT / "data"
CORPUS = DATA / "corpus"
