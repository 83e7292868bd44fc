"""``podflow observe`` / ``map`` refuse filters the store's engine cannot run, clearly (issue 8).

Before, ``--http-path '(?>a)'`` (Python accepts it, RE2 does not) ended in a DuckDB
traceback and ``--since nan`` was no bound at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from podflow.cli import observe
from podflow.store.duckdb import DuckDBStore
from tests.unit.query.test_filter import corpus


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "flows.duckdb"
    DuckDBStore(path).write(corpus())
    return path


def _run(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    observe.register(app)
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stderr


@pytest.mark.parametrize("command", ["observe", "map"])
@pytest.mark.parametrize("pattern", ["(?>a)", "a++", "a{1001}"])
def test_re2_refused_http_path_is_a_clear_error(store: Path, command: str,
                                                pattern: str) -> None:
    code, err = _run(command, "--store", str(store), "--http-path", pattern)
    assert code == 2, err
    assert "bad HTTP path pattern" in err and "RE2" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_since_is_a_clear_error(store: Path, value: str) -> None:
    code, err = _run("observe", "--store", str(store), "--since", value)
    assert code == 2 and "finite" in err, err


@pytest.mark.parametrize("command", ["observe", "map"])
@pytest.mark.parametrize("lab", ["../x", "/etc", "a/b", "UPPER"])
def test_a_lab_name_never_selects_a_path(command: str, lab: str) -> None:
    code, err = _run(command, "--lab", lab)
    assert code == 2 and "invalid lab name" in err and "Traceback" not in err, err
