"""Follow the flow store and feed the metrics handlers, counting each connection once.

Every ``interval`` seconds the :class:`Follower` polls the store through the one store
follower (:class:`~podflow.store.follow.StoreFollower`, without its change detection), which
returns the connections with a row newer than the last one it saw: new ones *and* old ones
that got a new observation (an active connection re-reported, its end, another node's
view), and reads the agents' health reports from the same store. The :class:`Ledger`
decides when to count them, so that each connection counts exactly once and then grows:

* a connection is identified by each of its non-empty keys, ``flow_id`` and ``client_key``,
  together with its start time; two sightings are the same connection when they share a key
  and their start times are within ``SPLIT_GAP`` (5 s) — the store's own merge rule, so a
  reused port is a new connection and a client-side view joined later is not;
* it is first counted **the first time it is seen final** (``state`` ended), or, if it
  stays open, once it has been open for ``count_active_after`` seconds (default 10 s) —
  even when no new row arrives, because pending connections are kept and re-checked each
  poll; so long-lived connections show up without waiting for their end;
* every later sighting adds exactly what it brings (the L7 record and TCP flags that the
  packets vantage reports after conntrack's end, the other node's observation point, more
  ICMP packets): the connection's :data:`~podflow.metrics.base.Account` says what each
  handler already counted, and the labels an item was first counted with stay;
* a row without any key is unique in the store, so it is counted when first read.

The ledger forgets a connection ``remember`` seconds (default 15 min) after it was last seen.
A missing, locked or unreadable store is counted in ``podflow_metrics_store_errors_total``
(``reason``: ``missing``, ``busy``, or the damage's kind: ``corrupt``, ``truncated``,
``not_duckdb``, ``wal_corrupt``, ``schema``, ``unreadable``, ``error``) and retried at the
next poll; the follower never dies of it.

By default following starts at the store's current end (``backfill=0``): counters count
from the exporter's start, as Hubble's do. ``backfill=N`` first reads the connections of
the last N seconds (``math.inf``: the whole store, e.g. for tests and small stores).

Example::

    >>> from podflow.model.flow import Endpoint, Flow, FlowState, Protocol
    >>> led = Ledger()
    >>> f = Flow(100.0, Endpoint("10.0.0.1", 1), Endpoint("10.0.0.2", 2), Protocol.TCP,
    ...          state=FlowState.ACTIVE, flow_id="a")
    >>> led.offer(f, now=101.0) is None            # open for 1 s: not yet
    True
    >>> [x.flow_id for x, _ in led.due(now=111.0)]  # open for 11 s: counted
    ['a']
    >>> led.offer(f, now=112.0)[1] is led.offer(f, now=113.0)[1]   # seen again: one account
    True
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from prometheus_client import Counter, Gauge

from podflow.metrics.base import Account
from podflow.metrics.registry import MetricSet
from podflow.model.flow import Flow, FlowState
from podflow.store.base import FlowStore
from podflow.store.correlate import SPLIT_GAP, merge
from podflow.store.follow import StoreFollower

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Entry:
    eid: int
    start: float
    last_seen: float
    pending: Flow | None
    """The newest version of a connection not counted yet; None once counted."""
    account: Account | None = None
    """What the handlers counted of it (None: not counted yet)."""
    views: dict[tuple[str, str, str], Flow] | None = None
    """:meth:`Ledger.offer_view`: the newest view of each vantage (node, source, instance)."""


class Ledger:
    """Which connections were counted (see the module doc); pure, no I/O."""

    def __init__(self, *, count_active_after: float = 10.0, remember: float = 900.0,
                 max_pending: int = 100_000) -> None:
        self.count_active_after = count_active_after
        self.remember = remember
        self.max_pending = max_pending
        """Bound on open connections waiting to be counted; beyond it they count at once."""
        self._by_key: dict[str, list[_Entry]] = {}
        self._entries: dict[int, _Entry] = {}
        self._pending: set[int] = set()
        self._next = 0
        self.counted = 0
        """Connections counted (a first time) so far."""

    def __len__(self) -> int:
        return len(self._entries)

    def _find(self, keys: list[str], start: float) -> _Entry | None:
        for k in keys:
            for e in self._by_key.get(k, ()):
                if abs(e.start - start) <= SPLIT_GAP:
                    return e
        return None

    def _ready(self, flow: Flow, now: float) -> bool:
        return flow.state is FlowState.ENDED or now - flow.time >= self.count_active_after

    def _count(self, entry: _Entry, flow: Flow) -> tuple[Flow, Account]:
        entry.pending = None
        self._pending.discard(entry.eid)
        entry.account = {}
        self.counted += 1
        return flow, entry.account

    def _entry(self, flow: Flow, keys: list[str], now: float) -> _Entry:
        """The connection ``flow`` is a sighting of (a new one if none), known by ``keys``."""
        entry = self._find(keys, flow.time)
        if entry is None:
            self._next += 1
            entry = _Entry(self._next, flow.time, now, flow)
            self._entries[entry.eid] = entry
        for k in keys:
            bucket = self._by_key.setdefault(k, [])
            if entry not in bucket:
                bucket.append(entry)
        entry.last_seen = now
        return entry

    def offer_view(self, view: Flow, now: float) -> tuple[Flow, Account] | None:
        """One vantage point's view (an agent's own records, not yet merged by a store):
        merged with the views of its connection seen so far (the store's rules,
        :func:`~podflow.store.correlate.merge`), then offered as :meth:`offer` does."""
        keys = [k for k in (view.flow_id, view.client_key) if k]
        if not keys:
            return self.offer(view, now)
        entry = self._entry(view, keys, now)
        o = view.observations[0] if view.observations else None
        vantage = (o.node_name, o.source, o.instance) if o is not None else ("", "", "")
        entry.views = {**(entry.views or {}), vantage: view}
        return self.offer(merge(list(entry.views.values())), now)

    def offer(self, flow: Flow, now: float) -> tuple[Flow, Account] | None:
        """A sighting of a connection: what to count now (the flow and its connection's
        account: empty the first time, what was counted before after), or None."""
        keys = [k for k in (flow.flow_id, flow.client_key) if k]
        if not keys:
            self.counted += 1
            return flow, {}
        entry = self._entry(flow, keys, now)
        if entry.account is not None:
            return flow, entry.account
        entry.pending = flow
        if self._ready(flow, now) or len(self._pending) >= self.max_pending:
            return self._count(entry, flow)
        self._pending.add(entry.eid)
        return None

    def due(self, now: float) -> list[tuple[Flow, Account]]:
        """Pending connections that have now been open long enough: count them."""
        out = []
        for eid in sorted(self._pending):
            entry = self._entries[eid]
            if entry.pending is not None and self._ready(entry.pending, now):
                out.append(self._count(entry, entry.pending))
        return out

    def prune(self, now: float) -> int:
        """Forget connections not seen for ``remember`` seconds; return how many."""
        old = {eid for eid, e in self._entries.items() if now - e.last_seen > self.remember}
        if not old:
            return 0
        for k in list(self._by_key):
            kept = [e for e in self._by_key[k] if e.eid not in old]
            if kept:
                self._by_key[k] = kept
            else:
                del self._by_key[k]
        for eid in old:
            del self._entries[eid]
            self._pending.discard(eid)
        return len(old)


class Follower:
    """Polls the store in a thread and feeds a :class:`MetricSet` (see the module doc)."""

    def __init__(self, store_path: str | Path, metrics: MetricSet, *, interval: float = 2.0,
                 backfill: float = 0.0, count_active_after: float = 10.0,
                 remember: float = 900.0) -> None:
        self.store_path = Path(store_path)
        self.metrics = metrics
        self.interval = interval
        self.backfill = backfill
        self.ledger = Ledger(count_active_after=count_active_after, remember=remember)
        self.follow = StoreFollower(self.store_path, changes_only=False,
                                    lock_timeout=max(1.0, min(interval, 5.0)))
        """The store follower (cursor, store states); the ledger does the rest."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        reg = metrics.registry
        self.counted = Counter("podflow_metrics_connections_counted",
                               "Connections counted by the metrics follower", registry=reg)
        self.errors = Counter("podflow_metrics_store_errors",
                              "Failed reads of the flow store by the metrics follower",
                              ["reason"], registry=reg)
        self.rowid = Gauge("podflow_metrics_last_rowid",
                           "Newest store row the metrics follower has read", registry=reg)

    @property
    def last_rowid(self) -> int | None:
        """The newest row read so far (None before the first successful poll)."""
        return self.follow.after

    def poll(self, now: float | None = None) -> int:
        """Read what is new, count it, expire idle series; return connections counted for
        the first time."""
        now = time.time() if now is None else now
        statuses: list[dict[str, Any]] = []

        def read_statuses(store: FlowStore) -> None:
            statuses[:] = store.statuses()

        try:
            if self.follow.started:
                flows = self.follow.poll(also=read_statuses)
            elif self.backfill <= 0:
                flows = self.follow.start(0, also=read_statuses)
            else:   # the connections of the last `backfill` seconds (inf: all of them)
                flows = self.follow.start(
                    None, since=None if math.isinf(self.backfill) else now - self.backfill,
                    also=read_statuses)
        except (OSError, duckdb.Error) as exc:   # what the store could not classify
            log.warning("metrics: cannot read %s: %s", self.store_path, exc)
            self.errors.labels("error").inc()
            return 0
        err = self.follow.error
        if err is not None:
            # a damaged store counts under its kind (corrupt, truncated, ...) and is read
            # again next poll: the follower, and the server's start-up, never die of it
            if not err.retryable:
                log.warning("metrics: cannot read %s: %s", self.store_path, err)
            self.errors.labels(err.kind).inc()
            return 0
        top = self.follow.after or 0
        self.rowid.set(top)
        before = self.ledger.counted
        counted = [c for f in flows if (c := self.ledger.offer(f, now)) is not None]
        counted += self.ledger.due(now)
        self.metrics.process(counted, now)
        n = self.ledger.counted - before
        self.counted.inc(n)
        self.metrics.update_statuses(statuses, now)
        self.metrics.expire(now)
        self.ledger.prune(now)
        return n

    def start(self, initial_delay: float = 0.0) -> None:
        """Poll in a daemon thread, first after ``initial_delay`` seconds; idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(initial_delay,),
                                        name="podflow-metrics", daemon=True)
        self._thread.start()

    def _run(self, initial_delay: float) -> None:
        if initial_delay > 0:
            self._stop.wait(initial_delay)
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # never let one bad flow or handler kill the exporter
                log.exception("metrics follower poll failed")
                self.errors.labels("internal").inc()
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for it (at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        """True while the polling thread is alive."""
        return self._thread is not None and self._thread.is_alive()
