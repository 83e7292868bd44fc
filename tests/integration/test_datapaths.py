"""Every lab datapath on the real kernel, proved with real connections.

One small 2-node lab per ``cni:`` value (agents and workload processes off), under a
temporary lab root: same-node and cross-node pod traffic, ClusterIP, NodePort with both
traffic policies, egress (masqueraded where the datapath does it), a host-network client
to pods, restarted pods (ordinary and host-network), the cluster DNS resolv.conf, the
datapath's own kernel objects (cali veths with proxy ARP, BIRD routes, vxlan.calico,
host-gw routes, macvlan pods invisible to the node's conntrack), and ``down`` leaving
nothing behind. Traffic only goes to addresses inside the lab's namespaces.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podflow.lab import manager
from podflow.lab.netns import list_netns
from podflow.lab.spec import LabSpec, parse_spec
from podflow.lab.state import LabState, lab_dir
from tests.integration.netprobe import Listener, connect

pytestmark = pytest.mark.integration

CNIS = ("flannel-vxlan", "flannel-host-gw", "calico-bgp", "calico-vxlan", "macvlan")


def _spec(name: str, cni: str) -> LabSpec:
    doc: dict[str, Any] = {
        "name": name, "nodes": 2, "cni": cni, "namespaces": ["app"],
        "workloads": [
            {"namespace": "app", "name": "web", "ports": ["tcp/8080"], "node": 1},
            {"namespace": "app", "name": "peer", "ports": ["tcp/7000"], "node": 1},
            {"namespace": "app", "name": "api", "ports": ["tcp/9000"], "node": 2},
            {"namespace": "app", "name": "hostnet", "hostNetwork": True, "node": 1}],
        "externals": [{"name": "db", "ip": "192.168.79.10", "ports": ["tcp/5432"],
                       "dns": ["db.example.com"]},
                      {"name": "client", "ip": "192.168.79.20"}],
    }
    if cni != "macvlan":
        doc["services"] = [
            {"namespace": "app", "name": "api", "selector": {"app": "api"},
             "ports": [{"name": "http", "port": 80, "targetPort": 9000}]},
            {"namespace": "app", "name": "web", "type": "NodePort", "selector": {"app": "web"},
             "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
            {"namespace": "app", "name": "apil", "type": "NodePort", "selector": {"app": "api"},
             "externalTrafficPolicy": "Local",
             "ports": [{"name": "http", "port": 81, "targetPort": 9000, "nodePort": 30090}]}]
    return parse_spec(doc)


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("labs")
    old = os.environ.get("PODFLOW_LAB_ROOT")
    os.environ["PODFLOW_LAB_ROOT"] = str(root)
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("PODFLOW_LAB_ROOT", None)
        else:
            os.environ["PODFLOW_LAB_ROOT"] = old


@pytest.fixture(scope="module", params=CNIS)
def lab(request: pytest.FixtureRequest, lab_root: Path) -> Iterator[LabState]:
    name = f"d3{secrets.token_hex(3)}"
    try:
        yield manager.up(_spec(name, request.param), agents=False, workloads=False)
    finally:
        manager.down(name)


def _out(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _pod(lab: LabState, workload: str) -> Any:
    return LabState.load(lab.name).pods_of("app", workload)[0]


@pytest.fixture
def servers(lab: LabState) -> Iterator[None]:
    started: list[Listener] = []
    try:
        for wl, port in (("web", 8080), ("peer", 7000), ("api", 9000)):
            started.append(Listener(_pod(lab, wl).netns, port, wl))
        started.append(Listener(lab.external("db").netns, 5432, "db"))
        yield
    finally:
        for s in started:
            s.stop()


def test_pod_to_pod_same_and_cross_node(lab: LabState, servers: None) -> None:
    web, peer, api = _pod(lab, "web"), _pod(lab, "peer"), _pod(lab, "api")
    assert (web.node, peer.node, api.node) == ("node1", "node1", "node2")
    assert connect(web.netns, peer.ip, 7000) == ("peer", web.ip)
    assert connect(web.netns, api.ip, 9000) == ("api", web.ip)
    assert connect(api.netns, web.ip, 8080) == ("web", api.ip)


def test_services_clusterip_and_nodeport_both_policies(lab: LabState, servers: None) -> None:
    if lab.cni == "macvlan":
        assert lab.services == []   # no kube-dns either: pods bypass kube-proxy
        return
    web, client = _pod(lab, "web"), lab.external("client")
    assert connect(web.netns, lab.service("app", "api").clusterIP, 80) == ("api", web.ip)
    for node in lab.nodes:   # Cluster: SNAT to the ingress node
        tag, peer = connect(client.netns, node.ip, 30080)
        assert tag == "web" and peer != client.ip
    # Local: the client address is kept, on the node that has the endpoint
    assert connect(client.netns, lab.node("node2").ip, 30090) == ("api", client.ip)


def test_egress(lab: LabState, servers: None) -> None:
    api = _pod(lab, "api")
    want = api.ip if lab.cni == "macvlan" else lab.node("node2").ip   # no masquerade there
    assert connect(api.netns, "192.168.79.10", 5432) == ("db", want)


def test_host_network_client_to_pods(lab: LabState, servers: None) -> None:
    host = _pod(lab, "hostnet")
    node1 = lab.node("node1")
    assert (host.netns, host.ip, host.host_network) == (node1.netns, node1.ip, True)
    local = {"flannel-vxlan": "10.244.0.1", "flannel-host-gw": "10.244.0.1"}.get(
        lab.cni, node1.ip)                        # cni0's address on the bridge datapaths
    remote = {"flannel-vxlan": "10.244.0.0", "calico-vxlan": "10.244.0.0"}.get(
        lab.cni, node1.ip)                        # the VTEP / tunnel address over a tunnel
    assert connect(host.netns, _pod(lab, "peer").ip, 7000) == ("peer", local)
    assert connect(host.netns, _pod(lab, "api").ip, 9000) == ("api", remote)


def test_restarted_pods(lab: LabState) -> None:
    old = _pod(lab, "api")
    new = manager.restart_pod(lab.name, "app", old.name)
    assert new.netns != old.netns and old.netns not in list_netns(f"pf-{lab.name}-")
    assert new.ip != old.ip and new.node == "node2"
    assert not Path(f"/etc/netns/{old.netns}").exists()
    state = LabState.load(lab.name)
    web = state.pods_of("app", "web")[0]
    listener = Listener(new.netns, 9000, "api2")
    try:
        assert connect(web.netns, new.ip, 9000) == ("api2", web.ip)
        if lab.cni != "macvlan":
            vip = state.service("app", "api").clusterIP
            assert connect(web.netns, vip, 80) == ("api2", web.ip)
    finally:
        listener.stop()
    host = _pod(lab, "hostnet")
    again = manager.restart_pod(lab.name, "app", host.name)
    assert (again.netns, again.ip, again.host_network) == (host.netns, host.ip, True)
    assert again.name != host.name and lab.node("node1").netns in list_netns(f"pf-{lab.name}-")
    assert _out("ip", "-n", again.netns, "-o", "link", "show", "eth0")


def test_cluster_dns_resolv_conf(lab: LabState) -> None:
    state = LabState.load(lab.name)
    dns = state.pods_of("kube-system", "coredns")[0]
    want = dns.ip if lab.cni == "macvlan" else "10.96.0.10"
    assert state.dns_ip == want
    web = state.pods_of("app", "web")[0]
    text = _out("ip", "netns", "exec", web.netns, "cat", "/etc/resolv.conf")
    assert text == (f"search app.svc.cluster.local svc.cluster.local cluster.local\n"
                    f"nameserver {want}\noptions ndots:5\n")
    assert not Path(f"/etc/netns/{lab.node('node1').netns}").exists()   # host network: node's


def test_datapath_kernel_objects(lab: LabState) -> None:
    n1 = lab.node("node1").netns
    links = _out("ip", "-n", n1, "-o", "link")
    routes = _out("ip", "-n", n1, "route")
    netd = lab_dir(lab.name) / "nodes" / "node1" / "cni" / "net.d"
    if lab.cni.startswith("calico-"):
        assert "cni0" not in links and "10-calico.conflist" in os.listdir(netd)
        web = _pod(lab, "web")
        veth = next(x.split(":")[1].strip().split("@")[0] for x in links.splitlines()
                    if ": cali" in x)
        assert len(veth) == 15 and "ee:ee:ee:ee:ee:ee" in links
        assert _out("ip", "netns", "exec", n1, "sysctl", "-n",
                    f"net.ipv4.conf.{veth}.proxy_arp").strip() == "1"
        assert f"{web.ip} dev cali" in routes
        assert "default via 169.254.1.1 dev eth0" in _out("ip", "-n", web.netns, "route")
    if lab.cni == "calico-bgp":
        assert "10.244.1.0/24 via 172.18.0.2 dev eth0 proto bird" in routes
        assert "blackhole 10.244.0.0/24 proto bird" in routes
        cfg = lab_dir(lab.name) / "nodes" / "node1" / "calico" / "bird.cfg"
        assert "neighbor 172.18.0.2 as 64512" in cfg.read_text()
        pids = _out("ip", "netns", "pids", n1).split()
        assert any(Path(f"/proc/{p}/comm").read_text().strip() == "bird" for p in pids)
    if lab.cni == "calico-vxlan":
        detail = _out("ip", "-d", "-n", n1, "link", "show", "vxlan.calico")
        assert "vxlan id 4096" in detail and "dstport 4789" in detail
        assert "10.244.1.0/24 via 10.244.1.0 dev vxlan.calico proto 80 onlink" in routes
    if lab.cni == "flannel-host-gw":
        assert "flannel.1" not in links and "10.244.1.0/24 via 172.18.0.2 dev eth0" in routes
        env = (lab_dir(lab.name) / "nodes" / "node1" / "run" / "flannel" / "subnet.env")
        assert "FLANNEL_MTU=1500" in env.read_text()
    if lab.cni == "macvlan":
        assert links.count("\n") == 2 and "10-macvlan.conflist" in os.listdir(netd)


def test_macvlan_pod_traffic_bypasses_the_node(lab: LabState, servers: None) -> None:
    if lab.cni != "macvlan":
        pytest.skip("macvlan only")
    web, api = _pod(lab, "web"), _pod(lab, "api")
    assert connect(web.netns, api.ip, 9000) == ("api", web.ip)
    for node in lab.nodes:
        ct = subprocess.run(["ip", "netns", "exec", node.netns, "conntrack", "-L"],
                            capture_output=True, text=True, check=False).stdout
        assert web.ip not in ct and api.ip not in ct


def _root_view(prefix: str) -> dict[str, str]:
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    return {"links": out("ip", "-o", "link"), "addrs": out("ip", "-o", "addr"),
            "routes": out("ip", "route", "show", "table", "all"),
            "netns": "\n".join(n for n in out("ip", "netns", "list").splitlines()
                               if n.startswith(prefix))}


@pytest.mark.parametrize("cni", CNIS)
def test_down_leaves_nothing(cni: str, lab_root: Path) -> None:
    name = f"d3{secrets.token_hex(3)}"
    prefix = f"pf-{name}-"
    before = _root_view(prefix)
    try:
        state = manager.up(_spec(name, cni), agents=False, workloads=False)
        assert any(Path(f"/etc/netns/{p.netns}/resolv.conf").exists() for p in state.pods)
        manager.down(name)
        assert list_netns(prefix) == []
        assert not lab_dir(name).exists()
        assert not [d for d in os.listdir("/etc/netns") if d.startswith(prefix)] \
            if Path("/etc/netns").is_dir() else True
        leftovers = _out("ps", "-eo", "args")
        assert str(lab_root / name) not in leftovers   # no bird (or anything) of this lab
        assert _root_view(prefix) == before
    finally:
        manager.down(name)
