"""The house keeps its shape: the import graph of viz/, pages/ and app.py has no cycle and no import that runs up
a floor, no module is over 450 lines, no page over 220, and the viz/ root holds only the package's face.

Imports are read with `ast` (every `import` and `from ... import`, at module level or inside a function), so a
lazy import inside a function counts like any other: it is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Floors, lowest first. A module may import its own package or a package on a LOWER floor, never one above it.
FLOORS = {
    "viz.core": 0,        # loading, family facts, the recorder, capture, edits, checks
    "viz.analysis": 1,    # pure numpy on captures
    "viz.figures": 1,     # arrays in, Plotly figures out
    "viz.tasks": 2,       # one module per page-level computation
    "viz.inside": 2,      # one layer recomposed
    "viz.atlas": 3,       # corpus statistics, embedded or on Ray
    "viz.train": 3,       # trainers and the studio's jobs
    "viz.causal": 3,      # components, patching, routes, attributions
    "viz.app": 4,         # the server side (the only streamlit importers besides pages)
    "viz.cli": 5,         # one module per subcommand
    "viz": 6,             # the package's face (viz/__init__.py, viz/__main__.py)
    "pages": 6,
    "app": 7,
}
MAX_MODULE_LINES = 450
MAX_PAGE_LINES = 220
MAX_ROOT_MODULES = 4


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def sources() -> dict[str, Path]:
    files = list((ROOT / "viz").rglob("*.py")) + list((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]
    return {module_name(p): p for p in files}


def imported(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports (a `from pkg import name` where pkg.name is a module counts as that
    module; otherwise as pkg)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in known or m.split(".")[0] in ("viz", "pages", "app") and m in known}


def package(mod: str) -> str:
    """The floor a module lives on: the longest FLOORS key that is it or its parent."""
    parts = mod.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in FLOORS:
            return ".".join(parts[:n])
    raise AssertionError(f"{mod} is on no floor: add its package to FLOORS in tests/test_house.py")


def graph() -> dict[str, set[str]]:
    src = sources()
    known = set(src)
    return {m: imported(p, known) - {m} for m, p in src.items()}


def test_every_module_is_on_a_floor():
    for mod in sources():
        package(mod)


def test_no_import_runs_up_a_floor():
    bad = []
    for mod, deps in graph().items():
        here = package(mod)
        for dep in deps:
            there = package(dep)
            if there != here and FLOORS[there] >= FLOORS[here]:
                bad.append(f"{mod} (floor {FLOORS[here]}) imports {dep} (floor {FLOORS[there]})")
    assert not bad, "imports that run up (or across) a floor:\n" + "\n".join(sorted(bad))


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    """The checker itself: a three-module circle and an upward import are caught."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert package("viz.core.models") == "viz.core" and package("viz") == "viz"
    assert FLOORS[package("viz.core.models")] < FLOORS[package("viz.app.cache")]


def test_subcommands_never_import_the_dispatcher():
    g = graph()
    bad = [m for m, deps in g.items() if "viz.cli.main" in deps and m not in ("viz.__main__",)]
    assert not bad, f"{bad} import viz.cli.main: take shared helpers from viz.cli.common"


@pytest.mark.parametrize("kind", ["viz", "pages"])
def test_sizes(kind):
    limit = MAX_MODULE_LINES if kind == "viz" else MAX_PAGE_LINES
    files = (ROOT / kind).rglob("*.py")
    big = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > limit}
    assert not big, f"over {limit} lines: {big}"


def test_root_holds_only_the_face():
    root = sorted(p.name for p in (ROOT / "viz").glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


def test_streamlit_only_on_the_server_side():
    """Streamlit is imported by pages, app.py and viz.app alone: the library runs without a server."""
    bad = []
    for mod, path in sources().items():
        if package(mod) in ("pages", "app", "viz.app"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [mod for n in names if n.split(".")[0] == "streamlit"]
    assert not bad, bad
