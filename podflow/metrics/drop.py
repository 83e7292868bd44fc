"""``drop``: dropped connections by reason and protocol (Hubble's drop metric).

Metric: ``hubble_drop_total{<context>, reason, protocol}``, one per connection whose verdict
is ``DROPPED``. ``reason`` is the flow's ``drop_reason_desc`` (``""`` when unknown);
``protocol`` is the L7 protocol when known, else the L4 one. Connections that failed
(verdict ``ERROR``, e.g. refused) are not drops: ``hubble_flows_processed_total`` shows them.

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> from podflow.model.flow import Endpoint, Flow, Protocol, Verdict
    >>> reg = CollectorRegistry()
    >>> h = DropHandler(reg, {})
    >>> h.process(Flow(1.0, Endpoint("10.0.0.1"), Endpoint("10.0.0.2", 80), Protocol.TCP,
    ...                verdict=Verdict.DROPPED, drop_reason_desc="POLICY_DENIED"), 0.0)
    >>> reg.get_sample_value("hubble_drop_total", {"reason": "POLICY_DENIED",
    ...                                             "protocol": "TCP"})
    1.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Handler, Tally, flow_protocol
from podflow.model.flow import Flow, Verdict


class DropHandler(Handler):
    """Counts dropped connections (see the module doc)."""

    name = "drop"
    help = "hubble_drop_total{reason,protocol}: dropped connections by reason and protocol."

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Register the metric."""
        super().__init__(registry, options, ttl)
        self.drops = self.counter("hubble_drop", "Number of drops",
                                  [*self.context.label_names(), "reason", "protocol"])

    def tally(self, flow: Flow) -> Iterator[Tally]:
        """The connection, if it was dropped."""
        if flow.verdict is Verdict.DROPPED:
            yield Tally(self.drops, (), (*self.context.label_values(flow),
                                         flow.drop_reason_desc or "", flow_protocol(flow)))
