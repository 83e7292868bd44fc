"""Conntrack entry -> Flow (pure): NAT undone, both ends enriched at the flow's start.

Times: ``time`` is the entry's start timestamp (``CTA_TIMESTAMP_START``) when present, else
when the agent read it; ``end_time`` is the stop timestamp (DESTROY) or when it was read.
Identity and service are looked up at ``time``, so a restarted pod's old flows keep the old
pod; the destination (the server) is also looked up by its port, so a host-network pod
serving there is named (see :mod:`podflow.pipeline.enrich`). Counters: the original
direction is client -> server (``to_destination``), the reply direction server -> client
(``to_source``); missing counters count as 0.

Keys: ``flow_id`` (of the reply tuple) and ``client_key`` (of the original tuple), see
:mod:`podflow.pipeline.keys`; a conntrack flow, knowing both, is the bridge that joins the
client's view and the server's view of a NATed connection.

Example::

    >>> from podflow.cni.profile import CniProfile
    >>> from podflow.inventory.history import Inventory
    >>> from podflow.model.conntrack import CtEntry, CtEventType, CtTuple
    >>> e = CtEntry(CtEventType.DESTROY, CtTuple("10.244.0.5", "10.244.1.7", 6, 41000, 9000),
    ...             CtTuple("10.244.1.7", "10.244.0.5", 6, 9000, 41000), tcp_state="TIME_WAIT",
    ...             orig_packets=5, orig_bytes=400, start_ns=10**18, stop_ns=10**18 + 10**9)
    >>> from podflow.pipeline.context import DecodeContext
    >>> from podflow.pipeline.keys import flow_id
    >>> ctx = DecodeContext("node1", Inventory(), CniProfile("generic", "node1"), final=True)
    >>> f = conntrack_to_flow(e, ctx)
    >>> f.time, f.end_time, f.traffic.to_destination.bytes, f.flow_id == flow_id(e)
    (1000000000.0, 1000000001.0, 400, True)
"""

from __future__ import annotations

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
from podflow.pipeline.context import PROTOCOLS, DecodeContext
from podflow.pipeline.enrich import endpoint
from podflow.pipeline.keys import client_key, flow_id
from podflow.pipeline.nat import L4_NAMES, resolve


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
        destination=endpoint(res.server, inv, profile, start, L4_NAMES.get(entry.orig.proto)),
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
            "" if entry.id is None else f"{entry.zone}/{entry.id}"
            + (f"+{entry.reuse}" if entry.reuse else "")),),
        cni_profile=profile.name,
        flow_id=flow_id(entry),
        client_key=client_key(entry),
    )
