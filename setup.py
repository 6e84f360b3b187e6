"""The build step pyproject.toml cannot say: copy the dashboard and the shipped files into the wheel.

`app.py`, `pages/`, `.streamlit/config.toml`, `models/` and `data/` live beside `viz/` in the repository (the layout
stays); a wheel carries them in `viz/_bundle/`, where `viz/core/paths.py` looks when the package is installed.
An editable install (`pip install -e .`) copies nothing: the checkout itself is used.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLED = ["app.py", "pages", ".streamlit/config.toml", "models", "data"]
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.parts")


class BuildWithDashboard(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "viz" / "_bundle"
        for name in BUNDLED:
            src, dst = HERE / name, target / name
            if not src.exists():
                raise SystemExit(f"setup.py: {name} is missing from {HERE}: build from a complete checkout")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=SKIP, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildWithDashboard})
