"""Live flows: poll the store for new and updated connections matching a filter.

:class:`FlowFollower` is the consumer the live views attach (``GET /api/flows/stream``; it
has the same semantics as ``podflow observe --follow``): it remembers the store's last row
id, asks for flows with newer rows, and returns each connection again only when it changed
(counters, state, end time, observation points). A busy or not-yet-created store is not an
error: the poll returns nothing and the next one tries again.

:func:`sse_events` turns a follower into Server-Sent Events: ``event: flow`` with a
:func:`~podflow.model.serialize.flow_to_dict` object as data, and ``event: status`` when the
store is busy, missing or damaged (``{"store": "busy"}``, ``"corrupt"`` ...), polled every
:data:`POLL_INTERVAL` seconds.

Example::

    follower = FlowFollower(Path("flows.duckdb"), FilterSpec(namespace=("shop",)))
    backlog = follower.start(last=20)   # newest 20, then only what changes
    fresh = follower.poll()
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from podflow.model.flow import Flow
from podflow.model.serialize import flow_to_dict
from podflow.query.filter import FilterSpec
from podflow.store.base import StoreBusy, StoreError, StoreMissing
from podflow.store.duckdb import DuckDBStore

POLL_INTERVAL = 0.5
"""Seconds between two polls of the store."""
MAX_SEEN = 200_000
"""Connections remembered for change detection before the oldest half is forgotten."""
MAX_BATCH = 2_000
"""Flows returned by one poll at most (the newest are kept)."""


def _signature(f: Flow) -> tuple[object, ...]:
    return (f.time, f.state, f.traffic, f.end_time, f.observations, f.verdict, f.l7)


class FlowFollower:
    """Polls a store for new/updated flows matching ``spec`` (see the module doc)."""

    def __init__(self, path: Path, spec: FilterSpec, *, lock_timeout: float = 1.0) -> None:
        self.path = path
        self.spec = spec
        self.lock_timeout = lock_timeout
        self.after: int | None = None
        self.status = "ok"
        """``ok``, ``busy`` (the last poll met a locked store), ``missing``, or the kind of
        damage the last poll met (``corrupt``, ``truncated``, ...: see
        :class:`~podflow.store.base.StoreError`)."""
        self._seen: dict[tuple[str, float], tuple[object, ...]] = {}

    def _store(self) -> DuckDBStore:
        return DuckDBStore(self.path, read_only=True, lock_timeout=self.lock_timeout)

    def start(self, last: int = 0) -> list[Flow]:
        """Remember where the store is now; return the newest ``last`` matching flows."""
        try:
            store = self._store()
            self.after = store.last_rowid()
            flows = store.flows(self.spec, last=last) if last else []
            self.status = "ok"
        except StoreMissing:
            self.after, flows, self.status = 0, [], "missing"
        except StoreBusy:
            flows, self.status = [], "busy"
        except StoreError as exc:   # damaged: its kind (corrupt, truncated, ...)
            flows, self.status = [], exc.kind
        return self._fresh(flows)

    def poll(self) -> list[Flow]:
        """Flows that appeared or changed since the previous call (oldest first)."""
        if self.after is None:
            return self.start()
        try:
            store = self._store()
            top = store.last_rowid()
            flows = store.flows(self.spec, after_rowid=self.after) if top > self.after else []
            self.after = top
            self.status = "ok"
        except StoreMissing:
            flows, self.status = [], "missing"
        except StoreBusy:
            flows, self.status = [], "busy"
        except StoreError as exc:   # damaged: its kind (corrupt, truncated, ...)
            flows, self.status = [], exc.kind
        return self._fresh(flows)[-MAX_BATCH:]

    def _fresh(self, flows: list[Flow]) -> list[Flow]:
        out = []
        for f in flows:
            key, sig = (f.flow_id or f"id:{id(f)}", f.time), _signature(f)
            if self._seen.get(key) != sig:
                self._seen[key] = sig
                out.append(f)
        if len(self._seen) > MAX_SEEN:
            for k in list(self._seen)[: MAX_SEEN // 2]:
                del self._seen[k]
        return out


async def sse_events(follower: FlowFollower, last: int = 0,
                     interval: float = POLL_INTERVAL) -> AsyncIterator[dict[str, Any]]:
    """Server-Sent Events (dicts for sse-starlette) until the client goes away."""
    flows = await asyncio.to_thread(follower.start, last)
    status = follower.status
    yield {"event": "status", "data": json.dumps({"store": status})}
    while True:
        for f in flows:
            yield {"event": "flow", "data": json.dumps(flow_to_dict(f))}
        if follower.status != status:
            status = follower.status
            yield {"event": "status", "data": json.dumps({"store": status})}
        await asyncio.sleep(interval)
        flows = await asyncio.to_thread(follower.poll)
