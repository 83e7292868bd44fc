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
from dataclasses import dataclass
from typing import Any

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
                       r"(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")


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
    """A ClusterIP or NodePort Service."""

    namespace: str
    name: str
    type: str
    selector: dict[str, str]
    ports: tuple[ServicePortSpec, ...]
    externalTrafficPolicy: str = "Cluster"
    clusterIP: str | None = None
    """A fixed ClusterIP (kube-dns: serviceCIDR + 10); None: allocated by the lab."""


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
    ``nodeport``, ``external`` or ``pod``; ``target_namespace`` is "" where it has no meaning.
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
            raise SpecError(f"{path}: unknown field {k!r} (allowed: {', '.join(allowed)})")
    for k in required:
        if k not in v:
            raise SpecError(f"{path}: missing required field {k!r}")
    return {str(k): x for k, x in v.items()}


def _show(v: Any) -> str:
    return f'"{v}"' if isinstance(v, str) else f"{type(v).__name__} {v!r}"


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
        raise SpecError(f"{path}: must be between {lo} and {hi}, got {v}")
    return int(v)


def _name(v: Any, path: str) -> str:
    s = _string(v, path)
    if not _DNS_LABEL.match(s):
        raise SpecError(f"{path}: not a valid DNS label (lowercase letters, digits, '-'): {s!r}")
    return s


def _labels(v: Any, path: str) -> dict[str, str]:
    if not isinstance(v, dict):
        raise SpecError(f"{path}: expected a mapping of label: value, got {_show(v)}")
    out = {}
    for k, x in v.items():
        if not isinstance(k, str) or not isinstance(x, (str, int)) or isinstance(x, bool):
            raise SpecError(f"{path}.{k}: label keys and values must be strings")
        out[k] = str(x)
    return out


def _port(v: Any, path: str) -> PortSpec:
    m = re.fullmatch(r"(tcp|udp)/(\d{1,5})", v) if isinstance(v, str) else None
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


def _cidr(v: Any, path: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(_string(v, path))
    except ValueError as e:
        raise SpecError(f"{path}: not an IPv4 network: {e}") from e


def _dns_names(v: Any, path: str) -> tuple[str, ...]:
    out = []
    for i, n in enumerate(_seq(v, path)):
        s = _string(n, f"{path}[{i}]").lower().rstrip(".")
        if not _DNS_NAME.match(s) or s.endswith("cluster.local"):
            raise SpecError(f"{path}[{i}]: not a valid DNS name outside cluster.local: {n!r}")
        out.append(s)
    _unique(out, path, "name")
    return tuple(out)


def _duration(v: Any, path: str) -> float:
    m = _DURATION.match(v) if isinstance(v, str) else None
    if not m:
        raise SpecError(f'{path}: expected a duration like "1s", "500ms" or "2m", got {_show(v)}')
    secs = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(2)]
    if secs < 0.1:
        raise SpecError(f"{path}: {v} is below the minimum of 100ms")
    return secs


def _traffic(v: Any, path: str, workloads: tuple[WorkloadSpec, ...],
             services: tuple[ServiceSpec, ...],
             externals: tuple[ExternalSpec, ...]) -> TrafficSpec:
    d = _mapping(v, path, ("from", "to"), ("every", "http"))
    http: dict[str, Any] | None = None
    if d.get("http") is not None:
        from podflow.lab.httpwire import parse_http

        try:
            parse_http(d["http"])
        except ValueError as exc:
            raise SpecError(f"{path}.http: {exc}") from None
        http = dict(d["http"])
    src, dst = _string(d["from"], f"{path}.from"), _string(d["to"], f"{path}.to")
    every = _duration(d.get("every", "1s"), f"{path}.every")
    ext = {e.name: e for e in externals}
    wl = {(w.namespace, w.name): w for w in workloads}
    parts = src.split("/")
    if len(parts) != 2:
        raise SpecError(f'{path}.from: expected "NS/WORKLOAD" or "external/NAME", got "{src}"')
    if parts[0] == "external":
        if parts[1] not in ext:
            raise SpecError(f"{path}.from: no external named {parts[1]!r}")
        skind, sns = "external", ""
    else:
        if tuple(parts) not in wl:
            raise SpecError(f"{path}.from: no workload {src!r}")
        skind, sns = "workload", parts[0]
    if dst.startswith("dns/"):
        # a name resolved by the cluster DNS at run time: only the syntax is checked here
        from podflow.lab.traffic import parse_target

        try:
            t = parse_target(dst)
        except ValueError as exc:
            raise SpecError(f"{path}.to: {exc}") from None
        return TrafficSpec(src, dst, every, skind, sns, parts[1], "dns", "", t.name or "",
                           t.port, http)
    m = re.fullmatch(r"(service|pod)/([^/:]+)/([^/:]+):(\d+)|(external)/([^/:]+):(\d+)"
                     r"|(nodeport)/(\d+)", dst)
    if not m:
        raise SpecError(f'{path}.to: expected "service/NS/NAME:PORT", "nodeport/PORT", '
                        f'"external/NAME:PORT", "pod/NS/WORKLOAD:PORT" or "dns/NAME:PORT", '
                        f'got "{dst}"')
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
    }[tkind]()
    if not ok:
        raise SpecError(f"{path}.to: {dst!r} does not exist (no such {tkind} with port {port})")
    return TrafficSpec(src, dst, every, skind, sns, parts[1], tkind, tns, tname, port, http)


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise SpecError(f"{path}: expected true or false, got {_show(v)}")
    return v
