"""The one store follower: new and updated connections as they land in a flow store.

Every live consumer attaches to a :class:`StoreFollower` and keeps only what differs: how
it renders (``podflow observe --follow``), streams (``GET /api/flows/stream``, see
:mod:`podflow.server.stream`) or counts (:mod:`podflow.metrics.follower`) what it gets.
The follower owns what they share:

* the **cursor**: the store's newest row id (``FlowStore.last_rowid``); each poll asks for
  the connections with a newer row (``flows(after_rowid=...)``), new ones *and* old ones
  that got a new observation;
* the **backlog**: :meth:`StoreFollower.start` remembers where the store is and returns the
  newest ``last`` matching flows (``last=None``: all of them, ``since``: only those alive
  since then); until a start succeeds (the store was busy), each :meth:`~StoreFollower.poll`
  tries the same start again;
* the **store states**: a missing store is not an error (whatever appears later is new, so
  the cursor starts at 0), a busy one is retried at the next poll, a damaged one too (its
  :attr:`~podflow.store.base.StoreError.kind` is reported, the consumer decides whether to
  give up); :attr:`StoreFollower.status` is ``ok`` or that kind, :attr:`StoreFollower.error`
  the error itself;
* the **change detection** (``changes_only``): a connection is returned again only when
  what a user sees of it changed: start and end time, state, counters, observation points,
  verdict or L7 record (:func:`signature`); at most ``max_seen`` connections are remembered
  (then the oldest half is forgotten, and may be returned once more).

Example::

    >>> import os, tempfile
    >>> from podflow.model.flow import Endpoint, Flow, Protocol
    >>> from podflow.store import open_store
    >>> path = os.path.join(tempfile.mkdtemp(), "flows.duckdb")
    >>> fol = StoreFollower(path)
    >>> fol.start(last=20), fol.status              # no store yet: not an error
    ([], 'missing')
    >>> f = Flow(1.0, Endpoint("10.0.0.1", 1), Endpoint("10.0.0.2", 2), Protocol.TCP,
    ...          flow_id="a")
    >>> open_store(path).write([f])
    1
    >>> [x.flow_id for x in fol.poll()], fol.poll(), fol.status
    (['a'], [], 'ok')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from podflow.model.flow import Flow
from podflow.query.filter import FilterSpec
from podflow.store import DEFAULT_LOCK_TIMEOUT, open_store
from podflow.store.base import FlowStore, StoreError

MAX_SEEN = 200_000
"""Connections remembered for change detection before the oldest half is forgotten."""

Reader = Callable[[FlowStore], object]
"""Something else to read from the same opened store at each poll (e.g. agent reports)."""


def signature(flow: Flow) -> tuple[object, ...]:
    """What a follower compares to tell that a connection changed."""
    return (flow.time, flow.state, flow.traffic, flow.end_time, flow.observations,
            flow.verdict, flow.l7)


class StoreFollower:
    """Follows the store at ``path`` for flows matching ``spec`` (see the module doc).

    ``lock_timeout`` bounds each poll's wait for a busy store; ``max_batch`` keeps only the
    newest N flows of one poll (None: all); ``changes_only=False`` returns every flow with
    a new row, changed or not (for consumers that do their own bookkeeping); ``opener``
    replaces :func:`~podflow.store.open_store` (another backend, a test double).
    """

    def __init__(self, path: str | Path, spec: FilterSpec | None = None, *,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT, changes_only: bool = True,
                 max_seen: int = MAX_SEEN, max_batch: int | None = None,
                 opener: Callable[[], FlowStore] | None = None) -> None:
        self.path = Path(path)
        self.spec = spec if spec is not None else FilterSpec()
        self.lock_timeout = lock_timeout
        self.changes_only = changes_only
        self.max_seen = max_seen
        self.max_batch = max_batch
        self._opener = opener
        self.after: int | None = None
        """The newest row id read so far (None until a start succeeded)."""
        self.status = "ok"
        """``ok``, or the :attr:`~podflow.store.base.StoreError.kind` the last poll met
        (``missing``, ``busy``, ``corrupt``, ``truncated`` ...)."""
        self.error: StoreError | None = None
        """The error the last poll met (None when it read the store)."""
        self._backlog: tuple[int | None, float | None] = (0, None)
        self._seen: dict[tuple[str, float], tuple[object, ...]] = {}

    @property
    def started(self) -> bool:
        """Whether the cursor is set (a start succeeded or found no store)."""
        return self.after is not None

    def open(self) -> FlowStore:
        """The store, opened read-only for one poll."""
        if self._opener is not None:
            return self._opener()
        return open_store(self.path, read_only=True, lock_timeout=self.lock_timeout)

    def start(self, last: int | None = 0, *, since: float | None = None,
              also: Reader | None = None) -> list[Flow]:
        """Set the cursor at the store's end; return the newest ``last`` matching flows
        (0: none, None: all; ``since``: only flows alive since then). ``also`` reads
        something else from the same store (its errors count as the poll's)."""
        self._backlog = (last, since)
        flows: list[Flow] = []
        try:
            store = self.open()
            top = store.last_rowid()
            if last != 0 or since is not None:
                spec = self.spec if since is None else replace(self.spec, since=since)
                flows = store.flows(spec, last=last)
            if also is not None:
                also(store)
        except StoreError as exc:
            self._failed(exc)
            if exc.kind == "missing":
                self.after = 0   # whatever appears from now on is new
            return []
        self.after, self.status, self.error = top, "ok", None
        return self._fresh(flows)

    def poll(self, *, also: Reader | None = None) -> list[Flow]:
        """Flows that appeared or changed since the previous call (oldest first).

        Before a successful start, the last start is tried again.
        """
        if self.after is None:
            last, since = self._backlog
            return self.start(last, since=since, also=also)
        flows: list[Flow] = []
        try:
            store = self.open()
            top = store.last_rowid()
            if top > self.after:
                flows = store.flows(self.spec, after_rowid=self.after)
            if also is not None:
                also(store)
        except StoreError as exc:
            self._failed(exc)
            return []
        self.after, self.status, self.error = top, "ok", None
        fresh = self._fresh(flows)
        return fresh if self.max_batch is None else fresh[-self.max_batch:]

    def _failed(self, exc: StoreError) -> None:
        self.status, self.error = exc.kind, exc

    def _fresh(self, flows: list[Flow]) -> list[Flow]:
        if not self.changes_only:
            return flows
        out = []
        for f in flows:
            key, sig = (f.flow_id or f"id:{id(f)}", f.time), signature(f)
            if self._seen.get(key) != sig:
                self._seen[key] = sig
                out.append(f)
        if len(self._seen) > self.max_seen:
            for k in list(self._seen)[: self.max_seen // 2]:
                del self._seen[k]
        return out
