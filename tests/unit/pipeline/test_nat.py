"""NAT resolution, one test per case, with conntrack entries as a Flannel-VXLAN node shows them.

The cluster is tests/data/k8s (3 nodes, node N has underlay 172.18.0.N and podCIDR
10.244.(N-1).0/24); the observing node is node1 (tests/data/nodes/flannel-vxlan-node1.json).
"""

from __future__ import annotations

import dataclasses

from podflow.cni.detect import detect
from podflow.cni.profile import CniProfile
from podflow.inventory.history import Inventory
from podflow.model.conntrack import CtEntry, CtEventType, CtStatus, CtTuple
from podflow.model.flow import Address, Nat, Service
from podflow.pipeline.enrich import endpoint
from podflow.pipeline.nat import Resolved, resolve
from tests.unit.cni.test_detect import snapshot
from tests.unit.inventory.test_history import T, inventory, objects

AT = T("2026-11-20T11:30:00Z")
INV = inventory()
NODE1 = detect(snapshot(), node_name="node1").profile
INV_OBJECTS = objects()
INV_OBJECTS_WITHOUT_BACKEND = dataclasses.replace(
    INV_OBJECTS, services=tuple(s for s in INV_OBJECTS.services if s.name != "backend"))
NAT_BITS = CtStatus.SEEN_REPLY | CtStatus.ASSURED | CtStatus.CONFIRMED
DNAT = NAT_BITS | CtStatus.DST_NAT | CtStatus.DST_NAT_DONE
SNAT = NAT_BITS | CtStatus.SRC_NAT | CtStatus.SRC_NAT_DONE


def entry(orig: tuple[str, int | None, str, int | None], reply: tuple[str, int | None, str,
          int | None], proto: int = 6, status: CtStatus = NAT_BITS) -> CtEntry:
    """CtEntry from (src, sport, dst, dport) of both tuples."""
    o, r = orig, reply
    return CtEntry(CtEventType.DESTROY, CtTuple(o[0], o[2], proto, o[1], o[3]),
                   CtTuple(r[0], r[2], proto, r[1], r[3]), status=status)


def run(e: CtEntry, inv: Inventory = INV, profile: CniProfile = NODE1) -> Resolved:
    return resolve(e, inv, profile, AT)


def test_a_clusterip_dnat() -> None:
    r = run(entry(("10.244.0.2", 41000, "10.96.45.7", 9000),
                  ("10.244.1.3", 9000, "10.244.0.2", 41000), status=DNAT))
    assert (r.client, r.server) == (Address("10.244.0.2", 41000), Address("10.244.1.3", 9000))
    assert r.service == Service("shop", "backend", "api", "ClusterIP", "10.96.45.7", 9000)
    assert r.nat == Nat(original_destination=Address("10.96.45.7", 9000))
    assert (r.case, r.is_infrastructure) == ("clusterip", False)


def test_a_clusterip_udp_picks_the_udp_port() -> None:
    r = run(entry(("10.244.0.2", 53124, "10.96.0.10", 53),
                  ("10.244.2.9", 53, "10.244.0.2", 53124), proto=17, status=DNAT))
    assert r.service is not None and (r.service.name, r.service.port_name) == ("kube-dns", "dns")


def test_b_nodeport_cluster_policy_backend_on_other_node() -> None:
    r = run(entry(("192.168.100.20", 51000, "172.18.0.1", 30080),
                  ("10.244.1.2", 8080, "10.244.0.0", 62000), status=DNAT | SNAT))
    assert r.client == Address("192.168.100.20", 51000)  # the real client, un-SNATed
    assert r.server == Address("10.244.1.2", 8080)
    assert r.service == Service("shop", "frontend", "http", "NodePort", "172.18.0.1", 30080)
    assert r.nat == Nat(Address("172.18.0.1", 30080), Address("10.244.0.0", 62000))
    assert r.case == "nodeport"
    assert endpoint(r.client, INV, NODE1, AT).name == "visitor"


def test_b_nodeport_cluster_policy_backend_on_same_node() -> None:
    r = run(entry(("192.168.100.20", 51001, "172.18.0.1", 30080),
                  ("10.244.0.2", 8080, "10.244.0.1", 51001), status=DNAT | SNAT))
    assert (r.client, r.server) == (Address("192.168.100.20", 51001), Address("10.244.0.2", 8080))
    assert r.nat.translated_source == Address("10.244.0.1", 51001)
    assert r.service is not None and r.service.type == "NodePort"


def test_b_nodeport_snat_to_node_ip() -> None:
    r = run(entry(("192.168.100.20", 51003, "172.18.0.1", 30080),
                  ("10.244.1.2", 8080, "172.18.0.1", 40111), status=DNAT | SNAT))
    assert r.nat.translated_source == Address("172.18.0.1", 40111)
    assert r.client.ip == "192.168.100.20"


def test_c_nodeport_local_policy_no_snat() -> None:
    r = run(entry(("192.168.100.20", 51002, "172.18.0.1", 30081),
                  ("10.244.0.2", 8080, "192.168.100.20", 51002), status=DNAT))
    assert r.service == Service("shop", "frontend-local", "http", "NodePort", "172.18.0.1",
                                30081)
    assert r.nat == Nat(original_destination=Address("172.18.0.1", 30081))


def test_nodeport_on_a_gateway_address() -> None:
    # a pod reaching a NodePort via its own node's cni0 gateway (kube-proxy: addrtype LOCAL)
    r = run(entry(("10.244.0.3", 43500, "10.244.0.1", 30080),
                  ("10.244.1.2", 8080, "10.244.0.1", 43500), status=DNAT | SNAT))
    assert r.service is not None and r.service.name == "frontend"


def test_d_pod_to_external_masquerade() -> None:
    r = run(entry(("10.244.0.3", 43000, "192.168.100.10", 5432),
                  ("192.168.100.10", 5432, "172.18.0.1", 61234), status=SNAT))
    assert (r.client, r.server) == (Address("10.244.0.3", 43000), Address("192.168.100.10", 5432))
    assert r.nat == Nat(translated_source=Address("172.18.0.1", 61234))
    assert (r.service, r.case) == (None, "masquerade")


def test_e_hairpin() -> None:
    r = run(entry(("10.244.0.3", 44000, "10.96.45.7", 9000),
                  ("10.244.0.3", 9000, "10.244.0.1", 44000), status=DNAT | SNAT))
    assert (r.client, r.server) == (Address("10.244.0.3", 44000), Address("10.244.0.3", 9000))
    assert r.service is not None and r.service.name == "backend"
    assert r.nat == Nat(Address("10.96.45.7", 9000), Address("10.244.0.1", 44000))
    assert r.case == "hairpin"


def test_f_second_node_view_has_no_nat_and_client_is_ingress_node() -> None:
    node2 = CniProfile("flannel-vxlan", "node2", ("10.244.1.0/24",), ("10.244.0.0/16",),
                       gateway_offsets=(0, 1))
    r = run(entry(("10.244.0.0", 62000, "10.244.1.2", 8080),
                  ("10.244.1.2", 8080, "10.244.0.0", 62000)), profile=node2)
    assert (r.client, r.server, r.nat, r.service, r.case) == (
        Address("10.244.0.0", 62000), Address("10.244.1.2", 8080), Nat(), None, "none")
    ep = endpoint(r.client, INV, node2, AT)
    assert (ep.kind.value, ep.node_name) == ("node", "node1")


def test_g_plain_pod_to_pod_and_node_to_pod() -> None:
    r = run(entry(("10.244.0.2", 41500, "10.244.2.2", 9000),
                  ("10.244.2.2", 9000, "10.244.0.2", 41500)))
    assert (r.client.ip, r.server.ip, r.nat.is_empty, r.case) == (
        "10.244.0.2", "10.244.2.2", True, "none")
    # the local host talking to a remote pod leaves with its VTEP address
    r = run(entry(("10.244.0.0", 39000, "10.244.1.3", 9000),
                  ("10.244.1.3", 9000, "10.244.0.0", 39000)))
    assert r.nat.is_empty
    assert endpoint(r.client, INV, NODE1, AT).node_name == "node1"


def test_loadbalancer_ip_and_dnat_without_service() -> None:
    r = run(entry(("10.244.0.2", 45000, "192.168.200.50", 443),
                  ("10.244.1.2", 8080, "10.244.0.2", 45000), status=DNAT))
    assert r.service == Service("shop", "frontend-lb", "https", "LoadBalancer", "192.168.200.50",
                                443)
    # a hostPort (portmap) DNAT: no service, but the original destination is kept
    r = run(entry(("192.168.100.20", 50000, "172.18.0.1", 8443),
                  ("10.244.0.2", 8443, "192.168.100.20", 50000), status=DNAT))
    assert (r.service, r.case, r.nat.original_destination) == (
        None, "dnat", Address("172.18.0.1", 8443))


def test_nodeport_only_on_node_addresses() -> None:
    # an unknown VIP and a pod that happen to use port 30080 are not the NodePort
    r = run(entry(("10.244.0.2", 45500, "10.96.1.1", 30080),
                  ("10.244.1.2", 30080, "10.244.0.2", 45500), status=DNAT))
    assert (r.service, r.case) == (None, "dnat")
    r = run(entry(("10.244.0.2", 45600, "10.244.1.9", 30080),
                  ("10.244.1.8", 30080, "10.244.0.2", 45600), status=DNAT))
    assert r.service is None
    # another node's InternalIP is a node address too
    r = run(entry(("192.168.100.20", 51000, "172.18.0.3", 30080),
                  ("10.244.1.2", 8080, "10.244.2.0", 62000), status=DNAT | SNAT))
    assert r.service is not None and r.service.frontend_ip == "172.18.0.3"
    # with no nodes known at all, an address outside pod/service ranges is accepted
    bare = Inventory()
    bare.apply(dataclasses.replace(INV_OBJECTS, nodes=()), at=AT)
    r = run(entry(("192.168.100.20", 51000, "172.18.0.9", 30080),
                  ("10.244.1.2", 8080, "10.244.0.0", 62000), status=DNAT | SNAT), inv=bare)
    assert r.service is not None and r.service.type == "NodePort"


def test_infrastructure_is_flagged() -> None:
    r = run(entry(("172.18.0.1", 48311, "172.18.0.3", 8472),
                  ("172.18.0.3", 8472, "172.18.0.1", 48311), proto=17))
    assert (r.is_infrastructure, r.case) == (True, "infrastructure")
    r = run(entry(("127.0.0.1", 40000, "127.0.0.1", 10248),
                  ("127.0.0.1", 10248, "127.0.0.1", 40000)))
    assert r.is_infrastructure


def test_icmp_has_no_ports() -> None:
    r = run(entry(("10.244.0.2", None, "192.168.100.10", None),
                  ("192.168.100.10", None, "172.18.0.1", None), proto=1, status=SNAT))
    assert (r.client, r.server) == (Address("10.244.0.2"), Address("192.168.100.10"))
    assert r.nat.translated_source == Address("172.18.0.1")


def test_service_resolved_at_the_flow_time() -> None:
    inv = Inventory()
    inv.apply(INV_OBJECTS_WITHOUT_BACKEND, at=T("2026-11-20T09:00:00Z"))
    inv.apply(INV_OBJECTS, at=T("2026-11-20T10:30:00Z"))
    e = entry(("10.244.0.2", 41000, "10.96.45.7", 9000), ("10.244.1.3", 9000, "10.244.0.2", 41000))
    assert resolve(e, inv, NODE1, T("2026-11-20T10:00:00Z")).service is None
    assert resolve(e, inv, NODE1, T("2026-11-20T10:31:00Z")).service is not None


def test_multicast_membership_reports_are_infrastructure() -> None:
    from podflow.model.conntrack import CtEntry, CtEventType, CtTuple
    from podflow.pipeline.nat import resolve

    igmp = CtTuple("10.244.0.1", "224.0.0.22", 2)
    e = CtEntry(CtEventType.DESTROY, igmp, CtTuple("224.0.0.22", "10.244.0.1", 2))
    assert resolve(e, inventory(), NODE1, 0.0).is_infrastructure


def test_pod_dialling_another_nodes_nodeport_is_named_before_the_dnat() -> None:
    """The client's node only masquerades (the DNAT happens on the NodePort's node): the
    Service is named from the node address and nodePort the pod addressed."""
    r = run(entry(("10.244.0.3", 43000, "172.18.0.2", 30080),
                  ("172.18.0.2", 30080, "172.18.0.1", 61234), status=SNAT))
    assert r.service == Service("shop", "frontend", "http", "NodePort", "172.18.0.2", 30080)
    assert r.nat == Nat(translated_source=Address("172.18.0.1", 61234))
    assert r.case == "masquerade"
    other = run(entry(("10.244.0.3", 43000, "192.168.100.10", 30080),
                      ("192.168.100.10", 30080, "172.18.0.1", 61234), status=SNAT))
    assert other.service is None, "an external's port equal to a nodePort is no Service"
