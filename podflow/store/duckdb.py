"""The embedded flow store: one DuckDB file shared by every agent and reader.

DuckDB lets one process at a time hold a database file, so the store never keeps it open:
each operation (a write batch, a query) opens a connection, does its work in one
transaction and closes it. Opening retries the lock error with jittered exponential backoff
for ``lock_timeout`` seconds and then raises :class:`~podflow.store.base.StoreBusy`; a
damaged file (checksum, truncation, not a database, a bad write-ahead log) raises the
matching :class:`~podflow.store.base.StoreCorrupt` at once, whether DuckDB notices on opening
or mid-query (:mod:`podflow.store.errors`). :meth:`DuckDBStore.prune` applies retention by
age and size (:mod:`podflow.store.retention`).
Writes go in as one Arrow table per batch (DuckDB's fast path); ``seq`` numbers rows in
commit order so followers can ask for what landed after the last row they saw.

Each write also assigns its rows to connections with the rules of
:mod:`podflow.store.correlate` and refreshes the merged row of every connection it touched
in the ``connections`` table (see :mod:`podflow.store.connections`), so reads filter and
aggregate one row per connection, then fetch only the selected connections' rows (by
``seq``) and merge them in Python with :func:`~podflow.store.correlate.merge`. A store of
an older layout (schema 1) is upgraded in place by the first write; reading one before that
raises :class:`StoreSchemaError`.

Example::

    >>> import tempfile, os
    >>> from podflow.model.flow import Endpoint, Flow, Protocol
    >>> path = os.path.join(tempfile.mkdtemp(), "flows.duckdb")
    >>> f = Flow(time=1.0, source=Endpoint("10.0.0.1", 1), destination=Endpoint("10.0.0.2", 2),
    ...          protocol=Protocol.TCP, flow_id="a")
    >>> with DuckDBStore(path) as store:
    ...     store.write([f])
    ...     store.flows() == [f]
    1
    True
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from podflow.model.flow import Flow
from podflow.query.filter import FilterSpec
from podflow.query.servicemap import AGENT_MAX_LAG, Edge, sort_edges
from podflow.store.base import (
    FlowRejected,
    StoreError,
    StoreMissing,
    StoreSchemaError,
    StoreUnreadable,
)
from podflow.store.beacons import read_beacons, write_beacon
from podflow.store.connections import register, reindex, write_batch
from podflow.store.correlate import merge
from podflow.store.creation import creation_lock, empty, unborn
from podflow.store.edges import edges_sql
from podflow.store.errors import busy, classify, is_lock
from podflow.store.readers import waiting, writer_turn, yield_to_readers
from podflow.store.retention import (
    MAX_SIZE_PASSES,
    SIZE_TARGET,
    SIZE_TRIGGER,
    PruneResult,
    connections_for_size,
    data_bytes,
    file_bytes,
    prune_age,
    prune_oldest,
)
from podflow.store.schema import (
    DDL,
    FEED_DDL,
    STATUS_DDL,
    STORE_SCHEMA_VERSION,
    V1_UPGRADE,
    columns_to_flows,
    flow_to_rows,
    rows_to_table,
    upgrade_from,
)
from podflow.store.sql import edge_from_row, to_sql


class DuckDBStore:
    """A flow store in one DuckDB file; safe to share between processes (see module doc).

    ``read_only`` stores refuse to write and raise :class:`StoreMissing` if the file does not
    exist. ``lock_timeout`` bounds how long an operation waits for other processes.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False,
                 lock_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self.lock_waits = 0
        """How many times an open found the file locked (for metrics and benchmarks)."""
        if read_only and not self.path.exists():
            raise StoreMissing(f"no flow store at {self.path}", self.path)

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing is held between operations; present for the FlowStore protocol."""

    # -- connections --------------------------------------------------------------------
    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one operation; DuckDB errors about the file become store errors.

        A lock held by another process is retried until ``lock_timeout`` (then
        :class:`StoreBusy`); a damaged file raises at once (:mod:`podflow.store.errors`),
        whether DuckDB notices on opening or in the middle of a query. A file that does not
        exist yet is opened under the creation lock (:mod:`podflow.store.creation`).
        """
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise StoreMissing(f"no flow store at {self.path}", self.path)
        deadline = time.monotonic() + self.lock_timeout
        if unborn(self.path):
            try:
                with creation_lock(self.path, deadline):
                    if empty(self.path):   # a creation that failed: nothing was in it
                        if not write:
                            raise StoreMissing(f"no flow store at {self.path} yet (the "
                                               "file is empty)", self.path)
                        self.path.unlink()
                    con = self._open(write, deadline)
            except TimeoutError as exc:
                raise busy(self.path, self.lock_timeout, str(exc)) from None
        else:
            con = self._open(write, deadline)
        try:
            yield con
        except duckdb.Error as exc:
            err = classify(exc, self.path)
            if err is None:
                raise
            raise err from exc
        finally:
            con.close()

    def _open(self, write: bool, deadline: float) -> duckdb.DuckDBPyConnection:
        """Connect, retrying while another process holds the file (see :meth:`_connect`);
        readers first, writers in arrival order (:mod:`podflow.store.readers`)."""
        if write:
            with writer_turn(self.path, deadline):
                yield_to_readers(self.path, deadline)
                return self._retry(write, deadline)
        with waiting(self.path):
            return self._retry(write, deadline)

    def _retry(self, write: bool, deadline: float) -> duckdb.DuckDBPyConnection:
        delay = 0.005
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=not write)
            except duckdb.Error as exc:
                if not is_lock(exc):
                    raise classify(exc, self.path) or StoreUnreadable(
                        f"cannot open flow store {self.path}: {exc}", self.path) from exc
                self.lock_waits += 1
                if time.monotonic() >= deadline:
                    raise busy(self.path, self.lock_timeout, str(exc)) from None
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.1)

    def _version(self, con: duckdb.DuckDBPyConnection) -> int | None:
        rows = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = "
                           "'podflow_meta'").fetchall()
        if not rows[0][0]:
            return None
        got = con.execute("SELECT value FROM podflow_meta WHERE key = 'schema_version'"
                          ).fetchall()
        version = int(got[0][0]) if got else 0
        if version > STORE_SCHEMA_VERSION:
            raise StoreSchemaError(
                f"store {self.path} written by a newer podflow (store schema {version}, this "
                f"podflow reads up to {STORE_SCHEMA_VERSION}): upgrade podflow")
        return version

    def _has_schema(self, con: duckdb.DuckDBPyConnection) -> bool:
        version = self._version(con)
        if version is not None and version < STORE_SCHEMA_VERSION:
            raise StoreSchemaError(
                f"store {self.path} has the layout of an older podflow (store schema "
                f"{version}, this podflow reads {STORE_SCHEMA_VERSION}): the next write "
                "upgrades it in place (start an agent), or delete the file to start afresh")
        return version is not None

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        version = self._version(con)
        if version is None:
            for stmt in DDL:
                con.execute(stmt)
            con.execute("INSERT INTO podflow_meta VALUES ('schema_version', ?)",
                        [str(STORE_SCHEMA_VERSION)])
        elif version < STORE_SCHEMA_VERSION:
            if version == 1:
                for stmt in V1_UPGRADE:
                    con.execute(stmt)
                reindex(con)
            else:
                for stmt in upgrade_from(version):
                    con.execute(stmt)
            con.execute("UPDATE podflow_meta SET value = ? WHERE key = 'schema_version'",
                        [str(STORE_SCHEMA_VERSION)])
        con.execute(STATUS_DDL)
        con.execute(FEED_DDL)

    def reindex(self) -> None:
        """Recompute every row's connection and the ``connections`` table from the rows.

        Writes keep both exact; this is for stores whose rows were inserted directly (the
        benchmark) and is what upgrading an older store runs.
        """
        if self.read_only:
            raise StoreError(f"store {self.path} was opened read-only")
        with self._connect(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            self._ensure_schema(con)
            reindex(con)
            con.execute("COMMIT")

    # -- retention ----------------------------------------------------------------------
    def prune(self, max_age: float | None, max_bytes: int | None,
              now: float | None = None) -> PruneResult:
        """Delete connections older than ``max_age`` seconds, then, while the store uses
        more than :data:`~podflow.store.retention.SIZE_TRIGGER` of ``max_bytes``, the oldest
        ones until it is estimated to use :data:`~podflow.store.retention.SIZE_TARGET` of
        it; reclaim the space (a checkpoint). None disables a limit.

        Whole connections go, with their rows, merged rows, unused edge ends and older
        health reports; what remains is exactly what grouping the remaining rows gives (see
        :mod:`podflow.store.retention`, which also says what DuckDB does with the space).
        A store that does not exist is left alone. ValueError for a limit that is not
        positive.
        """
        if max_age is not None and not (math.isfinite(max_age) and max_age > 0):
            raise ValueError(f"retention must be a positive number of seconds, not {max_age!r}")
        if max_bytes is not None and not max_bytes > 0:
            raise ValueError(f"maximum store size must be a positive number of bytes, not "
                             f"{max_bytes!r}")
        if self.read_only:
            raise StoreError(f"store {self.path} was opened read-only", self.path)
        before = file_bytes(self.path)
        if not self.path.exists() or (max_age is None and max_bytes is None):
            return PruneResult(bytes_before=before, bytes_after=before)
        now = time.time() if now is None else now
        counts = [0, 0, 0, 0]
        size_cut: float | None = None
        with self._connect(write=True) as con:
            if self._version(con) is None:
                return PruneResult(bytes_before=before, bytes_after=before)
            con.execute("BEGIN TRANSACTION")
            self._ensure_schema(con)   # an older layout is upgraded first, as by a write
            if max_age is not None:
                counts = list(prune_age(con, now - max_age))
            con.execute("COMMIT")
            if counts[0] or max_bytes is not None:
                con.execute("CHECKPOINT")
            used = data_bytes(con, self.path)
            if max_bytes is not None and used > SIZE_TRIGGER * max_bytes:
                size_cut, used = self._prune_size(con, int(SIZE_TARGET * max_bytes), used,
                                                  counts)
        return PruneResult(
            rows_deleted=counts[0], connections_deleted=counts[1],
            statuses_deleted=counts[2], regrouped=counts[3],
            age_cutoff=None if max_age is None else now - max_age, size_cutoff=size_cut,
            bytes_before=before, bytes_after=file_bytes(self.path), data_bytes=used)

    def _prune_size(self, con: duckdb.DuckDBPyConnection, target: int, used: int,
                    counts: list[int]) -> tuple[float | None, int]:
        """Delete the oldest connections until ``used`` bytes are estimated to fit
        ``target``; add to ``counts``; return the newest age deleted and the bytes used."""
        cut: float | None = None
        got = con.execute("SELECT (SELECT count(*) FROM connections), "
                          "(SELECT count(*) FROM flows)").fetchall()[0]
        conns, rows = int(got[0]), int(got[1])
        estimate = used
        for _ in range(MAX_SIZE_PASSES):
            n = connections_for_size(estimate, target, conns)
            if not n:
                break
            con.execute("BEGIN TRANSACTION")
            r, c, st, rb, newest = prune_oldest(con, n)
            con.execute("COMMIT")
            if not c:
                break
            cut = newest if newest is not None else cut
            for i, v in enumerate((r, c, st, rb)):
                counts[i] += v
            estimate = round(estimate * (rows - r) / rows) if rows else 0
            conns, rows = conns - c, rows - r
        con.execute("CHECKPOINT")
        return cut, data_bytes(con, self.path)

    # -- writing ------------------------------------------------------------------------
    def write_status(self, node: str, status: Mapping[str, Any], at: float | None = None) -> None:
        """Append an agent's health report (sources, lost events, store backlog) as JSON."""
        if self.read_only:
            raise StoreError(f"store {self.path} was opened read-only")
        with self._connect(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            self._ensure_schema(con)
            con.execute("INSERT INTO agent_status VALUES (?, ?, ?)",
                        [time.time() if at is None else at, node,
                         json.dumps(status, default=str, sort_keys=True)])
            con.execute("COMMIT")

    def statuses(self) -> list[dict[str, Any]]:
        """The latest health report of every agent: ``{"node", "time", "status": {...}}``."""
        with self._connect(write=False) as con:
            if self._version(con) is None:
                return []
            found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = "
                                "'agent_status'").fetchall()
            if not found[0][0]:
                return []
            rows = con.execute(
                "SELECT node, time, status FROM agent_status QUALIFY row_number() OVER "
                "(PARTITION BY node ORDER BY time DESC) = 1 ORDER BY node").fetchall()
        return [{"node": n, "time": t, "status": json.loads(st)} for n, t, st in rows]

    def progress(self, since: float) -> dict[str, float]:
        """See :meth:`podflow.store.base.FlowStore.progress`: the health reports in the file
        merged with the agents' beacons beside it (:mod:`podflow.store.beacons`), the
        newest of each."""
        heard: dict[str, tuple[float, float]] = {}
        for st in self.statuses():
            at = float(st["time"])
            status = st["status"]   # any JSON an agent wrote: only a number counts
            through = status.get("reported_through") if isinstance(status, dict) else None
            heard[str(st["node"])] = (at, float(through) if isinstance(
                through, (int, float)) and not isinstance(through, bool) else at)
        for node, (at, through) in read_beacons(self.path, since).items():
            old = heard.get(node)
            heard[node] = (at, through) if old is None else (max(old[0], at),
                                                             max(old[1], through))
        return {node: min(at, max(through, at - AGENT_MAX_LAG))
                for node, (at, through) in heard.items() if at >= since}

    def mark_progress(self, node: str, through: float, at: float | None = None) -> None:
        """See :meth:`podflow.store.base.FlowStore.mark_progress` (a beacon beside the
        file)."""
        write_beacon(self.path, node, through=through, at=time.time() if at is None else at)

    def write(self, flows: Sequence[Flow]) -> int:
        """Append one row per observation of each flow in one transaction.

        Returns the number of rows written. Flows that cannot be serialised are skipped and
        reported by :class:`FlowRejected` raised *after* the others were committed.
        """
        return self.write_feed(flows)

    def write_feed(self, flows: Sequence[Flow], *,
                   statuses: Sequence[tuple[str, float, Mapping[str, Any]]] = (),
                   cursors: Mapping[str, tuple[str, int]] | None = None) -> int:
        """:meth:`write`, with agents' health reports ``(node, time, status)`` and a hub's
        cursors ``node -> (epoch, seq)`` in the same transaction: after a crash the store
        holds the flows exactly up to the cursors it holds (:mod:`podflow.cluster.hub`)."""
        if self.read_only:
            raise StoreError(f"store {self.path} was opened read-only")
        now = time.time()
        rows: list[dict[str, Any]] = []
        errors: list[tuple[int, Flow, str]] = []
        per_flow: list[tuple[int, list[dict[str, Any]]]] = []
        for i, f in enumerate(flows):
            try:
                per_flow.append((i, flow_to_rows(f, now)))
            except (ValueError, TypeError, AttributeError) as exc:
                errors.append((i, f, str(exc) or type(exc).__name__))
        rows = [r for _, rs in per_flow for r in rs]
        try:
            table = rows_to_table(rows) if rows else None
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            table, rows = self._table_skipping_bad(flows, per_flow, errors)
        written = 0
        has_rows = table is not None and table.num_rows > 0
        if has_rows or statuses or cursors:
            with self._connect(write=True) as con:
                con.execute("BEGIN TRANSACTION")
                self._ensure_schema(con)
                if table is not None and has_rows:
                    table = table.sort_by([("time", "ascending")])
                    top = con.execute("SELECT coalesce(max(seq), 0) FROM flows").fetchall()
                    base = int(top[0][0])
                    seqs = pa.array(range(base + 1, base + 1 + table.num_rows),
                                    type=pa.int64())
                    table = table.set_column(0, "seq", seqs)
                    write_batch(con, table)
                    written = table.num_rows
                for node, at, status in statuses:
                    con.execute("INSERT INTO agent_status VALUES (?, ?, ?)",
                                [at, node, json.dumps(status, default=str, sort_keys=True)])
                for node, (epoch, seq) in (cursors or {}).items():
                    con.execute("INSERT OR REPLACE INTO feed_cursors VALUES (?, ?, ?, ?)",
                                [node, epoch, seq, now])
                con.execute("COMMIT")
        if errors:
            raise FlowRejected(written, sorted(errors, key=lambda e: e[0]))
        return written

    def feed_cursors(self) -> dict[str, tuple[str, int]]:
        """Each agent's committed cursor ``node -> (epoch, seq)`` (empty without any)."""
        if not self.path.exists():
            return {}
        with self._connect(write=False) as con:
            found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = "
                                "'feed_cursors'").fetchall()
            if not found[0][0]:
                return {}
            rows = con.execute("SELECT node, epoch, seq FROM feed_cursors").fetchall()
        return {str(n): (str(e), int(q)) for n, e, q in rows}

    @staticmethod
    def _table_skipping_bad(flows: Sequence[Flow], per_flow: list[tuple[int, list[dict[str,
                            Any]]]], errors: list[tuple[int, Flow, str]],
                            ) -> tuple[pa.Table | None, list[dict[str, Any]]]:
        good: list[dict[str, Any]] = []
        for i, rs in per_flow:
            try:
                rows_to_table(rs)
            except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
                errors.append((i, flows[i], f"cannot store a value: {exc}"))
                continue
            good.extend(rs)
        return (rows_to_table(good) if good else None), good

    # -- reading ------------------------------------------------------------------------
    def _columns(self, con: duckdb.DuckDBPyConnection, sql: str,
                 params: list[Any]) -> dict[str, list[Any]]:
        cols: dict[str, list[Any]] = con.sql(sql, params=params).to_arrow_table().to_pydict()
        return cols

    def _query(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        with self._connect(write=False) as con:
            if not self._has_schema(con):
                return []
            cols = self._columns(con, sql, params)
        return [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]

    def flows(self, spec: FilterSpec | None = None, *, limit: int | None = None,
              last: int | None = None, after_rowid: int | None = None,
              merged: bool = True) -> list[Flow]:
        """Flows matching ``spec``, ordered by start time.

        ``limit`` keeps the first N, ``last`` the newest N (still returned oldest first).
        ``after_rowid`` keeps flows with a row newer than that :meth:`last_rowid` value, so a
        follower sees new *and updated* connections. ``merged=False`` returns the raw
        observation rows (``spec.node`` then tests the row's own node).
        """
        where, params = to_sql(spec or FilterSpec())
        if after_rowid is not None:
            where += f" AND {'m_seq' if merged else 'seq'} > ?"
            params.append(int(after_rowid))
        order = "DESC" if last is not None else "ASC"
        n = last if last is not None else limit
        lim = f" LIMIT {int(n)}" if n is not None else ""
        with self._connect(write=False) as con:
            if not self._has_schema(con):
                return []
            if not merged:
                sql = (f"SELECT * FROM (SELECT *, list_value(obs_node) AS obs_nodes "
                       f"FROM flows) WHERE {where} ORDER BY time {order}, seq {order}{lim}")
                out = columns_to_flows(self._columns(con, sql, params))
                return out[::-1] if last is not None else out
            sel = con.execute(
                f"SELECT m_seqs FROM connections WHERE {where} "
                f"ORDER BY time {order}, okey {order}, conn_id {order}{lim}", params).fetchall()
            if last is not None:
                sel.reverse()
            if not sel:
                return []
            sub = register(con, "podflow_seqs", (q for (seqs,) in sel for q in seqs),
                           pa.int64())
            cols = self._columns(con, f"SELECT * FROM flows WHERE seq IN {sub} ORDER BY seq",
                                 [])
        by_seq = dict(zip(cols["seq"], columns_to_flows(cols), strict=True))
        return [merge([by_seq[q] for q in sorted(seqs)]) for (seqs,) in sel]

    def last_rowid(self) -> int:
        """The ``seq`` of the newest row (0 when empty): pass it as ``after_rowid`` later."""
        rows = self._query("SELECT coalesce(max(seq), 0) AS n FROM flows", [])
        return int(rows[0]["n"]) if rows else 0

    def map_edges(self, spec: FilterSpec | None = None) -> list[Edge]:
        """Service-map edges over the merged flows matching ``spec`` (most connections first).

        Same result as :func:`podflow.query.servicemap.build_edges` on :meth:`flows`.
        """
        where, params = to_sql(spec or FilterSpec())
        return sort_edges(edge_from_row(r) for r in self._query(edges_sql(where), params))

    def l7_connections(self, spec: FilterSpec | None = None) -> list[tuple[Flow, bool]]:
        """Connections with an HTTP or DNS record in ``spec``'s time window, by start time.

        Each comes as its merged row (one Flow, with the primary row's observation point)
        and whether it matches the whole ``spec`` (its other fields, e.g. the nodes). For the
        service map's L7 summaries (:mod:`podflow.server.l7`).
        """
        spec = spec or FilterSpec()
        window, wparams = to_sql(FilterSpec(since=spec.since, until=spec.until))
        where, params = to_sql(spec)
        sql = (f"SELECT *, ({where}) AS podflow_match FROM connections WHERE has_l7 AND "
               f"{window} ORDER BY time, okey, conn_id")
        with self._connect(write=False) as con:
            if not self._has_schema(con):
                return []
            cols = self._columns(con, sql, params + wparams)
        return list(zip(columns_to_flows(cols), (bool(m) for m in cols["podflow_match"]),
                        strict=True))

    def check(self) -> dict[str, Any]:
        """Whether the store can be read now, for health endpoints; never raises a
        :class:`StoreError`.

        ``{"ok", "state", "kind", "error", "last_rowid"}``: ``state`` is ``ok``,
        ``missing`` (no store yet: fine), ``busy`` (locked by writers past
        ``lock_timeout``: fine, retried) or the error's ``kind`` (``corrupt``,
        ``truncated``, ``not_duckdb``, ``wal_corrupt``, ``schema``, ``unreadable``:
        ``ok`` is false, ``error`` says what to do). It reads the metadata, the newest row
        id, the connection count and the agents' reports: damage elsewhere in the file
        shows when a query reaches it.
        """
        out: dict[str, Any] = {"ok": True, "state": "ok", "kind": None, "error": None,
                               "last_rowid": None}
        try:
            with self._connect(write=False) as con:
                if self._has_schema(con):
                    got = con.execute("SELECT (SELECT coalesce(max(seq), 0) FROM flows), "
                                      "(SELECT count(*) FROM connections)").fetchall()
                    out["last_rowid"] = int(got[0][0])
                else:
                    out["last_rowid"] = 0
            self.statuses()
        except StoreError as exc:
            out.update(ok=exc.retryable, state=exc.kind, kind=exc.kind, error=str(exc))
            if isinstance(exc, StoreMissing):
                out["last_rowid"] = 0
        return out

    def stats(self) -> dict[str, Any]:
        """Counts for ``lab status`` and tests: rows, connections, time span, rows per node."""
        sql = ("SELECT (SELECT count(*) FROM flows) AS rows, "
               "(SELECT count(*) FROM connections) AS connections, (SELECT min(time) FROM "
               "flows) AS first_time, (SELECT max(coalesce(end_time, time)) FROM flows) AS "
               "last_time, (SELECT coalesce(max(seq), 0) FROM flows) AS last_rowid, "
               "(SELECT map(list(n), list(c)) FROM (SELECT coalesce(obs_node, '') AS n, "
               "count(*) AS c FROM flows GROUP BY 1 ORDER BY 1)) AS rows_per_node")
        got = self._query(sql, [])
        out: dict[str, Any] = {"path": str(self.path), "schema_version": STORE_SCHEMA_VERSION,
                               "rows": 0, "connections": 0, "first_time": None,
                               "last_time": None, "last_rowid": 0, "rows_per_node": {}}
        if got:
            out.update(got[0])
            out["rows_per_node"] = dict(out["rows_per_node"] or {})
        return out
