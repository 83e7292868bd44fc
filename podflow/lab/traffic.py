"""Traffic spec parsing and the client side of the lab's workload processes.

A traffic entry is ``{from: NS/WORKLOAD | external/NAME, to: TARGET, every: 1s, http: {...}}``
where TARGET is ``service/NS/NAME:PORT`` (its ClusterIP), ``loadbalancer/NS/NAME:PORT`` (the
LoadBalancer Service's VIP, at the service port), ``nodeport/PORT``, ``external/NAME:PORT``,
``pod/NS/WORKLOAD:PORT`` or ``dns/NAME:PORT`` (a name the client resolves through the cluster
DNS first, see :mod:`podflow.lab.named`). :func:`resolve` turns a target into the address to
connect to, given the current :class:`~podflow.lab.state.LabState`; :func:`target_for_ip`
names the target an address stands for; :func:`attempt` makes one connection (TCP ones speak
HTTP as the entry's optional ``http`` section says, see :mod:`podflow.lab.httpwire`) and
returns its ground-truth record.

Example::

    >>> parse_every("500ms"), parse_every("2s"), parse_every(3)
    (0.5, 2.0, 3.0)
    >>> parse_target("service/shop/backend:9000")
    Target(kind='service', namespace='shop', name='backend', port=9000)
    >>> parse_target("dns/db.example.com:5432").name
    'db.example.com'
    >>> parse_target("loadbalancer/shop/frontend-lb:443").category
    'loadbalancer'
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

from podflow.lab.httpwire import HttpSpec, build_request, delay_for_path, parse_status
from podflow.lab.state import LabState
from podflow.lab.truth import CATEGORIES_BY_TARGET
from podflow.model.flow import Address

MIN_EVERY = 0.1
"""Lower bound on a client's period (bounded load)."""
CONNECT_TIMEOUT = 2.0
"""TCP connect and read timeout, seconds."""
UDP_TIMEOUT = 1.0
"""How long a UDP client waits for the echo."""


def parse_every(value: str | float | int) -> float:
    """``"1s"``, ``"500ms"``, ``"2m"`` or a number of seconds -> seconds (>= 0.1)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", value)
        if not m:
            raise ValueError(f"bad period {value!r}: use e.g. 1s, 500ms or a number of seconds")
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
        seconds = float(m.group(1)) * scale
    if seconds < MIN_EVERY:
        raise ValueError(f"period {value!r} is below the minimum of {MIN_EVERY}s")
    return seconds


def parse_port(spec: str | int) -> tuple[str, int]:
    """``"tcp/8080"`` -> ``("tcp", 8080)``; a bare number means TCP."""
    if isinstance(spec, int):
        return "tcp", spec
    proto, _, port = spec.rpartition("/")
    return (proto.lower() or "tcp"), int(port)


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed traffic target."""

    kind: str
    """``service``, ``loadbalancer``, ``nodeport``, ``external``, ``pod`` or ``dns``."""
    namespace: str | None
    """Namespace for service, loadbalancer and pod targets."""
    name: str | None
    """Service, external or workload name, or the DNS name (None for nodeport)."""
    port: int
    """Service port, nodePort, external port or container port."""

    @property
    def category(self) -> str:
        """Connection category: clusterip, loadbalancer, nodeport, egress or podip (``dns``:
        unknown yet)."""
        return CATEGORIES_BY_TARGET.get(self.kind, "dns")

    @property
    def text(self) -> str:
        """The target in spec syntax, e.g. ``service/shop/backend:9000``."""
        if self.kind in ("service", "pod", "loadbalancer"):
            return f"{self.kind}/{self.namespace}/{self.name}:{self.port}"
        if self.kind == "nodeport":
            return f"nodeport/{self.port}"
        return f"{self.kind}/{self.name}:{self.port}"


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_DNS_NAME = rf"{_LABEL}(?:\.{_LABEL})*\.?"


def parse_target(text: str) -> Target:
    """Parse a spec target string (ValueError with the accepted forms if malformed)."""
    m = re.fullmatch(r"(service|pod|loadbalancer)/([^/:]+)/([^/:]+):(\d+)"
                     r"|external/([^/:]+):(\d+)"
                     rf"|nodeport/(\d+)|dns/({_DNS_NAME}):(\d+)", text.strip())
    if not m or int(m.group(4) or m.group(6) or m.group(7) or m.group(9)) > 65535:
        raise ValueError(f"bad traffic target {text!r}: use service/NS/NAME:PORT, "
                         "loadbalancer/NS/NAME:PORT, nodeport/PORT, external/NAME:PORT, "
                         "pod/NS/WORKLOAD:PORT or dns/NAME:PORT")
    if m.group(1):
        return Target(m.group(1), m.group(2), m.group(3), int(m.group(4)))
    if m.group(5):
        return Target("external", None, m.group(5), int(m.group(6)))
    if m.group(8):
        return Target("dns", None, m.group(8), int(m.group(9)))
    return Target("nodeport", None, None, int(m.group(7)))


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where one attempt goes."""

    ip: str
    """Address to connect to."""
    port: int
    """Port to connect to."""
    proto: str
    """``tcp`` or ``udp``."""


def resolve(state: LabState, target: Target, turn: int) -> Resolved | None:
    """The address for ``target`` now; ``turn`` picks round robin. None if nothing backs it."""
    if target.kind in ("service", "loadbalancer"):
        svc = state.service(target.namespace or "", target.name or "")
        ip = svc.clusterIP if target.kind == "service" else svc.loadBalancerIP
        if ip is None:
            raise KeyError(f"service {svc.namespace}/{svc.name} has no load-balancer IP")
        for sp in svc.ports:
            if sp.port == target.port:
                return Resolved(ip, sp.port, sp.protocol.lower())
        raise KeyError(f"service {svc.namespace}/{svc.name} has no port {target.port}")
    if target.kind == "nodeport":
        proto = nodeport_service(state, target.port)[1].protocol.lower()
        nodes = sorted(state.nodes, key=lambda n: n.index)
        return Resolved(nodes[turn % len(nodes)].ip, target.port, proto) if nodes else None
    if target.kind == "external":
        ext = state.external(target.name or "")
        proto = next((p for p, n in map(parse_port, ext.ports) if n == target.port), "tcp")
        return Resolved(ext.ip, target.port, proto)
    pods = sorted(state.pods_of(target.namespace or "", target.name or ""), key=lambda p: p.name)
    if not pods:
        return None
    pod = pods[turn % len(pods)]
    proto = next((p for p, n in map(parse_port, pod.ports) if n == target.port), "tcp")
    return Resolved(pod.ip, target.port, proto)


def target_for_ip(state: LabState, ip: str, port: int) -> Target | None:
    """The canonical target connecting to ``ip:port`` means now, or None if not a lab address.

    A ClusterIP with that service port -> ``service``, a LoadBalancer VIP with that service
    port -> ``loadbalancer``, a pod IP -> ``pod`` (its workload), an external host ->
    ``external``, a node IP with that nodePort -> ``nodeport``.
    """
    for svc in state.services:
        if svc.clusterIP == ip and any(sp.port == port for sp in svc.ports):
            return Target("service", svc.namespace, svc.name, port)
        if svc.type == "LoadBalancer" and svc.loadBalancerIP == ip \
                and any(sp.port == port for sp in svc.ports):
            return Target("loadbalancer", svc.namespace, svc.name, port)
    for pod in state.pods:
        if pod.ip == ip:
            return Target("pod", pod.namespace, pod.workload, port)
    for ext in state.externals:
        if ext.ip == ip:
            return Target("external", None, ext.name, port)
    if any(n.ip == ip for n in state.nodes):
        with contextlib.suppress(KeyError):
            nodeport_service(state, port)
            return Target("nodeport", None, None, port)
    return None


def nodeport_service(state: LabState, node_port: int) -> tuple[Any, Any]:
    """The (ServiceState, ServicePortState) owning ``node_port``; KeyError if none."""
    for svc in state.services:
        for sp in svc.ports:
            if sp.nodePort == node_port:
                return svc, sp
    raise KeyError(f"no service has nodePort {node_port}")


async def _tcp(ip: str, port: int, rec: dict[str, Any], http: HttpSpec, host: str) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    rec["http_method"], rec["http_path"], rec["http_expect"] = (http.method, http.path,
                                                                http.expect)
    try:
        sock.bind(("0.0.0.0", 0))
        rec["local_port"] = sock.getsockname()[1]
        await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), CONNECT_TIMEOUT)
        rec["local_ip"], rec["local_port"] = sock.getsockname()[:2]
        await loop.sock_sendall(sock, build_request(http, host))
        sent = time.monotonic()
        deadline = sent + CONNECT_TIMEOUT + delay_for_path(http.path)
        response = b""
        while True:
            remaining = deadline - time.monotonic()
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), max(remaining, 0.01))
            if not chunk:
                break
            if not response:
                rec["http_latency"] = round(time.monotonic() - sent, 6)
            response += chunk
        rec["http_status"] = status = parse_status(response)
        if status is None:
            rec["outcome"], rec["error"] = "error", f"bad response {response[:40]!r}"
        else:
            rec["outcome"] = "ok"
    finally:
        if rec["local_ip"] in (None, "0.0.0.0"):   # failed: the kernel forgot the source
            rec["local_ip"] = route_source(ip, port)
        sock.close()


def route_source(ip: str, port: int) -> str | None:
    """The source address the kernel's routes pick toward ``ip`` (no packet is sent).

    A failed TCP connect resets the socket's own address, yet its SYNs left with this one:
    a host-network client's may be a tunnel or bridge address rather than the node IP, and
    the ground truth must name the address podflow saw.
    """
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.connect((ip, port))
        return str(u.getsockname()[0])
    return None


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def _udp(ip: str, port: int, rec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Echo, remote_addr=(ip, port))
    try:
        rec["local_ip"], rec["local_port"] = transport.get_extra_info("sockname")[:2]
        transport.sendto(b"podflow-lab\n")
        try:
            await asyncio.wait_for(proto.done, UDP_TIMEOUT)
        except TimeoutError:
            rec["outcome"], rec["error"] = "timeout", "no echo"
            return
        rec["outcome"] = "ok"
    finally:
        transport.close()


async def attempt(target_text: str, category: str, dest: Resolved,
                  client: dict[str, Any], http: HttpSpec | None = None,
                  host: str | None = None) -> dict[str, Any]:
    """Make one connection to ``dest``; return the ``connect`` truth record.

    ``client`` holds ``client``, ``client_ip``, ``workload`` and ``node`` for the record.
    TCP connections send ``http`` (default ``GET /podflow-lab``) with ``Host: host`` (default
    ``ip:port``); any HTTP response is outcome ``ok``, its status goes in ``http_status``.
    """
    rec: dict[str, Any] = {"type": "connect", "time": time.time(), **client,
                           "target": target_text, "category": category, "proto": dest.proto,
                           "remote_ip": dest.ip, "remote_port": dest.port,
                           "local_ip": None, "local_port": None, "outcome": "error",
                           "error": None, "duration": 0.0}
    start = time.monotonic()
    try:
        if dest.proto == "tcp":
            await _tcp(dest.ip, dest.port, rec, http or HttpSpec(),
                       host or str(Address(dest.ip, dest.port)))
        else:
            await _udp(dest.ip, dest.port, rec)
    except ConnectionRefusedError as exc:
        rec["outcome"], rec["error"] = "refused", str(exc)
    except TimeoutError:
        rec["outcome"], rec["error"] = "timeout", "timed out"
    except OSError as exc:
        rec["outcome"], rec["error"] = "error", f"{type(exc).__name__}: {exc}"
    if rec["local_ip"] in (None, "0.0.0.0"):
        rec["local_ip"] = client.get("client_ip")
    rec["duration"] = round(time.monotonic() - start, 6)
    return rec
