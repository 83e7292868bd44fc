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
from podflow.query.servicemap import AGENT_MAX_LAG
from podflow.server.app import create_app
from podflow.server.stream import FlowFollower
from podflow.store.duckdb import DuckDBStore

K8S = Path(__file__).parents[2] / "data" / "k8s"
LOCAL = "http://127.0.0.1:8080"
"""The clients' base URL: the app answers loopback Host names only (DNS-rebinding guard)."""
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
    with TestClient(create_app(store, cluster_state=state, web_dist=dist),
                    base_url=LOCAL) as c:
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
    with TestClient(app, base_url=LOCAL) as c:
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


# -- issue 8: hostile requests -------------------------------------------------------------

def _assets(dist: Path) -> None:
    (dist / "swagger-ui").mkdir()
    (dist / "swagger-ui" / "swagger-ui-bundle.js").write_text("window.SwaggerUIBundle = 1;")
    (dist / "swagger-ui" / "swagger-ui.css").write_text("body {}")
    (dist / "swagger-ui" / "favicon-32x32.png").write_bytes(b"\x89PNG")


def test_dns_rebinding_host_is_refused_everywhere(client: TestClient) -> None:
    evil = {"host": "evil.example:8080"}
    for path in ("/api/flows", "/api/map", "/api/flows/stream", "/api/health", "/metrics",
                 "/docs", "/openapi.json", "/", "/index.html"):
        r = client.get(path, headers=evil)
        assert r.status_code == 421, path
        assert "evil.example" in r.json()["error"] and "--allowed-host" in r.json()["error"]
    for host in ("localhost:8080", "LOCALHOST", "127.0.0.1", "127.3.2.1:1", "[::1]:8080"):
        assert client.get("/api/health", headers={"host": host}).status_code == 200, host
    for bad in ("", "a b", "::1", "[::1", "localhost:http", "x:99999"):
        assert client.get("/api/health", headers={"host": bad}).status_code == 400, bad


def test_cross_origin_requests_are_refused(client: TestClient) -> None:
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "http://localhost:8080",
                   "null", "file://"):
        r = client.get("/api/flows", headers={"origin": origin})
        assert r.status_code == 403 and "cross-origin" in r.json()["error"], origin
        assert client.post("/api/flows", headers={"origin": origin}).status_code == 403
    assert client.get("/api/flows", headers={"origin": LOCAL}).status_code == 200


def test_docs_load_nothing_from_the_network(store: Path, tmp_path: Path) -> None:
    import re

    dist = tmp_path / "ui"
    dist.mkdir()
    (dist / "index.html").write_text("<html></html>")
    _assets(dist)
    with TestClient(create_app(store, web_dist=dist), base_url=LOCAL) as c:
        r = c.get("/docs")
        assert r.status_code == 200 and "SwaggerUIBundle" in r.text
        assert not re.search(r"https?://|//[a-z]", r.text, re.I), r.text
        urls = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert len(urls) == 3 and all(u.startswith("/swagger-ui/") for u in urls)
        for url in urls:
            assert c.get(url).status_code == 200, url
        assert "validatorUrl\": null" in r.text or '"validatorUrl": null' in r.text
        assert c.get("/redoc").status_code in (404, 405)


def test_docs_without_assets_say_how_to_build(store: Path, tmp_path: Path) -> None:
    with TestClient(create_app(store, web_dist=tmp_path / "nowhere"), base_url=LOCAL) as c:
        r = c.get("/docs")
        assert r.status_code == 503 and "npm run build" in r.text
        assert "http://" not in r.text and "https://" not in r.text


def test_docs_assets_of_the_real_web_build(store: Path) -> None:
    from podflow.server.config import default_web_dist, find_web_dist
    from podflow.server.docs import docs_assets_present

    dist = find_web_dist()
    if not docs_assets_present(dist):
        pytest.skip(f"the web build at {default_web_dist()} has no swagger-ui/ "
                    "(cd web && npm ci && npm run build)")
    with TestClient(create_app(store), base_url=LOCAL) as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "https://" not in page.text
        js = c.get("/swagger-ui/swagger-ui-bundle.js")
        assert js.status_code == 200 and "SwaggerUIBundle" in js.text
        assert c.get("/swagger-ui/swagger-ui.css").status_code == 200


@pytest.mark.parametrize("pattern", ["a++", "(?>a)", "a{1001}", "(?x) a", r"\Z"])
def test_regex_re2_refuses_is_400_not_500(client: TestClient, pattern: str) -> None:
    for path in ("/api/flows", "/api/map", "/api/flows/stream"):
        r = client.get(path, params={"http_path": pattern})
        assert r.status_code == 400, (path, r.text)
        assert "RE2" in r.json()["error"]


def test_any_filter_the_engine_refuses_is_400(client: TestClient,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from podflow.query import l7filter

    # a filter the spec's own checks let through: the up-front engine check catches it
    monkeypatch.setattr(l7filter, "re2_error", lambda pattern: None)
    l7filter._path_rx.cache_clear()
    try:
        r = client.get("/api/flows", params={"http_path": "a{2000}"})
        assert r.status_code == 400 and "engine refuses" in r.json()["error"]
    finally:
        l7filter._path_rx.cache_clear()


def test_engine_refusal_mid_query_is_400_with_a_filter(client: TestClient,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    def refuse(self: DuckDBStore, *a: object, **k: object) -> None:
        raise duckdb.ConversionException("Conversion Error: bad value")

    monkeypatch.setattr(DuckDBStore, "flows", refuse)
    r = client.get("/api/flows", params={"namespace": "shop"})
    assert r.status_code == 400 and "bad value" in r.json()["error"]
    with pytest.raises(duckdb.ConversionException):  # no filter: not the request's fault
        client.get("/api/flows")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_non_finite_times_are_400(client: TestClient, value: str) -> None:
    for name in ("before", "since", "until"):
        r = client.get("/api/flows", params={name: value})
        assert r.status_code == 400, (name, value, r.text)
        assert name in r.json()["error"] and "finite" in r.json()["error"]


def test_openapi_lists_every_filter_with_its_declared_help(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path in ("/api/flows", "/api/flows/stream", "/api/map"):
        params = {p["name"]: p for p in doc["paths"][path]["get"]["parameters"]}
        for f in filter_fields().values():
            assert params[f.name]["description"] == f.help, (path, f.name)
            assert params[f.name]["in"] == "query"
        assert params["to_port"]["schema"] == {"type": "array", "items": {"type": "integer"}}
    described = {f["name"]: f for f in client.get("/api/filters").json()}
    assert described["namespace"]["flag"] == "--namespace"
    assert described["namespace"]["short"] == "-n" and described["pod"]["metavar"]


def test_protocol_takes_l7_names(client: TestClient) -> None:
    def ids(*pairs: tuple[str, str]) -> list[str]:
        r = client.get("/api/flows", params=list(pairs))
        assert r.status_code == 200, r.text
        return [f["flow_id"] for f in r.json()["flows"]]

    assert ids(("protocol", "dns")) == ["f30"]
    assert ids(("protocol", "http")) == ["f31"]
    assert ids(("protocol", "DNS"), ("protocol", "http")) == ["f30", "f31"]
    assert ids(("protocol", "udp")) == ["f30"]
    r = client.get("/api/flows", params={"protocol": "kafka"})
    assert r.status_code == 400 and "unknown protocol" in r.json()["error"]


def test_the_live_map_waits_for_an_agent_that_is_behind(tmp_path: Path) -> None:
    """A connection seen only by the backend's node (node2) is drawn once it is older than
    LIVE_SETTLE, unless the client's node (node1) has not reported that far yet (its last
    report is old, or says its conntrack dumps are behind): it may still hold the view that
    names the Service."""
    now = time.time()
    be2 = dataclasses.replace(BE, node_name="node2")
    half = _flow(0, FE, be2, time=now - 15, end_time=now - 15,
                 observations=(ObservationPoint("node2", "conntrack"),))
    path = tmp_path / "flows.duckdb"
    with DuckDBStore(path) as st:
        st.write_status("node1", {}, at=now - 25)   # node1's last word
        st.write([half])
        st.write_status("node2", {"reported_through": now - 1})
        got = st.progress(now - 60)
        assert got == {"node1": now - 25, "node2": now - 1}
        assert st.progress(time.time() + 1) == {}
    state = tmp_path / "state"
    shutil.copytree(K8S, state)
    app = create_app(path, cluster_state=state, web_dist=tmp_path)

    def edges(**params: str) -> set[tuple[str, str]]:
        with TestClient(app, base_url=LOCAL) as c:
            g = c.get("/api/map", params=params).json()
        return {(e["source"], e["target"]) for e in g["edges"]}

    assert not edges()
    assert edges(settled="0s")              # asked for: every stored connection
    with DuckDBStore(path) as st:           # node1 alive but its conntrack dumps behind
        st.write_status("node1", {"reported_through": now - 20})
    assert not edges()
    with DuckDBStore(path) as st:           # node1 catches up: the half view is as stored
        st.write_status("node1", {"reported_through": time.time()})
    assert edges() == {("workload:shop/frontend", "workload:shop/backend")}
    with DuckDBStore(path) as st:           # a source stuck for good is waited for 5 min only
        st.write_status("node1", {"reported_through": 0.0})
        assert st.progress(now - 60)["node1"] >= now - AGENT_MAX_LAG
        st.write_status("node3", ["not", "a", "report"])  # type: ignore[arg-type]
        assert st.progress(now - 60)["node3"] >= now
