"""The shape of the code (issue 10): layers that point down, no import cycle, small modules, no class
built from a pile of mixins. Each check names what breaks it, so a change that adds an upward import,
a cycle, a module of 500 lines or a third base class fails the suite with the reason."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

CAMPUS = Path(__file__).resolve().parents[2] / "campus"
MAX_LINES = 500
MAX_BASES = 2


def test_the_layers_point_down() -> None:
    """The import-linter contract of pyproject.toml: cli > api > application > services > commands >
    projections > aggregates > rules > infra > errors; a module imports only its own layer or below."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=CAMPUS.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_no_module_of_campus_imports_itself_through_others() -> None:
    """No cycle in the import graph of campus, counting every import: at module level, inside a
    function, and for type checking only."""
    graph = grimp.build_graph("campus", cache_dir=None)
    cycles = _cycles({m: graph.find_modules_directly_imported_by(m) for m in graph.modules})
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_module_is_under_500_lines() -> None:
    sizes = {p.relative_to(CAMPUS.parent).as_posix(): len(p.read_text().splitlines()) for p in CAMPUS.rglob("*.py")}
    too_long = {path: n for path, n in sizes.items() if n >= MAX_LINES}
    assert too_long == {}, f"modules of {MAX_LINES} lines or more: {too_long}"


def test_no_class_has_more_than_two_base_classes() -> None:
    found = []
    for path in CAMPUS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and len(node.bases) > MAX_BASES:
                found.append(f"{path.relative_to(CAMPUS.parent)}:{node.lineno} {node.name} ({len(node.bases)} bases)")
    assert found == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in edges.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a made-up graph with a cycle is reported."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
