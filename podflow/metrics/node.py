"""One agent's own /metrics: Hubble's per-node metrics server (``:9965``).

In a Hubble setup every node's agent serves the metrics of what that node observed, and
Prometheus labels each series with the agent's pod and node (a ServiceMonitor or scrape
annotations); the stock dashboards group ``by (pod)``. :class:`NodeMetrics` is that server
for ``podflow agent --metrics-listen``: the flows the agent emits (one view per vantage
point: conntrack, packets, sockets) are merged per connection with the store's rules
(:meth:`~podflow.metrics.follower.Ledger.offer_view`) and counted as they grow, with the same
handlers and options as ``podflow serve --metrics``; so a connection between two nodes is
counted by each node's agent at its own observation point (``reporter="client"`` on one,
``"server"`` on the other), as Hubble's agents count it. The health metrics describe this
agent only. ``podflow serve`` keeps the cluster's view over the store.

It serves with prometheus_client's own HTTP server (a thread), so the agent's loop never
waits for a scrape.

Example::

    >>> from podflow.model.flow import Endpoint, Flow, ObservationPoint, Protocol
    >>> nm = NodeMetrics("node1", "flow")
    >>> seen = (ObservationPoint("node1", "conntrack"),)
    >>> nm.observe([Flow(1.0, Endpoint("10.0.0.1", node_name="node1"),
    ...                  Endpoint("10.0.0.2", 80), Protocol.TCP, flow_id="a",
    ...                  observations=seen)], now=2.0)
    >>> nm.registry.get_sample_value("hubble_flows_processed_total", {"protocol": "TCP",
    ...     "type": "Trace", "subtype": "from-endpoint", "verdict": "FORWARDED"})
    1.0
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from podflow.metrics.follower import Ledger
from podflow.metrics.registry import MetricSet
from podflow.model.flow import Flow

REMEMBER = 180.0
"""Seconds a connection's views are kept after its last one (its last views come within a
TCP TIME_WAIT or a UDP entry's life; a store keeps them longer)."""
TIDY_EVERY = 10.0
"""Seconds between passes over every connection and series (forgetting, expiring): the
agent's loop calls :meth:`NodeMetrics.observe` several times a second."""


class NodeMetrics:
    """The metrics of one agent's own flows (see the module doc); thread-safe."""

    def __init__(self, node: str, options: str | None = None, *, ttl: float = 300.0,
                 count_active_after: float = 10.0) -> None:
        """``options``: Hubble's ``--metrics`` syntax (None: the defaults); ValueError if
        malformed."""
        self.node = node
        self.metrics = MetricSet(options, ttl=ttl)
        self.registry = self.metrics.registry
        self.ledger = Ledger(count_active_after=count_active_after, remember=REMEMBER)
        self._lock = threading.Lock()
        self._next_tidy = 0.0
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.address: str | None = None
        """``HOST:PORT`` served, once :meth:`serve` bound it."""

    def observe(self, flows: Iterable[Flow], now: float) -> None:
        """Count what the agent's new views add (and what became due meanwhile)."""
        with self._lock:
            got = [c for f in flows if (c := self.ledger.offer_view(f, now)) is not None]
            got += self.ledger.due(now)
            self.metrics.process(got, now)
            if now >= self._next_tidy:
                self.metrics.expire(now)
                self.ledger.prune(now)
                self._next_tidy = now + TIDY_EVERY

    def report(self, status: Mapping[str, Any], now: float) -> None:
        """The agent's latest health report (lost events, sources up, watches)."""
        with self._lock:
            self.metrics.update_statuses([{"node": self.node, "time": now,
                                           "status": dict(status)}], now)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on ``host:port`` in a thread; return the port bound (``port`` 0:
        a free one). OSError when the address cannot be bound."""
        self._server, self._thread = start_http_server(port, host, self.registry)
        bound = int(self._server.server_port)
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        return bound

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
