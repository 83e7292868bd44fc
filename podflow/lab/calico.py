"""``cni: calico-bgp`` and ``cni: calico-vxlan``: Calico's routed pod wiring.

Each pod gets what Calico's CNI plugin creates: a veth whose host side is ``cali`` + 11 hex
digits of ``sha1("<namespace>.<pod>")`` (MAC ``ee:ee:ee:ee:ee:ee``, no address, proxy ARP on,
proxy delay 0), the pod side ``eth0`` holding ``IP/32`` with a link route to 169.254.1.1 and
the default route via it, and a ``/32`` host route to the pod on the node. No bridge. The
veths are built here rather than by the ``ptp`` plugin because ptp names the host side
``veth*`` and gives it the gateway address, which is not what a Calico node looks like; the
pod's address still comes from a real IPAM plugin (``host-local`` over the node's block,
standing in for calico-ipam).

Across nodes, ``calico-bgp`` runs BIRD per node (:mod:`podflow.lab.bird`, full-mesh iBGP,
routes ``proto bird`` with the underlay next hop) and ``calico-vxlan`` programs what felix
does for the VXLAN backend: ``vxlan.calico`` (VNI 4096, UDP 4789, MTU 1450) holding the
node's tunnel address (the block's first address, as calico-ipam hands it out, ``10.244.N.0``),
a blackhole for the local block, and per other node a permanent neighbour, an FDB entry and
``<block> via <its tunnel address> dev vxlan.calico onlink`` (all ``proto 80``, felix's).
Both masquerade pod traffic leaving the pool (natOutgoing, chain ``cali-nat-outgoing``).

Example::

    >>> veth_name("shop", "backend-7d9f-abcde")
    'calia0ea498de4d'
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
from typing import Any

from podflow.lab import bird
from podflow.lab.cniplugin import container_id, invoke, result_ip
from podflow.lab.datapath import Datapath, node_dir
from podflow.lab.flannel import link_mac
from podflow.lab.netns import LabError, bridge_batch, ip_batch, run, sysctl
from podflow.lab.state import LabState, NodeState, PodState

GATEWAY = "169.254.1.1"
"""The pods' default gateway: answered by proxy ARP on the cali veth, never a real host."""
HOST_MAC = "ee:ee:ee:ee:ee:ee"
"""MAC of every cali veth's host side."""
NETWORK_NAME = "k8s-pod-network"
"""Calico's CNI network name."""
VXLAN_DEV, VXLAN_VNI, VXLAN_PORT, VXLAN_MTU = "vxlan.calico", 4096, 4789, 1450
"""Calico's VXLAN device, VNI, UDP port and MTU."""
FELIX_PROTO = 80
"""Route protocol number felix programs its routes with."""


def veth_name(namespace: str, pod: str) -> str:
    """The host-side veth name Calico derives from the workload endpoint (15 chars)."""
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def conflist(node: str, mtu: int) -> dict[str, Any]:
    """``/etc/cni/net.d/10-calico.conflist`` as calico's install-cni writes it."""
    return {"name": NETWORK_NAME, "cniVersion": "0.3.1", "plugins": [
        {"type": "calico", "log_level": "info", "datastore_type": "kubernetes",
         "nodename": node, "mtu": mtu, "ipam": {"type": "calico-ipam"},
         "policy": {"type": "k8s"},
         "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}},
        {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}}]}


def nat_outgoing_rules(pool: str) -> list[str]:
    """iptables-restore lines (nat) for an IP pool with ``natOutgoing: true``."""
    c = '-m comment --comment "cali:natOutgoing"'
    return [":cali-POSTROUTING - [0:0]", ":cali-nat-outgoing - [0:0]",
            f"-A POSTROUTING {c} -j cali-POSTROUTING",
            f"-A cali-POSTROUTING {c} -j cali-nat-outgoing",
            f"-A cali-nat-outgoing -s {pool} ! -d {pool} {c} -j MASQUERADE --random-fully"]


class Calico(Datapath):
    """The pod wiring and natOutgoing shared by both Calico backends."""

    mtu = 1500
    route_proto = "boot"
    """Protocol of the per-pod host routes."""

    def _ipam(self, state: LabState, node: NodeState) -> dict[str, Any]:
        data = (node_dir(state, node) / "cni" / "networks").resolve()
        return {"cniVersion": "0.3.1", "name": NETWORK_NAME, "type": "host-local",
                "ipam": {"type": "host-local", "ranges": [[{"subnet": node.podCIDR}]],
                         "dataDir": str(data)}}

    def write_node_files(self, state: LabState, node: NodeState) -> None:
        """10-calico.conflist."""
        netd = node_dir(state, node) / "cni" / "net.d"
        netd.mkdir(parents=True, exist_ok=True)
        (netd / "10-calico.conflist").write_text(
            json.dumps(conflist(node.name, self.mtu), indent=2) + "\n")

    def add_pod(self, state: LabState, node: NodeState, pod: PodState) -> str:
        """IPAM, the cali veth pair, the pod's /32 and routes, proxy ARP, the host route."""
        cid = container_id(pod.uid)
        ip = result_ip(invoke("ADD", node.netns, cid, pod.netns, self._ipam(state, node)),
                       pod.netns)
        host = veth_name(pod.namespace, pod.name)
        ip_batch(node.netns, [
            f"link add {host} mtu {self.mtu} type veth peer name eth0 mtu {self.mtu} "
            f"netns {pod.netns}",
            f"link set {host} address {HOST_MAC}", f"link set {host} up",
            f"route replace {ip}/32 dev {host} scope link proto {self.route_proto}"])
        sysctl(node.netns, {f"net.ipv4.conf.{host}.proxy_arp": "1",
                            f"net.ipv4.neigh.{host}.proxy_delay": "0",
                            f"net.ipv4.conf.{host}.forwarding": "1"})
        ip_batch(pod.netns, [f"addr add {ip}/32 dev eth0", "link set eth0 up",
                             f"route add {GATEWAY} dev eth0 scope link",
                             f"route add default via {GATEWAY} dev eth0"])
        return ip

    def del_pod(self, state: LabState, node: NodeState, pod: PodState) -> None:
        """Release the address, delete the host veth (and with it the host route)."""
        with contextlib.suppress(LabError):
            invoke("DEL", node.netns, container_id(pod.uid), pod.netns, self._ipam(state, node))
        run(["ip", "-n", node.netns, "link", "del", veth_name(pod.namespace, pod.name)],
            check=False)

    def nat_rules(self, state: LabState, node: NodeState) -> list[str]:
        """natOutgoing for the pool."""
        return nat_outgoing_rules(state.podCIDR)

    def node_annotations(self, state: LabState, node: NodeState) -> dict[str, str]:
        """calico/node's: the node's underlay address with its prefix length."""
        plen = state.underlay.rsplit("/", 1)[-1]
        return {"projectcalico.org/IPv4Address": f"{node.ip}/{plen}"}


class CalicoBgp(Calico):
    """``cni: calico-bgp``: BIRD per node, full-mesh iBGP, no tunnel."""

    name = "calico-bgp"

    def _files(self, state: LabState, node: NodeState) -> tuple[Any, Any, Any, Any]:
        d = node_dir(state, node) / "calico"
        return d / "bird.cfg", d / "bird.ctl", d / "bird.pid", d / "bird.log"

    def write_node_files(self, state: LabState, node: NodeState) -> None:
        """10-calico.conflist and the node's bird.cfg."""
        super().write_node_files(state, node)
        conf, _, _, log = self._files(state, node)
        conf.parent.mkdir(parents=True, exist_ok=True)
        peers = [m.ip for m in state.nodes if m is not node]
        conf.write_text(bird.bird_config(node.ip, node.podCIDR, state.podCIDR, peers, log))

    def setup_nodes(self, state: LabState) -> None:
        """Start BIRD on every node and wait until each has every other node's block."""
        for n in state.nodes:
            conf, sock, pid, _ = self._files(state, n)
            bird.start(n.netns, conf, sock, pid)
        bird.wait_converged({n.netns: {m.podCIDR for m in state.nodes if m is not n}
                             for n in state.nodes})

    def stop(self, state: LabState) -> None:
        """SIGTERM every node's BIRD."""
        for n in state.nodes:
            bird.stop(self._files(state, n)[2], state.created)


class CalicoVxlan(Calico):
    """``cni: calico-vxlan``: vxlan.calico with felix's routes, neighbours and FDB entries."""

    name = "calico-vxlan"
    tunnel_offset = 0
    mtu = VXLAN_MTU
    route_proto = str(FELIX_PROTO)

    def setup_nodes(self, state: LabState) -> None:
        """vxlan.calico on every node, then each node's entries for every other."""
        for n in state.nodes:
            tunnel = str(ipaddress.IPv4Network(n.podCIDR).network_address)
            n.vtep_ip = tunnel
            ip_batch(n.netns, [
                f"link add {VXLAN_DEV} type vxlan id {VXLAN_VNI} local {n.ip} dev eth0 "
                f"dstport {VXLAN_PORT} nolearning",
                f"link set {VXLAN_DEV} mtu {VXLAN_MTU}",
                f"addr add {tunnel}/32 dev {VXLAN_DEV}", f"link set {VXLAN_DEV} up",
                f"route replace blackhole {n.podCIDR} proto {FELIX_PROTO}"])
            n.vtep_mac = link_mac(n.netns, VXLAN_DEV)
        state.save()
        for n in state.nodes:
            others = [m for m in state.nodes if m is not n]
            ip_batch(n.netns, [
                line for m in others for line in (
                    f"neigh replace {m.vtep_ip} lladdr {m.vtep_mac} dev {VXLAN_DEV} "
                    "nud permanent",
                    f"route replace {m.podCIDR} via {m.vtep_ip} dev {VXLAN_DEV} onlink "
                    f"proto {FELIX_PROTO}")])
            bridge_batch(n.netns, [f"fdb replace {m.vtep_mac} dev {VXLAN_DEV} dst {m.ip} "
                                   "self permanent" for m in others])

    def node_annotations(self, state: LabState, node: NodeState) -> dict[str, str]:
        """calico/node's address plus, once set up, the node's VXLAN tunnel address and MAC."""
        ann = super().node_annotations(state, node)
        if node.vtep_ip:
            ann["projectcalico.org/IPv4VXLANTunnelAddr"] = node.vtep_ip
            ann["projectcalico.org/VXLANTunnelMACAddr"] = node.vtep_mac or ""
        return ann
