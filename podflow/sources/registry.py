"""The explicit registry of sources (vantage points) an agent can run.

A source is a plugin in three parts, so the I/O stays at the edge and the rest is pure:

* ``run(sink, stop)``: the I/O loop, in its own thread; hands raw records to ``sink`` in
  batches (``sink(records, kind) -> bool``; False means the batch was dropped and counted);
* ``process(records, kind, now)`` and ``flush(now)``: stateful but pure, on the agent's loop;
  turn raw records into :class:`~podflow.pipeline.context.Report` s (a connection
  finished, or a snapshot of one that is still open);
* ``decode(record, ctx, final)``: pure; one reported record to a Flow (or None to skip), with
  NAT undone and both ends named from the inventory at the connection's start.

``SOURCES`` is a :class:`~podflow.registry.Registry` (the one registry style of podflow):
modules are imported only when a source is chosen (no import side effects).

Example::

    >>> sorted(SOURCES)
    ['conntrack', 'packets', 'sockets']
    >>> SOURCES["conntrack"].help.split(":")[0]
    'Kernel connection tracking over netlink'
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from podflow.registry import Plugin, Registry

if TYPE_CHECKING:
    from podflow.model.flow import Flow
    from podflow.pipeline.context import DecodeContext, Report

Sink = Callable[[list[Any], str], bool]
"""Where a source's I/O loop hands a batch of raw records, with the batch's kind."""


@dataclass(frozen=True)
class SourceOptions:
    """What every source gets from the agent's configuration."""

    node_name: str
    """The node the agent speaks for."""
    netns: str | None = None
    """The node's network namespace (None: the agent's own)."""
    resync_interval: float = 2.0
    """Seconds between full resyncs (conntrack dumps)."""
    poll_interval: float = 1.0
    """Seconds between polls, for polling sources (sockets)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Source-specific options, e.g. ``{"interfaces": ["cni0"]}`` for packets."""


class SourcePlugin(Protocol):
    """One running source in one agent (see the module docstring)."""

    name: str
    nat_aware: bool
    """True for a source that sees both sides of the node's NAT (conntrack): the agent writes
    the other sources' views after it, so they merge into its record on write."""
    synced_at: float
    """NAT-aware sources: when the newest complete pass they processed began (a conntrack
    table dump's request time): every connection that ended before it has been reported.
    Others: 0."""
    reported_through: float
    """NAT-aware sources: every connection they saw begin before this time has been
    reported at least once (at most ``synced_at``): the agent releases the views it holds
    once this passes them, and tells readers it has reported through it. Others: 0."""

    @property
    def ready(self) -> bool:
        """True once the source is subscribed / has completed its first pass."""
        ...

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """The blocking I/O loop; returns soon after ``stop`` is set."""
        ...

    def process(self, records: list[Any], kind: str, now: float) -> list[Report]:
        """Feed a batch from ``run``; return what is ready to be reported."""
        ...

    def flush(self, now: float) -> list[Report]:
        """Agent stop: report every still-open connection (non-final)."""
        ...

    def decode(self, record: Any, ctx: DecodeContext, final: bool) -> Flow | None:
        """One reported record as a Flow (None: infrastructure, not stored)."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters for health reports (events, lost, overruns, ...)."""
        ...


@dataclass(frozen=True, slots=True)
class SourceInfo(Plugin):
    """A registry entry; its target is a ``create(SourceOptions) -> SourcePlugin`` factory."""

    def create(self, opts: SourceOptions) -> SourcePlugin:
        """Import the module and build the plugin."""
        made: SourcePlugin = self.load()(opts)
        return made


SOURCES: Registry[SourceInfo] = Registry("source", [
    SourceInfo(
        "conntrack",
        "Kernel connection tracking over netlink: events plus periodic dumps in the node's "
        "namespace. Sees both tuples of every NATed connection (service DNAT, masquerade), "
        "counters and timestamps, short-lived connections. Misses eBPF datapaths, macvlan "
        "and anything that bypasses netfilter.",
        "podflow.sources.conntrack:create"),
    SourceInfo(
        "sockets",
        "TCP/UDP sockets in every pod namespace and the host over NETLINK_SOCK_DIAG: the "
        "connection as each application sees it, RTT, retransmits, owning process. Works "
        "with any CNI; misses connections shorter than the poll interval.",
        "podflow.sources.sockets:create"),
    SourceInfo(
        "packets",
        "AF_PACKET capture with a kernel BPF filter on host interfaces (or inside pod "
        "namespaces): DNS and HTTP at L7, TCP flags, refused/unreachable/timed-out "
        "connections, VXLAN inner headers. HTTP paths are stored without their query "
        "string (which often holds tokens) unless --source-option http_query=true.",
        "podflow.sources.packets:create"),
])
"""Every source, by name (plugins are registered here explicitly)."""


def parse_sources(text: str) -> list[str]:
    """``"conntrack,sockets"`` -> names, validated; ValueError naming the known ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SOURCES]
    if unknown or not names:
        raise ValueError(f"unknown source(s) {', '.join(unknown) or '(none given)'}; "
                         f"known: {', '.join(sorted(SOURCES))}")
    return list(dict.fromkeys(names))
