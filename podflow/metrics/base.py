"""What every metrics handler shares: option checking, context labels, expiring series, and
counting a connection as it grows.

A handler says what a connection (a merged :class:`~podflow.model.flow.Flow`) amounts to in
its metrics, as :class:`Tally` items (:meth:`Handler.tally`, pure), and may read the agents'
health reports. A connection is seen again as its views arrive (conntrack's end, then the
packets vantage's L7 record and flags, then the other node's view): :meth:`Handler.process`
keeps, in the connection's :data:`Account`, what was counted of each item, and adds only
what is new, so a counter gets exactly the delta and never a second count of the
connection. An item keeps the labels it was first counted with. Every labelled series
remembers when it was last touched; :meth:`Handler.expire` removes the ones idle for longer
than the handler's TTL, so the series of deleted pods disappear instead of piling up (a
series that comes back starts again from zero, which Prometheus treats as a counter reset).

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> reg = CollectorRegistry()
    >>> from prometheus_client import Counter
    >>> s = Series(Counter("demo", "a demo", ["pod"], registry=reg), "demo")
    >>> s.inc(["a"], now=0.0); s.inc(["b"], now=50.0)
    >>> s.expire(now=100.0, ttl=60.0)
    1
    >>> reg.get_sample_value("demo_total", {"pod": "b"})
    1.0
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from podflow.metrics.context import CONTEXT_KEYS, ContextOptions
from podflow.model.flow import Flow, Protocol

_L4 = {Protocol.ICMP: "ICMPv4", Protocol.OTHER: "Unknown"}


def l4_protocol(flow: Flow) -> str:
    """Hubble's name of the L4 protocol: ``TCP``, ``UDP``, ``ICMPv4``, ``ICMPv6``, ``SCTP``."""
    return _L4.get(flow.protocol, flow.protocol.value)


def flow_protocol(flow: Flow) -> str:
    """Hubble's ``protocol`` label: the L7 protocol when known (``DNS``, ``HTTP``), else L4."""
    if flow.l7 is not None and flow.l7.dns is not None:
        return "DNS"
    if flow.l7 is not None and flow.l7.http is not None:
        return "HTTP"
    return l4_protocol(flow)


def ip_family(flow: Flow) -> str:
    """``IPv4`` or ``IPv6`` (Hubble's ``family`` label)."""
    return "IPv6" if ":" in flow.source.ip else "IPv4"


class Series:
    """A labelled Counter or Histogram that remembers when each label set was last used."""

    def __init__(self, metric: Counter | Histogram, name: str) -> None:
        self.metric = metric
        self.name = name
        """The metric's name (without ``_total``)."""
        self.last_seen: dict[tuple[str, ...], float] = {}
        """Label values -> time of the last increment/observation."""

    def inc(self, values: Sequence[str], now: float, amount: float = 1.0,
            exemplar: str | None = None) -> None:
        """Add ``amount`` to a Counter series (with a ``traceID`` exemplar if given)."""
        key = tuple(values)
        child = self.metric.labels(*key)
        assert isinstance(child, Counter)
        child.inc(amount, {"traceID": exemplar} if exemplar else None)
        self.last_seen[key] = now

    def observe(self, values: Sequence[str], value: float, now: float,
                exemplar: str | None = None) -> None:
        """Record one observation in a Histogram series (exemplar as :meth:`inc`)."""
        key = tuple(values)
        child = self.metric.labels(*key)
        assert isinstance(child, Histogram)
        child.observe(value, {"traceID": exemplar} if exemplar else None)
        self.last_seen[key] = now

    def expire(self, now: float, ttl: float) -> int:
        """Remove the series unused for more than ``ttl`` seconds; return how many."""
        stale = [k for k, t in self.last_seen.items() if now - t > ttl]
        for key in stale:
            del self.last_seen[key]
            with contextlib.suppress(KeyError):
                self.metric.remove(*key)
        return len(stale)


@dataclass(frozen=True, slots=True)
class Tally:
    """One item a connection counts in one series (see the module doc)."""

    series: Series
    what: tuple[str, ...]
    """Which item of the connection, the same in every version of it (``("request",
    "client")``): its amount grows, it is never counted twice."""
    labels: tuple[str, ...]
    """The label values, used when the item is first counted."""
    amount: float = 1.0
    """A Counter item's amount so far (e.g. the echo requests of an ICMP exchange)."""
    value: float | None = None
    """A Histogram item's observation (made once)."""
    exemplar: str | None = None
    """The ``traceID`` exemplar to attach (handlers' ``exemplars=true``)."""


Account = dict[tuple[str, str, tuple[str, ...]], tuple[tuple[str, ...], float]]
"""What was counted of one connection: (handler, series, what) -> (labels, amount)."""


class Handler:
    """Base of every handler; subclasses set the class attributes and override hooks."""

    name: ClassVar[str]
    """The name used in the options string, e.g. ``flow``."""
    help: ClassVar[str]
    """What it counts and its labels (shown in docs and ``--help``)."""
    options_help: ClassVar[Mapping[str, str]] = {}
    """Handler-specific option keys (lower case) -> what they do."""
    uses_context: ClassVar[bool] = True
    """Whether the context options apply to this handler."""

    def __init__(self, registry: CollectorRegistry, options: Mapping[str, str],
                 ttl: float = 300.0) -> None:
        """Check ``options`` (ValueError naming the accepted keys) and set up the context."""
        allowed = set(self.options_help) | (CONTEXT_KEYS if self.uses_context else set())
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(f"metric {self.name!r} has no option {', '.join(unknown)}; "
                             f"accepted: {', '.join(sorted(allowed)) or 'none'}")
        self.registry = registry
        self.options = dict(options)
        self.ttl = ttl
        self.context = ContextOptions.parse(options)
        self.series: list[Series] = []

    def counter(self, name: str, doc: str, labels: Sequence[str]) -> Series:
        """Register a Counter named ``name`` (without ``_total``) and track its series."""
        s = Series(Counter(name, doc, list(labels), registry=self.registry), name)
        self.series.append(s)
        return s

    def histogram(self, name: str, doc: str, labels: Sequence[str]) -> Series:
        """Register a Histogram (default buckets) and track its series."""
        s = Series(Histogram(name, doc, list(labels), registry=self.registry), name)
        self.series.append(s)
        return s

    def tally(self, flow: Flow) -> Iterable[Tally]:
        """What the connection, as known now, amounts to in this handler's series."""
        return ()

    def process(self, flow: Flow, now: float, account: Account | None = None) -> None:
        """Count what ``flow`` adds to what ``account`` says was already counted of its
        connection (None: nothing was), and record it there."""
        done_by = {} if account is None else account
        for t in self.tally(flow):
            key = (self.name, t.series.name, t.what)
            done = done_by.get(key)
            if t.value is not None:
                if done is None:
                    t.series.observe(t.labels, t.value, now, t.exemplar)
                    done_by[key] = (t.labels, 1.0)
            elif done is None:
                if t.amount > 0:
                    t.series.inc(t.labels, now, t.amount, t.exemplar)
                    done_by[key] = (t.labels, t.amount)
            elif t.amount > done[1]:
                t.series.inc(done[0], now, t.amount - done[1], t.exemplar)
                done_by[key] = (done[0], t.amount)

    def update_statuses(self, statuses: Sequence[Mapping[str, Any]], now: float) -> None:
        """Receive the agents' latest health reports (``FlowStore.statuses()``)."""

    def expire(self, now: float) -> int:
        """Remove series idle for longer than the TTL (0 disables); return how many."""
        if self.ttl <= 0:
            return 0
        return sum(s.expire(now, self.ttl) for s in self.series)
