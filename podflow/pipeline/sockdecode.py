"""Socket connection -> Flow (pure): one side's view, named at the connection's first sight.

A socket knows the connection only as its application sees it:

- a *client* socket: ``source`` = the local end (the pod, or the node for host-network
  processes), ``destination`` = the peer as the application addressed it, which may be a
  service VIP (then an Endpoint of kind ``service``, and the Service it addressed, as for
  a node address at a nodePort: the backend is unknown from here). It
  knows the connection's ``client_key`` (:func:`~podflow.pipeline.keys.flow_id_for` of
  the tuple as sent) and not its ``flow_id``;
- a *server* socket: ``source`` = the peer as the server sees it (a node or VTEP address
  under SNAT), ``destination`` = the local pod. It knows ``flow_id`` (the server's view)
  and not ``client_key``.

Only the server end (the peer of a client socket, the local end of a server socket) is
looked up by its port, so a host-network pod serving there is named
(:mod:`podflow.pipeline.enrich`); a host-network client stays its node, with its process in
the observation.

:mod:`podflow.store.correlate` joins them with conntrack (which knows both keys) into one
flow. Counters come from tcp_info: bytes acknowledged by the peer and bytes received, segments
out and in, oriented client -> server; ``rtt_us`` is the smoothed RTT. Loopback connections
(both ends inside one namespace) are not flows. The observation's ``original`` is
``"TCP local -> remote"``; its ``reply`` names the side, the owning process and the
namespace (``"client pid=12 comm=curl netns=pf-shop-pod-1"``).

Example::

    >>> from podflow.cni.profile import CniProfile
    >>> from podflow.inventory.history import Inventory
    >>> from podflow.pipeline.context import DecodeContext
    >>> from podflow.pipeline.keys import flow_id_for
    >>> c = SockConn("pod-a", 7, 6, "10.244.0.5", 41000, "10.244.1.7", 9000, "client", 5.0,
    ...              6.0, "ESTABLISHED")
    >>> f = socket_to_flow(c, DecodeContext("node1", Inventory(), CniProfile("generic", "n1")))
    >>> f.source.ip, f.destination.port, f.client_key == flow_id_for(6, "10.244.1.7", 9000,
    ...     "10.244.0.5", 41000), f.flow_id
    ('10.244.0.5', 9000, True, '')
"""

from __future__ import annotations

import ipaddress

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
from podflow.pipeline.keys import socket_keys
from podflow.pipeline.nat import L4_NAMES, addressed_service
from podflow.pipeline.socktrack import SockConn


def is_local_only(ip: str) -> bool:
    """Loopback or unspecified: traffic that never leaves the namespace."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return True
    return a.is_loopback or a.is_unspecified


def _traffic(c: SockConn) -> Traffic:
    t = c.tcp
    if t is None:
        return Traffic()
    sent = Counters(t.segs_out or 0, t.bytes_acked or 0)
    received = Counters(t.segs_in or 0, t.bytes_received or 0)
    return Traffic(sent, received) if c.side == "client" else Traffic(received, sent)


def describe(c: SockConn) -> tuple[str, str]:
    """The observation's (original, reply) texts (see the module doc)."""
    proto = PROTOCOLS.get(c.proto, Protocol.OTHER)
    who = f"{c.side}" + (f" pid={c.pid} comm={c.comm}" if c.pid is not None else "")
    return (f"{proto} {Address(c.local_ip, c.local_port)} -> "
            f"{Address(c.remote_ip, c.remote_port)}", f"{who} netns={c.netns}")


def socket_to_flow(c: SockConn, ctx: DecodeContext, final: bool | None = None) -> Flow | None:
    """The Flow one socket saw, or None for loopback/unspecified ends.

    ``final`` overrides ``ctx.final`` (the tracker knows whether the connection ended).
    """
    if is_local_only(c.local_ip) or is_local_only(c.remote_ip):
        return None
    at, inv, profile = c.first_seen, ctx.inventory, ctx.profile
    l4 = L4_NAMES.get(c.proto)
    client = c.side == "client"
    local = endpoint(Address(c.local_ip, c.local_port), inv, profile, at,
                     None if client else l4)
    remote = endpoint(Address(c.remote_ip, c.remote_port), inv, profile, at,
                      l4 if client else None)
    src, dst = (local, remote) if client else (remote, local)
    fid, ckey = socket_keys(c)
    protocol = PROTOCOLS.get(c.proto, Protocol.OTHER)
    rtt = float(c.tcp.rtt_us) if c.tcp is not None and c.tcp.rtt_us else None
    ended = ctx.final if final is None else final
    original, reply = describe(c)
    return Flow(
        time=at,
        source=src,
        destination=dst,
        destination_service=addressed_service(Address(c.remote_ip, c.remote_port), c.proto,
                                              inv, profile, at) if client else None,
        protocol=protocol,
        end_time=max(c.last_seen, at),
        state=FlowState.ENDED if ended else FlowState.ACTIVE,
        traffic=_traffic(c),
        tcp=TcpInfo(state=c.state) if protocol is Protocol.TCP else None,
        rtt_us=rtt,
        observations=(ObservationPoint(ctx.node_name, "sockets", original, reply,
                                       str(c.cookie) if c.cookie else ""),),
        cni_profile=profile.name,
        flow_id=fid,
        client_key=ckey,
    )
