"""The ``/metrics`` ASGI application: Prometheus exposition of the store's flows.

:func:`metrics_app` builds the handlers an options string asks for on a *private*
``CollectorRegistry`` (nothing goes to prometheus_client's global one), a
:class:`~podflow.metrics.follower.Follower` that feeds them, and an ASGI app serving the
registry with prometheus_client's ``make_asgi_app``.

When the follower starts:

* served on its own (``uvicorn.run(metrics_app(...))``), with the app's **lifespan**: startup
  does a first poll and starts the follower thread, shutdown stops it;
* mounted inside another app (Starlette/FastAPI do not pass lifespan events to mounted apps):
  call :meth:`MetricsApp.start` / :meth:`MetricsApp.stop` from the parent's lifespan;
  failing that, it starts **lazily on the first request** (the first poll runs before that
  request is answered, in a worker thread, so even the first scrape has data).

Only the polling thread touches the handlers; scrapes read the registry, which
prometheus_client locks.

Example::

    >>> import tempfile, pathlib
    >>> app = metrics_app(pathlib.Path(tempfile.mkdtemp()) / "flows.duckdb",
    ...                   "flow:destinationContext=workload")
    >>> [h.name for h in app.metrics.handlers]
    ['flow', 'podflow']
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, cast

from prometheus_client import make_asgi_app

from podflow.metrics.follower import Follower
from podflow.metrics.registry import MetricSet

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MetricsApp:
    """An ASGI app serving the metrics, owning the follower (see the module doc)."""

    def __init__(self, metrics: MetricSet, follower: Follower) -> None:
        self.metrics = metrics
        self.follower = follower
        self._inner = cast(ASGIApp, make_asgi_app(metrics.registry))
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        """First poll, then the polling thread; idempotent and thread-safe (blocking)."""
        with self._lock:
            if self._started:
                return
            try:
                self.follower.poll()
            finally:
                self.follower.start(initial_delay=self.follower.interval)
                self._started = True

    def stop(self) -> None:
        """Stop the polling thread (blocking); a later request or start() restarts it."""
        with self._lock:
            self.follower.stop()
            self._started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point: lifespan events, then HTTP requests (any path, any method)."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if not self._started:
            await asyncio.to_thread(self.start)
        await self._inner(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.start)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return


def metrics_app(store_path: Path, options: str | None = None, *, interval: float = 2.0,
                ttl: float = 300.0, backfill: float = 0.0,
                count_active_after: float = 10.0) -> MetricsApp:
    """The ``/metrics`` ASGI app for the store at ``store_path``.

    ``options``: Hubble-style handler list (:mod:`podflow.metrics.context`; None: every
    handler, no context labels); ValueError if malformed. ``interval``: seconds between
    store polls. ``ttl``: seconds an unused series lives (0: forever). ``backfill``: seconds
    of history to count at start (0: only what arrives later; ``math.inf``: everything).
    ``count_active_after``: seconds after which an open connection is counted without
    waiting for its end (see :mod:`podflow.metrics.follower`).
    """
    metrics = MetricSet(options, ttl=ttl)
    follower = Follower(store_path, metrics, interval=interval, backfill=backfill,
                        count_active_after=count_active_after)
    return MetricsApp(metrics, follower)
