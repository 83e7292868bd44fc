"""The FlowStore protocol every store backend implements, and the errors they raise.

A store keeps one row per *observation* (what one agent saw of one connection) and returns
merged flows (one per connection, see :mod:`podflow.pipeline.correlate`) unless asked for the
raw rows. Writers and readers may be separate processes; stores must not assume they are the
only user of their backing file or server.

Example::

    >>> from podflow.store.duckdb import DuckDBStore
    >>> def newest(store: FlowStore) -> list[Flow]:
    ...     return store.flows(last=10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from podflow.model.flow import Flow

if TYPE_CHECKING:
    from podflow.query.filter import FilterSpec


class StoreError(RuntimeError):
    """Base class of store errors; ``str()`` is a one-line message fit for a user."""


class StoreBusy(StoreError):
    """The store stayed locked by other processes for longer than the retry budget.

    Writers should keep their (bounded) buffer and retry later, counting what they drop.
    """


class StoreMissing(StoreError):
    """A read-only open of a store that does not exist (yet)."""


class StoreSchemaError(StoreError):
    """The store was written by a newer podflow, or is not a podflow store at all."""


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
