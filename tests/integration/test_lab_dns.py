"""The cluster DNS server and name-resolving, HTTP-speaking clients in real namespaces.

Two bare namespaces (``pf-dns-cli``, ``pf-dns-srv``) joined by a veth pair, no lab manager:
the server pod (labelled ``k8s-app: kube-dns``) answers DNS on UDP and TCP 53 from a
cluster-state directory and serves HTTP on 8080; the client pod resolves names through it
and connects. Only addresses inside these namespaces are used.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podflow.lab.dnszone import HOSTS_CONFIGMAP
from podflow.lab.kubeobjects import write_cluster_state
from podflow.lab.state import LabState, NodeState, PodState
from podflow.lab.truth import read_truth
from podflow.lab.workload import start_pod

pytestmark = pytest.mark.integration

NS_CLI, NS_SRV = "pf-dns-cli", "pf-dns-srv"
CLI_IP, SRV_IP = "10.251.0.1", "10.251.0.2"
HOSTS = f"{SRV_IP} web.example.com web\n# a comment\n"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns_pair() -> Iterator[None]:
    for ns in (NS_CLI, NS_SRV):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", NS_CLI, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
        NS_SRV)
    _ip("-n", NS_CLI, "addr", "add", f"{CLI_IP}/24", "dev", "eth0")
    _ip("-n", NS_SRV, "addr", "add", f"{SRV_IP}/24", "dev", "eth0")
    _ip("-n", NS_CLI, "link", "set", "eth0", "up")
    _ip("-n", NS_SRV, "link", "set", "eth0", "up")
    try:
        yield
    finally:
        for ns in (NS_CLI, NS_SRV):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _state(traffic: list[dict[str, object]]) -> LabState:
    return LabState(
        name="dnstest", cni="flannel-vxlan", spec_path=None, podCIDR="10.251.0.0/16",
        serviceCIDR="10.96.0.0/16", underlay="172.18.0.0/24", created=time.time(),
        nodes=[NodeState("node1", 1, "pf-dns-node1", "172.18.0.2", "10.251.0.0/24")],
        pods=[PodState("shop", "client-abc-1", "client", "node1", CLI_IP, NS_CLI,
                       {"app": "client"}),
              PodState("kube-system", "coredns-abc-1", "coredns", "node1", SRV_IP, NS_SRV,
                       {"k8s-app": "kube-dns"}, ports=["udp/53", "tcp/53", "tcp/8080"])],
        spec={"traffic": traffic})


def _setup(tmp_path: Path, traffic: list[dict[str, object]]) -> LabState:
    state = _state(traffic)
    state.save(tmp_path / "state.json")
    cs = tmp_path / "cluster-state"
    write_cluster_state(state, cs)
    doc = json.loads((cs / "configmaps.json").read_text())
    ns, name = HOSTS_CONFIGMAP
    doc["items"].append({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"namespace": ns, "name": name}, "data": {"hosts": HOSTS}})
    (cs / "configmaps.json").write_text(json.dumps(doc))
    return state


def _stop(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


_ASK = """
import asyncio, json, sys
from podflow.lab.resolver import ResolvConf, resolve_name
conf = ResolvConf(("SRV_IP",), ("shop.svc.cluster.local", "svc.cluster.local"), 5)
async def main():
    out = []
    for name, tcp in [("web.example.com", False), ("web", True),
                      ("10-251-0-2.kube-system.pod.cluster.local", False),
                      ("nothing.example.com", True)]:
        r = await resolve_name(name, conf, tcp=tcp)
        out.append({"name": name, "proto": r.proto, "port": r.local_port, "error": r.error,
                    "ips": list(r.answer.ips) if r.answer else [], "rcode": r.rcode,
                    "asked": r.asked})
    print(json.dumps(out))
asyncio.run(main())
""".replace("SRV_IP", SRV_IP)


def test_dns_server_answers_udp_and_tcp_from_another_netns(netns_pair: None,
                                                           tmp_path: Path) -> None:
    state = _setup(tmp_path, [])
    pids = start_pod(state, state.pods[1], tmp_path)
    try:
        time.sleep(1.0)
        root = str(Path(__file__).resolve().parents[2])
        out = subprocess.run(["ip", "netns", "exec", NS_CLI, sys.executable, "-c", _ASK],
                             check=True, capture_output=True, text=True, timeout=30,
                             env={**os.environ, "PYTHONPATH": root}).stdout
    finally:
        _stop(pids)
    got = {r["name"]: r for r in json.loads(out)}
    assert got["web.example.com"]["ips"] == [SRV_IP] and got["web.example.com"]["proto"] == "udp"
    assert got["web"]["ips"] == [SRV_IP] and got["web"]["proto"] == "tcp"
    assert got["web"]["asked"] == ["web.shop.svc.cluster.local", "web.svc.cluster.local", "web"]
    assert got["10-251-0-2.kube-system.pod.cluster.local"]["ips"] == [SRV_IP]
    assert got["nothing.example.com"]["ips"] == [] and got["nothing.example.com"]["rcode"] == 3
    assert all(r["error"] is None for r in got.values())
    truth = read_truth(tmp_path)
    assert {(d.proto, d.peer_ip) for d in truth.dns} == {("udp", CLI_IP), ("tcp", CLI_IP)}
    by_query = {d.query: d for d in truth.dns}
    assert by_query["web.example.com"].answers == [SRV_IP]
    assert by_query["web.example.com"].ttl == 3600
    assert by_query["web.shop.svc.cluster.local"].rcode == 3
    for r in got.values():
        assert any(d.peer_port == r["port"] and d.proto == r["proto"] for d in truth.dns)
    assert {a.proto for a in truth.accepts if a.local_port == 53} == {"udp", "tcp"}


def test_client_resolves_names_connects_and_gets_status_codes(netns_pair: None,
                                                              tmp_path: Path) -> None:
    traffic = [
        {"from": "shop/client", "to": "dns/web.example.com:8080", "every": "300ms",
         "http": {"path": "/status/404", "expect": 404}},
        {"from": "shop/client", "to": "dns/web:8080", "every": "300ms",
         "http": {"method": "POST", "path": "/api/items"}},
        {"from": "shop/client", "to": "dns/10-251-0-2.kube-system.pod.cluster.local:8080",
         "every": "300ms", "http": {"path": "/status/500"}},
        {"from": "shop/client", "to": "dns/nothing.example.com:8080", "every": "500ms"},
    ]
    state = _setup(tmp_path, traffic)
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {SRV_IP}\nsearch shop.svc.cluster.local svc.cluster.local "
                    "cluster.local\noptions ndots:5\n")
    pids = start_pod(state, state.pods[1], tmp_path)
    time.sleep(0.5)
    pids += start_pod(state, state.pods[0], tmp_path, resolv_conf=str(conf))
    time.sleep(3.0)
    _stop(pids)

    truth = read_truth(tmp_path)
    assert truth.bad_lines == 0
    named = [c for c in truth.connects if c.purpose == "traffic"]
    status: dict[str | None, set[tuple[str | None, str | None, int | None]]] = {}
    for c in named:
        status.setdefault(c.spec_target, set()).add((c.http_method, c.http_path, c.http_status))
    assert status == {
        "dns/web.example.com:8080": {("GET", "/status/404", 404)},
        "dns/web:8080": {("POST", "/api/items", 200)},
        "dns/10-251-0-2.kube-system.pod.cluster.local:8080": {("GET", "/status/500", 500)}}
    for c in named:
        assert c.target == "pod/kube-system/coredns:8080" and c.category == "podip"
        assert c.outcome == "ok" and c.remote_ip == c.resolved_ip == SRV_IP
        assert c.dns_answers == [SRV_IP] and c.dns_rcode == 0 and c.local_ip == CLI_IP
        assert c.http_latency is not None
    assert {c.dns_query for c in named} == {
        "web.example.com", "web", "10-251-0-2.kube-system.pod.cluster.local"}
    lookups = [c for c in truth.connects if c.purpose == "dns"]
    assert lookups and all(c.target == "pod/kube-system/coredns:53" and c.proto == "udp"
                           and c.outcome == "ok" and c.category == "podip" for c in lookups)
    accepted = {(a.peer_ip, a.peer_port, a.proto, a.local_port) for a in truth.accepts}
    for c in lookups + named:
        assert (c.local_ip, c.local_port, c.proto, c.remote_port) in accepted
    assert truth.unresolved and {u.error for u in truth.unresolved} == {"NXDOMAIN"}
    assert truth.unresolved[0].dns_queries[-1] == "nothing.example.com"
    assert {d.query for d in truth.dns} >= {"web.example.com", "web",
                                            "nothing.example.com.shop.svc.cluster.local"}
