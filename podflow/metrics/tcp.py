"""``tcp``: TCP flags seen on forwarded connections (Hubble's tcp metric).

Metric: ``hubble_tcp_flags_total{flag, family, <context>}`` with ``flag`` one of ``SYN``,
``SYN-ACK``, ``FIN``, ``RST`` and ``family`` ``IPv4``/``IPv6``. Hubble counts packets; podflow
counts, for each forwarded TCP connection, each of those flags its sources reported in
``Flow.tcp.flags`` (a packet source reports them, ``SYN-ACK`` for a packet carrying both;
conntrack alone reports none, and nothing is inferred from the TCP state), when the view
that carries them arrives. Other flags (``ACK``, ``PSH`` ...) are ignored, as in Hubble.

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> from podflow.model.flow import Endpoint, Flow, Protocol, TcpInfo
    >>> reg = CollectorRegistry()
    >>> h = TcpHandler(reg, {})
    >>> h.process(Flow(1.0, Endpoint("10.0.0.1"), Endpoint("10.0.0.2", 80), Protocol.TCP,
    ...                tcp=TcpInfo("TIME_WAIT", ("SYN", "SYN-ACK", "ACK", "FIN"))), 0.0)
    >>> reg.get_sample_value("hubble_tcp_flags_total", {"flag": "FIN", "family": "IPv4"})
    1.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Handler, Tally, ip_family
from podflow.model.flow import Flow, Protocol, Verdict

FLAGS = ("SYN", "SYN-ACK", "FIN", "RST")
"""The flags counted, in the order they are counted."""


class TcpHandler(Handler):
    """Counts TCP flags of forwarded connections (see the module doc)."""

    name = "tcp"
    help = ("hubble_tcp_flags_total{flag,family}: SYN, SYN-ACK, FIN and RST seen on forwarded "
            "TCP connections (needs a source that reports flags, e.g. packets).")

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the metric."""
        super().__init__(registry, options, ttl)
        self.flags = self.counter("hubble_tcp_flags", "TCP flag occurrences",
                                  ["flag", "family", *self.context.label_names()])

    def tally(self, flow: Flow) -> Iterator[Tally]:
        """The connection's reported flags, once each."""
        if (flow.protocol is not Protocol.TCP or flow.verdict is not Verdict.FORWARDED
                or flow.tcp is None or not flow.tcp.flags):
            return
        seen = {f.upper() for f in flow.tcp.flags}
        ctx = self.context.label_values(flow)
        for flag in FLAGS:
            if flag in seen:
                yield Tally(self.flags, (flag,), (flag, ip_family(flow), *ctx))
