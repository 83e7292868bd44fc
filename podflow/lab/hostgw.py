"""``cni: flannel-host-gw``: flannel's bridge wiring with plain routes instead of a tunnel.

With ``Backend.Type: host-gw`` flanneld creates no device: for every other node M it adds one
route ``<M's pod subnet> via <M's underlay IP> dev eth0`` (all nodes share the underlay L2
segment, which host-gw requires). Pods are wired exactly as with the VXLAN backend (cni0,
the ``bridge`` plugin, host-local IPAM), subnet.env carries MTU 1500, and flanneld's
masquerade chain is the same.

Example::

    >>> host_gw_routes([("10.244.1.0/24", "172.18.0.2")])
    ['route replace 10.244.1.0/24 via 172.18.0.2 dev eth0']
"""

from __future__ import annotations

from podflow.lab.flannel import FlannelVxlan
from podflow.lab.netns import ip_batch
from podflow.lab.state import LabState

BACKEND = "host-gw"
"""kube-flannel's backend type."""


def host_gw_routes(peers: list[tuple[str, str]]) -> list[str]:
    """``ip -batch`` lines for (pod subnet, node IP) of every other node."""
    return [f"route replace {subnet} via {node_ip} dev eth0" for subnet, node_ip in peers]


class FlannelHostGw(FlannelVxlan):
    """The host-gw backend: same pods and masquerade as :class:`FlannelVxlan`, no tunnel."""

    name = "flannel-host-gw"
    tunnel_offset = None
    backend = BACKEND

    def setup_nodes(self, state: LabState) -> None:
        """A route to every other node's pod subnet via its underlay IP."""
        for n in state.nodes:
            ip_batch(n.netns, host_gw_routes([(m.podCIDR, m.ip) for m in state.nodes
                                              if m is not n]))

