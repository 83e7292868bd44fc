"""kube-proxy (iptables mode) as a pure function: LabState + node -> iptables-restore text.

The chains and rule shapes follow what kube-proxy programs: KUBE-SERVICES (entered from
PREROUTING and OUTPUT) matches each ClusterIP:port and jumps to a KUBE-SVC-<hash> chain that
picks an endpoint with ``-m statistic --mode random --probability 1/(n-i)``; each KUBE-SEP-<hash>
marks hairpin traffic for masquerade and DNATs. NodePorts go through KUBE-NODEPORTS (the last
rule of KUBE-SERVICES, for local destination addresses) to KUBE-EXT-<hash>, which masquerades
(externalTrafficPolicy Cluster) or keeps the client address and uses node-local endpoints only
(KUBE-SVL-<hash>, Local). A LoadBalancer's VIP is matched in KUBE-SERVICES ("loadbalancer IP",
after the cluster IP rule, on every node) and jumps to the same KUBE-EXT-<hash> as its
nodePort: traffic that reached the announcing node from outside, or a pod or node of the
cluster short-circuiting the VIP, is handled as the nodePort's. A service port without
endpoints is REJECTed (filter KUBE-SERVICES for the ClusterIP, KUBE-EXTERNAL-SERVICES for the
nodePort and VIP); with externalTrafficPolicy Local and no endpoint on the node, external
traffic to the nodePort and VIP is DROPped instead, and KUBE-EXT has no KUBE-SVL jump.
KUBE-POSTROUTING masquerades what carries the 0x4000 mark.

The shapes (chains, rule order, comments) are those of kube-proxy's iptables proxier
(``pkg/proxy/iptables/proxier.go``, ``syncProxyRules``, Kubernetes 1.29+), without the
KUBE-FW/KUBE-PROXY-FIREWALL chains of ``loadBalancerSourceRanges`` (the lab has none).

Example::

    text = render(state, "node1", extra_nat=flannel.masq_rules(net, cidr))
    run(in_netns(ns, ["iptables-restore"]), input=text)
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from podflow.lab.state import LabState, PodState, ServicePortState, ServiceState

MASQ_MARK = "0x4000"
"""kube-proxy's masquerade mark bit."""


@dataclass(frozen=True)
class Endpoint:
    """One ready endpoint of a service port."""

    ip: str
    port: int
    node: str


def _hash(*parts: str) -> str:
    digest = hashlib.sha256("".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def port_name(svc: ServiceState, port: ServicePortState) -> str:
    """kube-proxy's ServicePortName string: ``ns/name:port`` (``ns/name`` if unnamed)."""
    base = f"{svc.namespace}/{svc.name}"
    return f"{base}:{port.name}" if port.name else base


def chain_names(svc: ServiceState, port: ServicePortState) -> tuple[str, str, str]:
    """The KUBE-SVC, KUBE-EXT and KUBE-SVL chain names of one service port."""
    h = _hash(port_name(svc, port), port.protocol.lower())
    return f"KUBE-SVC-{h}", f"KUBE-EXT-{h}", f"KUBE-SVL-{h}"


def sep_chain(svc: ServiceState, port: ServicePortState, ep: Endpoint) -> str:
    """The KUBE-SEP chain name of one endpoint."""
    return "KUBE-SEP-" + _hash(port_name(svc, port), port.protocol.lower(), f"{ep.ip}:{ep.port}")


def endpoints(pods: Sequence[PodState], svc: ServiceState,
              port: ServicePortState) -> list[Endpoint]:
    """The service port's endpoints: pods of its namespace matching the selector."""
    sel = svc.selector.items()
    return sorted((Endpoint(p.ip, port.targetPort, p.node) for p in pods
                   if p.namespace == svc.namespace and p.ip and sel <= p.labels.items()),
                  key=lambda e: tuple(int(x) for x in e.ip.split(".")))


def _c(text: str) -> str:
    return f'-m comment --comment "{text}"'


def _balance(chain: str, targets: list[tuple[str, Endpoint]], spn: str) -> list[str]:
    """Rules picking one of ``targets`` uniformly at random (the last one unconditionally)."""
    out = []
    n = len(targets)
    for i, (sep, ep) in enumerate(targets):
        stat = (f" -m statistic --mode random --probability {1.0 / (n - i):.11f}"
                if i < n - 1 else "")
        out.append(f"-A {chain} {_c(f'{spn} -> {ep.ip}:{ep.port}')}{stat} -j {sep}")
    return out


def render(state: LabState, node: str, extra_nat: Sequence[str] = ()) -> str:
    """The full nat and filter tables for ``node`` as ``iptables-restore`` input.

    ``extra_nat`` lines (e.g. flannel's masquerade chain) are added to the nat table after
    kube-proxy's own rules, so KUBE-POSTROUTING comes before them in POSTROUTING.
    """
    chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    rules = [
        f"-A PREROUTING {_c('kubernetes service portals')} -j KUBE-SERVICES",
        f"-A OUTPUT {_c('kubernetes service portals')} -j KUBE-SERVICES",
        f"-A POSTROUTING {_c('kubernetes postrouting rules')} -j KUBE-POSTROUTING",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        f"-A KUBE-POSTROUTING {_c('kubernetes service traffic requiring SNAT')} "
        "-j MASQUERADE --random-fully",
    ]
    frules: list[str] = []
    for svc in state.services:
        for port in svc.ports:
            _service_port(state, node, svc, port, chains, rules, frules)
    last = "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
    rules.append(f"-A KUBE-SERVICES {_c(last)} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    extra_chains = [x for x in extra_nat if x.startswith(":")]
    nat = ["*nat", *(f":{c} ACCEPT [0:0]" for c in ("PREROUTING", "INPUT", "OUTPUT",
                                                   "POSTROUTING")),
           *(f":{c} - [0:0]" for c in chains), *extra_chains, *rules,
           *(x for x in extra_nat if not x.startswith(":")), "COMMIT"]
    filt = ["*filter", *(f":{c} ACCEPT [0:0]" for c in ("INPUT", "FORWARD", "OUTPUT")),
            ":KUBE-SERVICES - [0:0]", ":KUBE-EXTERNAL-SERVICES - [0:0]",
            "-A INPUT -m conntrack --ctstate NEW "
            f"{_c('kubernetes externally-visible service portals')} -j KUBE-EXTERNAL-SERVICES",
            f"-A FORWARD -m conntrack --ctstate NEW {_c('kubernetes service portals')} "
            "-j KUBE-SERVICES",
            "-A FORWARD -m conntrack --ctstate NEW "
            f"{_c('kubernetes externally-visible service portals')} -j KUBE-EXTERNAL-SERVICES",
            f"-A OUTPUT -m conntrack --ctstate NEW {_c('kubernetes service portals')} "
            "-j KUBE-SERVICES", *frules, "COMMIT"]
    return "\n".join(nat + filt) + "\n"


def _service_port(state: LabState, node: str, svc: ServiceState, port: ServicePortState,
                  chains: list[str], rules: list[str], frules: list[str]) -> None:
    """Append the chains and rules of one service port (nat ``rules``, filter ``frules``)."""
    spn = port_name(svc, port)
    proto = port.protocol.lower()
    svc_chain, ext_chain, svl_chain = chain_names(svc, port)
    eps = endpoints(state.pods, svc, port)
    match = f"-p {proto} -m {proto} --dport"
    vip = f"-d {svc.clusterIP}/32"
    lb_vip = f"-d {svc.loadBalancerIP}/32" \
        if svc.type == "LoadBalancer" and svc.loadBalancerIP else None
    local_policy = svc.externalTrafficPolicy == "Local"
    seps = [(sep_chain(svc, port, ep), ep) for ep in eps]
    local = [(s, ep) for s, ep in seps if ep.node == node]
    if not eps or (local_policy and not local):
        # no endpoints at all (REJECT), or none for external traffic on this node (DROP what
        # the KUBE-EXT chain did not short-circuit)
        why, verdict = ("has no endpoints", "REJECT") if not eps \
            else ("has no local endpoints", "DROP")
        if not eps:
            frules.append(f"-A KUBE-SERVICES {vip} {match} {port.port} "
                          f"{_c(f'{spn} {why}')} -j {verdict}")
        if lb_vip:
            frules.append(f"-A KUBE-EXTERNAL-SERVICES {lb_vip} {match} {port.port} "
                          f"{_c(f'{spn} {why}')} -j {verdict}")
        if port.nodePort:
            frules.append(f"-A KUBE-EXTERNAL-SERVICES -m addrtype --dst-type LOCAL "
                          f"{match} {port.nodePort} {_c(f'{spn} {why}')} -j {verdict}")
    if not eps:
        return
    chains += [svc_chain, *(s for s, _ in seps)]
    rules.append(f"-A KUBE-SERVICES {vip} {_c(f'{spn} cluster IP')} {match} {port.port} "
                 f"-j {svc_chain}")
    if lb_vip:
        rules.append(f"-A KUBE-SERVICES {lb_vip} {_c(f'{spn} loadbalancer IP')} {match} "
                     f"{port.port} -j {ext_chain}")
    rules.append(f"-A {svc_chain} ! -s {state.podCIDR} {vip} {_c(f'{spn} cluster IP')} "
                 f"{match} {port.port} -j KUBE-MARK-MASQ")
    rules += _balance(svc_chain, seps, spn)
    for sep, ep in seps:
        rules.append(f"-A {sep} -s {ep.ip}/32 {_c(spn)} -j KUBE-MARK-MASQ")
        rules.append(f"-A {sep} {_c(spn)} -p {proto} -m {proto} "
                     f"-j DNAT --to-destination {ep.ip}:{ep.port}")
    if not port.nodePort and not lb_vip:
        return
    chains.append(ext_chain)
    if port.nodePort:
        rules.append(f"-A KUBE-NODEPORTS {_c(spn)} {match} {port.nodePort} -j {ext_chain}")
    if not local_policy:
        rules.append(f"-A {ext_chain} {_c(f'masquerade traffic for {spn} external destinations')}"
                     " -j KUBE-MARK-MASQ")
        rules.append(f"-A {ext_chain} -j {svc_chain}")
        return
    rules += [
        f"-A {ext_chain} -s {state.podCIDR} "
        f"{_c(f'pod traffic for {spn} external destinations')} -j {svc_chain}",
        f"-A {ext_chain} {_c(f'masquerade LOCAL traffic for {spn} external destinations')} "
        "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
        f"-A {ext_chain} {_c(f'route LOCAL traffic for {spn} external destinations')} "
        f"-m addrtype --src-type LOCAL -j {svc_chain}",
    ]
    if local:   # anything else goes to this node's endpoints (KUBE-SVL), if it has any
        chains.append(svl_chain)
        rules.append(f"-A {ext_chain} -j {svl_chain}")
        rules += _balance(svl_chain, local, spn)
