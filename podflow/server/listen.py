"""Say where a started server really listens: its addresses and ports, after binding.

``podflow serve --host 0.0.0.0 --port 0`` must not print ``http://127.0.0.1:8080/``: the
port is the one the kernel chose and ``0.0.0.0`` is every IPv4 address of the machine, not
one URL. :class:`AnnouncingServer` is a uvicorn server that hands the addresses of its
listening sockets to a callback once they are bound; :func:`listen_lines` words them.

Example::

    >>> listen_lines([("127.0.0.1", 8080)])
    ['open http://127.0.0.1:8080/   (API docs: http://127.0.0.1:8080/docs)']
    >>> url_for("::1", 9090)
    'http://[::1]:9090/'
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence

import uvicorn

Address = tuple[str, int]
"""``(host, port)`` of one listening socket."""

_WILDCARDS = {"0.0.0.0": ("IPv4", "127.0.0.1"), "::": ("IPv6", "::1")}


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``, ``:PORT`` for every address) -> (host, port).

    >>> parse_listen("0.0.0.0:9965"), parse_listen("[::1]:0"), parse_listen(":9965")
    (('0.0.0.0', 9965), ('::1', 0), ('0.0.0.0', 9965))
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, e.g. 0.0.0.0:9965, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def url_for(host: str, port: int) -> str:
    """``http://HOST:PORT/`` with IPv6 addresses in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def listen_lines(addresses: Sequence[Address]) -> list[str]:
    """What to print for a server listening on ``addresses`` (one line or two per socket)."""
    lines: list[str] = []
    for host, port in dict.fromkeys(addresses):
        if host in _WILDCARDS:
            family, local = _WILDCARDS[host]
            url = url_for(local, port)
            lines.append(f"listening on every {family} address of this machine ({host}), "
                         f"port {port}")
            lines.append(f"open {url} here, or http://ADDRESS:{port}/ from elsewhere with "
                         f"an address of this machine   (API docs: {url}docs)")
            continue
        url = url_for(host, port)
        lines.append(f"open {url}   (API docs: {url}docs)")
        if not _is_loopback(host):
            lines[-1] += "   (reachable from other machines)"
    return lines


def bound_addresses(server: uvicorn.Server) -> list[Address]:
    """``(host, port)`` of every socket ``server`` listens on (after its startup)."""
    out: list[Address] = []
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets or ():
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                name = sock.getsockname()
                out.append((str(name[0]), int(name[1])))
    return out


class AnnouncingServer(uvicorn.Server):
    """A uvicorn server calling ``on_bound(addresses)`` once its sockets listen."""

    def __init__(self, config: uvicorn.Config,
                 on_bound: Callable[[list[Address]], None]) -> None:
        super().__init__(config)
        self.on_bound = on_bound

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up, then the announcement (unless start-up is being aborted)."""
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self.on_bound(bound_addresses(self))
