"""The conntrack source as a registry plugin: netlink I/O + tracker + decode.

Glue only: :class:`~podflow.sources.conntrack.ConntrackSource` does the I/O,
:class:`~podflow.pipeline.cttrack.ConnectionTracker` decides when a connection is reported,
:func:`~podflow.pipeline.decode.conntrack_to_flow` turns an entry into a Flow.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

from podflow.model.conntrack import CtEntry
from podflow.model.flow import Flow
from podflow.model.losses import Losses
from podflow.pipeline.cttrack import ConnectionTracker
from podflow.pipeline.decode import DecodeContext, conntrack_to_flow
from podflow.sources.conntrack import ConntrackSource
from podflow.sources.registry import Report, Sink, SourceOptions


class ConntrackPlugin:
    """See the module docstring."""

    name = "conntrack"
    nat_aware = True

    def __init__(self, opts: SourceOptions) -> None:
        """Prepare the netlink source for ``opts.netns`` (nothing opened yet)."""
        self.source = ConntrackSource(opts.netns, resync_interval=opts.resync_interval)
        self.tracker = ConnectionTracker()

    @property
    def ready(self) -> bool:
        """True after the first table dump."""
        return bool(getattr(self.source, "ready", True))

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Netlink events and dumps until ``stop``."""
        self.source.run(sink, stop)

    def process(self, records: list[Any], kind: str, now: float) -> list[Report]:
        """Feed the tracker; a dump batch is a complete table (missed DESTROYs show)."""
        done = self.tracker.feed(records, kind)
        if kind == "dump":
            done += self.tracker.end_of_dump(now)
        return [Report(c.entry, c.final) for c in done]

    def flush(self, now: float) -> list[Report]:
        """Every open connection, non-final."""
        return [Report(c.entry, c.final) for c in self.tracker.flush(now)]

    def decode(self, record: Any, ctx: DecodeContext, final: bool) -> Flow | None:
        """One conntrack entry as a Flow."""
        assert isinstance(record, CtEntry)
        return conntrack_to_flow(record, ctx, final=final)

    def stats(self) -> dict[str, Any]:
        """Netlink and tracker counters, and malformed messages as ``lost_<reason>``."""
        src = self.source.stats
        out: dict[str, Any] = dict(asdict(src)) if hasattr(src, "__dataclass_fields__") \
            else dict(vars(src))
        out.update({f"tracker_{k}": v for k, v in asdict(self.tracker.stats).items()})
        losses = getattr(self.source, "losses", None)
        if isinstance(losses, Losses):
            out.update(losses.as_stats())
        return out


def create(opts: SourceOptions) -> ConntrackPlugin:
    """Registry factory."""
    return ConntrackPlugin(opts)
