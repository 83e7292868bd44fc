"""``icmp``: ICMP messages by family and type (Hubble's icmp metric).

Metric: ``hubble_icmp_total{family, type, <context>}``, ``type`` named as Hubble names it
(gopacket's names: ``EchoRequest``, ``EchoReply``, ``DestinationUnreachable(Port)`` ...,
:mod:`podflow.model.icmp`). Hubble counts each ICMP packet it sees; podflow counts:

- for an ICMP echo exchange (a connection of protocol ICMP/ICMPv6), its echo requests and
  replies by the connection's packet counters (one request when no counters are known),
  growing as the counters are re-reported;
- for a connection that an ICMP error failed (the packets vantage names the message in its
  reason: port or host unreachable, time exceeded), that message once.

``family`` is ``IPv4`` or ``IPv6`` (Hubble's code labels ICMPv6 as IPv4; podflow says what
it is).

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> from podflow.model.flow import Counters, Endpoint, Flow, Protocol, Traffic
    >>> reg = CollectorRegistry()
    >>> h = IcmpHandler(reg, {})
    >>> h.process(Flow(1.0, Endpoint("10.0.0.1"), Endpoint("10.0.0.2"), Protocol.ICMP,
    ...                traffic=Traffic(Counters(3, 252), Counters(2, 168))), 0.0)
    >>> reg.get_sample_value("hubble_icmp_total", {"family": "IPv4", "type": "EchoReply"})
    2.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Handler, Tally, ip_family
from podflow.model.flow import Flow, Protocol
from podflow.model.icmp import ECHO, parse_tag, type_name


class IcmpHandler(Handler):
    """Counts ICMP echo messages and the ICMP errors that failed connections."""

    name = "icmp"
    help = ("hubble_icmp_total{family,type}: ICMP echo requests and replies of ICMP "
            "exchanges, and the ICMP errors that failed connections.")

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the metric."""
        super().__init__(registry, options, ttl)
        self.messages = self.counter("hubble_icmp", "ICMP messages by family and type",
                                     ["family", "type", *self.context.label_names()])

    def tally(self, flow: Flow) -> Iterator[Tally]:
        """The echo messages of an ICMP exchange, or the ICMP error of a failed one."""
        family, ctx = ip_family(flow), self.context.label_values(flow)
        if flow.protocol in (Protocol.ICMP, Protocol.ICMPV6):
            v6 = flow.protocol is Protocol.ICMPV6
            request, reply = ECHO[v6]
            t = flow.traffic
            for what, icmp_type, n in (("request", request, max(1, t.to_destination.packets)),
                                       ("reply", reply, t.to_source.packets)):
                yield Tally(self.messages, (what,),
                            (family, type_name(v6, icmp_type, 0), *ctx), amount=n)
        error = parse_tag(flow.drop_reason_desc)
        if error is not None:
            v6, icmp_type, code = error
            yield Tally(self.messages, ("error",),
                        ("IPv6" if v6 else "IPv4", type_name(v6, icmp_type, code), *ctx))
