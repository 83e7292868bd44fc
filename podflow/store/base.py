"""The FlowStore protocol every store backend implements, and the errors they raise.

A store keeps one row per *observation* (what one agent saw of one connection) and returns
merged flows (one per connection, see :mod:`podflow.pipeline.correlate`) unless asked for the
raw rows. Writers and readers may be separate processes; stores must not assume they are the
only user of their backing file or server.

Every problem with the store itself is a :class:`StoreError` whose ``kind`` names it and
whose ``retryable`` says whether waiting can help: ``busy`` (locked by another process:
retry), ``missing`` (not created yet), ``schema`` (a newer podflow's layout), ``unreadable``
(cannot be opened: a directory, permissions), and the damaged files, all
:class:`StoreCorrupt`: ``corrupt`` (a block fails its checksum), ``truncated``,
``not_duckdb`` and ``wal_corrupt``. Their messages name the file and what to do
(:mod:`podflow.store.errors` maps DuckDB's errors to them).

Example::

    >>> from podflow.store.duckdb import DuckDBStore
    >>> def newest(store: FlowStore) -> list[Flow]:
    ...     return store.flows(last=10)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from podflow.model.flow import Flow

if TYPE_CHECKING:
    from podflow.query.filter import FilterSpec


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
    """What the pipeline writes to and the reading commands query."""

    def write(self, flows: Sequence[Flow]) -> int:
        """Store a batch of observations; return the number of rows written.

        Raises :class:`StoreBusy` if the store stays locked, :class:`FlowRejected` (after
        storing the good ones) if some flows cannot be serialised.
        """
        ...

    def flows(
        self,
        spec: FilterSpec | None = None,
        *,
        limit: int | None = None,
        last: int | None = None,
        after_rowid: int | None = None,
        merged: bool = True,
    ) -> list[Flow]:
        """Flows matching ``spec`` ordered by start time (see the backend for details)."""
        ...

    def close(self) -> None:
        """Release whatever the store holds (idempotent)."""
        ...
