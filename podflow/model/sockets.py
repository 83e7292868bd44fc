"""Raw records of the sockets vantage point: what inet_diag reports, and one poll of a node.

The sockets source (:mod:`podflow.sources.sockets`) dumps every namespace of the node over
NETLINK_SOCK_DIAG (:mod:`podflow.sources.sockdiag` decodes the replies into
:class:`DiagSocket` values) and hands one :class:`PollCycle` per poll to the pipeline, whose
:class:`~podflow.pipeline.socktrack.SocketTracker` turns the cycles into connections.

Example::

    >>> s = DiagSocket(2, 6, ESTABLISHED, "10.0.0.2", 80, "10.0.0.1", 5000, 12, 0, 2)
    >>> s.state_name, PollCycle(1.0, (NsPoll(7, "pod-a", (s,)),)).namespaces[0].name
    ('ESTABLISHED', 'pod-a')
"""

from __future__ import annotations

from dataclasses import dataclass

TCP_STATES = ("", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
              "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
              "NEW_SYN_RECV")
"""Kernel TCP state numbers (``include/net/tcp_states.h``) -> names; UDP uses 1 and 7."""
ESTABLISHED, TIME_WAIT, CLOSE, LISTEN = 1, 6, 7, 10


@dataclass(frozen=True, slots=True)
class TcpStats:
    """The fields of ``struct tcp_info`` podflow uses."""

    state: int
    """tcpi_state (a TCP state number)."""
    rtt_us: int
    """Smoothed RTT, microseconds (tcpi_rtt)."""
    rttvar_us: int
    """RTT variance, microseconds (tcpi_rttvar)."""
    retransmits: int
    """Retransmits of the segment now outstanding (tcpi_retransmits)."""
    total_retrans: int
    """Segments retransmitted over the connection's life (tcpi_total_retrans)."""
    bytes_acked: int | None
    """Bytes sent and acknowledged by the peer (tcpi_bytes_acked; None if too short)."""
    bytes_received: int | None
    """Bytes received in order (tcpi_bytes_received)."""
    segs_out: int | None
    """Segments sent (tcpi_segs_out)."""
    segs_in: int | None
    """Segments received (tcpi_segs_in)."""


@dataclass(frozen=True, slots=True)
class DiagSocket:
    """One socket as inet_diag reports it (addresses as the application sees them)."""

    family: int
    """AF_INET or AF_INET6."""
    proto: int
    """IPPROTO_TCP or IPPROTO_UDP (from the request: the reply does not say)."""
    state: int
    """TCP state number (UDP: 1 connected, 7 unconnected)."""
    local_ip: str
    """Local address; IPv4-mapped IPv6 addresses are given as IPv4."""
    local_port: int
    """Local port."""
    remote_ip: str
    """Peer address (``0.0.0.0`` / ``::`` when none)."""
    remote_port: int
    """Peer port (0 when none)."""
    inode: int
    """Socket inode (``socket:[N]`` in /proc/PID/fd); 0 for sockets without a file."""
    uid: int
    """Owner uid."""
    cookie: int
    """The kernel's unique id of the socket (never reused while the system runs)."""
    tcp: TcpStats | None = None
    """tcp_info, when asked for and present."""

    @property
    def state_name(self) -> str:
        """``ESTABLISHED``, ``LISTEN`` ..."""
        return TCP_STATES[self.state] if self.state < len(TCP_STATES) else str(self.state)


@dataclass(frozen=True, slots=True)
class NsPoll:
    """The sockets of one namespace at one poll."""

    inode: int
    """The namespace's inode."""
    name: str
    """Its name (``/var/run/netns`` name, or ``pid:N``)."""
    sockets: tuple[DiagSocket, ...] = ()
    """Every TCP/UDP socket dumped (listening ones included)."""
    owners: tuple[tuple[int, int, str], ...] = ()
    """(socket inode, pid, comm) of the sockets whose owner is known."""
    ok: bool = True
    """False when the dump failed: the namespace's connections are left as they were."""
    is_node: bool = False
    """The node's own namespace (host-network processes)."""


@dataclass(frozen=True, slots=True)
class PollCycle:
    """One poll of every namespace of the node; a namespace absent from it has vanished."""

    time: float
    """When the poll started, Unix seconds."""
    namespaces: tuple[NsPoll, ...]
    """Every namespace that exists at this poll."""
