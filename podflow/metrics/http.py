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

``reporter`` is the observation point, as Hubble's is: ``client`` for the client's node,
``server`` for the server's node, ``unknown`` when neither end's node observed the
connection; a connection seen at both ends (or between two pods of one node) counts once
under each reporter, as Hubble's two proxies would report it. The counts are made when the
L7 record arrives (the packets vantage reports it after conntrack's end of the connection)
and for each reporter when its node's view arrives. Hubble's httpV2 swaps source and
destination because it reads the response event; podflow's flows are already oriented
client to server, so ``source`` is the client in both. The two handlers register the same
metric names and cannot be enabled together.

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

With ``exemplars=true`` every count carries the flow's id as the exemplar ``traceID`` (a
span id when one is known; podflow has none: the connection's ``flow_id`` names it for
``podflow observe``); exemplars show in the OpenMetrics exposition only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Handler, Tally
from podflow.metrics.context import directions
from podflow.model.flow import Flow, HttpInfo

_REPORTER = {"egress": "client", "ingress": "server", "unknown": "unknown"}


_OPTIONS = {"exemplars": "true: attach the flow id to each count as exemplar traceID "
                         "(OpenMetrics exposition)"}


def _exemplars(options: Mapping[str, str]) -> bool:
    value = options.get("exemplars", "false").lower()
    if value not in ("true", "false"):
        raise ValueError(f"option exemplars={options['exemplars']!r}: expected true or false")
    return value == "true"


class _HttpBase(Handler):
    options_help = _OPTIONS

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        super().__init__(registry, options, ttl)
        self.exemplars = _exemplars(self.options)
        self.duration = self.histogram("hubble_http_request_duration_seconds",
                                       "Quantiles of HTTP request duration in seconds",
                                       [*self.context.label_names(), "method", "reporter"])

    def _exchanges(self, flow: Flow) -> Iterator[tuple[HttpInfo, str, list[str], str]]:
        """``(http, direction, context labels, reporter)`` per observation point."""
        http = flow.l7.http if flow.l7 is not None else None
        if http is None:
            return
        for d in directions(flow):
            yield http, d, self.context.label_values(flow, d), _REPORTER[d]

    def _duration(self, flow: Flow, d: str, ctx: list[str], method: str,
                  rep: str) -> Iterator[Tally]:
        if flow.l7 is not None and flow.l7.latency_ns is not None:
            yield Tally(self.duration, ("duration", d), (*ctx, method, rep),
                        value=flow.l7.latency_ns / 1e9, exemplar=self._exemplar(flow))

    def _exemplar(self, flow: Flow) -> str | None:
        return flow.flow_id or None if self.exemplars else None


class HttpHandler(_HttpBase):
    """Hubble's ``http`` handler: requests, responses and duration (see the module doc)."""

    name = "http"
    help = ("hubble_http_requests_total{method,protocol,reporter}, hubble_http_responses_total"
            "{method,protocol,status,reporter}, hubble_http_request_duration_seconds"
            "{method,reporter}: HTTP seen by a packet source, per observation point.")

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the metrics."""
        super().__init__(registry, options, ttl)
        ctx = self.context.label_names()
        self.requests = self.counter("hubble_http_requests", "Count of HTTP requests",
                                     [*ctx, "method", "protocol", "reporter"])
        self.responses = self.counter("hubble_http_responses", "Count of HTTP responses",
                                      [*ctx, "method", "protocol", "status", "reporter"])

    def tally(self, flow: Flow) -> Iterator[Tally]:
        """The request, and the response and its latency when seen, per reporter."""
        for http, d, ctx, rep in self._exchanges(flow):
            method, ex = http.method or "", self._exemplar(flow)
            yield Tally(self.requests, ("request", d), (*ctx, method, http.protocol, rep),
                        exemplar=ex)
            if http.code is None:
                continue
            yield Tally(self.responses, ("response", d),
                        (*ctx, method, http.protocol, str(http.code), rep), exemplar=ex)
            yield from self._duration(flow, d, ctx, method, rep)


class HttpV2Handler(_HttpBase):
    """Hubble's ``httpV2`` handler: requests with their status (see the module doc)."""

    name = "httpV2"
    help = ("hubble_http_requests_total{method,protocol,status,reporter} and "
            "hubble_http_request_duration_seconds{method,reporter}, counted at the response, "
            "per observation point.")

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the metrics."""
        super().__init__(registry, options, ttl)
        self.requests = self.counter("hubble_http_requests", "Count of HTTP requests",
                                     [*self.context.label_names(), "method", "protocol",
                                      "status", "reporter"])

    def tally(self, flow: Flow) -> Iterator[Tally]:
        """The exchange once its response was seen, per reporter."""
        for http, d, ctx, rep in self._exchanges(flow):
            if http.code is None:
                continue
            method = http.method or ""
            yield Tally(self.requests, ("request", d),
                        (*ctx, method, http.protocol, str(http.code), rep),
                        exemplar=self._exemplar(flow))
            yield from self._duration(flow, d, ctx, method, rep)
