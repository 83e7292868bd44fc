"""The pipeline is pure: nothing in ``podflow/pipeline`` imports a layer above it.

Layers, bottom up: ``model`` / ``inventory`` / ``cni`` -> ``pipeline`` (trackers, decoders,
NAT, enrichment) -> ``sources`` (I/O) -> ``agent`` (the loop wiring sources to the
pipeline and the store); ``store``, ``server`` and ``cli`` are consumers. Imports are read
with ``ast`` (those under ``if TYPE_CHECKING:`` and inside functions included), so a lazy
import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import podflow

PACKAGE = Path(podflow.__file__).parent
FORBIDDEN = ("podflow.sources", "podflow.store", "podflow.agent", "podflow.cli",
             "podflow.server", "podflow.lab", "podflow.metrics")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _upward(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported_modules(path)
                  if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_pipeline_imports_no_layer_above() -> None:
    modules = sorted((PACKAGE / "pipeline").glob("*.py"))
    assert len(modules) > 10
    bad = {p.name: up for p in modules if (up := _upward(p, FORBIDDEN))}
    assert bad == {}


def test_the_checker_sees_upward_imports() -> None:
    probe = PACKAGE / "pipeline" / "context.py"
    assert "podflow.model.flow" in imported_modules(probe)
    assert _upward(PACKAGE / "agent" / "runner.py", FORBIDDEN)  # the loop is above both
