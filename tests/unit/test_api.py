"""The HTTP API against a temporary store: filters, paging, map, inventory, stream, errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from podflow.model.flow import (
    L7,
    Counters,
    DnsInfo,
    Endpoint,
    EndpointKind,
    Flow,
    HttpInfo,
    ObservationPoint,
    Protocol,
    Service,
    Traffic,
    Verdict,
    Workload,
)
from podflow.query.params import filter_fields, spec_from_multi, spec_to_params
from podflow.server.app import create_app
from podflow.server.stream import FlowFollower
from podflow.store.duckdb import DuckDBStore

K8S = Path(__file__).parents[1] / "data" / "k8s"
T0 = 1_795_000_000.0


def _pod(ns: str, wl: str, ip: str, port: int | None = None) -> Endpoint:
    return Endpoint(ip, port, EndpointKind.POD, ns, f"{wl}-abc12", Workload("Deployment", wl),
                    (("app", wl),), "node1")


FE = _pod("shop", "frontend", "10.244.0.2")
BE = _pod("shop", "backend", "10.244.1.3", 9000)
CACHE = _pod("data", "cache", "10.244.2.4", 6379)
DB = Endpoint("192.168.100.10", 5432, EndpointKind.EXTERNAL, name="db")
API = Endpoint("203.0.113.7", 443, EndpointKind.EXTERNAL)
DNS = _pod("kube-system", "coredns", "10.244.0.10", 53)


def _flow(i: int, src: Endpoint, dst: Endpoint, **kw: object) -> Flow:
    args: dict[str, object] = {
        "time": T0 + i, "source": dataclasses.replace(src, port=40000 + i),
        "destination": dst, "protocol": Protocol.TCP, "end_time": T0 + i + 0.5,
        "traffic": Traffic(Counters(5, 500), Counters(4, 1000)),
        "observations": (ObservationPoint("node1", "conntrack"),), "flow_id": f"f{i}"}
    args.update(kw)
    return Flow(**args)  # type: ignore[arg-type]


BACKEND_SVC = Service("shop", "backend", "api", "ClusterIP", "10.96.0.3", 9000)


def _corpus() -> list[Flow]:
    flows = [_flow(i, FE, BE, destination_service=BACKEND_SVC) for i in range(6)]
    flows += [_flow(10 + i, BE, CACHE) for i in range(3)]
    flows += [_flow(20, BE, DB, verdict=Verdict.DROPPED, drop_reason_desc="policy")]
    flows += [_flow(21, BE, DB)]
    flows += [_flow(30, FE, DNS, protocol=Protocol.UDP,
                    l7=L7(dns=DnsInfo("api.example.com", ("A",), 0, ("203.0.113.7",))))]
    flows += [_flow(31, FE, API, l7=L7(http=HttpInfo("GET", "/v1/items?id=3", "api", 200)))]
    return flows


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    path = tmp_path / "flows.duckdb"
    with DuckDBStore(path) as st:
        st.write(_corpus())
        st.write_status("node1", {"profile": "flannel-vxlan", "sources": ["conntrack"],
                                  "flows": 12, "queue_lost": {"conntrack": 2}}, at=T0)
    return path


@pytest.fixture()
def client(store: Path, tmp_path: Path) -> Iterator[TestClient]:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<html><body>podflow ui</body></html>")
    state = tmp_path / "state"
    shutil.copytree(K8S, state)
    with TestClient(create_app(store, cluster_state=state, web_dist=dist)) as c:
        yield c


def test_params_follow_the_filter_spec() -> None:
    assert set(filter_fields()) == set(spec_from_multi({}).__dataclass_fields__)
    spec = spec_from_multi({"to_port": ["9000", "6379"], "protocol": ["tcp"],
                            "since": ["1970-01-01T00:01:00Z"], "bogus": ["x"]})
    assert spec.to_port == (9000, 6379) and spec.protocol == ("TCP",) and spec.since == 60.0
    assert spec_from_multi(dict(_multi(spec_to_params(spec)))) == spec
    with pytest.raises(ValueError, match="to_port: bad integer"):
        spec_from_multi({"to_port": ["http"]})
    with pytest.raises(ValueError, match="unknown filter"):
        spec_from_multi({"bogus": ["x"]}, strict=True)


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in pairs:
        out.setdefault(k, []).append(v)
    return out


def test_flows_filters_or_within_and_across(client: TestClient) -> None:
    r = client.get("/api/flows", params=[("to_port", "9000"), ("to_port", "6379")])
    assert r.status_code == 200
    assert {f["destination"]["port"] for f in r.json()["flows"]} == {9000, 6379}
    assert r.json()["count"] == 9
    r = client.get("/api/flows", params={"to_workload": "shop/backend", "verdict": "dropped"})
    assert r.json()["count"] == 0
    r = client.get("/api/flows", params={"to_ip": "192.168.100.0/24", "verdict": "DROPPED"})
    [flow] = r.json()["flows"]
    assert flow["verdict"] == "DROPPED" and flow["destination"]["name"] == "db"


def test_flows_paging_by_time_and_rowid(client: TestClient) -> None:
    first = client.get("/api/flows", params={"limit": 5}).json()
    assert first["count"] == 5 and first["next"] is not None
    times = [f["time"] for f in first["flows"]]
    assert times == sorted(times) and times[-1] == T0 + 31
    seen = times
    cursor = first["next"]
    while cursor:
        page = client.get("/api/flows", params={"limit": 5, **cursor}).json()
        seen = [f["time"] for f in page["flows"]] + seen
        cursor = page["next"]
    assert len(seen) == len(_corpus()) == len(set(seen))
    top = first["last_rowid"]
    assert client.get("/api/flows", params={"after_rowid": top}).json()["count"] == 0
    everything = client.get("/api/flows", params={"after_rowid": 0}).json()
    assert everything["count"] == len(_corpus()) and everything["next"] is None


def test_bad_values_are_400_with_a_message(client: TestClient) -> None:
    for params in ({"to_port": "http"}, {"ip": "not-an-ip"}, {"since": "yesterday"},
                   {"verdict": "MAYBE"}, {"limit": "0"}, {"namespac": "shop"}):
        r = client.get("/api/flows", params=params)
        assert r.status_code == 400, params
        assert r.json()["error"], params
    assert "namespac" in client.get("/api/map", params={"namespac": "x"}).json()["error"]


def test_map_nodes_edges_l7_and_externals(client: TestClient) -> None:
    g = client.get("/api/map").json()
    nodes = {n["id"]: n for n in g["nodes"]}
    edges = {e["id"]: e for e in g["edges"]}
    assert {"workload:shop/frontend", "workload:shop/backend", "workload:data/cache",
            "external:db", "external:api.example.com"} <= set(nodes)
    be = edges["workload:shop/frontend->workload:shop/backend"]
    assert be["connections"] == 6 and be["ports"] == ["9000/TCP"]
    assert be["services"] == ["shop/backend"]
    assert be["filter"] == {"from_workload": ["shop/frontend"], "to_workload": ["shop/backend"]}
    db = edges["workload:shop/backend->external:db"]
    assert db["dropped"] == 1 and db["verdicts"] == {"DROPPED": 1, "FORWARDED": 1}
    assert nodes["external:db"]["dropped"] == 1
    api = edges["workload:shop/frontend->external:api.example.com"]
    assert api["l7"]["http"]["codes"] == {"200": 1} and api["l7"]["http"]["paths"] == ["/v1/items"]
    dns = edges["workload:shop/frontend->workload:kube-system/coredns"]
    assert dns["l7"]["dns"]["names"] == ["api.example.com"]
    assert nodes["external:api.example.com"]["ips"] == ["203.0.113.7"]
    # the node filter selects exactly its flows
    r = client.get("/api/flows", params=_pairs(db["filter"])).json()
    assert r["count"] == 2


def _pairs(flt: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, vs in flt.items() for v in vs]


def test_map_namespace_window_and_services(client: TestClient) -> None:
    g = client.get("/api/map", params={"namespace": "data"}).json()
    assert [e["id"] for e in g["edges"]] == ["workload:shop/backend->workload:data/cache"]
    g = client.get("/api/map", params={"since": str(T0 + 25)}).json()
    assert all(e["last_seen"] >= T0 + 25 for e in g["edges"]) and g["edges"]
    g = client.get("/api/map", params={"services": "true", "to_port": "9000"}).json()
    assert {e["id"] for e in g["edges"]} == {
        "workload:shop/frontend->service:shop/backend",
        "service:shop/backend->workload:shop/backend"}


def test_inventory_health_filters_and_docs(client: TestClient) -> None:
    inv = client.get("/api/inventory").json()
    assert {n["name"] for n in inv["nodes"]} == {"node1", "node2", "node3"}
    assert inv["pods"] and inv["services"]
    assert inv["cni_profiles"] == ["flannel-vxlan"] and inv["sources"] == ["conntrack"]
    assert inv["agents"][0]["lost"] == 2
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["ui"] and h["last_rowid"] > 0
    names = {f["name"] for f in client.get("/api/filters").json()}
    assert names == set(filter_fields())
    doc = client.get("/openapi.json").json()
    params = {p["name"] for p in doc["paths"]["/api/flows"]["get"]["parameters"]}
    assert {"to_port", "namespace", "since", "limit"} <= params
    assert "podflow ui" in client.get("/").text


def test_missing_store_and_missing_ui(tmp_path: Path) -> None:
    app = create_app(tmp_path / "none.duckdb", web_dist=tmp_path / "nowhere")
    with TestClient(app) as c:
        assert c.get("/api/flows").json()["flows"] == []
        assert c.get("/api/map").json()["edges"] == []
        r = c.get("/")
        assert r.status_code == 503 and "npm ci" in r.text


def test_follower_sees_new_and_updated_flows(store: Path) -> None:
    spec = spec_from_multi({"to_namespace": ["data"]})
    f = FlowFollower(store, spec)
    assert len(f.start(last=2)) == 2
    assert f.poll() == []
    new = _flow(40, BE, CACHE)
    with DuckDBStore(store) as st:
        st.write([new, _flow(41, FE, BE)])
    assert [x.flow_id for x in f.poll()] == ["f40"]
    assert f.poll() == []


def test_stream_sends_backlog_as_events(client: TestClient) -> None:
    app = client.app
    app.state.config.poll_interval = 0.05  # type: ignore[attr-defined]
    events: list[tuple[str, dict[str, object]]] = []
    with client.stream("GET", "/api/flows/stream",
                       params={"to_namespace": "data", "last": "3"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        event = ""
        deadline = time.time() + 10
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line.split(":", 1)[1])))
            if sum(e == "flow" for e, _ in events) == 3 or time.time() > deadline:
                break
    assert events[0] == ("status", {"store": "ok"})
    flows = [d for e, d in events if e == "flow"]
    assert len(flows) == 3 and {f["destination"]["namespace"] for f in flows} == {"data"}
