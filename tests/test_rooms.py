"""The house's map, checked: every import (top-level and inside functions) goes down the flow, and no two
modules or rooms import each other, directly or round a loop.

Rooms, bottom to top: core; cache; extract (stage one, writes the cache); model (the Mask2Former port and the
trained head's files); train (the engine); evaluate (scoring and prediction); experiments (reproduce, sweep);
demo; cli. A room may import only the rooms listed for it in ALLOWED (DESIGN.md draws the same tree).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.fixtures import REPO

PACKAGE = "hairdiff"
ALLOWED = {
    "core": set(),
    "cache": {"core"},
    "extract": {"core", "cache"},
    "model": {"core", "cache"},
    "train": {"core", "cache", "model"},
    "evaluate": {"core", "cache", "extract", "model"},
    "experiments": {"core", "cache", "extract", "model", "train", "evaluate"},
    "demo": {"core", "cache", "extract", "model", "train", "evaluate"},
    "cli": {"core", "cache", "extract", "model", "train", "evaluate", "experiments", "demo"},
}
# The package's own __init__ (the Python API's lazy names) sits on top with the command line.
TOP = "(package)"
ALLOWED[TOP] = set(ALLOWED) - {TOP}


def modules(root: Path) -> dict[str, Path]:
    """{dotted module name: file} for every module of the rooms under `root` (the package's folders)."""
    found = {}
    if (root / "__init__.py").exists():
        found[PACKAGE] = root / "__init__.py"
    for room in ALLOWED:
        if room == TOP:
            continue
        for path in sorted((root / room).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((PACKAGE, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its file (functions included). `from P import N`
    is an import of module P.N when that is a module, else of P."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m != name}


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else TOP


def graph(root: Path) -> dict[str, set[str]]:
    found = modules(root)
    known = set(found)
    return {name: {m for m in imports(name, path, known) if m in known or m.startswith(PACKAGE)}
            for name, path in found.items()}


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import of a room its room may not import: 'a -> b (room A may not import room B)'."""
    bad = []
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            ra, rb = room_of(a), room_of(b)
            if ra != rb and rb not in ALLOWED.get(ra, set()):
                bad.append(f"{a} -> {b} ({ra} may not import {rb})")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (or a node importing itself): each a cycle."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):  # Tarjan, iterative enough for our depth (a few hundred modules)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def room_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for a, targets in edges.items():
        for b in targets:
            if room_of(a) != room_of(b):
                rooms.setdefault(room_of(a), set()).add(room_of(b))
    return rooms


def problems(root: Path) -> list[str]:
    edges = graph(root)
    found = upward(edges)
    found += [f"modules import each other: {' <-> '.join(c)}" for c in cycles(edges)]
    found += [f"rooms import each other: {' <-> '.join(c)}" for c in cycles(room_edges(edges))]
    return found


def test_the_house_has_no_upward_import_and_no_cycle():
    assert problems(REPO) == []


def test_every_room_is_in_the_map():
    rooms = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists() and p.name not in ("tests", "bench")}
    assert rooms == set(ALLOWED) - {TOP}


def test_scoring_and_prediction_never_import_the_engine():
    edges = graph(REPO)
    assert not [m for m, targets in edges.items() if room_of(m) == "evaluate"
                for t in targets if room_of(t) == "train"]


# ------------------------------------------------------------- the checker itself, on a house of its own
def _house(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for room in ALLOWED:
        if room != TOP:
            (tmp_path / room).mkdir(exist_ok=True)
            (tmp_path / room / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    ({"core/a.py": "def f():\n    from hairdiff.train import loop\n", "train/loop.py": ""},
     "hairdiff.core.a -> hairdiff.train.loop (core may not import train)"),
    ({"evaluate/run.py": "import hairdiff.train.loop\n", "train/loop.py": ""},
     "hairdiff.evaluate.run -> hairdiff.train.loop (evaluate may not import train)"),
    ({"cache/a.py": "from hairdiff.cache import b\n", "cache/b.py": "def f():\n    from . import a\n"},
     "modules import each other: hairdiff.cache.a <-> hairdiff.cache.b"),
])
def test_the_checker_finds_upward_imports_and_cycles(tmp_path, files, expected):
    assert expected in problems(_house(tmp_path, files))


def test_the_checker_passes_a_house_that_flows_down(tmp_path):
    house = _house(tmp_path, {"core/a.py": "", "cache/s.py": "from hairdiff.core import a\n",
                              "train/l.py": "from hairdiff.cache.s import X\nimport hairdiff.core.a\n"})
    assert problems(house) == []
