"""``http`` and ``httpV2``: HTTP requests, responses and latency (Hubble's http metrics).

For connections with an L7 HTTP record (the first request/response of the connection, from a
packet source):

``http``:
  - ``hubble_http_requests_total{<context>, method, protocol, reporter}``: every request;
  - ``hubble_http_responses_total{<context>, method, protocol, status, reporter}``: every
    request that got a response;
  - ``hubble_http_request_duration_seconds{<context>, method, reporter}`` (histogram):
    request to first response byte (``l7.latency_ns``), when measured.
``httpV2``:
  - ``hubble_http_requests_total{<context>, method, protocol, status, reporter}`` and the
    same duration histogram, counted when the response was seen.

``reporter`` is ``client`` when the connection was observed on the client's node, else
``server`` on the server's node, else ``unknown`` (Hubble's client/server reporter). Hubble's
httpV2 swaps source and destination because it reads the response event; podflow's flows are
already oriented client to server, so ``source`` is the client in both. The two handlers
register the same metric names and cannot be enabled together.

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> from podflow.model.flow import Endpoint, Flow, HttpInfo, L7, Protocol
    >>> reg = CollectorRegistry()
    >>> h = HttpHandler(reg, {})
    >>> h.process(Flow(1.0, Endpoint("10.0.0.1"), Endpoint("10.0.0.2", 80), Protocol.TCP,
    ...     l7=L7(http=HttpInfo("GET", "/", code=200), latency_ns=2_000_000)), 0.0)
    >>> reg.get_sample_value("hubble_http_responses_total", {"method": "GET",
    ...     "protocol": "HTTP/1.1", "status": "200", "reporter": "unknown"})
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Handler
from podflow.metrics.context import traffic_direction
from podflow.model.flow import Flow

_REPORTER = {"egress": "client", "ingress": "server", "unknown": "unknown"}


def reporter(flow: Flow) -> str:
    """``client``, ``server`` or ``unknown`` (see the module doc)."""
    return _REPORTER[traffic_direction(flow)]


class HttpHandler(Handler):
    """Hubble's ``http`` handler: requests, responses and duration (see the module doc)."""

    name = "http"
    help = ("hubble_http_requests_total{method,protocol,reporter}, hubble_http_responses_total"
            "{method,protocol,status,reporter}, hubble_http_request_duration_seconds"
            "{method,reporter}: HTTP seen by a packet source.")

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the metrics."""
        super().__init__(registry, options, ttl)
        ctx = self.context.label_names()
        self.requests = self.counter("hubble_http_requests", "Count of HTTP requests",
                                     [*ctx, "method", "protocol", "reporter"])
        self.responses = self.counter("hubble_http_responses", "Count of HTTP responses",
                                      [*ctx, "method", "protocol", "status", "reporter"])
        self.duration = self.histogram("hubble_http_request_duration_seconds",
                                       "Quantiles of HTTP request duration in seconds",
                                       [*ctx, "method", "reporter"])

    def process(self, flow: Flow, now: float) -> None:
        """Count the request, and the response and its latency when seen."""
        http = flow.l7.http if flow.l7 is not None else None
        if http is None or flow.l7 is None:
            return
        ctx, rep, method = self.context.label_values(flow), reporter(flow), http.method or ""
        self.requests.inc([*ctx, method, http.protocol, rep], now)
        if http.code is None:
            return
        self.responses.inc([*ctx, method, http.protocol, str(http.code), rep], now)
        if flow.l7.latency_ns is not None:
            self.duration.observe([*ctx, method, rep], flow.l7.latency_ns / 1e9, now)


class HttpV2Handler(Handler):
    """Hubble's ``httpV2`` handler: requests with their status (see the module doc)."""

    name = "httpV2"
    help = ("hubble_http_requests_total{method,protocol,status,reporter} and "
            "hubble_http_request_duration_seconds{method,reporter}, counted at the response.")

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the metrics."""
        super().__init__(registry, options, ttl)
        ctx = self.context.label_names()
        self.requests = self.counter("hubble_http_requests", "Count of HTTP requests",
                                     [*ctx, "method", "protocol", "status", "reporter"])
        self.duration = self.histogram("hubble_http_request_duration_seconds",
                                       "Quantiles of HTTP request duration in seconds",
                                       [*ctx, "method", "reporter"])

    def process(self, flow: Flow, now: float) -> None:
        """Count the exchange once its response was seen."""
        http = flow.l7.http if flow.l7 is not None else None
        if http is None or flow.l7 is None or http.code is None:
            return
        ctx, rep, method = self.context.label_values(flow), reporter(flow), http.method or ""
        self.requests.inc([*ctx, method, http.protocol, str(http.code), rep], now)
        if flow.l7.latency_ns is not None:
            self.duration.observe([*ctx, method, rep], flow.l7.latency_ns / 1e9, now)
