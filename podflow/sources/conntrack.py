"""The conntrack source: ctnetlink events plus periodic table dumps, in any network namespace.

I/O only; decoding is :mod:`podflow.sources.ctnetlink` (pure), deciding when a connection
is over is :mod:`podflow.pipeline.cttrack` (pure) and an entry becomes a Flow in
:mod:`podflow.pipeline.ctdecode` (pure); :class:`ConntrackPlugin` is the registry plugin
that glues the three. ``run`` blocks (the runner gives it a
thread) and hands batches to a sink as ``sink(entries, "event")`` or ``sink(entries, "dump")``;
a ``"dump"`` batch is always one complete table dump.

Loss is detected, not hidden: ``NETLINK_NO_ENOBUFS`` stays off so that a full socket buffer
makes ``recv`` fail with ``ENOBUFS``; that is counted as an overrun and answered by an immediate
resync dump, from which the tracker recovers the connections whose events were lost.

Ordering: after each dump the events queued meanwhile are drained and delivered *before* the
dump, so a DESTROY that raced the dump reaches the tracker before the dump says the entry is
gone. Dump entries carry the time the dump was requested as ``received_at``.

Example::

    >>> src = ConntrackSource("pf-lab-node1", resync_interval=5.0)  # doctest: +SKIP
    >>> threading.Thread(target=src.run, args=(print_sink, stop)).start()  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from podflow.model.conntrack import CtEntry
from podflow.model.flow import Flow
from podflow.model.losses import Losses
from podflow.pipeline.context import DecodeContext, Report
from podflow.pipeline.ctdecode import conntrack_to_flow
from podflow.pipeline.cttrack import ConnectionTracker
from podflow.sources import ctnetlink, registry
from podflow.sources.netns import open_socket, write_sysctl_in_netns

log = logging.getLogger(__name__)

Sink = Callable[[list[CtEntry], str], object]
SOL_NETLINK, NETLINK_NO_ENOBUFS = 270, 5
SO_RCVBUFFORCE = 33
SYSCTLS = (("net.netfilter.nf_conntrack_acct", "1"),
           ("net.netfilter.nf_conntrack_timestamp", "1"),
           ("net.netfilter.nf_conntrack_events", "1"))
"""Set in the namespace on start: counters, timestamps, and events for every entry."""
_RECV = 1 << 20
_BATCH = 8192


@dataclass
class ConntrackStats:
    """Counters of one source; read them from any thread (plain ints, no locking needed)."""

    events: int = 0
    """Event entries delivered (NEW + UPDATE + DESTROY)."""
    dumps: int = 0
    """Complete dumps delivered."""
    dumped_entries: int = 0
    """Entries delivered by dumps."""
    overruns: int = 0
    """``ENOBUFS`` / ``NLMSG_OVERRUN`` on the event socket: events were lost."""
    parse_errors: int = 0
    """Malformed messages skipped by the decoder (by reason: ``ConntrackSource.losses``)."""
    netlink_errors: int = 0
    """``NLMSG_ERROR`` replies and failed dumps."""
    sysctl_warnings: list[str] = field(default_factory=list)
    """Why a sysctl could not be set (then counters/timestamps/DESTROYs may be missing)."""


class ConntrackSource:
    """Conntrack events and resync dumps from the netns ``netns`` (``None``: the agent's own)."""

    def __init__(self, netns: str | None = None, *, resync_interval: float = 5.0,
                 rcvbuf: int = 32 << 20, set_sysctls: bool = True) -> None:
        self.netns = netns
        self.resync_interval = resync_interval
        self.rcvbuf = rcvbuf
        self.set_sysctls = set_sysctls
        self.stats = ConntrackStats()
        self.losses = Losses()
        """Malformed messages by the decoder's reason (the plugin reports ``lost_<reason>``)."""
        self.ready = False
        self.last_dump_requested = 0.0
        """When the newest dump was requested (Unix s)."""
        self.empty_dumps: deque[float] = deque(maxlen=64)
        """Request times of the empty dumps handed over and not yet processed, in order."""
        """True once sysctls are set, the event socket is bound and the first dump delivered."""
        self._seq = int(time.time()) & 0xFFFF

    def apply_sysctls(self) -> None:
        """Turn on acct, timestamps and events in the namespace; warn (never raise) if not."""
        for key, value in SYSCTLS:
            try:
                write_sysctl_in_netns(self.netns, key, value)
            except OSError as exc:
                msg = f"cannot set {key}={value} in netns {self.netns or '(own)'}: {exc}"
                self.stats.sysctl_warnings.append(msg)
                log.warning("%s; conntrack data will be incomplete", msg)

    def _socket(self, rcvbuf: int) -> socket.socket:
        sock = open_socket(self.netns, socket.AF_NETLINK, socket.SOCK_RAW,
                           ctnetlink.NETLINK_NETFILTER)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:  # not privileged: the plain option, capped by rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        return sock

    def _count_malformed(self, res: ctnetlink.ParseResult) -> None:
        """Add what the decoder skipped in one buffer to the counters."""
        if res.malformed:
            self.stats.parse_errors += res.malformed
            for reason, n in res.reasons.items():
                self.losses.count(reason, n)

    def dump(self) -> list[CtEntry]:
        """One complete dump of the conntrack table (IPv4 and IPv6) on a fresh socket."""
        sock = self._socket(max(self.rcvbuf, _RECV))  # dumps are flow-controlled: no loss
        try:
            sock.bind((0, 0))
            sock.settimeout(10.0)
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            started = time.time()
            self.last_dump_requested = started
            sock.send(ctnetlink.dump_request(self._seq))
            out: list[CtEntry] = []
            while True:
                res = ctnetlink.parse(sock.recv(_RECV), started, dump=True)
                out += res.entries
                self._count_malformed(res)
                if res.errors:
                    self.stats.netlink_errors += len(res.errors)
                    code = res.errors[0]
                    raise OSError(code, f"conntrack dump: {errno.errorcode.get(code, '?')}")
                if res.done:
                    return out
        finally:
            sock.close()

    def _drain(self, sock: socket.socket, sink: Sink) -> bool:
        """Read every queued event and deliver them; True when an overrun was detected."""
        batch: list[CtEntry] = []
        overrun = False
        while True:
            try:
                buf = sock.recv(_RECV, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.stats.overruns += 1
                overrun = True
                continue
            res = ctnetlink.parse(buf, time.time())
            batch += res.entries
            self._count_malformed(res)
            self.stats.netlink_errors += len(res.errors)
            if res.overrun:
                self.stats.overruns += 1
                overrun = True
            if len(batch) >= _BATCH:
                self.stats.events += len(batch)
                sink(batch, "event")
                batch = []
        if batch:
            self.stats.events += len(batch)
            sink(batch, "event")
        return overrun

    def _resync(self, sock: socket.socket, sink: Sink) -> bool:
        try:
            entries = self.dump()
        except OSError as exc:
            self.stats.netlink_errors += 1
            log.warning("conntrack dump in netns %s failed: %s", self.netns or "(own)", exc)
            return False
        overrun = self._drain(sock, sink)  # events that raced the dump go first
        self.stats.dumps += 1
        self.stats.dumped_entries += len(entries)
        if not entries:   # no entry carries its request time: say it beside the batch
            self.empty_dumps.append(self.last_dump_requested)
        sink(entries, "dump")
        return overrun

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Deliver events and dumps to ``sink`` until ``stop`` is set (honoured within ~0.2 s).

        Starts with a dump (the table as it is), then events as they come, a resync dump
        every ``resync_interval`` seconds and at once after an overrun.
        """
        if self.set_sysctls:
            self.apply_sysctls()
        sock = self._socket(self.rcvbuf)
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 0)
            sock.bind((0, ctnetlink.event_groups_mask()))
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            need_dump = True
            next_dump = 0.0
            while not stop.is_set():
                now = time.monotonic()
                if need_dump or now >= next_dump:
                    need_dump = self._resync(sock, sink)
                    next_dump = time.monotonic() + self.resync_interval
                    self.ready = True
                    continue
                wait = min(0.2, max(0.0, next_dump - now))
                if poller.poll(int(wait * 1000) + 1):
                    need_dump = self._drain(sock, sink)
        finally:
            sock.close()


class ConntrackPlugin:
    """The registry plugin: netlink I/O + tracker + decode (see the module docstring)."""

    name = "conntrack"
    nat_aware = True

    def __init__(self, opts: registry.SourceOptions) -> None:
        """Prepare the netlink source for ``opts.netns`` (nothing opened yet)."""
        self.source = ConntrackSource(opts.netns, resync_interval=opts.resync_interval)
        self.tracker = ConnectionTracker()
        self.reported_through = 0.0
        """Every connection first seen before this time has been reported at least once
        (at most :attr:`synced_at`)."""
        self.synced_at = 0.0
        """Request time of the newest dump processed (its entries' ``received_at``; for an
        empty table, the time the source noted when it handed the batch over)."""

    @property
    def ready(self) -> bool:
        """True after the first table dump."""
        return bool(getattr(self.source, "ready", True))

    def run(self, sink: registry.Sink, stop: threading.Event) -> None:
        """Netlink events and dumps until ``stop``."""
        self.source.run(sink, stop)

    def process(self, records: list[Any], kind: str, now: float) -> list[Report]:
        """Feed the tracker; a dump batch is a complete table (missed DESTROYs show)."""
        done = self.tracker.feed(records, kind)
        if kind == "dump":
            done += self.tracker.end_of_dump(now)
            if records:
                self.synced_at = max(self.synced_at, records[0].received_at)
            elif self.source.empty_dumps:   # an idle node is current too (batches in order)
                self.synced_at = max(self.synced_at, self.source.empty_dumps.popleft())
            # not past a connection it tracks and has not reported yet (an answered UDP
            # exchange whose counters are not known yet, a SYN waiting first_report_after)
            self.reported_through = min(self.synced_at, self.tracker.unreported_since)
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


def create(opts: registry.SourceOptions) -> ConntrackPlugin:
    """Registry factory."""
    return ConntrackPlugin(opts)
