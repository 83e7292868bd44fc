"""Packet-tracked connection -> Flow (pure): the tuple as seen on the wire, with its L7.

A :class:`~podflow.pipeline.pkttrack.PacketFlow` knows the connection as the packets showed
it where they were captured: ``source`` is the client, ``destination`` the server (a service
VIP before DNAT, the backend after), both named from the inventory at the connection's
start (the server also by its port: a host-network pod serving there is named, see
:mod:`podflow.pipeline.enrich`). ``flow_id`` and ``client_key`` are both the key of that
tuple (:func:`~podflow.pipeline.keys.packet_keys`), so a conntrack record of the same
connection merges with it in the store. Loopback-only connections are not flows. The observation's
``original`` is ``"tcp client:port -> server:port"`` and its ``instance`` the start time.

Example::

    >>> from podflow.cni.profile import CniProfile
    >>> from podflow.inventory.history import Inventory
    >>> from podflow.pipeline.pkttrack import PacketFlow
    >>> r = PacketFlow(6, "10.244.0.5", 41000, "10.244.1.7", 80, 1.0, 2.0)
    >>> f = packet_flow_to_flow(r, DecodeContext("n1", Inventory(), CniProfile("generic", "n1")),
    ...                         True)
    >>> f.source.ip, f.destination.port, f.state.value, f.flow_id == f.client_key
    ('10.244.0.5', 80, 'ended', True)
"""

from __future__ import annotations

from podflow.model.flow import (
    Address,
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
from podflow.pipeline.keys import packet_keys
from podflow.pipeline.nat import L4_NAMES, addressed_service
from podflow.pipeline.pkttrack import PacketFlow


def packet_flow_to_flow(r: PacketFlow, ctx: DecodeContext, final: bool) -> Flow | None:
    """A tracked connection as a Flow: ends named at its start, keys of the tuple seen.

    ``flow_id`` and ``client_key`` are both :func:`~podflow.pipeline.keys.flow_id_for` of
    the tuple as seen, so a conntrack record of the same connection (whose reply tuple or
    original tuple it is) merges with it in the store. Loopback-only connections are skipped.
    """
    if r.client.startswith("127.") and r.server.startswith("127."):
        return None
    inv, prof, at = ctx.inventory, ctx.profile, r.start
    fid, ckey = packet_keys(r)
    proto = PROTOCOLS.get(r.proto, Protocol.OTHER)
    p = proto.value.lower()
    return Flow(
        time=r.start, end_time=r.end,
        source=endpoint(Address(r.client, r.client_port), inv, prof, at),
        destination=endpoint(Address(r.server, r.server_port), inv, prof, at,
                             L4_NAMES.get(r.proto)),
        destination_service=addressed_service(Address(r.server, r.server_port), r.proto,
                                              inv, prof, at),
        protocol=proto, state=FlowState.ENDED if final else FlowState.ACTIVE,
        traffic=Traffic(Counters(*r.to_server), Counters(*r.to_client)),
        tcp=TcpInfo(state=r.state, flags=r.flags) if proto is Protocol.TCP else None,
        verdict=r.verdict, drop_reason_desc=r.reason,
        observations=(ObservationPoint(
            ctx.node_name, "packets",
            f"{p} {r.client}:{r.client_port} -> {r.server}:{r.server_port}",
            instance=f"{r.start:.6f}"),),
        cni_profile=prof.name, flow_id=fid, client_key=ckey, l7=r.l7)
