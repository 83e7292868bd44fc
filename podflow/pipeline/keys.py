"""Connection keys (pure): the ``flow_id`` and ``client_key`` every vantage point computes.

``flow_id`` is the first 16 hex digits of the SHA-1 of
``"{ip proto number}|{server ip}|{server port}|{client ip as the server sees it}|{its port}"``,
i.e. of a conntrack entry's reply tuple: every node that sees the connection (the ingress
node with its DNAT/SNAT, the backend node without) computes the same id.

``client_key`` is the same function of the original tuple as the client sent it
(``flow_id_for(proto, orig.dst, orig.dport, orig.src, orig.sport)``): what a client-side view
(the client's socket, which sees the service VIP) computes. Without NAT both keys are equal;
with NAT a conntrack flow is the bridge that joins the client's view and the server's view
(:mod:`podflow.store.correlate`).

Each vantage knows what it can: conntrack both keys (:func:`flow_id`, :func:`client_key`),
a socket one of them (:func:`socket_keys`: a server socket the ``flow_id``, a client socket
the ``client_key``), packets the tuple as seen on the wire, used for both
(:func:`packet_keys`).

Example::

    >>> flow_id_for(6, "10.244.1.7", 9000, "10.244.0.5", 41000)
    '900032f8ac1923dd'
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podflow.model.conntrack import CtEntry
    from podflow.pipeline.pkttrack import PacketFlow
    from podflow.pipeline.socktrack import SockConn


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


def socket_keys(c: SockConn) -> tuple[str, str]:
    """(flow_id, client_key) one socket knows (the other one is empty)."""
    if c.side == "server":
        return flow_id_for(c.proto, c.local_ip, c.local_port, c.remote_ip, c.remote_port), ""
    return "", flow_id_for(c.proto, c.remote_ip, c.remote_port, c.local_ip, c.local_port)


def packet_keys(r: PacketFlow) -> tuple[str, str]:
    """(flow_id, client_key) of a packet-tracked connection: both :func:`flow_id_for` of the
    tuple as seen, so a conntrack record of the same connection (whose reply tuple or
    original tuple it is) merges with it in the store."""
    fid = flow_id_for(r.proto, r.server, r.server_port, r.client, r.client_port)
    return fid, fid
