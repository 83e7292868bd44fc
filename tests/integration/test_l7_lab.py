"""L7 and verdicts from the packet vantage in a lab, with the agents' default sources.

Flannel-VXLAN (bypass capture on the node: pod veths, flannel.1, the underlay's VXLAN inner
headers) and macvlan (sidecar capture inside the pods, the node sees nothing):

* DNS lookups through the cluster DNS carry the query, rcode and answer;
* HTTP status codes land on the right flows, across nodes;
* a connection to a closed port is refused (ERROR), one to a blackholed address of the lab
  times out (DROPPED).

All traffic stays inside the lab's own namespaces (the blackholed address is routed to
nowhere by the lab's own fabric namespace).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from podflow.lab import manager
from podflow.lab.netns import list_netns
from podflow.lab.spec import parse_spec
from podflow.lab.state import LabState, lab_store_path
from podflow.model.flow import Flow, Verdict
from podflow.store.duckdb import DuckDBStore

pytestmark = pytest.mark.integration

BLACKHOLE = "192.168.100.99"
CONNECT = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""


def _spec(name: str, cni: str) -> dict[str, object]:
    api = "pod/app/api:9000" if cni == "macvlan" else "dns/api:9000"
    return {
        "name": name, "cni": cni, "nodes": 2, "namespaces": ["app"],
        "workloads": [
            {"namespace": "app", "name": "web", "labels": {"app": "web"}, "ports": ["tcp/8080"],
             "node": 1},
            {"namespace": "app", "name": "api", "labels": {"app": "api"}, "ports": ["tcp/9000"],
             "node": 2},
        ],
        "services": [] if cni == "macvlan" else [
            {"namespace": "app", "name": "api", "selector": {"app": "api"},
             "ports": [{"name": "http", "port": 9000}]}],
        "externals": [{"name": "db", "ip": "192.168.100.10", "ports": ["tcp/5432"],
                       "dns": ["db.example.com"]}],
        "traffic": [
            {"from": "app/web", "to": api, "every": "1s",
             "http": {"method": "GET", "path": "/status/404", "expect": 404}},
            {"from": "app/web", "to": "dns/db.example.com:5432", "every": "1s"},
        ],
    }


def _lab(cni: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabState, int]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("PODFLOW_LAB_ROOT", str(tmp_path_factory.mktemp("labs")))
    name = "l7" + secrets.token_hex(2)
    try:
        state = manager.up(parse_spec(_spec(name, cni)))
        fabric = next(n for n in state.extra_netns if n.endswith("-fabric"))
        subprocess.run(["ip", "-n", fabric, "route", "add", "blackhole", f"{BLACKHOLE}/32"],
                       check=True)
        web = state.pods_of("app", "web")[0]
        api = state.pods_of("app", "api")[0]
        refused = _connect(web.netns, api.ip, 9999, 3)   # api listens on 9000 only
        timed_out = _connect(web.netns, BLACKHOLE, 5432, 2)
        assert (refused, timed_out) == ("ConnectionRefusedError", "TimeoutError")
        time.sleep(20)
        yield state, 9999
    finally:
        manager.down(name)
        assert list_netns(f"pf-{name}-") == []
        mp.undo()


def _connect(netns: str, ip: str, port: int, timeout: float) -> str:
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", CONNECT, ip,
                          str(port), str(timeout)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _flows(state: LabState) -> list[Flow]:
    with DuckDBStore(lab_store_path(state.name), read_only=True) as st:
        return st.flows()


@pytest.fixture(scope="module", params=["flannel-vxlan", "macvlan"])
def lab(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabState, list[Flow]]]:
    for state, _ in _lab(str(request.param), tmp_path_factory):
        yield state, _flows(state)


def test_dns_lookups_carry_query_rcode_and_answer(lab: tuple[LabState, list[Flow]]) -> None:
    state, flows = lab
    db = state.external("db")
    dns = [f for f in flows if f.l7 is not None and f.l7.dns is not None]
    answered = [f.l7.dns for f in dns if f.l7 and f.l7.dns and f.l7.dns.query == "db.example.com"]
    assert answered, "no DNS record of the db.example.com lookups"
    assert all(d.rcode == 0 and db.ip in d.ips for d in answered)
    assert all(f.destination.port == 53 for f in dns)


def test_http_status_codes_land_on_the_right_flows(lab: tuple[LabState, list[Flow]]) -> None:
    state, flows = lab
    api_ips = {p.ip for p in state.pods_of("app", "api")}
    http = [f for f in flows if f.l7 is not None and f.l7.http is not None]
    assert http, "no HTTP record"
    to_api = [f for f in http if f.destination.ip in api_ips]
    assert to_api and all(f.l7 and f.l7.http and f.l7.http.code == 404 for f in to_api)
    assert all(f.l7 and f.l7.http and f.l7.http.url == "/status/404" for f in to_api)
    web = state.pods_of("app", "web")[0]
    assert all(f.source.pod_name == web.name for f in to_api)
    assert {f.destination.node_name for f in to_api} == {"node2"}  # across nodes


def test_failures_have_the_right_verdicts(lab: tuple[LabState, list[Flow]]) -> None:
    state, flows = lab
    api = state.pods_of("app", "api")[0]
    refused = [f for f in flows if f.destination.ip == api.ip and f.destination.port == 9999]
    assert refused and all(f.verdict is Verdict.ERROR for f in refused)
    assert all((f.drop_reason_desc or "").startswith("refused") for f in refused)
    lost = [f for f in flows if f.destination.ip == BLACKHOLE]
    assert lost and all(f.verdict is Verdict.DROPPED for f in lost)
    assert all((f.drop_reason_desc or "").startswith("timed out") for f in lost)
