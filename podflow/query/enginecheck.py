"""Ask the store's engine (DuckDB) whether it accepts a value, before any store is read.

Python and DuckDB disagree on some values: a regular expression Python compiles may be one
DuckDB's RE2 refuses (back-references, look-around, possessive quantifiers, atomic groups,
``(?x)``, repetitions over 1000). Rather than copy RE2's grammar, the check runs the very
expression on a private in-memory DuckDB (:class:`Engine`, no tables, no store):
:func:`re2_error` evaluates ``regexp_matches('', pattern)`` and answers the engine's reason or
None, so FilterSpec refuses the pattern up front instead of failing half-way through a query.
The check of a whole filter's SQL against the store's schema is
:func:`podflow.store.sql.engine_error`, next to the SQL rendering.

Example::

    >>> re2_error("^/api/") is None
    True
    >>> re2_error(r"(a)\\1")
    'invalid escape sequence: \\\\1'
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache

import duckdb


class Engine:
    """One lazily opened in-memory DuckDB, used under a lock.

    ``setup`` gives the statements run once on opening (e.g. a schema's empty tables).
    """

    def __init__(self, setup: Callable[[], Sequence[str]] = tuple) -> None:
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._setup = setup

    def error(self, sql: str, params: list[object]) -> str | None:
        """The engine's message when ``sql`` fails with ``params``, else None."""
        with self._lock:
            if self._con is None:
                con = duckdb.connect(":memory:", config={"threads": 1})
                for statement in self._setup():
                    con.execute(statement)
                self._con = con
            try:
                self._con.execute(sql, params).fetchall()
            except duckdb.Error as exc:
                return reason(exc)
        return None


_ENGINE = Engine()
_PREFIX = re.compile(r"[A-Z][A-Za-z ]* Error: (.+)")


def reason(exc: duckdb.Error) -> str:
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

