"""podflow.lab imports without circles: spec.py -> datapath.py, never back (issue 9)."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import podflow.lab

LAB = Path(podflow.lab.__file__).parent


def _lab_modules() -> dict[str, Path]:
    """``podflow.lab.X`` -> its file, for every module of the package (subpackages too)."""
    out = {}
    for info in pkgutil.walk_packages([str(LAB)], "podflow.lab."):
        rel = info.name.removeprefix("podflow.lab.").replace(".", "/")
        path = LAB / rel / "__init__.py" if info.ispkg else LAB / f"{rel}.py"
        out[info.name] = path
    return out


def _imports(path: Path, module_level_only: bool) -> set[str]:
    """The podflow.lab modules ``path`` imports (every ``import`` statement, or only those
    run when the module is imported: not inside a function)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes: list[ast.AST] = []
    if module_level_only:
        todo: list[ast.AST] = list(tree.body)
        while todo:   # statements run at import: module body, if/try/with/class bodies
            n = todo.pop()
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            nodes.append(n)
            todo.extend(ast.iter_child_nodes(n))
    else:
        nodes = list(ast.walk(tree))
    mods = set(_lab_modules())
    found: set[str] = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            found.add(n.module)
            found |= {f"{n.module}.{a.name}" for a in n.names}   # from podflow.lab import x
    return {m for m in found if m in mods}


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    return {m: _imports(p, module_level_only) - {m} for m, p in _lab_modules().items()}


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), set()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_spec_and_datapath_do_not_import_each_other() -> None:
    graph = _graph(module_level_only=False)
    assert "podflow.lab.datapath" in graph["podflow.lab.spec"]   # the one direction
    assert "podflow.lab.spec" not in _reach(graph, "podflow.lab.datapath")
    assert "podflow.lab.spec" not in _reach(graph, "podflow.lab.dns")


def test_lab_module_level_imports_form_no_circle() -> None:
    graph = _graph(module_level_only=True)
    circles = sorted(m for m in graph if m in _reach(graph, m))
    assert circles == []


@pytest.mark.parametrize("first", ["podflow.lab.spec", "podflow.lab.datapath"])
def test_every_lab_module_imports_in_a_fresh_interpreter(first: str) -> None:
    """Each order that used to form the circle, then every other podflow.lab module."""
    mods = [first, *sorted(m for m in _lab_modules() if m != first)]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    done = subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
