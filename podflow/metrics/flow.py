"""``flow``: every connection, by protocol, type and verdict (Hubble's flows processed).

Metric: ``hubble_flows_processed_total{protocol, type, subtype, verdict, <context>}``.

podflow counts one event per connection, where Hubble counts one per packet event, so the
``type``/``subtype`` pair is mapped as follows:

- a connection with an L7 record: ``L7`` / ``DNS`` or ``HTTP``;
- a dropped connection: ``Drop`` / ``""``;
- any other: ``Trace`` / the vantage point that saw it first (``conntrack``, ``sockets``,
  ``packets`` ...), where Hubble names its datapath observation point.

``protocol`` is the L7 protocol when known, else the L4 one (``TCP``, ``UDP``, ``ICMPv4`` ...);
``verdict`` is ``FORWARDED``, ``DROPPED``, ``ERROR`` or ``UNKNOWN``.

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> from podflow.model.flow import Endpoint, Flow, Protocol
    >>> reg = CollectorRegistry()
    >>> h = FlowHandler(reg, {"sourcecontext": "ip"})
    >>> h.process(Flow(1.0, Endpoint("10.0.0.1"), Endpoint("10.0.0.2", 80), Protocol.TCP), 0.0)
    >>> reg.get_sample_value("hubble_flows_processed_total", {"protocol": "TCP",
    ...     "type": "Trace", "subtype": "", "verdict": "FORWARDED", "source": "10.0.0.1"})
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Handler, flow_protocol
from podflow.model.flow import Flow, Verdict


def flow_type(flow: Flow) -> tuple[str, str]:
    """The ``(type, subtype)`` labels of a connection (see the module doc)."""
    if flow.l7 is not None and (flow.l7.dns is not None or flow.l7.http is not None):
        return "L7", "DNS" if flow.l7.dns is not None else "HTTP"
    if flow.verdict is Verdict.DROPPED:
        return "Drop", ""
    return "Trace", flow.observations[0].source if flow.observations else ""


class FlowHandler(Handler):
    """Counts every connection (see the module doc)."""

    name = "flow"
    help = ("hubble_flows_processed_total{protocol,type,subtype,verdict}: every connection, "
            "by L7-or-L4 protocol, type (L7/Drop/Trace), subtype and verdict.")

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the metric."""
        super().__init__(registry, options, ttl)
        self.flows = self.counter(
            "hubble_flows_processed", "Total number of flows processed",
            ["protocol", "type", "subtype", "verdict", *self.context.label_names()])

    def process(self, flow: Flow, now: float) -> None:
        """Count the connection once."""
        typ, sub = flow_type(flow)
        self.flows.inc([flow_protocol(flow), typ, sub, flow.verdict.value,
                        *self.context.label_values(flow)], now)
