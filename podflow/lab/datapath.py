"""Lab datapaths: one class per spec ``cni:`` value, and the pod sandbox life cycle.

A :class:`Datapath` builds what a CNI puts on a node once the fabric has plugged the node
into the underlay: tunnel devices and their peers, routing daemons, the node's CNI files
(``<lab dir>/nodes/<node>/cni/net.d``, ...); wires and unwires one pod netns as the CNI
plugin would; and gives the datapath's own nat-table rules (masquerade) to the kube-proxy
renderer. :data:`DATAPATHS` is the explicit registry; :func:`datapath_for` imports the one
module a lab needs.

Pods share one life cycle whatever the datapath (:func:`create_pod_network`,
:func:`remove_pod_network`): a sandbox netns with ``lo`` up, the datapath's ADD, and the
cluster DNS ``/etc/netns/<pod netns>/resolv.conf`` that ``ip netns exec`` bind-mounts over
``/etc/resolv.conf``. Host-network pods get none of it: they live in the node's netns with
the node's IP, and removing one never touches that netns.

Example::

    dp = datapath_for("calico-bgp")
    dp.write_node_files(state, node); dp.setup_nodes(state)
    pod.ip = create_pod_network(state, node, pod, dp)
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from podflow.lab.dns import DNS_LABELS, DNS_NAMESPACE, DNS_SERVICE
from podflow.lab.dnszone import CLUSTER_DOMAIN
from podflow.lab.netns import (
    LabError,
    add_netns,
    delete_netns,
    ip_batch,
    kill_pids,
    netns_exists,
    netns_pids,
)
from podflow.lab.state import LAB_PREFIX, LabState, NodeState, PodState, lab_dir
from podflow.registry import Plugin, Registry

ETC_NETNS = Path("/etc/netns")
"""Per-netns files ``ip netns exec`` bind-mounts over ``/etc`` (``resolv.conf``)."""

@dataclass(frozen=True, slots=True)
class DatapathInfo(Plugin):
    """A registry entry; its target is a :class:`Datapath` class."""

    def create(self) -> Datapath:
        """Import the module and build the datapath."""
        dp = self.load()()
        assert isinstance(dp, Datapath)
        return dp


DATAPATHS: Registry[DatapathInfo] = Registry("lab datapath", [
    DatapathInfo("flannel-vxlan", "Flannel, VXLAN backend: cni0 bridge, flannel.1 VTEPs.",
                 "podflow.lab.flannel:FlannelVxlan"),
    DatapathInfo("flannel-host-gw", "Flannel, host-gw backend: cni0 bridge, routes via nodes.",
                 "podflow.lab.hostgw:FlannelHostGw"),
    DatapathInfo("calico-bgp", "Calico, BGP (BIRD): cali* veths, /32 routes, proxy ARP.",
                 "podflow.lab.calico:CalicoBgp"),
    DatapathInfo("calico-vxlan", "Calico, VXLAN backend: cali* veths, vxlan.calico.",
                 "podflow.lab.calico:CalicoVxlan"),
    DatapathInfo("macvlan", "macvlan pods on the underlay: the host stack sees nothing.",
                 "podflow.lab.macvlan:Macvlan"),
])
"""Spec ``cni:`` value -> its datapath class (imported on use)."""


def node_dir(state: LabState, node: NodeState) -> Path:
    """A node's own files (what would be its ``/etc`` and ``/run``) inside the lab dir."""
    return lab_dir(state.name) / "nodes" / node.name


class Datapath:
    """What one CNI builds; the base does nothing, so a datapath overrides what it needs."""

    name = ""
    """The spec ``cni:`` value."""
    tunnel_offset: int | None = None
    """Offset into a node's pod /24 of its tunnel address (VTEP), None without a tunnel."""
    services = True
    """Whether kube-proxy's services can carry this datapath's pod traffic."""
    masquerade = True
    """Whether pods reach the outside masqueraded to their node (else with their own IP)."""

    def fabric_commands(self, state: LabState) -> list[str]:
        """Extra ``ip -batch`` lines for the fabric netns (e.g. gateways in pod subnets)."""
        del state
        return []

    def write_node_files(self, state: LabState, node: NodeState) -> None:
        """Write the node's CNI config (and daemon config) under :func:`node_dir`."""

    def setup_nodes(self, state: LabState) -> None:
        """Build the per-node datapath once every node is on the underlay."""

    def add_pod(self, state: LabState, node: NodeState, pod: PodState) -> str:
        """CNI ADD of ``pod.netns`` (which exists, ``lo`` up) on ``node``; returns its IP."""
        raise NotImplementedError

    def del_pod(self, state: LabState, node: NodeState, pod: PodState) -> None:
        """CNI DEL: release the IP and remove the host side (the pod netns may be gone)."""

    def nat_rules(self, state: LabState, node: NodeState) -> list[str]:
        """iptables-restore lines for the nat table after kube-proxy's (masquerade)."""
        del state, node
        return []

    def stop(self, state: LabState) -> None:
        """Stop the datapath's daemons (the netns teardown kills whatever is left)."""

    def node_annotations(self, state: LabState, node: NodeState) -> dict[str, str]:
        """The annotations the datapath's agent (flanneld, calico/node) puts on ``node``'s
        Node object; none by default."""
        del state, node
        return {}


def datapath_for(cni: str) -> Datapath:
    """The datapath of spec ``cni:`` value ``cni``; LabError if unknown."""
    try:
        info = DATAPATHS.entry(cni)
    except KeyError:
        raise LabError(f"no lab datapath {cni!r}; known: {', '.join(DATAPATHS)}") from None
    return info.create()


def resolv_conf(nameserver: str, namespace: str) -> str:
    """A pod's ``resolv.conf`` as kubelet writes it for ``dnsPolicy: ClusterFirst``."""
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    return f"search {search}\nnameserver {nameserver}\noptions ndots:5\n"


def _own_netns_dir(state: LabState, netns: str) -> Path:
    if not netns.startswith(f"{LAB_PREFIX}{state.name}-"):
        raise LabError(f"refusing to touch {ETC_NETNS / netns}: not a netns of lab {state.name}")
    return ETC_NETNS / netns


def write_resolv_conf(state: LabState, pod: PodState) -> None:
    """Write ``/etc/netns/<pod netns>/resolv.conf`` (nothing for host-network pods, which
    keep the node's, or when the lab has no cluster DNS)."""
    if pod.host_network or not state.dns_ip:
        return
    d = _own_netns_dir(state, pod.netns)
    d.mkdir(parents=True, exist_ok=True)
    (d / "resolv.conf").write_text(resolv_conf(state.dns_ip, pod.namespace))


def remove_resolv_conf(state: LabState, netns: str) -> None:
    """Remove ``/etc/netns/<netns>`` if it belongs to this lab."""
    shutil.rmtree(_own_netns_dir(state, netns), ignore_errors=True)


def remove_all_resolv_confs(lab: str) -> None:
    """Remove every ``/etc/netns/pf-<lab>-*`` directory (``lab down``)."""
    if ETC_NETNS.is_dir():
        for d in ETC_NETNS.iterdir():
            if d.name.startswith(f"{LAB_PREFIX}{lab}-") and d.is_dir():
                shutil.rmtree(d, ignore_errors=True)


def update_dns(state: LabState) -> bool:
    """Point pods at the cluster DNS: the kube-dns ClusterIP, or (no services) the first DNS
    pod's IP; (re)write every pod's resolv.conf when that changed. True if it changed."""
    dns_ip = next((s.clusterIP for s in state.services
                   if (s.namespace, s.name) == (DNS_NAMESPACE, DNS_SERVICE)), None)
    if dns_ip is None and state.spec.get("dns", False):
        dns_ip = next((p.ip for p in state.pods if p.namespace == DNS_NAMESPACE
                       and DNS_LABELS.items() <= p.labels.items() and p.ip), None)
    if dns_ip == state.dns_ip:
        return False
    state.dns_ip = dns_ip
    for pod in state.pods:
        write_resolv_conf(state, pod)
    return True


def create_pod_network(state: LabState, node: NodeState, pod: PodState, dp: Datapath) -> str:
    """Make ``pod``'s sandbox as a runtime does (new netns, ``lo`` up), CNI ADD it through
    ``dp`` and write its resolv.conf; returns its IP (the node IP for host-network pods)."""
    if pod.host_network:
        return node.ip
    add_netns([pod.netns])
    ip_batch(pod.netns, ["link set lo up"])
    ip = dp.add_pod(state, node, pod)
    write_resolv_conf(state, pod)
    return ip


def remove_pod_network(state: LabState, pod: PodState, dp: Datapath) -> None:
    """Kill what runs in the pod, CNI DEL it (if its node still exists), delete its netns
    and resolv.conf. A host-network pod only loses its own processes."""
    if pod.host_network:
        kill_pids(pod.pids, since=pod.created)
        return
    kill_pids(netns_pids(pod.netns))
    try:
        node = state.node(pod.node)
    except KeyError:
        node = None
    if node is not None and netns_exists(node.netns):
        with contextlib.suppress(LabError):
            dp.del_pod(state, node, pod)
    delete_netns(pod.netns)
    remove_resolv_conf(state, pod.netns)
