"""Decide when a conntrack connection is over, from events and dumps: pure and stateful.

The conntrack source delivers NEW/UPDATE/DESTROY events and periodic complete dumps. No single
message tells the whole story (PLATFORM.md): NEW has no counters or timestamps, UPDATE no
counters, DESTROY has final counters and the stop time but can come 120 s after a TCP close
(TIME_WAIT) or never (overrun, ``nf_conntrack_events=2``). :class:`ConnectionTracker` merges
what each message knows into one record per connection and emits :class:`Completed` records:

- DESTROY -> final (unless the connection was already reported final);
- a TCP connection a dump shows in TIME_WAIT or CLOSE -> final at once, with the dump's
  counters, so a closed connection is reported within one resync interval, not 120 s later;
  its later DESTROY is ignored;
- tracked but absent from a complete dump -> final ("missed DESTROY", counted). Only entries
  first seen before the *previous* dump ended are judged, so one that appeared while the dump
  ran is never mistaken for a gone one;
- a dump or event entry never seen before is tracked ("missed NEW", counted after the first
  dump, which naturally finds the whole table);
- an open connection with known counters is reported non-final (ACTIVE) once it has been
  open ``first_report_after`` seconds (so that long-lived and unanswered connections show up
  early, and the other vantage points' records of them have their NAT bridge in the store:
  a SYN nobody answers stays in conntrack for 120 s), then every ``active_report_interval``;
  a connection without TCP state (UDP, SCTP ...) that was answered is first reported at the
  first dump that shows its reply (no close will tell when it ended: its DESTROY comes
  30-120 s later, so the exchange, and the NAT bridge its other views wait for, would
  otherwise wait ``first_report_after``);
  ``flush`` reports every open one non-final;
- a NEW event for a tuple whose connection ended or closed, or an entry with a later kernel
  start time, is a new connection on a reused tuple (a client port used again): the earlier
  one is reported final if it was not yet, and forgotten; a message with an earlier start
  time than the tracked entry's (the old entry's DESTROY delivered late) is skipped, and so
  is one that began no later than the replaced entry while the new one's start is unknown
  (the kernel can deliver the old entry's DESTROY after the new one's NEW, which has no
  start time: merged, it made the new connection a second report of the old one).

Merged entries keep the latest tuples/status/mark, the last known TCP state and counters, the
kernel start time (else ``received_at`` stays the first time podflow saw the connection) and
the DESTROY stop time. Times are Unix seconds (``time.time()``), like ``received_at``.

Example::

    >>> tr = ConnectionTracker()
    >>> out = tr.handle(entries, "event", now)  # doctest: +SKIP
    >>> [c.entry.orig for c in out if c.final]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import NamedTuple

from podflow.model.conntrack import CtEntry, CtEventType, CtTuple

Key = tuple[int, int | None, CtTuple]
CLOSED_TCP_STATES = frozenset({"TIME_WAIT", "CLOSE"})


class Completed(NamedTuple):
    """One connection report: the merged entry and whether the connection is over."""

    entry: CtEntry
    """Best-known picture of the connection (see the module docstring for the merge)."""
    final: bool
    """True: the connection ended and will not be reported again; False: an ACTIVE snapshot."""


@dataclasses.dataclass(frozen=True)
class CtTrackerStats:
    """The tracker's counters at one moment (see the attributes of ConnectionTracker)."""

    open: int
    tracked: int
    emitted: int
    snapshots: int
    evicted: int
    missed_new: int
    missed_destroy: int
    closed_early: int
    reopened: int
    stale: int


class _Conn:
    """Merged state of one tracked connection."""

    __slots__ = ("after_ns", "done", "first_seen", "last", "last_report", "packets", "reported",
                 "reuse", "seen_gen", "start_ns", "stop_ns", "tcp_state")

    def __init__(self, e: CtEntry, gen: int, reuse: int = 0,
                 after_ns: int | None = None) -> None:
        self.reuse = reuse
        self.after_ns = after_ns
        """The kernel start time of the entry this one replaced on its tuple: until this
        one's own start time is known (NEW carries none), a message that began no later is
        the earlier entry's."""
        self.last = e
        self.first_seen = e.received_at
        self.last_report = e.received_at
        self.reported = False
        """Whether a non-final report went out (``first_seen`` cannot tell: a dump entry,
        stamped with the dump's request time, can move it before ``last_report``)."""
        self.tcp_state = e.tcp_state
        self.packets: tuple[int, int, int, int] | None = None
        self.start_ns = e.start_ns
        self.stop_ns = e.stop_ns
        self.seen_gen = gen
        self.done = False
        self.merge(e)

    def merge(self, e: CtEntry) -> None:
        self.last = e
        if e.tcp_state is not None:
            self.tcp_state = e.tcp_state
        if e.orig_packets is not None:
            self.packets = (e.orig_packets, e.orig_bytes or 0, e.reply_packets or 0,
                            e.reply_bytes or 0)
        if self.start_ns is None:
            self.start_ns = e.start_ns
        if e.stop_ns is not None:
            self.stop_ns = e.stop_ns
        if e.received_at < self.first_seen:
            self.first_seen = e.received_at

    def entry(self) -> CtEntry:
        op = ob = rp = rb = None
        if self.packets is not None:
            op, ob, rp, rb = self.packets
        return dataclasses.replace(
            self.last, tcp_state=self.tcp_state, start_ns=self.start_ns, stop_ns=self.stop_ns,
            orig_packets=op, orig_bytes=ob, reply_packets=rp, reply_bytes=rb,
            received_at=self.first_seen, reuse=self.reuse)


def _older(a: CtEntry | _Conn, b: CtEntry | _Conn) -> bool:
    """Whether ``a`` began before ``b`` by the kernel's start times (False when unknown)."""
    return a.start_ns is not None and b.start_ns is not None and a.start_ns < b.start_ns


def _stale(e: CtEntry, c: _Conn) -> bool:
    """Whether ``e`` is a message of an earlier entry on the tuple of ``c``: it began
    before ``c`` or, while ``c``'s start is unknown, no later than the entry ``c`` replaced
    (the old entry's DESTROY delivered after the new one's NEW)."""
    if e.start_ns is None:
        return False
    if c.start_ns is not None:
        return e.start_ns < c.start_ns
    return c.after_ns is not None and e.start_ns <= c.after_ns


class ConnectionTracker:
    """Per-connection state across events and dumps of one conntrack table; O(1) per entry."""

    def __init__(self, max_entries: int = 1_000_000, active_report_interval: float = 60.0,
                 first_report_after: float = 5.0
                 ) -> None:
        self.max_entries = max_entries
        self.active_report_interval = active_report_interval
        self.first_report_after = first_report_after
        self._conns: OrderedDict[Key, _Conn] = OrderedDict()
        self._gen = 0
        self._prev_dump_end = float("-inf")
        self._synced = False
        self.tracked = 0
        """Connections ever tracked."""
        self.emitted = 0
        """Final reports emitted."""
        self.snapshots = 0
        """Non-final (ACTIVE) reports emitted, including by ``flush`` and eviction."""
        self.evicted = 0
        """Connections dropped because the table was full (reported non-final)."""
        self.unreported_since = float("inf")
        """When the oldest connection still open, with counters, and never reported was
        first seen, as of the last :meth:`end_of_dump` (inf: none): it is reported within
        ``first_report_after``; until then its other views (another node's, another
        source's) have no record of this node to merge with."""
        self.missed_new = 0
        """Connections first learnt from an UPDATE, DESTROY or dump (after the first dump)."""
        self.missed_destroy = 0
        """Connections found gone by a dump, their DESTROY lost."""
        self.closed_early = 0
        """TCP connections reported final from a TIME_WAIT/CLOSE dump entry."""
        self.reopened = 0
        """New connections on the tuple of a tracked one (a client port used again)."""
        self.stale = 0
        """Messages of an earlier entry on a tuple that a newer one took (e.g. a DESTROY the
        kernel redelivered late): skipped."""

    @property
    def stats(self) -> CtTrackerStats:
        """A snapshot of the counters (for the agent's stats report)."""
        return CtTrackerStats(len(self._conns), self.tracked, self.emitted, self.snapshots,
                            self.evicted, self.missed_new, self.missed_destroy,
                            self.closed_early, self.reopened, self.stale)

    def __len__(self) -> int:
        return len(self._conns)

    def handle(self, entries: list[CtEntry], kind: str, now: float) -> list[Completed]:
        """Sink adapter: ``feed`` a batch, then ``end_of_dump`` when it is a complete dump."""
        out = self.feed(entries, kind)
        if kind == "dump":
            out += self.end_of_dump(now)
        return out

    def _final(self, c: _Conn, out: list[Completed]) -> None:
        c.done = True
        self.emitted += 1
        out.append(Completed(c.entry(), True))

    def feed(self, entries: list[CtEntry], kind: str) -> list[Completed]:
        """Merge a batch of entries (``kind``: "event" or "dump"); return what completed."""
        out: list[Completed] = []
        conns, gen, dump = self._conns, self._gen, kind == "dump"
        for e in entries:
            key = e.key
            c = conns.get(key)
            if c is None:
                if e.event != CtEventType.NEW and self._synced:
                    self.missed_new += 1
                c = conns[key] = _Conn(e, gen)
                self.tracked += 1
                if len(conns) > self.max_entries:
                    self._evict(out)
            elif _stale(e, c):  # a late message of an earlier entry on the tuple
                self.stale += 1
                continue
            elif self._new_entry(c, e):  # the tuple was used again: a new connection
                self.reopened += 1
                if not c.done:
                    self._final(c, out)
                del conns[key]
                # another instance to the store
                c = conns[key] = _Conn(e, gen, c.reuse + 1,
                                       c.after_ns if c.start_ns is None else c.start_ns)
                self.tracked += 1
            elif c.done:  # already reported final: only remember that the kernel still has it
                if dump:
                    c.seen_gen = gen
                continue
            else:
                c.merge(e)
            if dump:
                c.seen_gen = gen
            if e.event == CtEventType.DESTROY:
                self._final(c, out)  # the entry stays as a tombstone until a dump lacks it
            elif dump and c.tcp_state in CLOSED_TCP_STATES and c.packets is not None:
                self.closed_early += 1
                self._final(c, out)
        return out

    @staticmethod
    def _new_entry(c: _Conn, e: CtEntry) -> bool:
        """Whether ``e`` is another kernel entry on the tuple of ``c``: a NEW event after
        ``c`` ended or closed (a SYN on a TIME_WAIT entry makes the kernel destroy it and
        create a new one, with the next backend if DNAT applies), or a later kernel start
        time (the NEW event was lost)."""
        if e.event == CtEventType.NEW:
            return c.done or c.tcp_state in CLOSED_TCP_STATES
        return _older(c, e)

    def _evict(self, out: list[Completed]) -> None:
        _key, old = self._conns.popitem(last=False)
        self.evicted += 1
        if not old.done:
            self.snapshots += 1
            out.append(Completed(old.entry(), False))

    def end_of_dump(self, now: float) -> list[Completed]:
        """Close a complete dump fed since the last call: report gone and long-lived ones."""
        out: list[Completed] = []
        gen, judged_before = self._gen, self._prev_dump_end
        gone: list[Key] = []
        unreported = float("inf")
        for key, c in self._conns.items():
            if c.seen_gen == gen:
                first = not c.reported
                if not c.done and c.packets is not None and (
                        now - c.last_report >= self.active_report_interval
                        or (first and (now - c.first_seen >= self.first_report_after
                                       or (c.tcp_state is None and c.packets[2] > 0)))):
                    c.last_report = now
                    c.reported = True
                    self.snapshots += 1
                    out.append(Completed(c.entry(), False))
                elif first and not c.done and c.packets is not None:
                    # due within first_report_after; one without counters (made before
                    # accounting was on) is reported only at its end and must not hold
                    # progress back for its whole life
                    unreported = min(unreported, c.first_seen)
            elif c.done:
                gone.append(key)
            elif c.first_seen < judged_before:
                self.missed_destroy += 1
                self._final(c, out)
                gone.append(key)
        for key in gone:
            del self._conns[key]
        self.unreported_since = unreported
        self._gen += 1
        self._prev_dump_end = now
        self._synced = True
        return out

    def flush(self, now: float) -> list[Completed]:
        """Agent stop: report every open connection non-final and forget them all."""
        out = [Completed(c.entry(), False) for c in self._conns.values() if not c.done]
        self.snapshots += len(out)
        self._conns.clear()
        return out
