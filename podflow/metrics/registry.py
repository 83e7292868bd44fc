"""The explicit registry of metrics handlers, and the set of handlers an options string picks.

Handlers are registered here by name, one module each, like Hubble's ``--metrics`` plugins,
in a :class:`~podflow.registry.Registry`; importing this module registers nothing with
Prometheus and starts nothing.
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
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from podflow.metrics.base import Account, Handler
from podflow.metrics.context import parse_metrics
from podflow.metrics.dns import DnsHandler
from podflow.metrics.drop import DropHandler
from podflow.metrics.flow import FlowHandler
from podflow.metrics.http import HttpHandler, HttpV2Handler
from podflow.metrics.icmp import IcmpHandler
from podflow.metrics.podflow_health import PodflowHealthHandler
from podflow.metrics.port_distribution import PortDistributionHandler
from podflow.metrics.tcp import TcpHandler
from podflow.model.flow import Flow
from podflow.registry import Plugin, Registry


@dataclass(frozen=True, slots=True)
class HandlerInfo(Plugin):
    """A registry entry; its target is a :class:`~podflow.metrics.base.Handler` class."""

    def create(self, registry: CollectorRegistry, options: Mapping[str, str],
               ttl: float) -> Handler:
        """Build the handler on ``registry`` with its ``options``."""
        cls: type[Handler] = self.load()
        return cls(registry, options, ttl)


HANDLERS: Registry[HandlerInfo] = Registry("metric", [
    HandlerInfo("flow", FlowHandler.help, "podflow.metrics.flow:FlowHandler"),
    HandlerInfo("drop", DropHandler.help, "podflow.metrics.drop:DropHandler"),
    HandlerInfo("tcp", TcpHandler.help, "podflow.metrics.tcp:TcpHandler"),
    HandlerInfo("icmp", IcmpHandler.help, "podflow.metrics.icmp:IcmpHandler"),
    HandlerInfo("port-distribution", PortDistributionHandler.help,
                "podflow.metrics.port_distribution:PortDistributionHandler"),
    HandlerInfo("dns", DnsHandler.help, "podflow.metrics.dns:DnsHandler"),
    HandlerInfo("http", HttpHandler.help, "podflow.metrics.http:HttpHandler"),
    HandlerInfo("httpV2", HttpV2Handler.help, "podflow.metrics.http:HttpV2Handler"),
    HandlerInfo("podflow", PodflowHealthHandler.help,
                "podflow.metrics.podflow_health:PodflowHealthHandler"),
])
"""Every handler by the name used in the options string (help text: the class's ``help``)."""

DEFAULT_OPTIONS = "flow drop tcp icmp port-distribution dns http podflow"
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
    return HANDLERS.describe()


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
        self.handlers: list[Handler] = [HANDLERS[n].create(self.registry, o, ttl)
                                        for n, o in entries]

    def process(self, flows: Iterable[Flow | tuple[Flow, Account]], now: float) -> int:
        """Feed connections to every handler; return how many. A ``(flow, account)`` pair
        is a connection seen again: only what ``account`` has not counted yet is added,
        and the account records it (a bare flow: counted whole)."""
        n = 0
        for item in flows:
            flow, account = item if isinstance(item, tuple) else (item, None)
            for h in self.handlers:
                h.process(flow, now, account)
            n += 1
        return n

    def update_statuses(self, statuses: Sequence[Mapping[str, Any]], now: float) -> None:
        """Give the agents' health reports to every handler."""
        for h in self.handlers:
            h.update_statuses(statuses, now)

    def expire(self, now: float) -> int:
        """Remove idle series in every handler; return how many were removed."""
        return sum(h.expire(now) for h in self.handlers)
