"""viz.app.memory: the glibc malloc tuning the app applies once per process (its speed is measured in bench/)."""
import subprocess
import sys

from viz.app.memory import keep_freed_memory


def test_tuning_applies_once_on_glibc():
    assert keep_freed_memory() is True  # Debian: glibc
    assert keep_freed_memory() is True  # idempotent


def test_tuning_can_be_switched_off():
    code = "from viz.app.memory import keep_freed_memory as k; print(k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"VIZ_MALLOC_TUNING": "0", "PYTHONPATH": "."})
    assert out.stdout.strip() == "False"
