"""The explicit registry of metrics handlers, and the set of handlers an options string picks.

Handlers are registered here by name, one module each, like Hubble's ``--metrics`` plugins;
importing this module registers nothing with Prometheus and starts nothing.
:class:`MetricSet` builds the chosen handlers on one private ``CollectorRegistry`` and fans
each counted connection out to them.

The health handler ``podflow`` is always enabled (lost events are first-class), with its
default options unless the string configures it.

Example::

    >>> sorted(HANDLERS)[:4]
    ['dns', 'drop', 'flow', 'http']
    >>> ms = MetricSet("flow:sourceContext=namespace drop")
    >>> [h.name for h in ms.handlers]
    ['flow', 'drop', 'podflow']
    >>> MetricSet("flows")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown metric 'flows' in 'flows'; known: flow, drop, tcp, ...

"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Handler
from podflow.metrics.context import parse_metrics
from podflow.metrics.dns import DnsHandler
from podflow.metrics.drop import DropHandler
from podflow.metrics.flow import FlowHandler
from podflow.metrics.http import HttpHandler, HttpV2Handler
from podflow.metrics.podflow_health import PodflowHealthHandler
from podflow.metrics.port_distribution import PortDistributionHandler
from podflow.metrics.tcp import TcpHandler
from podflow.model.flow import Flow

HANDLERS: dict[str, type[Handler]] = {
    "flow": FlowHandler,
    "drop": DropHandler,
    "tcp": TcpHandler,
    "port-distribution": PortDistributionHandler,
    "dns": DnsHandler,
    "http": HttpHandler,
    "httpV2": HttpV2Handler,
    "podflow": PodflowHealthHandler,
}
"""Every handler by the name used in the options string (help text: ``cls.help``)."""

DEFAULT_OPTIONS = "flow drop tcp port-distribution dns http podflow"
"""What runs when no options string is given: every handler, no context labels."""

_EXCLUSIVE = ({"http", "httpV2"},)


def _unknown_hint(exc: ValueError) -> ValueError:
    msg = str(exc)
    if "; known:" in msg:
        head, _, _ = msg.partition("; known:")
        msg = f"{head}; known: {', '.join(HANDLERS)}"
    return ValueError(msg)


def describe() -> str:
    """One line per handler, ``name: help``, for ``--help`` texts and docs."""
    return "\n".join(f"{name}: {cls.help}" for name, cls in HANDLERS.items())


class MetricSet:
    """The handlers chosen by an options string, on one private registry.

    ``options`` uses Hubble's syntax (see :mod:`podflow.metrics.context`); None means
    :data:`DEFAULT_OPTIONS`. ``ttl`` is how long an unused series lives (seconds; 0 keeps
    series forever). Raises ValueError on any malformed or unknown option.
    """

    def __init__(self, options: str | None = None, *, ttl: float = 300.0,
                 registry: CollectorRegistry | None = None) -> None:
        text = DEFAULT_OPTIONS if options is None or not options.strip() else options
        try:
            entries = parse_metrics(text, list(HANDLERS))
        except ValueError as exc:
            raise _unknown_hint(exc) from None
        names = {n for n, _ in entries}
        for group in _EXCLUSIVE:
            if group <= names:
                raise ValueError(f"metrics {' and '.join(sorted(group))} register the same "
                                 f"metric names: enable only one of them")
        if "podflow" not in names:
            entries.append(("podflow", {}))
        self.registry = registry if registry is not None else CollectorRegistry()
        self.ttl = ttl
        self.handlers: list[Handler] = [HANDLERS[n](self.registry, o, ttl) for n, o in entries]

    def process(self, flows: Iterable[Flow], now: float) -> int:
        """Feed counted connections to every handler; return how many."""
        n = 0
        for flow in flows:
            for h in self.handlers:
                h.process(flow, now)
            n += 1
        return n

    def update_statuses(self, statuses: Sequence[Mapping[str, Any]], now: float) -> None:
        """Give the agents' health reports to every handler."""
        for h in self.handlers:
            h.update_statuses(statuses, now)

    def expire(self, now: float) -> int:
        """Remove idle series in every handler; return how many were removed."""
        return sum(h.expire(now) for h in self.handlers)
