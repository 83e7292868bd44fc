"""Lab spec building blocks: the error type, the value classes and the field parsers.

Every parser takes the raw YAML value and its path, and raises :class:`SpecError` naming
that path, e.g. ``workloads[1].ports[0]: expected "tcp/PORT" or "udp/PORT", got "8080"``.
:mod:`podflow.lab.spec` assembles them into a :class:`~podflow.lab.spec.LabSpec`.

Example::

    >>> _port("tcp/8080", "ports[0]")
    PortSpec(protocol='tcp', port=8080)
"""

from __future__ import annotations

import ipaddress
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

# Kubernetes' name rules (k8s.io/apimachinery/pkg/util/validation). Always used with
# ``fullmatch``: ``$`` would let a trailing newline through, which splits rendered rules.
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
"""RFC 1123 label: namespaces, workloads, externals."""
_DNS_1035_LABEL = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
"""RFC 1035 label (starts with a letter): Service names."""
_DNS_NAME = re.compile(r"(?=.{1,253}\Z)[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
                       r"(?:\.[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)*", re.DOTALL)
"""RFC 1123 subdomain: DNS names, label-key prefixes."""
_PORT_NAME = re.compile(r"(?=.{1,15}\Z)(?=.*[a-z])(?!.*--)[a-z0-9](?:[-a-z0-9]*[a-z0-9])?",
                        re.DOTALL)
"""IANA service name: Service port names (at most 15, a letter, no ``--``)."""
_LABEL_NAME = re.compile(r"(?=.{1,63}\Z)[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?", re.DOTALL)
"""A label key's name part, and a non-empty label value."""
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m)")
MAX_EVERY = 86400.0
"""Longest traffic period, seconds (a day)."""

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother, _SHOW.maxlong = 2, 40, 40, 40
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = _SHOW.maxfrozenset = 4
"""Renders a bad value in an error message within a few hundred characters, however big or
self-referential it is (``_show``)."""


class SpecError(ValueError):
    """An invalid lab spec; the message starts with the path of the offending field."""


@dataclass(frozen=True)
class PortSpec:
    """A listening port, ``tcp/8080``."""

    protocol: str
    """``tcp`` or ``udp``."""
    port: int
    """Port number."""

    def __str__(self) -> str:
        return f"{self.protocol}/{self.port}"


@dataclass(frozen=True)
class WorkloadSpec:
    """A Deployment: ``replicas`` pods with the same labels and ports."""

    namespace: str
    name: str
    replicas: int
    labels: dict[str, str]
    ports: tuple[PortSpec, ...]
    node: int | None = None
    """1-based node index all replicas are pinned to (None: round robin)."""
    hostNetwork: bool = False
    """Pods run in their node's netns with the node IP (``spec.hostNetwork: true``)."""


@dataclass(frozen=True)
class ServicePortSpec:
    """One Service port."""

    name: str | None
    port: int
    targetPort: int
    protocol: str = "TCP"
    nodePort: int | None = None


@dataclass(frozen=True)
class ServiceSpec:
    """A ClusterIP, NodePort or LoadBalancer Service."""

    namespace: str
    name: str
    type: str
    selector: dict[str, str]
    ports: tuple[ServicePortSpec, ...]
    externalTrafficPolicy: str = "Cluster"
    clusterIP: str | None = None
    """A fixed ClusterIP (kube-dns: serviceCIDR + 10); None: allocated by the lab."""
    loadBalancerIP: str | None = None
    """LoadBalancer only: its VIP, from the lab's ``loadBalancerPool`` (``spec.loadBalancerIP``
    if the spec gave one, else the lowest free address, as MetalLB's allocator assigns)."""


@dataclass(frozen=True)
class ExternalSpec:
    """A host outside the cluster."""

    name: str
    ip: str
    ports: tuple[PortSpec, ...] = ()
    dns: tuple[str, ...] = ()
    """DNS names the cluster DNS answers with ``ip`` (e.g. ``db.example.com``)."""


@dataclass(frozen=True)
class TrafficSpec:
    """``from`` connects to ``to`` every ``every`` seconds.

    ``source_kind`` is ``workload`` or ``external``; ``target_kind`` is ``service``,
    ``loadbalancer``, ``nodeport``, ``external``, ``pod`` or ``dns``; ``target_namespace`` is
    "" where it has no meaning.
    """

    source: str
    target: str
    every: float
    source_kind: str
    source_namespace: str
    source_name: str
    target_kind: str
    target_namespace: str
    target_name: str
    target_port: int
    http: dict[str, Any] | None = None
    """Optional ``{method, path, expect}`` for the HTTP request each connection sends."""


# -- field parsers: each takes the value and its path, returns the typed value ----------
def _mapping(v: Any, path: str, required: tuple[str, ...] = (),
             optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise SpecError(f"{path}: expected a mapping, got {_show(v)}")
    allowed = required + optional
    for k in v:
        if k not in allowed:
            raise SpecError(f"{path}: unknown field {_quote(k)} (allowed: {', '.join(allowed)})")
    for k in required:
        if k not in v:
            raise SpecError(f"{path}: missing required field {k!r}")
    return {str(k): x for k, x in v.items()}


def _clip(text: str, limit: int = 60) -> str:
    """``text`` for a one-line message: control characters escaped, at most ``limit``."""
    shown = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _show(v: Any) -> str:
    """A bad value for an error message: a string in double quotes, else its type and a
    bounded repr (a YAML alias bomb or a huge list renders in a few hundred characters)."""
    if isinstance(v, str):
        return f'"{_clip(v)}"'
    return f"{type(v).__name__} {_SHOW.repr(v)}"


def _quote(v: Any) -> str:
    """A user-given name or key for an error message: ``'name'``, bounded and escaped."""
    return repr(_clip(v)) if isinstance(v, str) else _show(v)


def _seq(v: Any, path: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise SpecError(f"{path}: expected a list, got {_show(v)}")
    return v


def _string(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise SpecError(f"{path}: expected a non-empty string, got {_show(v)}")
    return v


def _integer(v: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(f"{path}: expected an integer, got {_show(v)}")
    if not lo <= v <= hi:
        raise SpecError(f"{path}: must be between {lo} and {hi}, got {_SHOW.repr(v)}")
    return int(v)


def _name(v: Any, path: str) -> str:
    """A Kubernetes object name that is an RFC 1123 DNS label."""
    s = _string(v, path)
    if not _DNS_LABEL.fullmatch(s):
        raise SpecError(f"{path}: not a valid DNS label (lowercase letters, digits, '-', at "
                        f"most 63, starting and ending with a letter or digit): {_quote(s)}")
    return s


def _service_name(v: Any, path: str) -> str:
    """A Service name: an RFC 1035 label (a DNS label that starts with a letter)."""
    s = _name(v, path)
    if not _DNS_1035_LABEL.fullmatch(s):
        raise SpecError(f"{path}: a Service name must start with a letter: {_quote(s)}")
    return s


def _port_name(v: Any, path: str) -> str:
    """A Service port name: an IANA service name."""
    s = _string(v, path)
    if not _PORT_NAME.fullmatch(s):
        raise SpecError(f"{path}: not a valid port name (lowercase letters, digits, '-', at "
                        f"most 15, at least one letter, no '--' and no '-' at either end): "
                        f"{_quote(s)}")
    return s


def _label_key(k: Any, path: str) -> str:
    """A label key: ``[prefix/]name``, the prefix a DNS subdomain, the name at most 63
    letters, digits, '-', '_' and '.' (alphanumeric at both ends)."""
    if not isinstance(k, str):
        raise SpecError(f"{path}: label keys must be strings, got {_show(k)}")
    prefix, slash, name = k.rpartition("/")
    if (slash and not _DNS_NAME.fullmatch(prefix)) or not _LABEL_NAME.fullmatch(name):
        raise SpecError(f"{path}: invalid label key {_quote(k)}: expected [PREFIX/]NAME, "
                        "NAME at most 63 letters, digits, '-', '_', '.' (alphanumeric at "
                        "both ends), PREFIX a DNS subdomain")
    return k


def _label_value(x: Any, path: str) -> str:
    """A label value: empty, or at most 63 letters, digits, '-', '_' and '.' (alphanumeric
    at both ends); integers are taken as their decimal text."""
    if isinstance(x, bool) or not isinstance(x, (str, int)):
        raise SpecError(f"{path}: label values must be strings, got {_show(x)}")
    s = x if isinstance(x, str) else str(x) if abs(x) < 10**63 else "-"
    if s and not _LABEL_NAME.fullmatch(s):
        raise SpecError(f"{path}: invalid label value {_show(x)}: at most 63 letters, "
                        "digits, '-', '_', '.' (alphanumeric at both ends), or empty")
    return s


def _labels(v: Any, path: str) -> dict[str, str]:
    """Labels or a selector: Kubernetes label keys and values."""
    if not isinstance(v, dict):
        raise SpecError(f"{path}: expected a mapping of label: value, got {_show(v)}")
    out = {}
    for k, x in v.items():
        key = _label_key(k, path)
        out[key] = _label_value(x, f"{path}[{_quote(key)}]")
    return out


def _port(v: Any, path: str) -> PortSpec:
    m = re.fullmatch(r"(tcp|udp)/([0-9]{1,5})", v) if isinstance(v, str) else None
    if not m or not 1 <= int(m.group(2)) <= 65535:
        raise SpecError(f'{path}: expected "tcp/PORT" or "udp/PORT", got {_show(v)}')
    return PortSpec(m.group(1), int(m.group(2)))


def _ports(v: Any, path: str) -> tuple[PortSpec, ...]:
    out = tuple(_port(p, f"{path}[{i}]") for i, p in enumerate(_seq(v, path)))
    _unique(out, path, "port")
    return out


def _unique(items: Any, path: str, what: str) -> None:
    seen: set[Any] = set()
    for x in items:
        if x in seen:
            shown = "/".join(map(str, x)) if isinstance(x, tuple) else str(x)
            raise SpecError(f"{path}: duplicate {what} {shown}")
        seen.add(x)


_IP = TypeVar("_IP", ipaddress.IPv4Network, ipaddress.IPv4Address)


def _ip_value(v: Any, path: str, parse: Callable[[str], _IP], what: str) -> _IP:
    text = _string(v, path)
    try:
        return parse(text)
    except ValueError as e:
        raise SpecError(f"{path}: not an IPv4 {what}: {_clip(str(e), 120)}") from None


def _cidr(v: Any, path: str) -> ipaddress.IPv4Network:
    return _ip_value(v, path, ipaddress.IPv4Network, "network")


def _ipv4(v: Any, path: str) -> ipaddress.IPv4Address:
    return _ip_value(v, path, ipaddress.IPv4Address, "address")


def _dns_names(v: Any, path: str) -> tuple[str, ...]:
    out = []
    for i, n in enumerate(_seq(v, path)):
        s = _string(n, f"{path}[{i}]").lower().rstrip(".")
        if not _DNS_NAME.fullmatch(s) or s == "cluster.local" or s.endswith(".cluster.local"):
            raise SpecError(f"{path}[{i}]: not a valid DNS name outside cluster.local: "
                            f"{_quote(n)}")
        out.append(s)
    _unique(out, path, "name")
    return tuple(out)


def _duration(v: Any, path: str) -> float:
    m = _DURATION.fullmatch(v) if isinstance(v, str) else None
    if not m:
        raise SpecError(f'{path}: expected a duration like "1s", "500ms" or "2m", got {_show(v)}')
    secs = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(2)]
    if secs < 0.1:
        raise SpecError(f"{path}: {_clip(v)} is below the minimum of 100ms")
    if secs > MAX_EVERY:
        raise SpecError(f"{path}: {_clip(v)} is above the maximum of {MAX_EVERY // 60:.0f}m")
    return secs


_TARGET = re.compile(r"(service|pod|loadbalancer)/([^/:]+)/([^/:]+):([0-9]{1,5})"
                     r"|(external)/([^/:]+):([0-9]{1,5})|(nodeport)/([0-9]{1,5})")


def _traffic(v: Any, path: str, workloads: tuple[WorkloadSpec, ...],
             services: tuple[ServiceSpec, ...],
             externals: tuple[ExternalSpec, ...]) -> TrafficSpec:
    d = _mapping(v, path, ("from", "to"), ("every", "http"))
    http = _http(d.get("http"), f"{path}.http")
    src, dst = _string(d["from"], f"{path}.from"), _string(d["to"], f"{path}.to")
    every = _duration(d.get("every", "1s"), f"{path}.every")
    ext = {e.name: e for e in externals}
    wl = {(w.namespace, w.name): w for w in workloads}
    skind, sns, sname = _source(src, f"{path}.from", wl, ext)
    if dst.startswith("dns/"):
        # a name resolved by the cluster DNS at run time: only the syntax is checked here
        name, port = _dns_target(dst, f"{path}.to")
        return TrafficSpec(src, dst, every, skind, sns, sname, "dns", "", name, port, http)
    tkind, tns, tname, port = _target(dst, f"{path}.to", wl, services, ext)
    return TrafficSpec(src, dst, every, skind, sns, sname, tkind, tns, tname, port, http)


def _http(v: Any, path: str) -> dict[str, Any] | None:
    """The optional ``http: {method, path, expect}`` of a traffic entry."""
    if v is None:
        return None
    from podflow.lab.httpwire import parse_http

    try:
        spec = parse_http(v)
    except ValueError as exc:
        raise SpecError(f"{path}: {_clip(str(exc), 200)}") from None
    if not (spec.path.isascii() and spec.path.isprintable()):
        raise SpecError(f"{path}.path: must be printable ASCII, got {_show(spec.path)}")
    return dict(v)


def _source(src: str, path: str, wl: dict[tuple[str, str], WorkloadSpec],
            ext: dict[str, ExternalSpec]) -> tuple[str, str, str]:
    """(kind, namespace, name) of a traffic entry's ``from``."""
    parts = src.split("/")
    if len(parts) != 2:
        raise SpecError(f'{path}: expected "NS/WORKLOAD" or "external/NAME", got {_show(src)}')
    if parts[0] == "external":
        if parts[1] not in ext:
            raise SpecError(f"{path}: no external named {_quote(parts[1])}")
        return "external", "", parts[1]
    if (parts[0], parts[1]) not in wl:
        raise SpecError(f"{path}: no workload {_quote(src)}")
    return "workload", parts[0], parts[1]


def _dns_target(dst: str, path: str) -> tuple[str, int]:
    """(name, port) of a ``dns/NAME:PORT`` target (the name is resolved at run time)."""
    from podflow.lab.traffic import parse_target

    try:
        t = parse_target(dst)
    except ValueError as exc:
        raise SpecError(f"{path}: {_clip(str(exc), 300)}") from None
    name = t.name or ""
    if dst != dst.strip() or len(name.rstrip(".")) > 253 or not 1 <= t.port <= 65535:
        raise SpecError(f"{path}: expected dns/NAME:PORT (a DNS name of at most 253 "
                        f"characters, a port 1-65535), got {_show(dst)}")
    return name, t.port


def _target(dst: str, path: str, wl: dict[tuple[str, str], WorkloadSpec],
            services: tuple[ServiceSpec, ...], ext: dict[str, ExternalSpec],
            ) -> tuple[str, str, str, int]:
    """(kind, namespace, name, port) of a traffic entry's ``to``, which must exist."""
    m = _TARGET.fullmatch(dst)
    if not m:
        raise SpecError(f'{path}: expected "service/NS/NAME:PORT", '
                        f'"loadbalancer/NS/NAME:PORT", "nodeport/PORT", "external/NAME:PORT", '
                        f'"pod/NS/WORKLOAD:PORT" or "dns/NAME:PORT", got {_show(dst)}')
    if m.group(1):
        tkind, tns, tname, port = m.group(1), m.group(2), m.group(3), int(m.group(4))
    elif m.group(5):
        tkind, tns, tname, port = "external", "", m.group(6), int(m.group(7))
    else:
        tkind, tns, tname, port = "nodeport", "", "", int(m.group(9))
    ok = {
        "service": lambda: any(s.namespace == tns and s.name == tname and
                               any(p.port == port for p in s.ports) for s in services),
        "pod": lambda: (tns, tname) in wl and any(p.port == port for p in wl[tns, tname].ports),
        "external": lambda: tname in ext and any(p.port == port for p in ext[tname].ports),
        "nodeport": lambda: any(p.nodePort == port for s in services for p in s.ports),
        "loadbalancer": lambda: any(s.namespace == tns and s.name == tname and
                                    s.type == "LoadBalancer" and
                                    any(p.port == port for p in s.ports) for s in services),
    }[tkind]()
    if not ok and tkind == "loadbalancer" and any(
            (s.namespace, s.name) == (tns, tname) for s in services):
        raise SpecError(f"{path}: {_quote(dst)} does not exist (service {tns}/{tname} is not "
                        f"of type LoadBalancer or has no port {port})")
    if not ok:
        raise SpecError(f"{path}: {_quote(dst)} does not exist (no such {tkind} with port "
                        f"{port})")
    return tkind, tns, tname, port


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise SpecError(f"{path}: expected true or false, got {_show(v)}")
    return v
