"""The decoded conntrack entry: what the ctnetlink decoder hands to the pipeline.

A :class:`CtEntry` is a plain, immutable picture of one netlink conntrack message (an event
or a dump entry). It carries no identity and no interpretation: NAT resolution and
enrichment are later, pure steps.

Example::

    >>> t = CtTuple("10.244.0.5", "10.96.0.10", 6, 41000, 9000)
    >>> r = CtTuple("10.244.1.7", "10.244.0.5", 6, 9000, 41000)
    >>> e = CtEntry(CtEventType.DESTROY, t, r, status=CtStatus.DST_NAT)
    >>> e.is_dnat, e.is_snat
    (True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag


class CtEventType(IntEnum):
    """Why the message was sent."""

    NEW = 1
    """A new connection (netlink group NFNLGRP_CONNTRACK_NEW)."""
    UPDATE = 2
    """A change to an existing connection (state, status, mark)."""
    DESTROY = 3
    """The connection was removed from the table (carries final counters)."""
    DUMP = 4
    """An entry read by a table dump (carries counters as of now)."""


class CtStatus(IntFlag):
    """``enum ip_conntrack_status`` bits from linux/netfilter/nf_conntrack_common.h."""

    EXPECTED = 1 << 0
    SEEN_REPLY = 1 << 1
    ASSURED = 1 << 2
    CONFIRMED = 1 << 3
    SRC_NAT = 1 << 4
    DST_NAT = 1 << 5
    SEQ_ADJUST = 1 << 6
    SRC_NAT_DONE = 1 << 7
    DST_NAT_DONE = 1 << 8
    DYING = 1 << 9
    FIXED_TIMEOUT = 1 << 10
    TEMPLATE = 1 << 11
    UNTRACKED = 1 << 12
    HELPER = 1 << 13
    OFFLOAD = 1 << 14
    HW_OFFLOAD = 1 << 15


@dataclass(frozen=True, slots=True)
class CtTuple:
    """One direction of a conntrack entry (``CTA_TUPLE_ORIG`` or ``CTA_TUPLE_REPLY``)."""

    src: str
    """Source IP address, text form."""
    dst: str
    """Destination IP address, text form."""
    proto: int
    """IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 132 SCTP)."""
    sport: int | None = None
    """Source port (ICMP: None)."""
    dport: int | None = None
    """Destination port (ICMP: None)."""

    def reversed(self) -> CtTuple:
        """The same tuple seen from the other end."""
        return CtTuple(self.dst, self.src, self.proto, self.dport, self.sport)

    def __str__(self) -> str:
        names = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp"}
        p = names.get(self.proto, str(self.proto))
        if self.sport is None:
            return f"{p} {self.src} -> {self.dst}"
        return f"{p} {self.src}:{self.sport} -> {self.dst}:{self.dport}"


@dataclass(frozen=True, slots=True)
class CtEntry:
    """One conntrack message, decoded."""

    event: CtEventType
    """NEW, UPDATE, DESTROY (events) or DUMP."""
    orig: CtTuple
    """The tuple as the client sent it (before NAT)."""
    reply: CtTuple
    """The tuple the server answers with (after NAT): what the server sees, reversed."""
    status: CtStatus = CtStatus(0)  # noqa: RUF009 (an immutable int flag)
    """``CTA_STATUS`` bits."""
    id: int | None = None
    """``CTA_ID``: the kernel's id of the entry, stable for its life."""
    zone: int = 0
    """``CTA_ZONE`` (0 when absent)."""
    mark: int = 0
    """``CTA_MARK`` (0 when absent)."""
    timeout: int | None = None
    """``CTA_TIMEOUT`` seconds left (events other than DESTROY, dumps)."""
    tcp_state: str | None = None
    """TCP state name from ``CTA_PROTOINFO_TCP_STATE`` (``SYN_SENT`` ... ``TIME_WAIT``)."""
    orig_packets: int | None = None
    """``CTA_COUNTERS_ORIG`` packets (needs nf_conntrack_acct=1 when the entry was made)."""
    orig_bytes: int | None = None
    """``CTA_COUNTERS_ORIG`` bytes."""
    reply_packets: int | None = None
    """``CTA_COUNTERS_REPLY`` packets."""
    reply_bytes: int | None = None
    """``CTA_COUNTERS_REPLY`` bytes."""
    start_ns: int | None = None
    """``CTA_TIMESTAMP_START``, Unix nanoseconds (needs nf_conntrack_timestamp=1)."""
    stop_ns: int | None = None
    """``CTA_TIMESTAMP_STOP``, Unix nanoseconds (DESTROY only)."""
    received_at: float = 0.0
    """Unix seconds when the agent read the message (fallback for missing timestamps)."""
    reuse: int = 0
    """How many earlier connections the tracker saw on this entry's zone, id and tuple (a
    client port used again: the kernel re-creates the entry, often with the same id); set
    by :class:`~podflow.pipeline.cttrack.ConnectionTracker`, 0 in kernel messages."""

    @property
    def is_dnat(self) -> bool:
        """The destination was translated (service DNAT)."""
        return bool(self.status & CtStatus.DST_NAT) or self.orig.dst != self.reply.src

    @property
    def is_snat(self) -> bool:
        """The source was translated (masquerade / SNAT)."""
        return bool(self.status & CtStatus.SRC_NAT) or self.orig.src != self.reply.dst

    @property
    def key(self) -> tuple[int, int | None, CtTuple]:
        """Identity of the entry within one table: (zone, id, original tuple)."""
        return (self.zone, self.id, self.orig)
