"""``flow``: every connection, by protocol, type and verdict (Hubble's flows processed).

Metric: ``hubble_flows_processed_total{protocol, type, subtype, verdict, <context>}``.

Hubble counts one event per packet and observation point; podflow counts, for each
connection, the events Hubble's observation points would report once each:

- ``Trace``, once per observation point (:func:`~podflow.metrics.context.directions`), with
  Hubble's observation point as ``subtype``: ``from-endpoint`` on the client's node (a pod
  client; ``from-host`` for a host client), ``to-endpoint`` on the server's node (a pod
  server; ``to-stack`` for a host), ``to-network`` when neither end's node observed it; a
  dropped connection is one ``Drop`` event (``subtype`` ``""``) instead;
- ``L7`` / ``DNS`` or ``HTTP`` once more when the connection carries an L7 record (the
  proxy's access log in Hubble), counted when that record arrives.

``protocol`` is the L4 protocol for Trace and Drop (``TCP``, ``UDP``, ``ICMPv4`` ...) and the
L7 one for L7; ``verdict`` is ``FORWARDED``, ``DROPPED``, ``ERROR`` or ``UNKNOWN``.

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> from podflow.model.flow import Endpoint, Flow, Protocol
    >>> reg = CollectorRegistry()
    >>> h = FlowHandler(reg, {"sourcecontext": "ip"})
    >>> h.process(Flow(1.0, Endpoint("10.0.0.1"), Endpoint("10.0.0.2", 80), Protocol.TCP), 0.0)
    >>> reg.get_sample_value("hubble_flows_processed_total", {"protocol": "TCP",
    ...     "type": "Trace", "subtype": "to-network", "verdict": "FORWARDED",
    ...     "source": "10.0.0.1"})
    1.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Handler, Tally, flow_protocol, l4_protocol
from podflow.metrics.context import directions
from podflow.model.flow import EndpointKind, Flow, Verdict

_FROM = {"egress": "from-endpoint", "ingress": "to-endpoint", "unknown": "to-network"}
_FROM_HOST = {"egress": "from-host", "ingress": "to-stack", "unknown": "to-network"}


def trace_point(flow: Flow, direction: str) -> str:
    """Hubble's observation point (the Trace ``subtype``) of ``direction``."""
    end = flow.source if direction == "egress" else flow.destination
    on_host = end.kind in (EndpointKind.NODE, EndpointKind.HOST_NETWORK_POD)
    return (_FROM_HOST if on_host else _FROM)[direction]


class FlowHandler(Handler):
    """Counts every connection's events (see the module doc)."""

    name = "flow"
    help = ("hubble_flows_processed_total{protocol,type,subtype,verdict}: each connection's "
            "Trace event per observation point (or its Drop), and its L7 event.")

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the metric."""
        super().__init__(registry, options, ttl)
        self.flows = self.counter(
            "hubble_flows_processed", "Total number of flows processed",
            ["protocol", "type", "subtype", "verdict", *self.context.label_names()])

    def tally(self, flow: Flow) -> Iterator[Tally]:
        """One Trace per observation point (or one Drop), one L7 when known."""
        verdict = flow.verdict.value
        if flow.verdict is Verdict.DROPPED:
            yield Tally(self.flows, ("drop",), (l4_protocol(flow), "Drop", "", verdict,
                                                *self.context.label_values(flow)))
        else:
            for d in directions(flow):
                yield Tally(self.flows, ("trace", d),
                            (l4_protocol(flow), "Trace", trace_point(flow, d), verdict,
                             *self.context.label_values(flow, d)))
        proto = flow_protocol(flow)
        if proto in ("DNS", "HTTP"):
            yield Tally(self.flows, ("l7",), (proto, "L7", proto, verdict,
                                              *self.context.label_values(flow)))
