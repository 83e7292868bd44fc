"""Classic BPF socket filters: the agent's filter, capture filters, and attaching them.

The kernel runs the filter on every packet of the interface before any copy to user space,
so only what podflow needs reaches Python (:data:`AGENT_FILTER`): TCP segments with SYN, FIN
or RST; DNS over UDP and TCP port 53; TCP segments whose payload starts with an HTTP/1.x
method or ``HTTP/1.`` (the first segment of each request and response); ICMP and ICMPv6
errors; and the same things VXLAN-encapsulated on the underlay (UDP 8472/4789, inner
IPv4), matched on the inner headers in the kernel (see :func:`vxlan_inner`), so bulk overlay
traffic never wakes the agent.

Programs are compiled from pcap-filter expressions by ``tcpdump -ddd -y EN10MB`` when first
needed and cached. Why not assemble by hand: libpcap's compiler and optimizer are the
reference implementation of exactly this job (variable IP/TCP header lengths, IPv6,
VLAN-free offsets), tcpdump is a pinned Debian package already required by the install
script, and an expression is readable and reviewable where 150 hand-written instructions are
not. It runs once at start (~10 ms); no root and no interface are needed. Every interface
podflow captures on (veth, bridge, VXLAN device, macvlan, the underlay) is Ethernet
(``ARPHRD_ETHER``), hence ``-y EN10MB``.

Example::

    >>> compile_filter("tcp port 80")[0]     # needs tcpdump  # doctest: +SKIP
    (40, 0, 0, 12)
"""

from __future__ import annotations

import ctypes
import functools
import socket
import struct
import subprocess
from collections.abc import Iterable, Sequence

Program = list[tuple[int, int, int, int]]
"""A classic BPF program: (code, jt, jf, k) per instruction."""

SO_ATTACH_FILTER = 26
DROP_ALL: Program = [(0x06, 0, 0, 0)]
"""``ret #0``: accept nothing (attached before bind, so nothing slips in unfiltered)."""
ACCEPT_ALL: Program = [(0x06, 0, 0, 0x40000)]
"""``ret #262144``: accept every packet whole."""

HTTP_STARTS = ("GET ", "POST", "PUT ", "HEAD", "DELE", "PATC", "OPTI", "CONN", "TRAC", "HTTP")
"""First four payload bytes of HTTP/1.x requests (by method) and responses (``HTTP/1.``)."""
_WORDS = [int.from_bytes(w.encode(), "big") for w in HTTP_STARTS]


def _http(at: str) -> str:
    """Payload's first 4 bytes at ``at`` (an expression) is one of the HTTP starts."""
    return "(" + " or ".join(f"{at}:4] = {w:#x}" for w in _WORDS) + ")"


def vxlan_inner() -> str:
    """The match on VXLAN-encapsulated IPv4 (inner IP header at ``udp[30]``).

    Outer UDP (8) + VXLAN (8) + inner Ethernet (14) put the inner IP header at offset 30 of
    the UDP header; the inner L4 header is at ``30 + 4 * IHL``.
    """
    i4 = "30 + ((udp[30] & 0xf) << 2)"
    tcp_pay = f"udp[{i4} + ((udp[{i4} + 12] & 0xf0) >> 2)"
    return (f"(udp dst port 8472 or udp dst port 4789) and udp[28:2] = 0x0800 and ("
            f"(udp[39] = 6 and (udp[{i4} + 13] & 7 != 0 or udp[{i4}:2] = 53 or "
            f"udp[{i4} + 2:2] = 53 or {_http(tcp_pay)})) or "
            f"(udp[39] = 17 and (udp[{i4}:2] = 53 or udp[{i4} + 2:2] = 53)) or "
            f"(udp[39] = 1 and (udp[{i4}] = 3 or udp[{i4}] = 11)))")


def agent_expression(vxlan: bool = True) -> str:
    """The pcap-filter expression of the agent's capture (see the module docstring)."""
    parts = [
        "tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0",
        "port 53",
        _http("tcp[((tcp[12:1] & 0xf0) >> 2)"),
        "icmp[icmptype] = icmp-unreach or icmp[icmptype] = icmp-timxceed",
        "(ip6 and ip6[6] = 6 and ip6[53] & 7 != 0)",
        "(ip6 and ip6[6] = 6 and " + _http("ip6[40 + ((ip6[52] & 0xf0) >> 2)") + ")",
        "(ip6 and ip6[6] = 58 and (ip6[40] = 1 or ip6[40] = 3))",
    ]
    if vxlan:
        parts.append("(" + vxlan_inner() + ")")
    return " or ".join(f"({p})" for p in parts)


@functools.lru_cache(maxsize=64)
def _compile(expr: str, snaplen: int) -> tuple[tuple[int, int, int, int], ...]:
    try:
        out = subprocess.run(["tcpdump", "-ddd", "-y", "EN10MB", "-s", str(snaplen), expr],
                             capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise RuntimeError("tcpdump is needed to compile capture filters "
                           "(apt-get install tcpdump)") from None
    if out.returncode != 0:
        raise ValueError(f"bad capture filter {expr!r}: {out.stderr.strip()}")
    lines = out.stdout.split("\n")
    n = int(lines[0])
    prog = tuple(tuple(int(x) for x in line.split()) for line in lines[1:1 + n])
    if len(prog) != n or any(len(i) != 4 for i in prog):
        raise ValueError(f"unexpected tcpdump -ddd output for {expr!r}")
    return prog  # type: ignore[return-value]


def compile_filter(expr: str, snaplen: int = 262144) -> Program:
    """Compile a pcap-filter expression to classic BPF (``""``: accept everything)."""
    if not expr.strip():
        return list(ACCEPT_ALL)
    return list(_compile(expr, snaplen))


def attach(sock: socket.socket, program: Sequence[tuple[int, int, int, int]]) -> None:
    """Attach ``program`` to ``sock`` with ``SO_ATTACH_FILTER`` (replacing any filter)."""
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _any(values: Iterable[str]) -> str:
    vals = list(values)
    return "(" + " or ".join(vals) + ")" if vals else ""


def capture_expression(*, hosts: Iterable[str] = (), nets: Iterable[str] = (),
                       src_nets: Iterable[str] = (), dst_nets: Iterable[str] = (),
                       ports: Iterable[int] = (), src_ports: Iterable[int] = (),
                       dst_ports: Iterable[int] = (), protocols: Iterable[str] = ()) -> str:
    """A pcap-filter expression from observe-style filters (values OR, fields AND).

    ``hosts`` are the addresses of ``--pod``/``--namespace`` (either end); ``nets`` CIDRs of
    ``--ip``; protocols are Protocol names (``TCP``, ``ICMPv6`` ...). Matching is on the
    outer headers (VXLAN-encapsulated packets match by their underlay addresses).

    Example::

        >>> capture_expression(nets=["10.244.0.0/16"], ports=[53, 80], protocols=["UDP"])
        '(net 10.244.0.0/16) and (port 53 or port 80) and (udp)'
    """
    proto = {"TCP": "tcp", "UDP": "udp", "ICMP": "icmp", "ICMPV6": "icmp6", "SCTP": "sctp"}
    groups = [
        _any(f"host {h}" for h in hosts),
        _any(f"net {n}" for n in nets),
        _any(f"src net {n}" for n in src_nets),
        _any(f"dst net {n}" for n in dst_nets),
        _any(f"port {int(p)}" for p in ports),
        _any(f"src port {int(p)}" for p in src_ports),
        _any(f"dst port {int(p)}" for p in dst_ports),
        _any(proto.get(p.upper(), p.lower()) for p in protocols),
    ]
    return " and ".join(g for g in groups if g)
