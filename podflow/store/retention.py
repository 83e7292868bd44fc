"""Retention: delete old connections by age and by store size, keeping the store exact.

What goes: whole **connections**, never parts of one. A connection's age is that of its
merged flow (what ``podflow observe`` shows): its end, or its start when no end was seen.
:func:`prune_age` deletes the connections that ended (or, still without an end, started)
before a cutoff; :func:`prune_oldest` deletes the N oldest. With them go their observation
rows in ``flows``, their merged row in ``connections``, the ``edge_ends`` no connection uses
any more, and the agents' health reports (``agent_status``) older than the cutoff.

Staying exact: the store groups rows into connections with the rules of
:func:`podflow.store.correlate.group` (see :mod:`podflow.store.grouping`), and deleting
rows could change how the *remaining* rows group. Only two things can change it:

1. a remaining row chose its key from a bridge (a conntrack row knowing both keys) that was
   deleted: its key is chosen again among the remaining bridges (:func:`grouping.rechoose`);
2. a deleted connection sat between two remaining ones of the same key less than
   ``SPLIT_GAP`` apart, so that they may now join (a connection kept for its late end, then
   a short one deleted, then the next). Deleting the oldest connections of a key is safe:
   the first remaining row started a connection before and still does.

The keys concerned are regrouped from their remaining rows (:func:`grouping.rebuild`) and
only the connections that changed are rebuilt, so the store stays equal to grouping and
merging what remains (``tests/unit/store/test_retention.py`` checks it against the reference).

Space: DuckDB does not shrink a file when rows are deleted. At a checkpoint it frees the
blocks of row groups that became empty (and rewrites row groups that lost many rows), keeps
them in a free list and reuses them for later writes; only free blocks at the very end of
the file are cut off, so the file mostly stops growing rather than shrinks. And a podflow
store's file is much bigger than its data anyway: every write updates rows all over the
``flows`` and ``connections`` tables, and a checkpoint writes the row groups it touched to
new blocks before freeing the old ones. Measured with DuckDB 2.0 (batches of 25,000 flows),
the file is 1.5 to 1.9 times the data (:func:`data_bytes`, the blocks in use). The size
limit therefore keeps the *data* under :data:`SIZE_TRIGGER` of ``max_bytes`` (down to
:data:`SIZE_TARGET`), which keeps the file under ``max_bytes``: with a 40 MB limit, 45
batches of 25,000 flows (a 120 MB store unpruned) left the file between 28 and 41 MB after
each pass; with 5 MB and batches of 1,000, between 2.1 and 4.2 MB
(``tests/unit/store/test_retention.py`` checks the latter). A store already bigger than the
limit when retention starts keeps its size (DuckDB reuses the space inside it).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from podflow.store.connections import (
    fetch_chains,
    refresh,
    register,
    rows_near,
    rows_where,
    update_grouping,
)
from podflow.store.correlate import SPLIT_GAP
from podflow.store.grouping import Row, rebuild, rechoose

SIZE_TRIGGER = 0.55
"""A size pass starts when the store's data (:func:`data_bytes`) exceeds this share of
``max_bytes``... (the rest is for DuckDB's free space, see the module doc)"""
SIZE_TARGET = 0.45
"""...and deletes the oldest connections until the data is estimated to fit this share,
leaving room for the writes until the next pass in the blocks it freed."""
MAX_SIZE_PASSES = 4
"""Deletion rounds of one size pass (the estimate is refined after each)."""

_GONE_CONNS = "podflow_gone_conns"
_GONE_ROWS = "podflow_gone_rows"
LAST = "coalesce(end_time, time)"
"""A connection's age in SQL over ``connections``: its end, else its start."""


@dataclass(frozen=True)
class PruneResult:
    """What one retention pass did (see :meth:`podflow.store.duckdb.DuckDBStore.prune`)."""

    rows_deleted: int = 0
    """Observation rows deleted from ``flows``."""
    connections_deleted: int = 0
    """Merged connections deleted."""
    statuses_deleted: int = 0
    """Agent health reports deleted."""
    regrouped: int = 0
    """Remaining connections rebuilt because the deletion changed their grouping."""
    age_cutoff: float | None = None
    """Connections older than this (Unix seconds) were deleted for age (None: no age pass)."""
    size_cutoff: float | None = None
    """The newest age of a connection deleted for size (None: nothing deleted for size)."""
    bytes_before: int = 0
    """Size of the store file and its write-ahead log before the pass."""
    bytes_after: int = 0
    """Size of the store file and its write-ahead log after the pass."""
    data_bytes: int = 0
    """What DuckDB uses in the file after the pass (see :func:`data_bytes`)."""

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready fields (for logs and health reports)."""
        return dict(self.__dict__)


def file_bytes(path: Path) -> int:
    """Bytes on disk of a store file and its write-ahead log (0 for what does not exist)."""
    total = 0
    for p in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size
    return total


def data_bytes(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Bytes of the file's blocks in use plus the write-ahead log (checkpoint first)."""
    got = con.execute("SELECT used_blocks, block_size FROM pragma_database_size() "
                      "WHERE database_name = current_database()").fetchall()
    used = int(got[0][0]) * int(got[0][1]) if got else 0
    wal = path.with_name(path.name + ".wal")
    return used + (wal.stat().st_size if wal.exists() else 0)


def _select(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> int:
    """Make ``sql`` (conn_id, age) the connections to delete; return how many."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_GONE_CONNS} AS {sql}", params)
    got = con.execute(f"SELECT count(*) FROM {_GONE_CONNS}").fetchall()
    return int(got[0][0])


def _delete_selected(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Delete the selected connections and their rows; keep the rest exact.

    Returns (rows deleted, connections rebuilt).
    """
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {_GONE_ROWS} AS
        SELECT seq, time, conn_key FROM flows WHERE seq IN (
            SELECT unnest(m_seqs) FROM connections
            WHERE conn_id IN (SELECT conn_id FROM {_GONE_CONNS}))""")
    rows = int(con.execute(f"SELECT count(*) FROM {_GONE_ROWS}").fetchall()[0][0])
    con.execute(f"DELETE FROM flows WHERE seq IN (SELECT seq FROM {_GONE_ROWS})")
    con.execute(f"DELETE FROM connections WHERE conn_id IN (SELECT conn_id FROM {_GONE_CONNS})")
    rebuilt = _repair(con)
    con.execute("DELETE FROM edge_ends WHERE edge_id NOT IN "
                "(SELECT edge_id FROM connections WHERE edge_id IS NOT NULL)")
    con.execute(f"DROP TABLE {_GONE_ROWS}")
    con.execute(f"DROP TABLE {_GONE_CONNS}")
    return rows, rebuilt


def _repair(con: duckdb.DuckDBPyConnection) -> int:
    """Regroup what the deletion may have changed (see the module doc); return how many
    connections were rebuilt."""
    # rows whose bridge went, and rows keyed by a chain that lost a bridge (its label is the
    # smallest key of what remains of it)
    orphans = rows_where(con, f"bridge_seq IN (SELECT seq FROM {_GONE_ROWS}) OR "
                         f"(bridge_seq IS NOT NULL AND EXISTS (SELECT 1 FROM {_GONE_ROWS} g "
                         f"WHERE g.conn_key = flows.conn_key AND flows.time BETWEEN "
                         f"g.time - {2 * SPLIT_GAP} AND g.time + {2 * SPLIT_GAP}))", [])
    rekeyed: list[Row] = []
    moved: set[int] = set()
    keys: set[str] = set()
    if orphans:
        asked = {k for r in orphans for k in r.key_values()}
        near = {r.seq: r for r in rows_near(con, (r.time for r in orphans), asked)}
        fetch_chains(con, near, asked)
        for r, old in rechoose(orphans, list(near.values())):
            rekeyed.append(r)
            if r.conn_key != old:
                moved.add(r.seq)
                keys |= {k for k in (old, r.conn_key) if k}
    span = con.execute(f"SELECT min(time), max(time) FROM {_GONE_ROWS}").fetchall()[0]
    if span[0] is not None:
        got = con.execute(f"""SELECT DISTINCT g.conn_key FROM {_GONE_ROWS} g JOIN flows f
            ON f.conn_key = g.conn_key AND f.time BETWEEN g.time - ? AND g.time
            WHERE (f.time < g.time OR f.seq < g.seq) AND f.time BETWEEN ? AND ?""",
                          [SPLIT_GAP, span[0] - SPLIT_GAP, span[1]]).fetchall()
        keys |= {k for (k,) in got}
    changed = {r.seq: r for r in rekeyed}
    rebuilt = 0
    if keys:
        sub = register(con, "podflow_regroup_keys", sorted(keys), pa.string())
        rows = {r.seq: r for r in rows_where(con, f"conn_key IN {sub}", [])}
        rows.update(changed)
        done = rebuild([r for r in rows.values() if r.conn_key in keys], moved)
        changed.update((r.seq, r) for r in done.changed)
        update_grouping(con, list(changed.values()))
        refresh(con, done.gone, sorted(done.ids))
        rebuilt = len(set(done.ids.values()))
    else:
        update_grouping(con, list(changed.values()))
    return rebuilt


def prune_age(con: duckdb.DuckDBPyConnection, cutoff: float) -> tuple[int, int, int, int]:
    """Delete connections whose age (:data:`LAST`) is before ``cutoff``, and older health
    reports. Returns (rows, connections, reports deleted, connections rebuilt)."""
    n = _select(con, f"SELECT conn_id, {LAST} AS age FROM connections "
                f"WHERE time < ? AND {LAST} < ?", [cutoff, cutoff])
    rows = rebuilt = 0
    if n:
        rows, rebuilt = _delete_selected(con)
    else:
        con.execute(f"DROP TABLE {_GONE_CONNS}")
    st = con.execute("DELETE FROM agent_status WHERE time < ?", [cutoff]).fetchall()
    return rows, n, int(st[0][0]) if st else 0, rebuilt


def prune_oldest(con: duckdb.DuckDBPyConnection, count: int
                 ) -> tuple[int, int, int, int, float | None]:
    """Delete the ``count`` oldest connections (by :data:`LAST`) and the health reports
    older than them but each node's newest. Returns (rows, connections, reports deleted,
    connections rebuilt, the newest age deleted)."""
    n = _select(con, f"SELECT conn_id, {LAST} AS age FROM connections "
                f"ORDER BY {LAST}, conn_id LIMIT {int(count)}", [])
    if not n:
        con.execute(f"DROP TABLE {_GONE_CONNS}")
        return 0, 0, 0, 0, None
    cut = con.execute(f"SELECT max(age) FROM {_GONE_CONNS}").fetchall()[0][0]
    rows, rebuilt = _delete_selected(con)
    st = con.execute("DELETE FROM agent_status a WHERE a.time < ? AND a.time < (SELECT "
                     "max(b.time) FROM agent_status b WHERE b.node IS NOT DISTINCT FROM "
                     "a.node)", [cut]).fetchall()
    return rows, n, int(st[0][0]) if st else 0, rebuilt, float(cut)


def connections_for_size(data: int, target: int, connections: int) -> int:
    """How many of ``connections`` to delete so that ``data`` bytes shrink to ``target``
    (assuming the bytes are spread evenly; at least one when over target).

    >>> connections_for_size(1000, 800, 50)
    10
    """
    if data <= target or connections <= 0:
        return 0
    return max(1, min(connections, math.ceil(connections * (1 - target / data))))
