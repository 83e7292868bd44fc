"""Conntrack entry -> Flow (pure): NAT undone, both ends enriched at the flow's start.

Times: ``time`` is the entry's start timestamp (``CTA_TIMESTAMP_START``) when present, else
when the agent read it; ``end_time`` is the stop timestamp (DESTROY) or when it was read.
Identity and service are looked up at ``time``, so a restarted pod's old flows keep the old
pod. Counters: the original direction is client -> server (``to_destination``), the reply
direction server -> client (``to_source``); missing counters count as 0.

``flow_id`` is the first 16 hex digits of the SHA-1 of
``"{ip proto number}|{server ip}|{server port}|{client ip as the server sees it}|{its port}"``,
i.e. of the reply tuple: every node that sees the connection (the ingress node with its
DNAT/SNAT, the backend node without) computes the same id. Use :func:`flow_id_for` to
compute it from another source's view of the server side.

``client_key`` is the same function of the original tuple as the client sent it
(``flow_id_for(proto, orig.dst, orig.dport, orig.src, orig.sport)``): what a client-side view
(the client's socket, which sees the service VIP) computes. Without NAT both keys are equal;
with NAT a conntrack flow is the bridge that joins the client's view and the server's view
(:mod:`podflow.pipeline.correlate`).

Example::

    >>> from podflow.cni.profile import CniProfile
    >>> from podflow.inventory.history import Inventory
    >>> from podflow.model.conntrack import CtEntry, CtEventType, CtTuple
    >>> e = CtEntry(CtEventType.DESTROY, CtTuple("10.244.0.5", "10.244.1.7", 6, 41000, 9000),
    ...             CtTuple("10.244.1.7", "10.244.0.5", 6, 9000, 41000), tcp_state="TIME_WAIT",
    ...             orig_packets=5, orig_bytes=400, start_ns=10**18, stop_ns=10**18 + 10**9)
    >>> ctx = DecodeContext("node1", Inventory(), CniProfile("generic", "node1"), final=True)
    >>> f = conntrack_to_flow(e, ctx)
    >>> f.time, f.end_time, f.traffic.to_destination.bytes, f.flow_id == flow_id(e)
    (1000000000.0, 1000000001.0, 400, True)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from podflow.cni.profile import CniProfile
from podflow.inventory.history import Inventory
from podflow.model.conntrack import CtEntry, CtEventType
from podflow.model.flow import (
    Counters,
    Flow,
    FlowState,
    ObservationPoint,
    Protocol,
    TcpInfo,
    Traffic,
)
from podflow.pipeline.enrich import endpoint
from podflow.pipeline.nat import resolve

PROTOCOLS = {6: Protocol.TCP, 17: Protocol.UDP, 1: Protocol.ICMP, 58: Protocol.ICMPV6,
             132: Protocol.SCTP}
"""IP protocol number -> Protocol (anything else is OTHER)."""


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """What decoding needs besides the entry: who observes, and the lookups."""

    node_name: str
    """The observing node (recorded in the ObservationPoint)."""
    inventory: Inventory
    """Time-indexed cluster inventory."""
    profile: CniProfile
    """The node's CNI profile (gateway rules, infrastructure filter)."""
    final: bool = False
    """The record is final (ENDED); otherwise ACTIVE. DESTROY entries are always final."""


def flow_id_for(proto: int, server_ip: str, server_port: int | None, client_ip: str,
                client_port: int | None) -> str:
    """The flow id of a connection, from the server's view of it (see module docstring).

    Example::

        >>> flow_id_for(6, "10.244.1.7", 9000, "10.244.0.5", 41000)
        '900032f8ac1923dd'
    """
    key = f"{proto}|{server_ip}|{server_port}|{client_ip}|{client_port}"
    return hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:16]


def flow_id(entry: CtEntry) -> str:
    """The flow id of a conntrack entry: :func:`flow_id_for` of its reply tuple."""
    r = entry.reply
    return flow_id_for(r.proto, r.src, r.sport, r.dst, r.dport)


def client_key(entry: CtEntry) -> str:
    """The client key of a conntrack entry: :func:`flow_id_for` of its original tuple."""
    o = entry.orig
    return flow_id_for(o.proto, o.dst, o.dport, o.src, o.sport)


def conntrack_to_flow(entry: CtEntry, ctx: DecodeContext,
                      final: bool | None = None) -> Flow | None:
    """The Flow for one conntrack entry, or None for infrastructure (tunnel, loopback).

    ``final`` overrides ``ctx.final`` for this entry (the connection tracker knows per
    entry whether the connection ended); a DESTROY entry is always final.

    Example::

        flow = conntrack_to_flow(entry, DecodeContext("node1", inv, detection.profile))
    """
    start = entry.start_ns / 1_000_000_000 if entry.start_ns else entry.received_at
    end = entry.stop_ns / 1_000_000_000 if entry.stop_ns else entry.received_at
    inv, profile = ctx.inventory, ctx.profile
    res = resolve(entry, inv, profile, start)
    if res.is_infrastructure:
        return None
    protocol = PROTOCOLS.get(entry.orig.proto, Protocol.OTHER)
    ended = (ctx.final if final is None else final) or entry.event is CtEventType.DESTROY
    return Flow(
        time=start,
        source=endpoint(res.client, inv, profile, start),
        destination=endpoint(res.server, inv, profile, start),
        protocol=protocol,
        end_time=max(end, start),
        state=FlowState.ENDED if ended else FlowState.ACTIVE,
        destination_service=res.service,
        nat=res.nat,
        traffic=Traffic(
            to_destination=Counters(entry.orig_packets or 0, entry.orig_bytes or 0),
            to_source=Counters(entry.reply_packets or 0, entry.reply_bytes or 0)),
        tcp=TcpInfo(state=entry.tcp_state) if protocol is Protocol.TCP else None,
        observations=(ObservationPoint(
            ctx.node_name, "conntrack", str(entry.orig), str(entry.reply),
            "" if entry.id is None else f"{entry.zone}/{entry.id}"),),
        cni_profile=profile.name,
        flow_id=flow_id(entry),
        client_key=client_key(entry),
    )
