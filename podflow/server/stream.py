"""Live flows for the web UI: the store follower as Server-Sent Events.

:class:`FlowFollower` is the :class:`~podflow.store.follow.StoreFollower` the live views
attach (``GET /api/flows/stream``; the same follower as ``podflow observe --follow``): new
connections matching a filter, and each again when it changed. What is particular to the
stream: a poll returns at most :data:`MAX_BATCH` flows (the newest), and the store is
polled every :data:`POLL_INTERVAL` seconds by default.

:func:`sse_events` turns a follower into Server-Sent Events: ``event: flow`` with a
:func:`~podflow.model.serialize.flow_to_dict` object as data, and ``event: status`` when the
store is busy, missing or damaged (``{"store": "busy"}``, ``"corrupt"`` ...).

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

from podflow.model.serialize import flow_to_dict
from podflow.query.filter import FilterSpec
from podflow.store.follow import MAX_SEEN, StoreFollower

__all__ = ["MAX_BATCH", "MAX_SEEN", "POLL_INTERVAL", "FlowFollower", "sse_events"]

POLL_INTERVAL = 0.5
"""Seconds between two polls of the store."""
MAX_BATCH = 2_000
"""Flows returned by one poll at most (the newest are kept)."""


class FlowFollower(StoreFollower):
    """The store follower of the live views: changes only, at most :data:`MAX_BATCH` a poll."""

    def __init__(self, path: Path, spec: FilterSpec, *, lock_timeout: float = 1.0) -> None:
        super().__init__(path, spec, lock_timeout=lock_timeout, max_batch=MAX_BATCH)


async def sse_events(follower: StoreFollower, last: int = 0,
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
