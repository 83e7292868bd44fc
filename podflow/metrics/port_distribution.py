"""``port-distribution``: forwarded connections by destination port (Hubble's metric).

Metric: ``hubble_port_distribution_total{protocol, port, <context>}``. ``port`` is the
destination port after NAT was undone (the backend's port, not the service port); ICMP
connections count under port ``0`` as in Hubble. Only ``FORWARDED`` connections count.

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> from podflow.model.flow import Endpoint, Flow, Protocol
    >>> reg = CollectorRegistry()
    >>> h = PortDistributionHandler(reg, {})
    >>> h.process(Flow(1.0, Endpoint("10.0.0.1"), Endpoint("10.0.0.2", 53), Protocol.UDP), 0)
    >>> reg.get_sample_value("hubble_port_distribution_total", {"protocol": "UDP",
    ...                                                         "port": "53"})
    1.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Handler, Tally, l4_protocol
from podflow.model.flow import Flow, Protocol, Verdict

_PORTED = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)


class PortDistributionHandler(Handler):
    """Counts forwarded connections by destination port (see the module doc)."""

    name = "port-distribution"
    help = ("hubble_port_distribution_total{protocol,port}: forwarded connections by L4 "
            "protocol and destination port (after NAT was undone).")

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the metric."""
        super().__init__(registry, options, ttl)
        self.ports = self.counter("hubble_port_distribution",
                                  "Numbers of packets distributed by destination port",
                                  ["protocol", "port", *self.context.label_names()])

    def tally(self, flow: Flow) -> Iterator[Tally]:
        """The connection under its destination port."""
        if flow.verdict is not Verdict.FORWARDED or flow.is_reply:
            return
        if flow.protocol in _PORTED and flow.destination.port is not None:
            port = str(flow.destination.port)
        elif flow.protocol in (Protocol.ICMP, Protocol.ICMPV6):
            port = "0"
        else:
            return
        yield Tally(self.ports, (), (l4_protocol(flow), port,
                                     *self.context.label_values(flow)))
