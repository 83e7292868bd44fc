"""``cni: macvlan``: pods on the underlay through the real ``macvlan`` plugin, bridge mode.

Every pod gets a macvlan child of its node's ``eth0`` (``master: eth0``, ``mode: bridge``)
moved into the pod netns, with an address from ``host-local`` over the node's pod /24. Pod
traffic never enters a node's network stack: same-node pods talk through the macvlan bridge,
everything else goes out on the underlay L2 segment.

Addressing choice: pods keep their own per-node /24 (not the underlay subnet), and the
fabric (the underlay's router) holds the first address of every node's pod /24 on its
underlay bridge, so it is each pod's default gateway. Pods reach other nodes' pods, the
nodes themselves (a macvlan child cannot talk to its parent directly, but can through the
router) and external hosts through that router, as in a real macvlan cluster where the
pod subnets are routed by the physical network; there is no masquerade (externals see pod
IPs) and, since kube-proxy on the node never sees pod traffic, no ClusterIP services (the
spec rejects them).

Example::

    >>> conflist("10.244.1.0/24", "/tmp/ipam")["plugins"][0]["ipam"]["ranges"]
    [[{'subnet': '10.244.1.0/24', 'gateway': '10.244.1.1'}]]
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from podflow.lab.cniplugin import container_id, invoke, result_ip
from podflow.lab.datapath import Datapath, node_dir
from podflow.lab.state import LabState, NodeState, PodState

NETWORK_NAME = "macvlan-underlay"
"""The CNI network name."""
CONFLIST = "10-macvlan.conflist"
"""The node's conflist file name."""


def gateway(node_cidr: str) -> str:
    """The router's address in a node's pod /24: its first address."""
    return str(ipaddress.IPv4Network(node_cidr).network_address + 1)


def conflist(node_cidr: str, data_dir: str) -> dict[str, Any]:
    """The node's ``10-macvlan.conflist``: macvlan on eth0, bridge mode, host-local IPAM."""
    return {"cniVersion": "0.3.1", "name": NETWORK_NAME, "plugins": [
        {"type": "macvlan", "master": "eth0", "mode": "bridge", "mtu": 1500,
         "ipam": {"type": "host-local",
                  "ranges": [[{"subnet": node_cidr, "gateway": gateway(node_cidr)}]],
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data_dir}}]}


class Macvlan(Datapath):
    """The macvlan datapath (see the module docstring)."""

    name = "macvlan"
    services = False
    masquerade = False

    def _conf(self, state: LabState, node: NodeState) -> dict[str, Any]:
        data = (node_dir(state, node) / "cni" / "networks").resolve()
        return conflist(node.podCIDR, str(data))

    def _plugin(self, state: LabState, node: NodeState) -> dict[str, Any]:
        conf = self._conf(state, node)
        return {"cniVersion": conf["cniVersion"], "name": conf["name"], **conf["plugins"][0]}

    def fabric_commands(self, state: LabState) -> list[str]:
        """The router's gateway address in every node's pod /24, on the underlay bridge."""
        return [f"addr add {gateway(n.podCIDR)}/24 dev underlay" for n in state.nodes]

    def write_node_files(self, state: LabState, node: NodeState) -> None:
        """10-macvlan.conflist."""
        netd = node_dir(state, node) / "cni" / "net.d"
        netd.mkdir(parents=True, exist_ok=True)
        (netd / CONFLIST).write_text(json.dumps(self._conf(state, node), indent=2) + "\n")

    def add_pod(self, state: LabState, node: NodeState, pod: PodState) -> str:
        """The macvlan plugin, run in the node netns (where its master eth0 is)."""
        out = invoke("ADD", node.netns, container_id(pod.uid), pod.netns,
                     self._plugin(state, node))
        return result_ip(out, pod.netns)

    def del_pod(self, state: LabState, node: NodeState, pod: PodState) -> None:
        """macvlan DEL (releases the host-local address)."""
        invoke("DEL", node.netns, container_id(pod.uid), pod.netns, self._plugin(state, node))
