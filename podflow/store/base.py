"""The FlowStore protocol every store backend implements, and the errors they raise.

A store keeps one row per *observation* (what one agent saw of one connection) and returns
merged flows (one per connection, see :mod:`podflow.store.correlate`) unless asked for the
raw rows. Writers and readers may be separate processes; stores must not assume they are the
only user of their backing file or server.

Every problem with the store itself is a :class:`StoreError` whose ``kind`` names it and
whose ``retryable`` says whether waiting can help: ``busy`` (locked by another process:
retry), ``missing`` (not created yet), ``schema`` (a newer podflow's layout), ``unreadable``
(cannot be opened: a directory, permissions), and the damaged files, all
:class:`StoreCorrupt`: ``corrupt`` (a block fails its checksum), ``truncated``,
``not_duckdb`` and ``wal_corrupt``. Their messages name the file and what to do
(:mod:`podflow.store.errors` maps DuckDB's errors to them).

Callers open a store with :func:`podflow.store.open_store` (the one place that names a
backend) and use only what :class:`FlowStore` declares; :mod:`podflow.store.follow` follows
one for new and updated connections.

Example::

    >>> def newest(store: FlowStore) -> list[Flow]:
    ...     return store.flows(last=10)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from podflow.model.flow import Flow

if TYPE_CHECKING:
    from podflow.query.filter import FilterSpec
    from podflow.query.servicemap import Edge
    from podflow.store.retention import PruneResult


class StoreError(RuntimeError):
    """Base class of store errors; ``str()`` is a one-line message fit for a user.

    ``kind`` names the problem for machines (health endpoints, metrics labels, the agent's
    health report); ``retryable`` says whether the same operation may succeed later without
    anyone doing anything (a lock held by another process) or needs a person (a corrupt
    file). ``path`` is the store file concerned, when known.
    """

    kind: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class StoreBusy(StoreError):
    """The store stayed locked by other processes for longer than the retry budget.

    Writers should keep their (bounded) buffer and retry later, counting what they drop.
    """

    kind = "busy"
    retryable = True


class StoreMissing(StoreError):
    """A read-only open of a store that does not exist (yet)."""

    kind = "missing"
    retryable = True


class StoreSchemaError(StoreError):
    """The store was written by a newer podflow (or has a layout this one cannot read)."""

    kind = "schema"


class StoreUnreadable(StoreError):
    """The file exists but cannot be opened for another reason than its content (it is a
    directory, permissions, an I/O error DuckDB gives no more detail on)."""

    kind = "unreadable"


class StoreCorrupt(StoreError):
    """The file's content is damaged: a block fails its checksum.

    Retrying does not help: restore the file from a backup or move it aside (a writer then
    starts a new store at the path). Subclasses tell the other damaged-file cases apart.
    """

    kind = "corrupt"


class StoreTruncated(StoreCorrupt):
    """The file is shorter than its own metadata says (cut by a full disk, a bad copy)."""

    kind = "truncated"


class StoreNotDuckDB(StoreCorrupt):
    """The file is not a DuckDB database at all (wrong path, overwritten, empty)."""

    kind = "not_duckdb"


class StoreWalCorrupt(StoreCorrupt):
    """The write-ahead log next to the file (``PATH.wal``) cannot be replayed."""

    kind = "wal_corrupt"


class FlowRejected(ValueError):
    """Some flows of a batch could not be serialised; the rest *were* stored.

    ``written`` is how many rows were stored, ``errors`` one ``(index, flow, message)`` per
    rejected flow (index into the batch passed to ``write``).
    """

    def __init__(self, written: int, errors: list[tuple[int, Flow, str]]) -> None:
        self.written = written
        self.errors = errors
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(
            f"{len(errors)} flow(s) rejected, {written} row(s) stored; "
            f"flow #{first[0]} (flow_id={first[1].flow_id!r}): {first[2]}{more}"
        )


@runtime_checkable
class FlowStore(Protocol):
    """What the pipeline writes to and the reading commands query: everything a caller may
    use of a store (open one with :func:`podflow.store.open_store`).

    A store holds nothing between operations, so it can be opened per request; every
    method may raise a :class:`StoreError` (``busy``, ``missing`` for a read-only store
    that does not exist, a damaged file's kind ...), except :meth:`check`.
    """

    def __enter__(self) -> FlowStore:
        ...

    def __exit__(self, *exc: object) -> None:
        ...

    def close(self) -> None:
        """Release whatever the store holds (idempotent)."""
        ...

    # -- writing
    def write(self, flows: Sequence[Flow]) -> int:
        """Store a batch of observations; return the number of rows written.

        Raises :class:`StoreBusy` if the store stays locked, :class:`FlowRejected` (after
        storing the good ones) if some flows cannot be serialised.
        """
        ...

    def write_status(self, node: str, status: Mapping[str, Any],
                     at: float | None = None) -> None:
        """Append an agent's health report (sources, lost events, store backlog)."""
        ...

    def write_feed(self, flows: Sequence[Flow], *,
                   statuses: Sequence[tuple[str, float, Mapping[str, Any]]] = (),
                   cursors: Mapping[str, tuple[str, int]] | None = None) -> int:
        """:meth:`write` with agents' health reports ``(node, time, status)`` and a hub's
        cursors in each agent's spool ``node -> (epoch, seq)``, all in one transaction."""
        ...

    def feed_cursors(self) -> dict[str, tuple[str, int]]:
        """The hub's committed cursors ``node -> (epoch, seq)`` (empty: none yet)."""
        ...

    def prune(self, max_age: float | None, max_bytes: int | None,
              now: float | None = None) -> PruneResult:
        """Apply retention: drop whole connections older than ``max_age`` seconds, then the
        oldest ones until the store fits ``max_bytes`` (None disables a limit)."""
        ...

    # -- reading
    def flows(
        self,
        spec: FilterSpec | None = None,
        *,
        limit: int | None = None,
        last: int | None = None,
        after_rowid: int | None = None,
        merged: bool = True,
    ) -> list[Flow]:
        """Flows matching ``spec`` ordered by start time: the first ``limit``, the newest
        ``last``, those with a row newer than ``after_rowid`` (new *and* updated
        connections); one per connection unless ``merged=False`` (the raw rows)."""
        ...

    def last_rowid(self) -> int:
        """The id of the newest row (0 when empty): pass it as ``after_rowid`` later."""
        ...

    def map_edges(self, spec: FilterSpec | None = None) -> list[Edge]:
        """Service-map edges over the merged flows matching ``spec``."""
        ...

    def l7_connections(self, spec: FilterSpec | None = None) -> list[tuple[Flow, bool]]:
        """Connections with an HTTP or DNS record in ``spec``'s time window, each with
        whether it matches the whole ``spec``."""
        ...

    def statuses(self) -> list[dict[str, Any]]:
        """The latest health report of every agent: ``{"node", "time", "status": {...}}``."""
        ...

    def progress(self, since: float) -> dict[str, float]:
        """For each agent whose health report was stored after ``since``: the time up to
        which it has stored every connection (its ``reported_through`` or the newest
        :meth:`mark_progress`, waited for at most
        :data:`~podflow.query.servicemap.AGENT_MAX_LAG`; the report's time for older
        agents). A live map waits for the slowest
        (:func:`podflow.query.servicemap.settled_time`)."""
        ...

    def mark_progress(self, node: str, through: float, at: float | None = None) -> None:
        """Say that agent ``node`` is alive (at ``at``, default now) and has stored every
        connection up to ``through``. Cheap and never waits for other writers: an agent
        whose writes wait for a busy store says so, and :meth:`progress` waits for it
        instead of taking it for stopped. Raises ``OSError`` when it cannot be written."""
        ...

    def check(self) -> dict[str, Any]:
        """Whether the store can be read now (``{"ok", "state", "kind", "error",
        "last_rowid"}``), for health endpoints; never raises a :class:`StoreError`."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counts: rows, connections, time span, rows per node."""
        ...
