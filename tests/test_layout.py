"""The package layout keeps its promises: no import cycle (load-time or lazy), and the data
side never depends on the model side."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """``{module: {modules of the project it imports}}`` over every import statement, function-level
    (lazy) ones included.  ``from pkg import name`` points at ``pkg.name`` when that is a module,
    else at ``pkg``."""
    files = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    pvae = {_module_name(p) for top in ("pvae_data", "pvae_model") for p in (ROOT / top).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                subs = {f"{src}.{a.name}" for a in node.names} & pvae
                targets |= subs or {src}
        graph[mod] = {t for t in targets if t in pvae and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", ["pvae_data", "pvae_model"])
def test_no_import_cycle(package):
    assert cycles(import_graph(package)) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_pvae_data_never_imports_pvae_model():
    graph = import_graph("pvae_data")
    leaks = {m: sorted(t for t in ts if t.startswith("pvae_model")) for m, ts in graph.items()}
    assert {m: t for m, t in leaks.items() if t} == {}


def test_modules_and_functions_stay_small():
    """Issue 28's bars: no module of the library over 400 lines, no function over 80."""
    import ast

    big, long_fns = [], []
    for pkg in ("pvae_data", "pvae_model"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text()
            if len(text.splitlines()) > 400:
                big.append(f"{path.relative_to(ROOT)} ({len(text.splitlines())} lines)")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                    long_fns.append(f"{path.relative_to(ROOT)}::{node.name} ({node.end_lineno - node.lineno + 1})")
    assert not big and not long_fns, big + long_fns


def test_every_training_goes_through_the_one_engine():
    """Issue 28: one training loop. Only pvae_model/engine.py calls backward() or steps an optimiser
    (and the judges' in-memory fit, ``eval/classifiers.py::_fit``: an instrument of evaluation
    fitted as a scikit-learn estimator is, with no run directory)."""
    import re

    callers = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "pvae_model").rglob("*.py"))
               if re.search(r"\.backward\(|opt\.step\(|optimizer\.step\(", p.read_text())]
    assert callers == ["pvae_model/engine.py", "pvae_model/eval/classifiers.py"], callers
