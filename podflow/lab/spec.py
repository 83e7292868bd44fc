"""Lab specs: YAML -> typed, validated, frozen dataclasses.

Every error names the place it comes from, e.g.
``workloads[1].ports[0]: expected "tcp/PORT" or "udp/PORT", got "8080"``.

Example::

    spec = load_spec(Path("shop.yaml"))
    spec.node_cidr(2)          # IPv4Network('10.244.1.0/24')
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SUPPORTED_CNIS", "ExternalSpec", "LabSpec", "PortSpec", "ServicePortSpec",
           "ServiceSpec", "SpecError", "TrafficSpec", "WorkloadSpec", "load_default_spec",
           "load_spec", "parse_spec"]

SUPPORTED_CNIS = ("flannel-vxlan",)
"""CNI datapaths the lab can build."""

LAB_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,11}$")
"""Lab names: short, so netns and interface names stay short and prefixes never overlap."""
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
RESERVED_NAMESPACES = ("external", "node", "service", "nodeport", "pod")
"""Namespace names that would make ``NS/NAME`` targets ambiguous."""


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


@dataclass(frozen=True)
class ExternalSpec:
    """A host outside the cluster."""

    name: str
    ip: str
    ports: tuple[PortSpec, ...] = ()


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


@dataclass(frozen=True)
class LabSpec:
    """A whole lab (cluster) description."""

    name: str
    cni: str
    nodes: int
    podCIDR: str
    serviceCIDR: str
    underlay: str
    namespaces: tuple[str, ...]
    workloads: tuple[WorkloadSpec, ...] = ()
    services: tuple[ServiceSpec, ...] = ()
    externals: tuple[ExternalSpec, ...] = ()
    traffic: tuple[TrafficSpec, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The input document (for reference only)."""

    def node_cidr(self, index: int) -> ipaddress.IPv4Network:
        """The /24 of node ``index`` (1-based): the index-th /24 of the pod CIDR."""
        net = ipaddress.IPv4Network(self.podCIDR)
        return ipaddress.IPv4Network((int(net.network_address) + (index - 1) * 256, 24))

    def node_ip(self, index: int) -> str:
        """Underlay address of node ``index``: network + index."""
        return str(ipaddress.IPv4Network(self.underlay).network_address + index)

    def underlay_gateway(self) -> str:
        """The fabric's address on the underlay: the last usable one."""
        return str(ipaddress.IPv4Network(self.underlay).broadcast_address - 1)

    def to_dict(self) -> dict[str, Any]:
        """The validated spec as a plain, normalised dict (``every`` in seconds)."""
        def ports(ps: tuple[PortSpec, ...]) -> list[str]:
            return [str(p) for p in ps]
        return {
            "name": self.name, "cni": self.cni, "nodes": self.nodes, "podCIDR": self.podCIDR,
            "serviceCIDR": self.serviceCIDR, "underlay": self.underlay,
            "namespaces": list(self.namespaces),
            "workloads": [{"namespace": w.namespace, "name": w.name, "replicas": w.replicas,
                           "labels": dict(w.labels), "ports": ports(w.ports), "node": w.node}
                          for w in self.workloads],
            "services": [{"namespace": s.namespace, "name": s.name, "type": s.type,
                          "selector": dict(s.selector),
                          "externalTrafficPolicy": s.externalTrafficPolicy,
                          "ports": [{"name": p.name, "port": p.port, "targetPort": p.targetPort,
                                     "protocol": p.protocol, "nodePort": p.nodePort}
                                    for p in s.ports]}
                         for s in self.services],
            "externals": [{"name": e.name, "ip": e.ip, "ports": ports(e.ports)}
                          for e in self.externals],
            "traffic": [{"from": t.source, "to": t.target, "every": t.every,
                         "source": {"kind": t.source_kind, "namespace": t.source_namespace,
                                    "name": t.source_name},
                         "target": {"kind": t.target_kind, "namespace": t.target_namespace,
                                    "name": t.target_name, "port": t.target_port}}
                        for t in self.traffic],
        }


# -- field parsers: each takes the value and its path, returns the typed value ---------------
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


def _cidrs(top: dict[str, Any], nodes: int) -> tuple[ipaddress.IPv4Network, ...]:
    pod = _cidr(top.get("podCIDR", "10.244.0.0/16"), "podCIDR")
    svc = _cidr(top.get("serviceCIDR", "10.96.0.0/16"), "serviceCIDR")
    und = _cidr(top.get("underlay", "172.18.0.0/24"), "underlay")
    if pod.prefixlen > 24 or 2 ** (24 - pod.prefixlen) < nodes:
        raise SpecError(f"podCIDR: {pod} has room for fewer than {nodes} node /24s")
    if svc.prefixlen > 28:
        raise SpecError(f"serviceCIDR: {svc} is too small (at most /28)")
    if und.num_addresses - 3 < nodes:
        raise SpecError(f"underlay: {und} has no room for {nodes} nodes plus a gateway")
    for (a, an), (b, bn) in (((pod, "podCIDR"), (svc, "serviceCIDR")),
                             ((pod, "podCIDR"), (und, "underlay")),
                             ((svc, "serviceCIDR"), (und, "underlay"))):
        if a.overlaps(b):
            raise SpecError(f"{bn}: {b} overlaps {an} {a}")
    return pod, svc, und


def _namespaces(v: Any) -> tuple[str, ...]:
    out = tuple(_name(n, f"namespaces[{i}]") for i, n in enumerate(_seq(v, "namespaces")))
    for i, n in enumerate(out):
        if n in RESERVED_NAMESPACES:
            raise SpecError(f"namespaces[{i}]: {n!r} is reserved (it names a target kind)")
    _unique(out, "namespaces", "namespace")
    return out


def _in_namespace(v: Any, path: str, namespaces: tuple[str, ...]) -> str:
    ns = _string(v, path)
    if ns not in namespaces:
        raise SpecError(f"{path}: namespace {ns!r} is not declared in namespaces "
                        f"({', '.join(namespaces) or 'none'})")
    return ns


def _workload(v: Any, path: str, namespaces: tuple[str, ...], nodes: int) -> WorkloadSpec:
    d = _mapping(v, path, ("namespace", "name"), ("replicas", "labels", "ports", "node"))
    node = d.get("node")
    return WorkloadSpec(
        namespace=_in_namespace(d["namespace"], f"{path}.namespace", namespaces),
        name=_name(d["name"], f"{path}.name"),
        replicas=_integer(d.get("replicas", 1), f"{path}.replicas", 0, 100),
        labels=_labels(d.get("labels", {"app": d["name"]}), f"{path}.labels"),
        ports=_ports(d.get("ports", []), f"{path}.ports"),
        node=None if node is None else _integer(node, f"{path}.node", 1, nodes))


def _service_port(v: Any, path: str, svc_type: str) -> ServicePortSpec:
    d = _mapping(v, path, ("port",), ("name", "targetPort", "nodePort", "protocol"))
    port = _integer(d["port"], f"{path}.port", 1, 65535)
    proto = _string(d.get("protocol", "TCP"), f"{path}.protocol").upper()
    if proto not in ("TCP", "UDP"):
        raise SpecError(f"{path}.protocol: expected TCP or UDP, got {_show(d['protocol'])}")
    node_port = d.get("nodePort")
    if node_port is not None:
        if svc_type != "NodePort":
            raise SpecError(f"{path}.nodePort: only NodePort services have a nodePort")
        node_port = _integer(node_port, f"{path}.nodePort", 30000, 32767)
    name = d.get("name")
    return ServicePortSpec(None if name is None else _name(name, f"{path}.name"), port,
                           _integer(d.get("targetPort", port), f"{path}.targetPort", 1, 65535),
                           proto, node_port)


def _service(v: Any, path: str, namespaces: tuple[str, ...],
             workloads: tuple[WorkloadSpec, ...]) -> ServiceSpec:
    d = _mapping(v, path, ("namespace", "name", "selector", "ports"),
                 ("type", "externalTrafficPolicy"))
    ns = _in_namespace(d["namespace"], f"{path}.namespace", namespaces)
    typ = _string(d.get("type", "ClusterIP"), f"{path}.type")
    if typ not in ("ClusterIP", "NodePort"):
        raise SpecError(f"{path}.type: expected ClusterIP or NodePort, got {_show(typ)}")
    etp = _string(d.get("externalTrafficPolicy", "Cluster"), f"{path}.externalTrafficPolicy")
    if etp not in ("Cluster", "Local"):
        raise SpecError(f"{path}.externalTrafficPolicy: expected Cluster or Local, got "
                        f"{_show(etp)}")
    if etp == "Local" and typ != "NodePort":
        raise SpecError(f"{path}.externalTrafficPolicy: Local needs type NodePort")
    selector = _labels(d["selector"], f"{path}.selector")
    if not selector:
        raise SpecError(f"{path}.selector: must not be empty")
    if not any(w.namespace == ns and selector.items() <= w.labels.items() for w in workloads):
        raise SpecError(f"{path}.selector: {selector} matches no workload in namespace {ns!r}")
    ports = tuple(_service_port(p, f"{path}.ports[{i}]", typ)
                  for i, p in enumerate(_seq(d["ports"], f"{path}.ports")))
    if not ports:
        raise SpecError(f"{path}.ports: at least one port is needed")
    if len(ports) > 1 and any(p.name is None for p in ports):
        raise SpecError(f"{path}.ports: every port needs a name when there are several")
    _unique([(p.port, p.protocol) for p in ports], f"{path}.ports", "port")
    return ServiceSpec(ns, _name(d["name"], f"{path}.name"), typ, selector, ports, etp)


def _services(v: Any, namespaces: tuple[str, ...],
              workloads: tuple[WorkloadSpec, ...]) -> tuple[ServiceSpec, ...]:
    raw = _seq(v, "services")
    out = [_service(s, f"services[{i}]", namespaces, workloads) for i, s in enumerate(raw)]
    _unique([(s.namespace, s.name) for s in out], "services", "service")
    used = {p.nodePort for s in out for p in s.ports if p.nodePort}
    _unique([p.nodePort for s in out for p in s.ports if p.nodePort], "services", "nodePort")
    free = (n for n in range(30000, 32768) if n not in used)
    for i, s in enumerate(out):   # NodePort ports without a nodePort get one, as the API does
        if s.type == "NodePort":
            ports = tuple(p if p.nodePort else
                          ServicePortSpec(p.name, p.port, p.targetPort, p.protocol, next(free))
                          for p in s.ports)
            out[i] = ServiceSpec(s.namespace, s.name, s.type, s.selector, ports,
                                 s.externalTrafficPolicy)
    return tuple(out)


def _externals(v: Any, nets: tuple[ipaddress.IPv4Network, ...]) -> tuple[ExternalSpec, ...]:
    out = []
    for i, e in enumerate(_seq(v, "externals")):
        path = f"externals[{i}]"
        d = _mapping(e, path, ("name", "ip"), ("ports",))
        try:
            ip = ipaddress.IPv4Address(_string(d["ip"], f"{path}.ip"))
        except ValueError as err:
            raise SpecError(f"{path}.ip: not an IPv4 address: {err}") from err
        around = ipaddress.IPv4Network((ip, 24), strict=False)
        if ip in (around.network_address, around.broadcast_address):
            raise SpecError(f"{path}.ip: {ip} must be a host address (not .0 or .255)")
        for net, what in zip(nets, ("podCIDR", "serviceCIDR", "underlay"), strict=True):
            if around.overlaps(net):
                raise SpecError(f"{path}.ip: {ip} (its /24 {around}) overlaps {what} {net}")
        out.append(ExternalSpec(_name(d["name"], f"{path}.name"), str(ip),
                                _ports(d.get("ports", []), f"{path}.ports")))
    _unique([x.name for x in out], "externals", "external name")
    _unique([x.ip for x in out], "externals", "external ip")
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
    d = _mapping(v, path, ("from", "to"), ("every",))
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
    m = re.fullmatch(r"(service|pod)/([^/:]+)/([^/:]+):(\d+)|(external)/([^/:]+):(\d+)"
                     r"|(nodeport)/(\d+)", dst)
    if not m:
        raise SpecError(f'{path}.to: expected "service/NS/NAME:PORT", "nodeport/PORT", '
                        f'"external/NAME:PORT" or "pod/NS/WORKLOAD:PORT", got "{dst}"')
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
    return TrafficSpec(src, dst, every, skind, sns, parts[1], tkind, tns, tname, port)


def parse_spec(doc: Any) -> LabSpec:
    """Validate a parsed YAML document and build a :class:`LabSpec`; SpecError if invalid."""
    top = _mapping(doc, "spec", required=("name", "nodes"),
                     optional=("cni", "podCIDR", "serviceCIDR", "underlay", "namespaces",
                               "workloads", "services", "externals", "traffic"))
    name = _string(top["name"], "name")
    if not LAB_NAME_PATTERN.match(name):
        raise SpecError(f"name: must match ^[a-z][a-z0-9]{{0,11}}$ (lowercase letters and "
                        f"digits, at most 12, starting with a letter), got {name!r}")
    cni = _string(top.get("cni", "flannel-vxlan"), "cni")
    if cni not in SUPPORTED_CNIS:
        raise SpecError(f"cni: unsupported {cni!r}; supported: {', '.join(SUPPORTED_CNIS)}")
    nodes = _integer(top["nodes"], "nodes", 1, 64)
    nets = _cidrs(top, nodes)
    namespaces = _namespaces(top.get("namespaces", ["default"]))
    workloads = tuple(_workload(w, f"workloads[{i}]", namespaces, nodes)
                      for i, w in enumerate(_seq(top.get("workloads", []), "workloads")))
    _unique([(w.namespace, w.name) for w in workloads], "workloads", "workload")
    services = _services(top.get("services", []), namespaces, workloads)
    externals = _externals(top.get("externals", []), nets)
    traffic = tuple(_traffic(t, f"traffic[{i}]", workloads, services, externals)
                    for i, t in enumerate(_seq(top.get("traffic", []), "traffic")))
    return LabSpec(name=name, cni=cni, nodes=nodes, podCIDR=str(nets[0]),
                   serviceCIDR=str(nets[1]), underlay=str(nets[2]), namespaces=namespaces,
                   workloads=workloads, services=services, externals=externals,
                   traffic=traffic, raw=dict(top))


def load_spec(path: Path | str) -> LabSpec:
    """Read and validate a spec file; SpecError (with the file name) if invalid."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError(f"{p}: cannot read: {e.strerror}") from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {e}".replace("\n", " ")) from e
    try:
        return parse_spec(doc)
    except SpecError as e:
        raise SpecError(f"{p}: {e}") from e


def load_default_spec() -> LabSpec:
    """The embedded demo spec (``podflow/lab/specs/shop.yaml``)."""
    text = resources.files("podflow.lab").joinpath("specs/shop.yaml").read_text()
    return parse_spec(yaml.safe_load(text))
