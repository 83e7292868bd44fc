"""Lab specs: YAML -> typed, validated, frozen dataclasses.

Every error names the place it comes from, e.g.
``workloads[1].ports[0]: expected "tcp/PORT" or "udp/PORT", got "8080"``. The value classes
and field parsers live in :mod:`podflow.lab.specfields`; this module assembles the sections,
adds the built-in cluster DNS (``dns: true``, the default: workload ``kube-system/coredns`` and
Service ``kube-system/kube-dns`` at serviceCIDR + 10) and checks what a datapath cannot do
(``cni: macvlan`` has no ClusterIP/NodePort services: its pods bypass the node).

LoadBalancer Services get a nodePort per port (as NodePort ones) and a VIP from the lab's
``loadBalancerPool`` (default: the last 16 addresses of the underlay, :func:`default_lb_pool`),
assigned here the way MetalLB's controller does: ``loadBalancerIP`` if the spec asks for one,
else the lowest free address. The pool lies inside the underlay (MetalLB's L2 mode makes a VIP
reachable by answering ARP for it on the nodes' own segment) and never hands out a node's
address or the underlay's network, broadcast or gateway address.

Spec files are untrusted input: :func:`load_spec` reads at most :data:`MAX_SPEC_BYTES`,
requires UTF-8, and parses YAML without aliases (``*name``, so no "billion laughs"), without
explicit tags and nested at most :data:`MAX_SPEC_DEPTH` levels. Every problem is a
:class:`SpecError` whose message starts with the file name; nothing else is raised.

Example::

    spec = load_spec(Path("shop.yaml"))
    spec.node_cidr(2)          # IPv4Network('10.244.1.0/24')
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from podflow.lab.datapath import DATAPATHS, datapath_for
from podflow.lab.dns import DNS_LABELS, DNS_NAMESPACE, DNS_SERVICE, DNS_WORKLOAD
from podflow.lab.specfields import (
    _SHOW,
    ExternalSpec,
    PortSpec,
    ServicePortSpec,
    ServiceSpec,
    SpecError,
    TrafficSpec,
    WorkloadSpec,
    _bool,
    _cidr,
    _clip,
    _dns_names,
    _integer,
    _ipv4,
    _labels,
    _mapping,
    _name,
    _port_name,
    _ports,
    _quote,
    _seq,
    _service_name,
    _show,
    _string,
    _traffic,
    _unique,
)
from podflow.lab.state import LAB_NAME_PATTERN

__all__ = ["DNS_LABELS", "LAB_NAME_PATTERN", "SERVICE_TYPES", "SUPPORTED_CNIS", "ExternalSpec",
           "LabSpec", "PortSpec", "ServicePortSpec", "ServiceSpec", "SpecError", "TrafficSpec",
           "WorkloadSpec", "default_lb_pool", "lb_pool_addresses", "load_default_spec",
           "load_spec", "parse_spec", "parse_spec_bytes"]

SUPPORTED_CNIS = tuple(DATAPATHS)
"""CNI datapaths the lab can build (the keys of the datapath registry)."""

MAX_SPEC_BYTES = 1024 * 1024
"""Largest spec file read (real specs are a few KB)."""
MAX_SPEC_DEPTH = 32
"""Deepest YAML nesting accepted (a spec nests five levels)."""
RESERVED_NAMESPACES = ("external", "node", "service", "nodeport", "pod", "loadbalancer")
"""Namespace names that would make ``NS/NAME`` targets ambiguous."""
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
"""Service ``type`` values the lab implements."""
EXTERNAL_TYPES = ("NodePort", "LoadBalancer")
"""Service types reachable from outside: a nodePort per port, ``externalTrafficPolicy``."""
LB_POOL_SIZE = 16
"""Addresses in the default ``loadBalancerPool`` (the top of the underlay)."""


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
    dns: bool = True
    """Whether the built-in cluster DNS (coredns workload, kube-dns Service) was added."""
    loadBalancerPool: str = ""
    """CIDR LoadBalancer VIPs come from (inside the underlay; see :func:`default_lb_pool`)."""
    agent_sources: tuple[str, ...] = ()
    """Sources the lab's agents run (empty: the detected CNI profile's defaults)."""
    agent_options: dict[str, Any] = field(default_factory=dict, compare=False)
    """Source options for the lab's agents (``--source-option KEY=VALUE``)."""
    agent_mode: str = "hub"
    """``hub`` (the default, as on a real cluster): each agent spools, and a ``podflow hub``
    pulls them all into the store; ``store``: every agent writes the lab's store file
    itself (the single-machine mode)."""
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

    def dns_ip(self) -> str:
        """The kube-dns ClusterIP: serviceCIDR + 10."""
        return str(ipaddress.IPv4Network(self.serviceCIDR).network_address + 10)

    def to_dict(self) -> dict[str, Any]:
        """The validated spec as a plain, normalised dict (``every`` in seconds)."""
        def ports(ps: tuple[PortSpec, ...]) -> list[str]:
            return [str(p) for p in ps]
        return {
            "name": self.name, "cni": self.cni, "nodes": self.nodes, "podCIDR": self.podCIDR,
            "serviceCIDR": self.serviceCIDR, "underlay": self.underlay, "dns": self.dns,
            "loadBalancerPool": self.loadBalancerPool,
            "agentSources": list(self.agent_sources), "agentOptions": dict(self.agent_options),
            "agentMode": self.agent_mode,
            "namespaces": list(self.namespaces),
            "workloads": [{"namespace": w.namespace, "name": w.name, "replicas": w.replicas,
                           "labels": dict(w.labels), "ports": ports(w.ports), "node": w.node,
                           "hostNetwork": w.hostNetwork}
                          for w in self.workloads],
            "services": [{"namespace": s.namespace, "name": s.name, "type": s.type,
                          "selector": dict(s.selector), "clusterIP": s.clusterIP,
                          "externalTrafficPolicy": s.externalTrafficPolicy,
                          "loadBalancerIP": s.loadBalancerIP,
                          "ports": [{"name": p.name, "port": p.port, "targetPort": p.targetPort,
                                     "protocol": p.protocol, "nodePort": p.nodePort}
                                    for p in s.ports]}
                         for s in self.services],
            "externals": [{"name": e.name, "ip": e.ip, "ports": ports(e.ports),
                           "dns": list(e.dns)}
                          for e in self.externals],
            "traffic": [{"from": t.source, "to": t.target, "every": t.every,
                         "source": {"kind": t.source_kind, "namespace": t.source_namespace,
                                    "name": t.source_name},
                         "target": {"kind": t.target_kind, "namespace": t.target_namespace,
                                    "name": t.target_name, "port": t.target_port},
                         **({"http": t.http} if t.http is not None else {})}
                        for t in self.traffic],
        }


# -- sections ------------------------------------------------------------------------------
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
        raise SpecError(f"{path}: namespace {_quote(ns)} is not declared in namespaces "
                        f"({_clip(', '.join(namespaces), 200) or 'none'})")
    return ns


def _workload(v: Any, path: str, namespaces: tuple[str, ...], nodes: int) -> WorkloadSpec:
    d = _mapping(v, path, ("namespace", "name"),
                 ("replicas", "labels", "ports", "node", "hostNetwork"))
    node = d.get("node")
    return WorkloadSpec(
        namespace=_in_namespace(d["namespace"], f"{path}.namespace", namespaces),
        name=_name(d["name"], f"{path}.name"),
        replicas=_integer(d.get("replicas", 1), f"{path}.replicas", 0, 100),
        labels=_labels(d.get("labels", {"app": d["name"]}), f"{path}.labels"),
        ports=_ports(d.get("ports", []), f"{path}.ports"),
        node=None if node is None else _integer(node, f"{path}.node", 1, nodes),
        hostNetwork=_bool(d.get("hostNetwork", False), f"{path}.hostNetwork"))


def _service_port(v: Any, path: str, svc_type: str) -> ServicePortSpec:
    d = _mapping(v, path, ("port",), ("name", "targetPort", "nodePort", "protocol"))
    port = _integer(d["port"], f"{path}.port", 1, 65535)
    proto = _string(d.get("protocol", "TCP"), f"{path}.protocol").upper()
    if proto not in ("TCP", "UDP"):
        raise SpecError(f"{path}.protocol: expected TCP or UDP, got {_show(d['protocol'])}")
    node_port = d.get("nodePort")
    if node_port is not None:
        if svc_type not in EXTERNAL_TYPES:
            raise SpecError(f"{path}.nodePort: only NodePort and LoadBalancer services have a "
                            "nodePort")
        node_port = _integer(node_port, f"{path}.nodePort", 30000, 32767)
    name = d.get("name")
    return ServicePortSpec(None if name is None else _port_name(name, f"{path}.name"), port,
                           _integer(d.get("targetPort", port), f"{path}.targetPort", 1, 65535),
                           proto, node_port)


def _service(v: Any, path: str, namespaces: tuple[str, ...],
             workloads: tuple[WorkloadSpec, ...]) -> ServiceSpec:
    d = _mapping(v, path, ("namespace", "name", "selector", "ports"),
                 ("type", "externalTrafficPolicy", "loadBalancerIP"))
    ns = _in_namespace(d["namespace"], f"{path}.namespace", namespaces)
    typ = _string(d.get("type", "ClusterIP"), f"{path}.type")
    if typ not in SERVICE_TYPES:
        raise SpecError(f"{path}.type: expected ClusterIP, NodePort or LoadBalancer, got "
                        f"{_show(typ)}")
    etp = _string(d.get("externalTrafficPolicy", "Cluster"), f"{path}.externalTrafficPolicy")
    if etp not in ("Cluster", "Local"):
        raise SpecError(f"{path}.externalTrafficPolicy: expected Cluster or Local, got "
                        f"{_show(etp)}")
    if etp == "Local" and typ not in EXTERNAL_TYPES:
        raise SpecError(f"{path}.externalTrafficPolicy: Local needs type NodePort or "
                        "LoadBalancer")
    lb_ip = d.get("loadBalancerIP")
    if lb_ip is not None:
        if typ != "LoadBalancer":
            raise SpecError(f"{path}.loadBalancerIP: only LoadBalancer services have one")
        lb_ip = str(_ipv4(lb_ip, f"{path}.loadBalancerIP"))
    selector = _labels(d["selector"], f"{path}.selector")
    if not selector:
        raise SpecError(f"{path}.selector: must not be empty")
    if not any(w.namespace == ns and selector.items() <= w.labels.items() for w in workloads):
        raise SpecError(f"{path}.selector: {_SHOW.repr(selector)} matches no workload in "
                        f"namespace {ns!r}")
    ports = tuple(_service_port(p, f"{path}.ports[{i}]", typ)
                  for i, p in enumerate(_seq(d["ports"], f"{path}.ports")))
    if not ports:
        raise SpecError(f"{path}.ports: at least one port is needed")
    if len(ports) > 1 and any(p.name is None for p in ports):
        raise SpecError(f"{path}.ports: every port needs a name when there are several")
    _unique([(p.port, p.protocol) for p in ports], f"{path}.ports", "port")
    return ServiceSpec(ns, _service_name(d["name"], f"{path}.name"), typ, selector, ports, etp,
                       loadBalancerIP=lb_ip)


def _services(v: Any, namespaces: tuple[str, ...],
              workloads: tuple[WorkloadSpec, ...]) -> tuple[ServiceSpec, ...]:
    raw = _seq(v, "services")
    out = [_service(s, f"services[{i}]", namespaces, workloads) for i, s in enumerate(raw)]
    _unique([(s.namespace, s.name) for s in out], "services", "service")
    used = {p.nodePort for s in out for p in s.ports if p.nodePort}
    _unique([p.nodePort for s in out for p in s.ports if p.nodePort], "services", "nodePort")
    free = (n for n in range(30000, 32768) if n not in used)
    for i, s in enumerate(out):   # ports without a nodePort get one, as the API does
        if s.type in EXTERNAL_TYPES:
            ports = tuple(p if p.nodePort else
                          ServicePortSpec(p.name, p.port, p.targetPort, p.protocol, next(free))
                          for p in s.ports)
            out[i] = dataclasses.replace(s, ports=ports)
    return tuple(out)


def default_lb_pool(underlay: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """The default ``loadBalancerPool``: the last :data:`LB_POOL_SIZE` addresses of the
    underlay (all of it when it is smaller), far from the node addresses at its bottom.

    >>> default_lb_pool(ipaddress.IPv4Network("172.18.0.0/24"))
    IPv4Network('172.18.0.240/28')
    """
    prefix = max(underlay.prefixlen, 32 - (LB_POOL_SIZE.bit_length() - 1))
    size = 2 ** (32 - prefix)
    return ipaddress.IPv4Network((int(underlay.broadcast_address) - size + 1, prefix))


def lb_pool_addresses(pool: ipaddress.IPv4Network, underlay: ipaddress.IPv4Network,
                      nodes: int) -> list[ipaddress.IPv4Address]:
    """The addresses of ``pool`` a VIP may take, lowest first: not the underlay's network,
    broadcast or gateway (last usable) address, nor a node's (underlay + 1 .. + ``nodes``).
    """
    gateway = underlay.broadcast_address - 1
    first_free = underlay.network_address + nodes + 1
    return [ip for ip in pool if first_free <= ip < gateway]


def _load_balancers(v: Any, services: tuple[ServiceSpec, ...],
                    underlay: ipaddress.IPv4Network, nodes: int
                    ) -> tuple[ipaddress.IPv4Network, tuple[ServiceSpec, ...]]:
    """The ``loadBalancerPool`` and ``services`` with every LoadBalancer's VIP assigned:
    the ``loadBalancerIP`` asked for (in the pool, free), else the lowest free address."""
    if v is None:
        pool = default_lb_pool(underlay)
        shown = (f"the default pool {pool} (the last {pool.num_addresses} addresses of "
                 f"underlay {underlay})")
    else:
        pool = _cidr(v, "loadBalancerPool")
        shown = str(pool)
        if not pool.subnet_of(underlay):
            raise SpecError(f"loadBalancerPool: {pool} is not inside underlay {underlay} "
                            "(MetalLB's L2 mode announces VIPs on the nodes' own segment)")
        for k in range(1, nodes + 1):
            if underlay.network_address + k in pool:
                raise SpecError(f"loadBalancerPool: {pool} overlaps node{k}'s address "
                                f"{underlay.network_address + k}")
    usable = lb_pool_addresses(pool, underlay, nodes)
    ok = set(usable)
    taken: dict[ipaddress.IPv4Address, int] = {}
    for i, s in enumerate(services):
        if s.loadBalancerIP is None:
            continue
        ip = ipaddress.IPv4Address(s.loadBalancerIP)
        where = f"services[{i}].loadBalancerIP"
        if ip not in pool:
            raise SpecError(f"{where}: {ip} is not in loadBalancerPool ({shown})")
        if ip not in ok:
            raise SpecError(f"{where}: {ip} is a node's, the gateway's or the underlay's "
                            f"network or broadcast address, not free in {shown}")
        if ip in taken:
            raise SpecError(f"{where}: {ip} is already services[{taken[ip]}]'s")
        taken[ip] = i
    free = (ip for ip in usable if ip not in taken)
    out = list(services)
    for i, s in enumerate(out):
        if s.type == "LoadBalancer" and s.loadBalancerIP is None:
            vip = next(free, None)
            if vip is None:
                count = sum(x.type == "LoadBalancer" for x in services)
                raise SpecError(f"services[{i}]: no free address left for its VIP in "
                                f"loadBalancerPool {shown} ({len(usable)} usable addresses "
                                f"for {count} LoadBalancer services)")
            out[i] = dataclasses.replace(s, loadBalancerIP=str(vip))
    return pool, tuple(out)


def _externals(v: Any, nets: tuple[ipaddress.IPv4Network, ...]) -> tuple[ExternalSpec, ...]:
    out = []
    for i, e in enumerate(_seq(v, "externals")):
        path = f"externals[{i}]"
        d = _mapping(e, path, ("name", "ip"), ("ports", "dns"))
        try:
            ip = ipaddress.IPv4Address(_string(d["ip"], f"{path}.ip"))
        except ValueError as err:
            raise SpecError(f"{path}.ip: not an IPv4 address: {_clip(str(err), 120)}") from None
        around = ipaddress.IPv4Network((ip, 24), strict=False)
        if ip in (around.network_address, around.broadcast_address):
            raise SpecError(f"{path}.ip: {ip} must be a host address (not .0 or .255)")
        for net, what in zip(nets, ("podCIDR", "serviceCIDR", "underlay"), strict=True):
            if around.overlaps(net):
                raise SpecError(f"{path}.ip: {ip} (its /24 {around}) overlaps {what} {net}")
        out.append(ExternalSpec(_name(d["name"], f"{path}.name"), str(ip),
                                _ports(d.get("ports", []), f"{path}.ports"),
                                _dns_names(d.get("dns", []), f"{path}.dns")))
    _unique([x.name for x in out], "externals", "external name")
    _unique([x.ip for x in out], "externals", "external ip")
    return tuple(out)


def _dns_builtin(cni: str, namespaces: tuple[str, ...], workloads: tuple[WorkloadSpec, ...],
                 svc_net: ipaddress.IPv4Network
                 ) -> tuple[tuple[str, ...], WorkloadSpec, ServiceSpec | None]:
    """The namespaces with kube-system, the coredns workload and (unless the datapath has
    no services) the kube-dns Service, as a kubeadm cluster has them."""
    if any((w.namespace, w.name) == (DNS_NAMESPACE, DNS_WORKLOAD) for w in workloads):
        raise SpecError(f"workloads: {DNS_NAMESPACE}/{DNS_WORKLOAD} is built in with dns: true "
                        "(set dns: false to bring your own)")
    ns = namespaces if DNS_NAMESPACE in namespaces else (*namespaces, DNS_NAMESPACE)
    wl = WorkloadSpec(DNS_NAMESPACE, DNS_WORKLOAD, 1, dict(DNS_LABELS),
                      (PortSpec("udp", 53), PortSpec("tcp", 53)))
    if not _carries_services(cni):
        return ns, wl, None
    svc = ServiceSpec(DNS_NAMESPACE, DNS_SERVICE, "ClusterIP", dict(DNS_LABELS),
                      (ServicePortSpec("dns", 53, 53, "UDP"),
                       ServicePortSpec("dns-tcp", 53, 53, "TCP")),
                      clusterIP=str(svc_net.network_address + 10))
    return ns, wl, svc


def _carries_services(cni: str) -> bool:
    """Whether kube-proxy's services can carry the datapath's pod traffic (its own say)."""
    return datapath_for(cni).services


def _check_datapath(cni: str, top: dict[str, Any]) -> None:
    """Reject what the datapath cannot carry, before anything else refers to it."""
    if _carries_services(cni):
        return
    why = (f"cni {cni} has no ClusterIP/NodePort/LoadBalancer services (pods bypass the node's "
           "stack, so kube-proxy never sees their traffic); target pods by IP "
           "(pod/NS/WORKLOAD:PORT)")
    if _seq(top.get("services", []), "services"):
        raise SpecError(f"services: {why}")
    for i, t in enumerate(_seq(top.get("traffic", []), "traffic")):
        to = t.get("to") if isinstance(t, dict) else None
        if isinstance(to, str) and to.startswith(("service/", "nodeport/", "loadbalancer/")):
            raise SpecError(f"traffic[{i}].to: {_quote(to)}: {why}")


def parse_spec(doc: Any) -> LabSpec:
    """Validate a parsed YAML document and build a :class:`LabSpec`; SpecError if invalid."""
    top = _mapping(doc, "spec", required=("name", "nodes"),
                   optional=("cni", "podCIDR", "serviceCIDR", "underlay", "namespaces",
                             "workloads", "services", "externals", "traffic", "dns",
                             "agents", "loadBalancerPool"))
    name = _string(top["name"], "name")
    if not LAB_NAME_PATTERN.fullmatch(name):
        raise SpecError(f"name: must match ^[a-z][a-z0-9]{{0,11}}$ (lowercase letters and "
                        f"digits, at most 12, starting with a letter), got {_quote(name)}")
    cni = _string(top.get("cni", "flannel-vxlan"), "cni")
    if cni not in SUPPORTED_CNIS:
        raise SpecError(f"cni: unsupported {_quote(cni)}; supported: "
                        f"{', '.join(SUPPORTED_CNIS)}")
    _check_datapath(cni, top)
    nodes = _integer(top["nodes"], "nodes", 1, 64)
    nets = _cidrs(top, nodes)
    dns = _bool(top.get("dns", True), "dns")
    namespaces = _namespaces(top.get("namespaces", ["default"]))
    workloads = tuple(_workload(w, f"workloads[{i}]", namespaces, nodes)
                      for i, w in enumerate(_seq(top.get("workloads", []), "workloads")))
    _unique([(w.namespace, w.name) for w in workloads], "workloads", "workload")
    services = _services(top.get("services", []), namespaces, workloads)
    lb_pool, services = _load_balancers(top.get("loadBalancerPool"), services, nets[2], nodes)
    for i, s in enumerate(services):
        if dns and (s.namespace, s.name) == (DNS_NAMESPACE, DNS_SERVICE):
            raise SpecError(f"services[{i}]: {DNS_NAMESPACE}/{DNS_SERVICE} is built in with "
                            "dns: true")
    if dns:
        namespaces, wl, svc = _dns_builtin(cni, namespaces, workloads, nets[1])
        workloads = (*workloads, wl)
        services = services if svc is None else (*services, svc)
    externals = _externals(top.get("externals", []), nets)
    traffic = tuple(_traffic(t, f"traffic[{i}]", workloads, services, externals)
                    for i, t in enumerate(_seq(top.get("traffic", []), "traffic")))
    agent_sources, agent_options, agent_mode = _agents(top.get("agents"))
    return LabSpec(name=name, cni=cni, nodes=nodes, podCIDR=str(nets[0]),
                   serviceCIDR=str(nets[1]), underlay=str(nets[2]), namespaces=namespaces,
                   workloads=workloads, services=services, externals=externals,
                   traffic=traffic, dns=dns, loadBalancerPool=str(lb_pool),
                   agent_sources=agent_sources, agent_mode=agent_mode,
                   agent_options=agent_options, raw=dict(top))


AGENT_MODES = ("hub", "store")
"""``agents.mode``: agents spool to a hub that writes the store (default), or write it."""


def _agents(v: Any) -> tuple[tuple[str, ...], dict[str, Any], str]:
    """``agents: {sources: [conntrack, packets], options: {syn_timeout: 3}, mode: hub}``
    (optional)."""
    if v is None:
        return (), {}, "hub"
    d = _mapping(v, "agents", (), ("sources", "options", "mode"))
    mode = _string(d.get("mode", "hub"), "agents.mode")
    if mode not in AGENT_MODES:
        raise SpecError(f"agents.mode: expected one of {', '.join(AGENT_MODES)}, got "
                        f"{_show(mode)}")
    from podflow.sources.registry import parse_sources

    names = [_string(x, f"agents.sources[{i}]")
             for i, x in enumerate(_seq(d.get("sources", []), "agents.sources"))]
    try:
        sources = tuple(parse_sources(",".join(names))) if names else ()
    except ValueError as exc:
        raise SpecError(f"agents.sources: {_clip(str(exc), 300)}") from None
    return sources, _agent_options(d.get("options")), mode


_OPTION_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _agent_options(v: Any) -> dict[str, Any]:
    """``agents.options``: source option names -> a string, number or boolean each (they
    become ``--source-option KEY=VALUE`` arguments of the agents)."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise SpecError(f"agents.options: expected a mapping, got {_show(v)}")
    for key, value in v.items():
        if not isinstance(key, str) or not _OPTION_KEY.fullmatch(key):
            raise SpecError(f"agents.options: option names are lowercase words (a-z, 0-9, "
                            f"_), got {_quote(key)}")
        finite = not isinstance(value, float) or math.isfinite(value)
        if not isinstance(value, (str, int, float)) or not finite:
            raise SpecError(f"agents.options.{key}: expected a string, number or boolean, "
                            f"got {_show(value)}")
    return dict(v)


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML was built with it (fast), else the pure-Python one."""


def _check_events(text: str) -> None:
    """Refuse aliases (``*name``: no "billion laughs"), explicit tags and nesting deeper
    than :data:`MAX_SPEC_DEPTH`, from the event stream, before any node is built."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        problem = None
        if isinstance(event, yaml.AliasEvent):
            problem = "aliases (*name) are not allowed in a lab spec"
        elif isinstance(event, yaml.NodeEvent) and getattr(event, "tag", None) is not None:
            problem = "explicit tags (!tag) are not allowed in a lab spec"
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_SPEC_DEPTH:
                problem = f"nested deeper than {MAX_SPEC_DEPTH} levels"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if problem is not None:
            raise yaml.composer.ComposerError(None, None, problem, event.start_mark)


def _yaml(text: str) -> Any:
    """The YAML document in ``text`` (see :func:`_check_events`); SpecError if invalid."""
    try:
        _check_events(text)
        return yaml.load(text, Loader=_Loader)   # a safe loader: plain data only
    except (yaml.YAMLError, ValueError, OverflowError) as e:
        # PyYAML's constructors raise ValueError for some well-formed but impossible
        # scalars (a 2001-13-45 timestamp, an integer of more than 4300 digits)
        raise SpecError(f"not valid YAML: {_clip(' '.join(str(e).split()), 400)}") from None


def parse_spec_bytes(data: bytes, source: str = "spec") -> LabSpec:
    """Validate the content of a spec file; SpecError (prefixed with ``source``) if invalid."""
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: larger than {MAX_SPEC_BYTES} bytes; not a lab spec")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{source}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                        f"{e.start})") from None
    try:
        return parse_spec(_yaml(text))
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None


def load_spec(path: Path | str) -> LabSpec:
    """Read and validate a spec file; SpecError (with the file name) if invalid."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError(f"{p}: cannot read: {e.strerror or e}") from e
    return parse_spec_bytes(data, str(p))


def load_default_spec() -> LabSpec:
    """The embedded demo spec (``podflow/lab/specs/shop.yaml``)."""
    data = resources.files("podflow.lab").joinpath("specs/shop.yaml").read_bytes()
    return parse_spec_bytes(data, "specs/shop.yaml")
