"""CNI detection from golden node snapshots, and the flannel-vxlan profile's rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from podflow.cni import flannel
from podflow.cni.detect import PROFILES, detect
from podflow.cni.profile import CniProfile
from podflow.cni.snapshot import NodeSnapshot, parse_subnet_env
from podflow.inventory.history import Inventory
from podflow.model.conntrack import CtEntry, CtEventType, CtTuple
from tests.unit.inventory.test_history import inventory

NODES = Path(__file__).parents[2] / "data" / "nodes"


def snapshot(name: str = "flannel-vxlan-node1.json") -> NodeSnapshot:
    return NodeSnapshot.from_json((NODES / name).read_text())


def test_golden_snapshot_round_trip() -> None:
    snap = snapshot()
    assert NodeSnapshot.from_json(snap.to_json()) == snap
    vx = snap.link("flannel.1")
    assert vx is not None and (vx.kind, vx.vxlan_id, vx.vxlan_port, vx.vxlan_local) == (
        "vxlan", 1, 8472, "172.18.0.1")
    assert [r.dst for r in snap.routes if r.onlink and r.dev == "flannel.1"] == [
        "10.244.1.0/24", "10.244.2.0/24"]
    with pytest.raises(ValueError):
        NodeSnapshot.from_json('{"version": 99}')


def test_detect_flannel_vxlan_from_golden_snapshot() -> None:
    d = detect(snapshot(), node_name="node1")
    p = d.profile
    assert p.name == "flannel-vxlan"
    assert (p.node_name, p.pod_cidrs, p.cluster_cidrs) == ("node1", ("10.244.0.0/24",),
                                                           ("10.244.0.0/16",))
    assert [(t.proto, t.port, t.device) for t in p.tunnels] == [(17, 8472, "flannel.1")]
    assert p.masquerade and p.default_sources == ("conntrack", "sockets", "packets")
    text = "\n".join(d.evidence)
    for needle in ("vxlan link flannel.1 (VNI 1, UDP port 8472", "bridge cni0 with 10.244.0.1/24",
                   "2 onlink route(s)", "FLANNEL_NETWORK=10.244.0.0/16",
                   "10-flannel.conflist uses plugin type flannel"):
        assert needle in text
    assert dict(p.local_addresses) == {"10.244.0.0": "node1", "10.244.0.1": "node1",
                                       "172.18.0.1": "node1"}


def test_node_name_inferred_from_inventory() -> None:
    d = detect(snapshot(), inventory())
    assert d.profile.node_name == "node1"


def test_unknown_datapath_gets_generic_profile() -> None:
    d = detect(snapshot("plain-host.json"), node_name="x")
    assert d.profile.name == "generic"
    assert d.evidence[0].startswith("no known CNI datapath recognised (tried: flannel-vxlan, "
                                    "flannel-host-gw, calico-bgp, calico-vxlan, macvlan)")
    assert "ul-node1(veth)" in d.evidence[0]
    assert d.profile.gateway_offsets == () and d.profile.tunnels == ()


def test_registry_is_explicit_with_help() -> None:
    assert set(PROFILES) == {"flannel-vxlan", "flannel-host-gw", "calico-bgp", "calico-vxlan",
                             "macvlan"}
    assert "VXLAN" in PROFILES["flannel-vxlan"].help
    assert all(p.help and p.name == n for n, p in PROFILES.items())
    assert detect(snapshot(), node_name="n", only="flannel-vxlan").profile.name == "flannel-vxlan"
    with pytest.raises(KeyError):
        detect(snapshot(), only="calico")


def test_vtep_and_gateway_of_every_node_stand_for_it() -> None:
    inv = inventory()
    p = detect(snapshot(), node_name="node1").profile
    at = 1.8e9
    assert p.node_for_address("10.244.1.0", inv, at) == "node2"
    assert p.node_for_address("10.244.2.1", inv, at) == "node3"
    assert p.node_for_address("10.244.0.1", inv, at) == "node1"
    assert p.node_for_address("10.244.1.2", inv, at) is None  # a pod, not a gateway
    assert p.node_for_address("10.244.7.0", inv, at) is None  # no node has that podCIDR
    # without any inventory the local node still resolves from the snapshot
    assert p.node_for_address("10.244.0.0", Inventory(), at) == "node1"
    ident = inv.identity("10.244.2.0", at, p)
    assert (ident.kind.value, ident.node_name) == ("node", "node3")


def test_cluster_cidr_from_inventory_without_subnet_env() -> None:
    snap = dataclasses.replace(snapshot(), subnet_env={})
    d = flannel.detect(snap, "node1", inventory())
    assert d is not None
    assert d.profile.cluster_cidrs == ("10.244.0.0/23", "10.244.2.0/24")
    assert d.profile.pod_cidrs == ("10.244.0.0/24",)  # from cni0's address


def test_infrastructure_entries() -> None:
    inv = inventory()
    p = detect(snapshot(), node_name="node1").profile
    underlay = CtEntry(CtEventType.NEW, CtTuple("172.18.0.1", "172.18.0.2", 17, 48311, 8472),
                       CtTuple("172.18.0.2", "172.18.0.1", 17, 8472, 48311))
    assert p.is_infrastructure(underlay, inv, 0.0)
    lo = CtEntry(CtEventType.NEW, CtTuple("127.0.0.1", "127.0.0.1", 6, 40000, 10248),
                 CtTuple("127.0.0.1", "127.0.0.1", 6, 10248, 40000))
    assert p.is_infrastructure(lo, inv, 0.0)
    pod_udp = CtEntry(CtEventType.NEW, CtTuple("10.244.0.2", "10.244.1.2", 17, 40000, 8472),
                      CtTuple("10.244.1.2", "10.244.0.2", 17, 8472, 40000))
    assert not p.is_infrastructure(pod_udp, inv, 0.0)
    dns = CtEntry(CtEventType.NEW, CtTuple("172.18.0.1", "172.18.0.2", 17, 40000, 53),
                  CtTuple("172.18.0.2", "172.18.0.1", 17, 53, 40000))
    assert not p.is_infrastructure(dns, inv, 0.0)
    generic = CniProfile("generic", "n")
    assert not generic.is_infrastructure(underlay, inv, 0.0)


def test_parse_subnet_env() -> None:
    env = parse_subnet_env('# flannel\nFLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_IPMASQ="true"\n\n')
    assert env == {"FLANNEL_NETWORK": "10.244.0.0/16", "FLANNEL_IPMASQ": "true"}


GOLDEN = {"flannel-vxlan": "flannel-vxlan-node1.json",
          "flannel-host-gw": "flannel-host-gw-node1.json",
          "calico-bgp": "calico-bgp-node1.json", "calico-vxlan": "calico-vxlan-node1.json",
          "macvlan": "macvlan-node1.json"}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_each_golden_lab_node_detected_as_its_datapath(name: str) -> None:
    snap = snapshot(GOLDEN[name])
    assert NodeSnapshot.from_json(snap.to_json()) == snap
    d = detect(snap, node_name="node1")
    assert d.profile.name == name and d.profile.node_name == "node1"
    assert d.profile.pod_cidrs[0] == "10.244.0.0/24"
    # detection is exclusive: no other detector claims the node
    others = [n for n, p in PROFILES.items() if n != name and p.detect(snap, "node1", None)]
    assert others == []
    want = ("sockets", "packets") if name == "macvlan" else ("conntrack", "sockets", "packets")
    assert d.profile.default_sources == want
    assert dict(d.profile.source_options) == ({"sidecar": True} if name == "macvlan" else {})
    assert dict(d.profile.local_addresses)["172.18.0.1"] == "node1"


def test_flannel_host_gw_profile() -> None:
    d = detect(snapshot(GOLDEN["flannel-host-gw"]), inventory())
    p = d.profile
    assert (p.node_name, p.gateway_offsets, p.tunnels, p.masquerade) == ("node1", (1,), (), True)
    assert "1 route(s) to other nodes' pod subnets via their node IPs (host-gw): " \
        "10.244.1.0/24 via 172.18.0.2" in d.evidence
    inv = inventory()
    assert p.node_for_address("10.244.1.1", inv, 1.8e9) == "node2"
    assert p.node_for_address("10.244.1.0", inv, 1.8e9) is None   # no VTEP on host-gw


def _entry(src: str, dst: str, proto: int, sport: int, dport: int) -> CtEntry:
    return CtEntry(CtEventType.NEW, CtTuple(src, dst, proto, sport, dport),
                   CtTuple(dst, src, proto, dport, sport))


def test_calico_bgp_profile() -> None:
    d = detect(snapshot(GOLDEN["calico-bgp"]), node_name="node1")
    p, text = d.profile, "\n".join(d.evidence)
    for needle in ("cali* pod veth(s)", "MAC ee:ee:ee:ee:ee:ee", "gateway 169.254.1.1",
                   "10-calico.conflist uses plugin type calico (ipam calico-ipam)",
                   "blackhole route(s) for this node's IPAM block(s): 10.244.0.0/24",
                   "1 route(s) learned over BGP (proto bird): 10.244.1.0/24 via 172.18.0.2"):
        assert needle in text
    assert (p.tunnels, p.gateway_offsets, p.control_ports) == ((), (), ((6, 179),))
    assert p.cluster_cidrs == ("10.244.0.0/23",) and p.masquerade
    inv = Inventory()
    assert p.is_infrastructure(_entry("172.18.0.1", "172.18.0.2", 6, 40123, 179), inv, 0.0)
    assert p.is_infrastructure(_entry("172.18.0.2", "172.18.0.1", 6, 179, 40123), inv, 0.0)
    assert not p.is_infrastructure(_entry("10.244.0.2", "10.244.1.2", 6, 40000, 179), inv, 0.0)
    assert p.node_for_address("169.254.1.1", inv, 0.0) is None
    assert p.node_for_address("172.18.0.1", inv, 0.0) == "node1"


def test_calico_vxlan_profile() -> None:
    d = detect(snapshot(GOLDEN["calico-vxlan"]), inventory())
    p, text = d.profile, "\n".join(d.evidence)
    assert "vxlan link vxlan.calico (VNI 4096, UDP port 4789, local 172.18.0.1) with tunnel " \
        "address 10.244.0.0/32" in text
    assert "10.244.1.0/24 via 10.244.1.0" in text
    assert [(t.proto, t.port, t.device) for t in p.tunnels] == [(17, 4789, "vxlan.calico")]
    assert p.gateway_offsets == (0,) and p.pod_gateway == "169.254.1.1"
    inv = inventory()
    assert p.node_for_address("10.244.0.0", Inventory(), 0.0) == "node1"   # local tunnel
    assert p.node_for_address("10.244.1.0", inv, 1.8e9) == "node2"         # remote tunnel
    assert p.node_for_address("10.244.1.1", inv, 1.8e9) is None
    assert p.is_infrastructure(_entry("172.18.0.1", "172.18.0.2", 17, 51000, 4789), inv, 0.0)
    assert not p.is_infrastructure(_entry("10.244.0.2", "10.244.1.2", 17, 5, 4789), inv, 0.0)


def test_macvlan_profile() -> None:
    d = detect(snapshot(GOLDEN["macvlan"]), node_name="node1")
    p = d.profile
    assert d.evidence[0].startswith("CNI config 10-macvlan.conflist uses plugin type macvlan "
                                    "(master eth0, mode bridge, ipam host-local 10.244.0.0/24)")
    assert "bypasses the node's stack" in d.evidence[1]
    assert (p.masquerade, p.tunnels, p.gateway_offsets) == (False, (), ())
