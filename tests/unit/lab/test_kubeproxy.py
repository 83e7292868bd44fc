"""The pure renderers of the lab's node datapath: kube-proxy chains, flannel masquerade,
and the CNI files Flannel would leave on a node."""

from __future__ import annotations

import json
import re
from pathlib import Path

from podflow.lab import cniplugin, flannel, kubeproxy
from podflow.lab.state import LabState, NodeState, PodState, ServicePortState, ServiceState


def _pod(name: str, ip: str, node: str, app: str, ns: str = "shop") -> PodState:
    return PodState(namespace=ns, name=name, workload=app, node=node, ip=ip,
                    netns=f"pf-t-p-{name}", labels={"app": app})


def _state() -> LabState:
    st = LabState(name="t", cni="flannel-vxlan", spec_path=None, podCIDR="10.244.0.0/16",
                  serviceCIDR="10.96.0.0/16", underlay="172.18.0.0/24", created=0.0)
    st.nodes = [NodeState("node1", 1, "pf-t-node1", "172.18.0.1", "10.244.0.0/24"),
                NodeState("node2", 2, "pf-t-node2", "172.18.0.2", "10.244.1.0/24")]
    st.pods = [_pod("be-a", "10.244.0.2", "node1", "backend"),
               _pod("be-b", "10.244.1.2", "node2", "backend"),
               _pod("be-c", "10.244.1.3", "node2", "backend"),
               _pod("fe-a", "10.244.1.4", "node2", "frontend"),
               _pod("other-ns", "10.244.0.9", "node1", "backend", ns="data")]
    st.services = [
        ServiceState("shop", "backend", "ClusterIP", "10.96.0.3", {"app": "backend"},
                     [ServicePortState("api", 9000, 9000)]),
        ServiceState("shop", "frontend", "NodePort", "10.96.0.2", {"app": "frontend"},
                     [ServicePortState("http", 80, 8080, "TCP", 30080)], "Local"),
        ServiceState("shop", "web", "NodePort", "10.96.0.4", {"app": "backend"},
                     [ServicePortState("http", 80, 9000, "TCP", 30090)], "Cluster"),
        ServiceState("shop", "empty", "ClusterIP", "10.96.0.5", {"app": "none"},
                     [ServicePortState(None, 53, 53, "UDP")]),
    ]
    return st


def _table(text: str, name: str) -> list[str]:
    start = text.index(f"*{name}\n")
    return text[start:text.index("COMMIT", start)].splitlines()


def _chain(lines: list[str], chain: str) -> list[str]:
    return [x for x in lines if x.startswith(f"-A {chain} ")]


def test_service_portals_and_masquerade_chain() -> None:
    nat = _table(kubeproxy.render(_state(), "node1"), "nat")
    assert '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' \
        in nat
    assert '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in nat
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000" in nat
    assert _chain(nat, "KUBE-POSTROUTING") == [
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring '
        'SNAT" -j MASQUERADE --random-fully']
    services = _chain(nat, "KUBE-SERVICES")
    assert services[-1].endswith("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    assert len(services) == 4   # backend, frontend, web, nodeports (empty has no endpoints)


def test_clusterip_balances_randomly_over_all_endpoints() -> None:
    st = _state()
    nat = _table(kubeproxy.render(st, "node1"), "nat")
    svc, _, _ = kubeproxy.chain_names(st.services[0], st.services[0].ports[0])
    assert re.fullmatch(r"KUBE-SVC-[A-Z2-7]{16}", svc)
    entry = [x for x in _chain(nat, "KUBE-SERVICES") if x.endswith(f"-j {svc}")]
    assert entry == ['-A KUBE-SERVICES -d 10.96.0.3/32 -m comment --comment "shop/backend:api '
                     f'cluster IP" -p tcp -m tcp --dport 9000 -j {svc}']
    rules = _chain(nat, svc)
    assert rules[0].startswith(f"-A {svc} ! -s 10.244.0.0/16 -d 10.96.0.3/32")
    assert rules[0].endswith("-j KUBE-MARK-MASQ")
    probs = [re.search(r"--probability (\S+)", r) for r in rules[1:]]
    assert [p.group(1) if p else None for p in probs] == ["0.33333333333", "0.50000000000", None]
    seps = [r.rsplit(" ", 1)[1] for r in rules[1:]]
    dnat = [x for s in seps for x in _chain(nat, s) if "DNAT" in x]
    assert [d.rsplit(" ", 1)[1] for d in dnat] == [
        "10.244.0.2:9000", "10.244.1.2:9000", "10.244.1.3:9000"]   # not data/other-ns
    assert _chain(nat, seps[0])[0] == (f'-A {seps[0]} -s 10.244.0.2/32 -m comment --comment '
                                       '"shop/backend:api" -j KUBE-MARK-MASQ')


def test_nodeport_cluster_policy_masquerades() -> None:
    st = _state()
    nat = _table(kubeproxy.render(st, "node1"), "nat")
    svc, ext, _ = kubeproxy.chain_names(st.services[2], st.services[2].ports[0])
    assert (f'-A KUBE-NODEPORTS -m comment --comment "shop/web:http" -p tcp -m tcp --dport 30090 '
            f"-j {ext}") in nat
    assert _chain(nat, ext) == [
        f'-A {ext} -m comment --comment "masquerade traffic for shop/web:http external '
        'destinations" -j KUBE-MARK-MASQ', f"-A {ext} -j {svc}"]


def test_nodeport_local_policy_uses_node_local_endpoints_only() -> None:
    st = _state()
    _, ext, svl = kubeproxy.chain_names(st.services[1], st.services[1].ports[0])
    on2 = kubeproxy.render(st, "node2")
    nat2 = _table(on2, "nat")
    assert _chain(nat2, ext)[-1] == f"-A {ext} -j {svl}"
    assert not any("KUBE-MARK-MASQ" in r for r in _chain(nat2, ext)
                   if "--src-type LOCAL" not in r)
    local = _chain(nat2, svl)
    assert len(local) == 1 and "statistic" not in local[0]
    assert "no local endpoints" not in on2
    on1 = kubeproxy.render(st, "node1")
    assert _chain(_table(on1, "nat"), svl) == []
    drop = [x for x in _table(on1, "filter") if "no local endpoints" in x]
    assert drop == ["-A KUBE-EXTERNAL-SERVICES -m addrtype --dst-type LOCAL -p tcp -m tcp "
                    '--dport 30080 -m comment --comment "shop/frontend:http has no local '
                    'endpoints" -j DROP']


def test_service_without_endpoints_is_rejected() -> None:
    text = kubeproxy.render(_state(), "node1")
    assert ('-A KUBE-SERVICES -d 10.96.0.5/32 -p udp -m udp --dport 53 -m comment --comment '
            '"shop/empty has no endpoints" -j REJECT') in _table(text, "filter")
    assert "10.96.0.5" not in "\n".join(_table(text, "nat"))


def test_render_is_pure_and_extra_nat_follows_kube_postrouting() -> None:
    st = _state()
    masq = flannel.masq_rules(st.podCIDR, "10.244.0.0/24")
    a = kubeproxy.render(st, "node1", masq)
    assert a == kubeproxy.render(_state(), "node1", masq)
    nat = _table(a, "nat")
    post = _chain(nat, "POSTROUTING")
    assert post[0].endswith("-j KUBE-POSTROUTING") and post[1].endswith("-j FLANNEL-POSTRTG")
    assert nat.index(":FLANNEL-POSTRTG - [0:0]") < nat.index(post[0])
    st.pods = [p for p in st.pods if p.name != "be-b"]
    assert "10.244.1.2:9000" not in kubeproxy.render(st, "node1", masq)


def test_flannel_masquerade_rules() -> None:
    rules = flannel.masq_rules("10.244.0.0/16", "10.244.1.0/24")
    body = [r.replace(' -m comment --comment "flanneld masq"', "") for r in rules[2:]]
    assert body == [
        "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN",
        "-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -j RETURN",
        "-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -j RETURN",
        "-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -j RETURN",
        "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully",
        "-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE --random-fully"]


def test_flannel_peer_entries() -> None:
    peer = flannel.Peer("172.18.0.2", "10.244.1.0", "aa:bb:cc:dd:ee:ff", "10.244.1.0/24")
    assert flannel.peer_ip_commands([peer]) == [
        "neigh replace 10.244.1.0 lladdr aa:bb:cc:dd:ee:ff dev flannel.1 nud permanent",
        "route replace 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink"]
    assert flannel.peer_fdb_commands([peer]) == [
        "fdb replace aa:bb:cc:dd:ee:ff dev flannel.1 dst 172.18.0.2 self permanent"]
    assert "dstport 8472 nolearning" in flannel.vxlan_commands("172.18.0.1", "10.244.0.0")[0]


def test_cni_files_and_delegate_config(tmp_path: Path) -> None:
    cniplugin.write_node_files(tmp_path, "10.244.0.0/16", "10.244.2.0/24")
    conf = json.loads((tmp_path / "cni/net.d/10-flannel.conflist").read_text())
    assert [p["type"] for p in conf["plugins"]] == ["flannel", "portmap"]
    assert (tmp_path / "run/flannel/subnet.env").read_text() == (
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.2.1/24\nFLANNEL_MTU=1450\n"
        "FLANNEL_IPMASQ=true\n")
    d = cniplugin.delegate_config(tmp_path)
    assert (d["type"], d["bridge"], d["isGateway"], d["isDefaultGateway"], d["ipMasq"],
            d["hairpinMode"], d["mtu"]) == ("bridge", "cni0", True, True, False, True, 1450)
    assert d["ipam"]["ranges"] == [[{"subnet": "10.244.2.0/24"}]]
    assert d["ipam"]["routes"] == [{"dst": "10.244.0.0/16"}]
    assert d["ipam"]["dataDir"].startswith(str(tmp_path.resolve()))


# ---- LoadBalancer VIPs -----------------------------------------------------------------------

def _lb_state() -> LabState:
    """``_state()`` plus LoadBalancer services: ``web-lb`` (Cluster, backends on both nodes),
    ``fe-lb`` (Local, its one backend on node2) and ``none-lb`` (no endpoints)."""
    st = _state()
    st.services += [
        ServiceState("shop", "web-lb", "LoadBalancer", "10.96.0.6", {"app": "backend"},
                     [ServicePortState("https", 443, 9000, "TCP", 30100)],
                     loadBalancerIP="172.18.0.240"),
        ServiceState("shop", "fe-lb", "LoadBalancer", "10.96.0.7", {"app": "frontend"},
                     [ServicePortState("http", 80, 8080, "TCP", 30101)], "Local",
                     loadBalancerIP="172.18.0.241"),
        ServiceState("shop", "none-lb", "LoadBalancer", "10.96.0.8", {"app": "none"},
                     [ServicePortState("http", 80, 80, "TCP", 30102)],
                     loadBalancerIP="172.18.0.242"),
    ]
    return st


def test_load_balancer_ip_jumps_to_the_external_chain_after_the_cluster_ip() -> None:
    st = _lb_state()
    svc, ext, _ = kubeproxy.chain_names(st.services[4], st.services[4].ports[0])
    for node in ("node1", "node2"):       # the VIP is captured on every node, holder or not
        nat = _table(kubeproxy.render(st, node), "nat")
        services = _chain(nat, "KUBE-SERVICES")
        i = services.index(f'-A KUBE-SERVICES -d 10.96.0.6/32 -m comment --comment '
                           f'"shop/web-lb:https cluster IP" -p tcp -m tcp --dport 443 -j {svc}')
        assert services[i + 1] == (f'-A KUBE-SERVICES -d 172.18.0.240/32 -m comment --comment '
                                   f'"shop/web-lb:https loadbalancer IP" -p tcp -m tcp '
                                   f"--dport 443 -j {ext}")
        assert services[-1].endswith("-j KUBE-NODEPORTS")
        assert (f'-A KUBE-NODEPORTS -m comment --comment "shop/web-lb:https" -p tcp -m tcp '
                f"--dport 30100 -j {ext}") in nat
        assert _chain(nat, ext) == [      # externalTrafficPolicy Cluster: masquerade, any pod
            f'-A {ext} -m comment --comment "masquerade traffic for shop/web-lb:https external '
            'destinations" -j KUBE-MARK-MASQ', f"-A {ext} -j {svc}"]
        assert nat.count(f":{ext} - [0:0]") == 1


def test_load_balancer_local_policy_uses_node_local_endpoints_or_drops() -> None:
    st = _lb_state()
    svc, ext, svl = kubeproxy.chain_names(st.services[5], st.services[5].ports[0])
    on2 = kubeproxy.render(st, "node2")
    nat2 = _table(on2, "nat")
    assert f'-A KUBE-SERVICES -d 172.18.0.241/32 -m comment --comment "shop/fe-lb:http ' \
           f'loadbalancer IP" -p tcp -m tcp --dport 80 -j {ext}' in nat2
    assert [r.split(" -j ")[-1] for r in _chain(nat2, ext)] == [
        svc, "KUBE-MARK-MASQ", svc, svl]   # pods, the node itself (masqueraded), then local
    assert _chain(nat2, ext)[0].startswith(f"-A {ext} -s 10.244.0.0/16 ")
    assert _chain(nat2, svl) == [f'-A {svl} -m comment --comment "shop/fe-lb:http -> '
                                 f'10.244.1.4:8080" -j {_chain(nat2, svc)[1].split()[-1]}']
    assert "fe-lb:http has no local endpoints" not in on2
    on1 = kubeproxy.render(st, "node1")   # no local endpoint: no KUBE-SVL, external is dropped
    nat1 = _table(on1, "nat")
    assert f":{svl} - [0:0]" not in nat1 and not any(svl in r for r in nat1)
    assert _chain(nat1, ext)[-1].endswith(f"--src-type LOCAL -j {svc}")
    assert [x for x in _table(on1, "filter") if "fe-lb" in x] == [
        '-A KUBE-EXTERNAL-SERVICES -d 172.18.0.241/32 -p tcp -m tcp --dport 80 -m comment '
        '--comment "shop/fe-lb:http has no local endpoints" -j DROP',
        "-A KUBE-EXTERNAL-SERVICES -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30101 "
        '-m comment --comment "shop/fe-lb:http has no local endpoints" -j DROP']


def test_load_balancer_without_endpoints_is_rejected_everywhere() -> None:
    text = kubeproxy.render(_lb_state(), "node1")
    assert [x for x in _table(text, "filter") if "none-lb" in x] == [
        '-A KUBE-SERVICES -d 10.96.0.8/32 -p tcp -m tcp --dport 80 -m comment --comment '
        '"shop/none-lb:http has no endpoints" -j REJECT',
        '-A KUBE-EXTERNAL-SERVICES -d 172.18.0.242/32 -p tcp -m tcp --dport 80 -m comment '
        '--comment "shop/none-lb:http has no endpoints" -j REJECT',
        "-A KUBE-EXTERNAL-SERVICES -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30102 "
        '-m comment --comment "shop/none-lb:http has no endpoints" -j REJECT']
    assert "none-lb" not in "\n".join(_table(text, "nat"))


def test_a_load_balancer_without_a_vip_is_only_its_node_ports() -> None:
    st = _lb_state()
    st.services[4].loadBalancerIP = None
    nat = _table(kubeproxy.render(st, "node1"), "nat")
    assert not any("shop/web-lb:https loadbalancer IP" in r for r in nat)
    assert any("--dport 30100" in r for r in _chain(nat, "KUBE-NODEPORTS"))
