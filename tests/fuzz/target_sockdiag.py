"""Fuzz target: the datagrams of one inet_diag dump, through the sock_diag decoder and on.

The input is what the poller's ``recv()`` calls return for one ``SOCK_DIAG_BY_FAMILY`` dump
(the golden recordings concatenate them; :func:`podflow.sources.sockdiag.parse` reads any
number of messages). It is decoded as a TCP and as a UDP dump, as
:func:`podflow.sources.sockdiag.dump` does; ``parse`` refuses input only with ``OSError``
(an ``NLMSG_ERROR`` reply, which the poller counts as a failed poll) and counts what it skips.
Each socket then goes the way the sockets source takes it: the tracker's tests, its state
name, and :func:`podflow.pipeline.sockdecode.socket_to_flow` as a client and a server.
"""

from __future__ import annotations

from podflow.cni.profile import CniProfile
from podflow.inventory.history import Inventory
from podflow.model.losses import Losses
from podflow.pipeline.context import DecodeContext
from podflow.pipeline.sockdecode import socket_to_flow
from podflow.pipeline.socktrack import SockConn, is_connection
from podflow.sources import sockdiag
from tests.conftest import DATA
from tests.fuzz.targets import Target

_CTX = DecodeContext("node1", Inventory(), CniProfile("generic", "node1"))


def seeds() -> list[bytes]:
    """The four recorded dumps (TCP and UDP, IPv4 and IPv6)."""
    return [(DATA / "sockdiag" / f"pod_{n}.bin").read_bytes()
            for n in ("tcp4", "tcp6", "udp4", "udp6")]


def _onward(s: sockdiag.DiagSocket) -> None:
    """What the sockets source does with one decoded socket."""
    is_connection(s)
    for side in ("client", "server"):
        conn = SockConn("ns", 1, s.proto, s.local_ip, s.local_port, s.remote_ip,
                        s.remote_port, side, 10.0, 11.0, s.state_name, s.tcp, 42, "comm",
                        s.cookie)
        socket_to_flow(conn, _CTX, final=True)


def run(data: bytes) -> None:
    """Decode ``data`` as a TCP and a UDP dump; ``OSError`` (NLMSG_ERROR) is the only refusal."""
    for proto in (sockdiag.IPPROTO_TCP, sockdiag.IPPROTO_UDP):
        losses = Losses()
        try:
            socks, _done = sockdiag.parse(data, proto, losses)
        except OSError:
            continue
        for s in socks[:16]:
            _onward(s)


TARGET = Target("sockdiag", seeds, run, examples=1500)
