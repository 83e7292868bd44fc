"""Traffic spec parsing, target resolution, workload configs, truth files; a loopback run."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path

import pytest

from podflow.lab.httpwire import HttpSpec, build_request, parse_http, parse_status, status_for_path
from podflow.lab.kubeobjects import write_cluster_state
from podflow.lab.named import resolv_conf_for
from podflow.lab.resolver import ResolvConf
from podflow.lab.state import ServicePortState, ServiceState
from podflow.lab.traffic import (
    Resolved,
    Target,
    attempt,
    parse_every,
    parse_port,
    parse_target,
    resolve,
    route_source,
    target_for_ip,
)
from podflow.lab.truth import ConnectRecord, read_truth
from podflow.lab.workload import Workload, external_config, pod_config
from tests.unit.lab.test_kubeobjects import lab_state


def test_parse_every() -> None:
    assert parse_every("1s") == 1.0
    assert parse_every("500ms") == 0.5
    assert parse_every(2) == 2.0
    assert parse_every("0.25") == 0.25
    assert parse_every("1m") == 60.0
    for bad in ("fast", "10ms", 0.01, "1h"):
        with pytest.raises(ValueError):
            parse_every(bad)


def test_parse_target_and_port() -> None:
    assert parse_target("service/shop/backend:9000") == Target("service", "shop", "backend",
                                                               9000)
    assert parse_target("nodeport/30080") == Target("nodeport", None, None, 30080)
    assert parse_target("external/db:5432") == Target("external", None, "db", 5432)
    t = parse_target("pod/data/cache:6379")
    assert t == Target("pod", "data", "cache", 6379) and t.category == "podip"
    assert parse_target("nodeport/1").category == "nodeport"
    for bad in ("service/backend:9000", "db:5432", "nodeport/x", "pod/a/b"):
        with pytest.raises(ValueError):
            parse_target(bad)
    assert parse_port("udp/53") == ("udp", 53) and parse_port("8080") == ("tcp", 8080)


def test_resolve_every_kind() -> None:
    st = lab_state()
    assert resolve(st, parse_target("service/shop/backend:9000"), 0) == Resolved(
        "10.96.0.11", 9000, "tcp")
    nodeport = parse_target("nodeport/30080")
    assert [resolve(st, nodeport, i) for i in range(4)] == [
        Resolved(ip, 30080, "tcp")
        for ip in ("172.18.0.2", "172.18.0.3", "172.18.0.4", "172.18.0.2")]
    assert resolve(st, parse_target("external/db:5432"), 7) == Resolved(
        "192.168.100.10", 5432, "tcp")
    pods = {resolve(st, parse_target("pod/shop/backend:9000"), i) for i in range(3)}
    assert {r.ip for r in pods if r} == {"10.244.0.3", "10.244.1.3", "10.244.2.2"}
    assert resolve(st, parse_target("pod/shop/nothing:1"), 0) is None
    with pytest.raises(KeyError):
        resolve(st, parse_target("service/shop/backend:1"), 0)
    with pytest.raises(KeyError):
        resolve(st, parse_target("nodeport/31111"), 0)


def test_configs_pick_their_traffic(tmp_path: Path) -> None:
    st = lab_state()
    be = pod_config(st, st.pods[2], tmp_path)
    assert be["who"] == "shop/backend-7c9f8d6b5-ccccc" and be["workload"] == "shop/backend"
    assert [t["to"] for t in be["traffic"]] == ["service/data/cache:6379", "external/db:5432"]
    assert be["ports"] == ["tcp/9000"] and be["node"] == "node1"
    vis = external_config(st, st.externals[1], tmp_path)
    assert vis["who"] == "external/visitor" and vis["node"] is None
    assert [t["to"] for t in vis["traffic"]] == ["nodeport/30080"]
    assert external_config(st, st.externals[0], tmp_path)["traffic"] == []


def test_read_truth_skips_torn_lines(tmp_path: Path) -> None:
    tdir = tmp_path / "truth"
    tdir.mkdir()
    rec = {"type": "connect", "time": 2.0, "client": "shop/a", "client_ip": "10.0.0.1",
           "target": "external/db:5432", "category": "egress", "proto": "tcp",
           "remote_ip": "1.2.3.4", "remote_port": 5432, "local_ip": "10.0.0.1",
           "local_port": 4000, "outcome": "ok", "error": None, "duration": 0.01,
           "future_field": 1}
    (tdir / "a.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "time": 1.0})
                                  + '\n{"type": "conn')
    (tdir / "b.jsonl").write_text(json.dumps({"type": "start", "time": 0.5, "who": "shop/a",
                                              "ip": "10.0.0.1"}) + "\n")
    truth = read_truth(tmp_path)
    assert truth.bad_lines == 1
    assert [c.time for c in truth.connects] == [1.0, 2.0]
    assert isinstance(truth.connects[0], ConnectRecord) and truth.connects[0].local_port == 4000
    assert truth.starts[0].who == "shop/a" and truth.first_time == 1.0
    assert read_truth(tmp_path / "missing").connects == []


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_loopback_run_writes_matching_truth(tmp_path: Path) -> None:
    """Server + clients in one process over loopback (no root): every ok connect is accepted."""
    st = lab_state()
    tport, uport = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    pod = st.pods[0]
    pod.ip, pod.ports = "127.0.0.1", [f"tcp/{tport}", f"udp/{uport}"]
    st.spec["traffic"] = [
        {"from": "shop/frontend", "to": f"pod/shop/frontend:{tport}", "every": "100ms"},
        {"from": "shop/frontend", "to": f"pod/shop/frontend:{uport}", "every": "100ms"}]
    st.pods = [pod]
    st.save(tmp_path / "state.json")

    async def run() -> None:
        task = asyncio.create_task(Workload({**pod_config(st, pod, tmp_path),
                                             "client_start_delay": 0}).run())
        await asyncio.sleep(1.0)
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    truth = read_truth(tmp_path)
    assert len(truth.starts) == 1
    oks = [c for c in truth.connects if c.outcome == "ok"]
    assert {c.proto for c in oks} == {"tcp", "udp"}
    accepted = {(a.peer_ip, a.peer_port, a.proto, a.local_port) for a in truth.accepts}
    for c in oks:
        assert (c.local_ip, c.local_port, c.proto, c.remote_port) in accepted
        assert c.category == "podip" and c.target.startswith("pod/shop/frontend:")


# -- names, HTTP variety, new truth fields ------------------------------------------------


def test_parse_dns_targets_and_canonical_text() -> None:
    t = parse_target("dns/backend.shop.svc.cluster.local:9000")
    assert t == Target("dns", None, "backend.shop.svc.cluster.local", 9000)
    assert t.category == "dns" and t.text == "dns/backend.shop.svc.cluster.local:9000"
    assert parse_target("dns/backend:9000").name == "backend"
    assert parse_target("dns/db.example.com.:5432").name == "db.example.com."
    for text in ("service/shop/backend:9000", "nodeport/30080", "external/db:5432",
                 "pod/data/cache:6379"):
        assert parse_target(text).text == text
    for bad in ("dns/:1", "dns/a..b:1", "dns/a:70000", "dns/-a:1", "dns/a b:1"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_target_for_ip() -> None:
    st = lab_state()
    assert target_for_ip(st, "10.96.0.11", 9000) == Target("service", "shop", "backend", 9000)
    assert target_for_ip(st, "10.96.0.11", 1) is None            # no such service port
    assert target_for_ip(st, "10.244.1.3", 9000) == Target("pod", "shop", "backend", 9000)
    assert target_for_ip(st, "192.168.100.10", 5432) == Target("external", None, "db", 5432)
    assert target_for_ip(st, "172.18.0.3", 30080) == Target("nodeport", None, None, 30080)
    assert target_for_ip(st, "172.18.0.3", 22) is None
    assert target_for_ip(st, "8.8.8.8", 53) is None


def test_load_balancer_targets_connect_to_the_vip_at_the_service_port() -> None:
    t = parse_target("loadbalancer/shop/frontend-lb:443")
    assert t == Target("loadbalancer", "shop", "frontend-lb", 443)
    assert (t.category, t.text) == ("loadbalancer", "loadbalancer/shop/frontend-lb:443")
    for bad in ("loadbalancer/frontend-lb:443", "loadbalancer/shop/frontend-lb",
                "loadbalancer/shop/frontend-lb:70000"):
        with pytest.raises(ValueError, match="loadbalancer/NS/NAME:PORT"):
            parse_target(bad)
    st = lab_state()
    st.services.append(ServiceState(
        "shop", "frontend-lb", "LoadBalancer", "10.96.0.13", {"app": "frontend"},
        [ServicePortState("https", 443, 8080, "TCP", 30443),
         ServicePortState("dns", 53, 8053, "UDP", 30053)], loadBalancerIP="172.18.0.240"))
    assert resolve(st, t, 0) == Resolved("172.18.0.240", 443, "tcp")
    assert resolve(st, parse_target("loadbalancer/shop/frontend-lb:53"), 3) == Resolved(
        "172.18.0.240", 53, "udp")
    assert resolve(st, parse_target("service/shop/frontend-lb:443"), 0) == Resolved(
        "10.96.0.13", 443, "tcp")                        # the same service by its ClusterIP
    with pytest.raises(KeyError):
        resolve(st, parse_target("loadbalancer/shop/frontend-lb:80"), 0)
    with pytest.raises(KeyError, match="no load-balancer IP"):
        resolve(st, parse_target("loadbalancer/shop/backend:9000"), 0)
    assert target_for_ip(st, "172.18.0.240", 443) == t
    assert target_for_ip(st, "172.18.0.240", 30443) is None     # a nodePort is not a VIP's
    assert target_for_ip(st, "172.18.0.2", 30443) == Target("nodeport", None, None, 30443)


def test_http_spec_and_status_by_path() -> None:
    assert parse_http(None) == HttpSpec("GET", "/podflow-lab", None)
    assert parse_http({"method": "delete", "path": "/api/items/3"}) == HttpSpec(
        "DELETE", "/api/items/3", None)
    for bad in ({"method": "FETCH"}, {"path": "api"}, {"expect": 99}, {"expect": "200"},
                {"verb": "GET"}, "GET /"):
        with pytest.raises(ValueError):
            parse_http(bad)
    assert [status_for_path(p) for p in ("/status/404", "/status/500?x=1", "/status/099",
                                         "/status/5000", "/api", "/")] == [
        404, 500, 200, 200, 200, 200]
    req = build_request(HttpSpec("POST", "/api/items"), "backend:9000")
    assert req.startswith(b"POST /api/items HTTP/1.1\r\nHost: backend:9000\r\n")
    assert b"Content-Length: 12\r\n" in req and req.endswith(b"\r\n\r\npodflow-lab\n")
    assert parse_status(b"HTTP/1.0 503 Service Unavailable\r\n") == 503
    assert parse_status(b"SSH-2.0-OpenSSH") is None and parse_status(b"") is None


def test_resolv_conf_for(tmp_path: Path) -> None:
    st = lab_state()
    assert resolv_conf_for({"namespace": "shop"}, st) is None       # no kube-dns Service
    st.services.append(ServiceState("kube-system", "kube-dns", "ClusterIP", "10.96.0.10",
                                    {"k8s-app": "kube-dns"},
                                    [ServicePortState("dns", 53, 53, "UDP")]))
    conf = resolv_conf_for({"namespace": "shop"}, st)
    assert conf == ResolvConf(("10.96.0.10",), ("shop.svc.cluster.local", "svc.cluster.local",
                                                "cluster.local"), 5)
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 10.0.0.53\nsearch a.example\n")
    got = resolv_conf_for({"namespace": "shop", "resolv_conf": str(path), "dns_port": 5353}, st)
    assert got == ResolvConf(("10.0.0.53",), ("a.example",), 1, 5353)
    assert resolv_conf_for({"netns": "pf-none-such"}, st) is None    # externals: no fallback


def test_truth_reads_new_records(tmp_path: Path) -> None:
    tdir = tmp_path / "truth"
    tdir.mkdir()
    recs = [
        {"type": "dns", "time": 1.0, "server": "kube-system/coredns-1", "server_ip": "10.0.0.9",
         "local_port": 53, "peer_ip": "10.0.0.1", "peer_port": 4000, "proto": "udp",
         "query": "db.example.com", "qtype": "A", "rcode": 0, "answers": ["192.168.100.10"],
         "ttl": 3600, "id": 7},
        {"type": "unresolved", "time": 2.0, "client": "shop/a", "client_ip": "10.0.0.1",
         "spec_target": "dns/nothing:80", "error": "NXDOMAIN", "dns_queries": ["nothing"],
         "dns_rcode": 3},
        {"type": "connect", "time": 3.0, "client": "shop/a", "client_ip": "10.0.0.1",
         "target": "external/db:5432", "category": "egress", "proto": "tcp",
         "remote_ip": "192.168.100.10", "remote_port": 5432, "local_ip": "10.0.0.1",
         "local_port": 4001, "outcome": "ok", "spec_target": "dns/db.example.com:5432",
         "dns_query": "db.example.com", "dns_answers": ["192.168.100.10"], "dns_rcode": 0,
         "resolved_ip": "192.168.100.10", "http_method": "GET", "http_path": "/status/500",
         "http_status": 500, "http_latency": 0.001}]
    (tdir / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    truth = read_truth(tmp_path)
    assert truth.dns[0].answers == ["192.168.100.10"] and truth.dns[0].qtype == "A"
    assert truth.unresolved[0].error == "NXDOMAIN"
    c = truth.connects[0]
    assert (c.spec_target, c.resolved_ip, c.http_status, c.purpose) == (
        "dns/db.example.com:5432", "192.168.100.10", 500, "traffic")
    assert truth.first_time == 3.0


def test_loopback_names_and_http_status(tmp_path: Path) -> None:
    """A DNS pod on loopback that also resolves names and speaks HTTP to itself (no root)."""
    st = lab_state()
    tport, dport = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    pod = st.pods[0]
    pod.ip, pod.ports = "127.0.0.1", [f"tcp/{tport}", f"udp/{dport}", f"tcp/{dport}"]
    pod.labels = {"k8s-app": "kube-dns"}
    st.pods = [pod]
    st.services = [
        ServiceState("kube-system", "kube-dns", "ClusterIP", "127.0.0.1", {"k8s-app": "kube-dns"},
                     [ServicePortState("dns", dport, dport, "UDP"),
                      ServicePortState("dns-tcp", dport, dport, "TCP")]),
        ServiceState("shop", "web", "ClusterIP", "127.0.0.2", {"k8s-app": "kube-dns"},
                     [ServicePortState("http", tport, tport)])]
    every = "100ms"
    st.spec["traffic"] = [
        {"from": "shop/frontend", "to": f"dns/web:{tport}", "every": every,
         "http": {"method": "POST", "path": "/status/404", "expect": 404}},
        {"from": "shop/frontend", "to": f"dns/web.shop.svc.cluster.local.:{tport}",
         "every": every, "http": {"path": "/status/503"}},
        {"from": "shop/frontend", "to": f"dns/nothing:{tport}", "every": "300ms"},
        {"from": "shop/frontend", "to": f"service/shop/web:{tport}", "every": every}]
    st.save(tmp_path / "state.json")
    write_cluster_state(st, tmp_path / "cluster-state")
    cfg = pod_config(st, pod, tmp_path)
    cfg["dns_port"], cfg["netns"], cfg["client_start_delay"] = dport, "pf-none-such", 0

    async def run() -> None:
        task = asyncio.create_task(Workload(cfg).run())
        await asyncio.sleep(1.2)
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    truth = read_truth(tmp_path)
    named = [c for c in truth.connects if c.spec_target]
    assert {c.spec_target for c in named} == {f"dns/web:{tport}",
                                              f"dns/web.shop.svc.cluster.local.:{tport}"}
    for c in named:
        assert c.target == f"service/shop/web:{tport}" and c.category == "clusterip"
        assert c.remote_ip == c.resolved_ip == "127.0.0.2" and c.outcome == "ok"
        assert c.dns_query == "web.shop.svc.cluster.local" and c.dns_rcode == 0
        assert c.http_latency is not None and c.http_latency >= 0
    by_name = {c.spec_target: c for c in named}
    post = by_name[f"dns/web:{tport}"]
    assert (post.http_method, post.http_path, post.http_status, post.http_expect) == (
        "POST", "/status/404", 404, 404)
    assert by_name[f"dns/web.shop.svc.cluster.local.:{tport}"].http_status == 503
    plain = [c for c in truth.connects if c.target == f"service/shop/web:{tport}"
             and not c.spec_target and c.purpose == "traffic"]
    assert plain and {(c.http_method, c.http_path, c.http_status) for c in plain} == {
        ("GET", "/podflow-lab", 200)}
    lookups = [c for c in truth.connects if c.purpose == "dns"]
    assert lookups and all(c.target == f"service/kube-system/kube-dns:{dport}"
                           and c.category == "clusterip" and c.proto == "udp"
                           and c.outcome == "ok" for c in lookups)
    # every lookup's socket was seen by the DNS server (accept and dns records)
    peers = {(a.peer_port, a.proto) for a in truth.accepts if a.local_port == dport}
    assert all((c.local_port, "udp") in peers for c in lookups)
    dns_peers = {d.peer_port for d in truth.dns}
    assert all(c.local_port in dns_peers for c in lookups)
    assert {d.query for d in truth.dns} >= {"web.shop.svc.cluster.local",
                                            "nothing.shop.svc.cluster.local"}
    assert truth.unresolved and all(u.error == "NXDOMAIN" and u.dns_rcode == 3
                                    and u.dns_queries[-1] == "nothing"
                                    for u in truth.unresolved)


def test_a_failed_attempt_keeps_the_source_the_route_chose() -> None:
    assert route_source("127.0.0.1", 9) == "127.0.0.1"
    rec = asyncio.run(attempt("pod/x/y:9", "podip", Resolved("127.0.0.1", 9, "tcp"),
                              {"client": "x/y-1", "client_ip": "10.9.9.9"}))
    assert rec["outcome"] == "refused" and rec["local_ip"] == "127.0.0.1"
