"""Socket snapshots -> connections appearing and ending (pure).

The sockets source polls every namespace of the node; each poll is a
:class:`~podflow.model.sockets.PollCycle` of :class:`~podflow.model.sockets.NsPoll` (the
sockets of one namespace at one instant). :class:`SocketTracker` turns the sequence of
cycles into connections:

- a connection *appears* when a TCP socket is first seen with a peer in an established state
  (ESTABLISHED, or already closing: FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING), or a UDP
  socket is connected to a peer; listening (and unconnected UDP) sockets are not
  connections, they make up the namespace's *listen set*;
- its side is decided once, when it appears: ``server`` when its local port is in the
  namespace's listen set for that protocol, else ``client``;
- it *ends* when its socket is gone from a later poll of its namespace, reaches CLOSE or
  TIME_WAIT, or its namespace vanished; then it is reported ``final`` with the last counters
  and RTT seen; a connection still open is reported (non-final) every ``snapshot_interval``
  seconds, and :meth:`SocketTracker.flush` reports every open one at stop;
- UDP has no connection: a flow is its 5-tuple, as conntrack and the packets see it. A
  socket on the same addresses and ports within ``udp_linger`` seconds of the last one
  (a client given the same ephemeral port again, while the conntrack entry still lives)
  continues the same flow, so a gone UDP socket is reported final only ``udp_linger``
  seconds later (and non-final as soon as it appears, so that its flow is not late).

A namespace whose poll failed in a cycle (``NsPoll.ok`` False) keeps its connections.
What a poll cannot see: a connection that opens and closes between two polls.

Example::

    >>> from podflow.model.sockets import DiagSocket
    >>> lst = DiagSocket(2, 6, 10, "10.0.0.2", 80, "0.0.0.0", 0, 11, 0, 1)
    >>> est = DiagSocket(2, 6, 1, "10.0.0.2", 80, "10.0.0.1", 5000, 12, 0, 2)
    >>> t = SocketTracker()
    >>> t.feed(PollCycle(1.0, (NsPoll(7, "pod-a", (lst, est)),)))
    []
    >>> [(r.record.side, r.final) for r in t.feed(PollCycle(2.0, (NsPoll(7, "pod-a", (lst,)),)))]
    [('server', True)]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from podflow.model.sockets import (
    CLOSE,
    LISTEN,
    TIME_WAIT,
    DiagSocket,
    NsPoll,
    PollCycle,
    TcpStats,
)
from podflow.pipeline.context import Report

OPEN_TCP_STATES = frozenset({1, 4, 5, 8, 9, 11})
"""ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING."""
SNAPSHOT_INTERVAL = 60.0
"""Seconds between non-final reports of a long-lived connection."""
UDP_LINGER = 30.0
"""Seconds a gone UDP socket's flow waits for another socket on its 5-tuple: the kernel's
``nf_conntrack_udp_timeout``, for which conntrack keeps the entry after the last packet."""

Key = tuple[int, int, int, str, int]
"""(namespace inode, socket cookie (UDP: 0), local port, remote address, remote port)."""


@dataclass(frozen=True, slots=True)
class SockConn:
    """One connection as one socket sees it (what the sockets source reports)."""

    netns: str
    """Namespace name."""
    netns_inode: int
    """Namespace inode."""
    proto: int
    """IP protocol number (6 TCP, 17 UDP)."""
    local_ip: str
    """Local address as the application sees it."""
    local_port: int
    """Local port."""
    remote_ip: str
    """Peer address as the application sees it (a service VIP on a client socket)."""
    remote_port: int
    """Peer port."""
    side: str
    """``client`` or ``server`` (local port in the namespace's listen set)."""
    first_seen: float
    """Poll time the connection was first seen (its start, within one poll interval)."""
    last_seen: float
    """Poll time it was last seen open."""
    state: str
    """Last TCP state name (``ESTABLISHED`` ...; UDP: ``ESTABLISHED``)."""
    tcp: TcpStats | None = None
    """Last tcp_info seen."""
    pid: int | None = None
    """Owning process, when found."""
    comm: str | None = None
    """Its command name."""
    cookie: int = 0
    """The kernel's socket id."""
    host_network: bool = False
    """Seen in the node's own namespace."""


@dataclass
class SockTrackerStats:
    """Counters of the socket tracker."""

    appeared: int = 0
    ended: int = 0
    snapshots: int = 0
    open: int = 0


def listen_set(sockets: tuple[DiagSocket, ...]) -> set[tuple[int, int]]:
    """(proto, port) pairs a namespace serves: TCP LISTEN, UDP bound and unconnected."""
    out = set()
    for s in sockets:
        if (s.proto == 6 and s.state == LISTEN) or (
                s.proto == 17 and s.state == CLOSE and s.local_port):
            out.add((s.proto, s.local_port))
    return out


def is_connection(s: DiagSocket) -> bool:
    """An established TCP socket with a peer, or a connected UDP socket."""
    if not s.remote_port:
        return False
    return s.state in OPEN_TCP_STATES if s.proto == 6 else s.state == 1


@dataclass
class SocketTracker:
    """Feeds on poll cycles; reports connections that ended or need a snapshot."""

    snapshot_interval: float = SNAPSHOT_INTERVAL
    """Seconds between non-final reports of a connection that stays open."""
    stats: SockTrackerStats = field(default_factory=SockTrackerStats)
    """Counters."""
    udp_linger: float = UDP_LINGER
    """Seconds a gone UDP socket's flow waits for another socket on its 5-tuple."""
    _open: dict[Key, tuple[SockConn, float]] = field(default_factory=dict)
    _gone_udp: dict[Key, tuple[SockConn, float, float]] = field(default_factory=dict)
    """UDP flows whose socket is gone -> (conn, last report, when it was last seen)."""

    def feed(self, cycle: PollCycle) -> list[Report]:
        """Update from one poll; return reports (final ones for ended connections)."""
        out: list[Report] = []
        seen: set[Key] = set()
        failed = {ns.inode for ns in cycle.namespaces if not ns.ok}
        for ns in cycle.namespaces:
            if ns.ok:
                out += self._feed_ns(ns, cycle.time, seen)
        for key in list(self._open):
            if key in seen or key[0] in failed:
                continue
            conn, reported = self._open.pop(key)
            if conn.proto == 17 and self.udp_linger > 0:
                self._gone_udp[key] = (conn, reported, cycle.time)
                continue
            out.append(Report(conn, True))
            self.stats.ended += 1
        for key, (conn, _, gone) in list(self._gone_udp.items()):
            if cycle.time - gone >= self.udp_linger:
                del self._gone_udp[key]
                out.append(Report(conn, True))
                self.stats.ended += 1
        self.stats.open = len(self._open) + len(self._gone_udp)
        return out

    def _feed_ns(self, ns: NsPoll, now: float, seen: set[Key]) -> list[Report]:
        out: list[Report] = []
        listening = listen_set(ns.sockets)
        owners = {ino: (pid, comm) for ino, pid, comm in ns.owners}
        for s in ns.sockets:
            if not s.remote_port or s.state == LISTEN:
                continue
            key = (ns.inode, 0 if s.proto == 17 else s.cookie, s.local_port, s.remote_ip,
                   s.remote_port)
            known = self._open.get(key)
            if s.state in (CLOSE, TIME_WAIT) or not is_connection(s):
                continue  # ended (or never a connection): reported when it leaves _open
            seen.add(key)
            state = s.state_name
            if known is None and key in self._gone_udp:   # the 5-tuple again: the same flow
                conn, reported, _gone = self._gone_udp.pop(key)
                known = (conn, reported)
            if known is None:
                pid, comm = owners.get(s.inode, (None, None))
                conn = SockConn(ns.name, ns.inode, s.proto, s.local_ip, s.local_port,
                                s.remote_ip, s.remote_port,
                                "server" if (s.proto, s.local_port) in listening else "client",
                                now, now, state, s.tcp, pid, comm, s.cookie, ns.is_node)
                self._open[key] = (conn, now)
                self.stats.appeared += 1
                if s.proto == 17:   # its end is known udp_linger late: say it exists now
                    out.append(Report(conn, False))
                    self.stats.snapshots += 1
                continue
            conn, reported = known
            pid, comm = conn.pid, conn.comm
            if pid is None and s.inode in owners:
                pid, comm = owners[s.inode]
            conn = replace(conn, last_seen=now, state=state, tcp=s.tcp or conn.tcp, pid=pid,
                           comm=comm)
            if now - reported >= self.snapshot_interval:
                out.append(Report(conn, False))
                self.stats.snapshots += 1
                reported = now
            self._open[key] = (conn, reported)
        return out

    def flush(self, now: float) -> list[Report]:
        """Every open connection, non-final (the agent is stopping)."""
        del now
        out = [Report(conn, False) for conn, _ in self._open.values()]
        out += [Report(conn, True) for conn, _, _ in self._gone_udp.values()]
        self._open.clear()
        self._gone_udp.clear()
        self.stats.open = 0
        return out
