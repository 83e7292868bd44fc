"""Ask the store's engine (DuckDB) whether it accepts a filter, before any store is read.

Python and DuckDB disagree on some values: a regular expression Python compiles may be one
DuckDB's RE2 refuses (back-references, look-around, possessive quantifiers, atomic groups,
``(?x)``, repetitions over 1000). Rather than copy RE2's grammar, the check runs the very
expression on a private in-memory DuckDB: :func:`re2_error` evaluates
``regexp_matches('', pattern)``, :func:`engine_error` binds a whole filter's SQL against the
store's schema with no rows. Both answer the engine's reason or None, so front-ends can say
400 / print an error instead of failing half-way through a query.

Example::

    >>> re2_error("^/api/") is None
    True
    >>> re2_error(r"(a)\\1")
    'invalid escape sequence: \\\\1'
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from podflow.query.filter import FilterSpec


class _Engine:
    """One lazily opened in-memory DuckDB with the store's (empty) tables, used under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None

    def error(self, sql: str, params: list[object]) -> str | None:
        """The engine's message when ``sql`` fails with ``params``, else None."""
        with self._lock:
            if self._con is None:
                from podflow.store.schema import DDL

                con = duckdb.connect(":memory:", config={"threads": 1})
                for statement in DDL:
                    con.execute(statement)
                self._con = con
            try:
                self._con.execute(sql, params).fetchall()
            except duckdb.Error as exc:
                return _reason(exc)
        return None


_ENGINE = _Engine()
_PREFIX = re.compile(r"[A-Z][A-Za-z ]* Error: (.+)")


def _reason(exc: duckdb.Error) -> str:
    """The engine's first line without its ``Invalid Input Error:`` style prefix."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    m = _PREFIX.match(lines[0])
    return m.group(1) if m else lines[0]


@lru_cache(maxsize=512)
def re2_error(pattern: str) -> str | None:
    """Why DuckDB's RE2 refuses ``pattern``, or None when it accepts it."""
    return _ENGINE.error("SELECT regexp_matches('', ?)", [pattern])


def engine_error(spec: FilterSpec) -> str | None:
    """Why DuckDB refuses ``spec``'s SQL over the store's columns, or None when it binds."""
    where, params = spec.to_sql()
    return _ENGINE.error(f"SELECT count(*) FROM connections WHERE {where}", list(params))
