"""Batching, bounded, retrying hand-off of finished flows to a store.

Several agents share one store file and readers open it too, so a write may find the store
busy for a while. :class:`BufferedWriter` keeps flows in a bounded buffer and retries at the
next flush; only when the buffer is full does it drop the oldest flows, counting them in
``lost``. It never raises out of :meth:`flush` for a busy or failing store. A store that is
damaged (corrupt, truncated, not a DuckDB file: waiting does not help) is said once, in
``state``, and retried with a backoff up to a minute, so that once someone moves the file
aside the buffered flows go into a fresh store.

The agent's loop only adds; :meth:`BufferedWriter.run` flushes on a thread of its own (with
the other store chores the caller passes, such as the health report), so a store that is
slow to open or locked by another agent never stalls the decoding of flows: what arrives
meanwhile goes into the next, larger batch (the per-write cost of opening the file is paid
once per batch, not once per flow). :meth:`add`, :meth:`flush` and :attr:`pending` are
safe to call from different threads.

Example::

    >>> class Mem:
    ...     def __init__(self): self.rows = []
    ...     def write(self, flows): self.rows.extend(flows); return len(flows)
    >>> m = Mem(); w = BufferedWriter(lambda: m, max_buffer=10)
    >>> w.add(["f1", "f2"]); w.flush()
    2
    >>> m.rows
    ['f1', 'f2']
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from podflow.store.base import FlowRejected, StoreError

log = logging.getLogger(__name__)


class FlowWriter(Protocol):
    """Anything that stores a batch of flows (a store, a test double)."""

    def write(self, flows: Sequence[Any]) -> int:
        """Store the batch; return how many were stored."""
        ...


class BufferedWriter:
    """Bounded buffer in front of a store; see the module docstring."""

    def __init__(self, open_store: Callable[[], FlowWriter], *, max_buffer: int = 200_000,
                 max_batch: int = 50_000) -> None:
        """``open_store`` returns a writer for one flush (it may open and close a file)."""
        self._open = open_store
        self._buf: deque[Any] = deque()
        self._max_buffer = max_buffer
        self._max_batch = max_batch
        self.written = 0
        """Flows stored so far."""
        self.lost = 0
        """Flows dropped because the buffer was full while the store was unavailable."""
        self.rejected = 0
        """Flows the store refused as malformed (logged, not retried)."""
        self.failures = 0
        """Flushes that failed (store busy or broken); the flows stayed buffered."""
        self.last_error: str | None = None
        """The last failure, for health reporting."""
        self.state = "ok"
        """``ok``, or the kind of the store problem that stops writing (``busy``,
        ``corrupt``, ``truncated``, ...; see :class:`~podflow.store.base.StoreError`)."""
        self._retry_at = 0.0
        self._backoff = self.FIRST_BACKOFF
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._inflight = 0
        self.drained = False
        """Whether the last :meth:`flush` stored everything buffered when it began (it did
        not end on a failure or a backoff)."""
        self.stored_through = 0.0
        """The newest :meth:`mark` whose flows are all stored."""
        self._marked = 0.0

    FIRST_BACKOFF = 5.0
    """Seconds before the first retry of a damaged store (doubling up to a minute)."""

    def add(self, flows: Sequence[Any]) -> None:
        """Buffer flows; drop (and count) the oldest beyond the bound."""
        with self._lock:
            self._buf.extend(flows)
            self._trim()

    def mark(self, t: float) -> None:
        """Note that every flow up to ``t`` (the caller's progress, e.g. the newest
        conntrack dump processed) has been added; once a flush has stored them,
        :attr:`stored_through` is ``t``."""
        with self._lock:
            self._marked = max(self._marked, t)

    def _trim(self) -> None:
        """Drop the oldest flows beyond the bound (the caller holds the lock)."""
        overflow = len(self._buf) + self._inflight - self._max_buffer
        if overflow > 0:
            overflow = min(overflow, len(self._buf))
            for _ in range(overflow):
                self._buf.popleft()
            self.lost += overflow
            log.warning("store buffer full: dropped %d oldest flows (%d lost in all)",
                        overflow, self.lost)

    @property
    def pending(self) -> int:
        """Flows waiting to be stored (including a batch being written)."""
        return len(self._buf) + self._inflight

    def _take(self, limit: int) -> list[Any]:
        """Move the next batch (at most ``limit`` flows) out of the buffer (it is being
        written)."""
        with self._lock:
            n = min(len(self._buf), self._max_batch, limit)
            batch = [self._buf.popleft() for _ in range(n)]
            self._inflight = n
            return batch

    def _done(self, back: list[Any] | None = None) -> None:
        """The batch in flight is written, or (``back``) goes back to the buffer's front."""
        with self._lock:
            self._inflight = 0
            if back:
                self._buf.extendleft(reversed(back))
                self._trim()

    def flush(self) -> int:
        """Write what was buffered when it began, in batches; return how many were stored
        now. What arrives meanwhile is for the next flush: under load every batch takes
        long enough for more to arrive, and a flush that waited for an empty buffer would
        never end (nor let the chores after it run)."""
        stored = 0
        self.drained = False
        if time.monotonic() < self._retry_at:
            return 0
        with self._flushing:  # one flush at a time: the thread's and a final one
            with self._lock:   # what was added up to the mark is in the buffer's front
                marked, owed = self._marked, len(self._buf)
            while owed > 0 and (batch := self._take(owed)):
                owed -= len(batch)
                try:
                    store = self._open()
                    n = store.write(batch)
                    close = getattr(store, "close", None)
                    if callable(close):
                        close()
                except FlowRejected as exc:
                    # the store kept the good flows of the batch; the bad ones would fail again
                    self._done()
                    self.written += exc.written
                    stored += exc.written
                    self.rejected += len(exc.errors)
                    self.last_error = str(exc)
                    log.warning("store rejected %d flows: %s", len(exc.errors), exc)
                    continue
                except Exception as exc:  # a busy or failing store must not stop the agent
                    self._done(back=batch)
                    self._failed(exc)
                    return stored
                self._done()
                if self.state != "ok":
                    log.warning("store writable again (%d flows buffered)", self.pending)
                self.state, self._backoff, self._retry_at = "ok", self.FIRST_BACKOFF, 0.0
                stored += n
                self.written += n
            self.drained = True
            self.stored_through = max(self.stored_through, marked)
        return stored

    def run(self, stop: threading.Event, interval: float,
            chores: Callable[[], object] | None = None) -> None:
        """Flush every ``interval`` s (then run ``chores``, e.g. a pending health report)
        until ``stop`` is set; the owner's final :meth:`flush` writes what is left. Nothing
        raises out of it: a failing chore is logged and tried again next time."""
        while not stop.wait(interval):
            self.flush()
            if chores is not None:
                try:
                    chores()
                except Exception as exc:
                    log.warning("store chore failed (next in %.0fs): %s", interval, exc)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        kind = exc.kind if isinstance(exc, StoreError) else "error"
        if isinstance(exc, StoreError) and not exc.retryable:  # damaged: say it once, back off
            if self.state != kind:
                log.error("store unusable, buffering up to %d flows and retrying: %s",
                          self._max_buffer, exc)
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 60.0)
        else:
            log.warning("store write failed, will retry (%d flows buffered): %s",
                        self.pending, self.last_error)
        self.state = kind
