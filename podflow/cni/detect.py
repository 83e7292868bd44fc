"""CNI detection: which profile fits a node's datapath.

``PROFILES`` is the explicit registry of detectors (a :class:`~podflow.registry.Registry`),
one module per CNI, each with help text; importing this module has no side effect.
:func:`detect` runs every detector on a :class:`~podflow.cni.snapshot.NodeSnapshot` and keeps
the one with the most evidence; when none recognises the datapath it returns the generic
profile with an evidence line saying so.

Example::

    >>> from podflow.cni.snapshot import NodeSnapshot
    >>> d = detect(NodeSnapshot(), node_name="node1")
    >>> d.profile.name, d.evidence[0].startswith("no known CNI datapath")
    ('generic', True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from podflow.cni import calico, flannel, hostgw, macvlan
from podflow.cni.profile import Detection, generic_profile
from podflow.cni.snapshot import NodeSnapshot
from podflow.inventory.history import Inventory
from podflow.registry import Plugin, Registry

__all__ = ["PROFILES", "Detection", "ProfileDetector", "detect"]

DetectFn = Callable[[NodeSnapshot, "str | None", "Inventory | None"], "Detection | None"]


@dataclass(frozen=True, slots=True)
class ProfileDetector(Plugin):
    """One registered CNI profile: its name (as recorded in flows and accepted by ``--cni``),
    a help line, and its detector ``"module:function"``."""

    def detect(self, snapshot: NodeSnapshot, node_name: str | None,
               inventory: Inventory | None) -> Detection | None:
        """Run the detector (None: not this CNI)."""
        fn: DetectFn = self.load()
        return fn(snapshot, node_name, inventory)


PROFILES: Registry[ProfileDetector] = Registry("CNI profile", [
    ProfileDetector(flannel.NAME, flannel.HELP, "podflow.cni.flannel:detect"),
    ProfileDetector(hostgw.NAME, hostgw.HELP, "podflow.cni.hostgw:detect"),
    ProfileDetector(calico.BGP, calico.HELP_BGP, "podflow.cni.calico:detect_bgp"),
    ProfileDetector(calico.VXLAN, calico.HELP_VXLAN, "podflow.cni.calico:detect_vxlan"),
    ProfileDetector(macvlan.NAME, macvlan.HELP, "podflow.cni.macvlan:detect"),
])
"""Every known CNI profile, by name."""


def detect(snapshot: NodeSnapshot, inventory: Inventory | None = None,
           node_name: str | None = None, only: str | None = None) -> Detection:
    """The best-supported profile for ``snapshot`` (generic if none fits).

    Args:
        snapshot: the node's datapath picture.
        node_name: the node's name (detectors may infer it from ``inventory`` otherwise).
        inventory: the cluster inventory, for other nodes' podCIDRs and addresses.
        only: restrict detection to this registered profile (``--cni NAME``).

    Raises:
        KeyError: ``only`` names no registered profile.
    """
    detectors = [PROFILES[only]] if only is not None else list(PROFILES.values())
    found = [d for d in (x.detect(snapshot, node_name, inventory) for x in detectors) if d]
    if found:
        return max(found, key=lambda d: len(d.evidence))
    kinds = sorted({f"{x.name}({x.kind})" for x in snapshot.links if x.kind})
    tried = ", ".join(x.name for x in detectors)
    return Detection(generic_profile(node_name or "unknown"), (
        f"no known CNI datapath recognised (tried: {tried}); links: {', '.join(kinds) or 'none'}",
        "using the generic profile: no gateway/tunnel address rules, loopback entries dropped",
    ))
