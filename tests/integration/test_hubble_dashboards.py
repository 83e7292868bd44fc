"""Cilium's stock Hubble dashboards, read by a real Prometheus scraping podflow on a lab.

A 2-node flannel-vxlan lab makes HTTP (200 and 503) across nodes, DNS lookups (answered
and NXDOMAIN), ICMP echo exchanges, UDP sent to a closed port (ICMP port unreachable) and
SYNs into a blackholed address (drops without any NetworkPolicy). podflow serves /metrics
over the lab's store with the options the dashboards expect; Debian's Prometheus scrapes it
every second. Then every PromQL expression of the three stock dashboards
(``../shared/tools/hubble-dashboards.json``, Grafana variables substituted) must return
data, except those whose traffic the lab cannot make (IPv6, NetworkPolicy denies, a
missing-responses panel that filters ``> 0`` when nothing went missing, the one panel of
the http v1 handler, which httpV2 replaces), and the request,
DNS query and connection rates must agree with the lab's ground truth within 5%.

Skips, with the reason, when the shared file or Prometheus is absent.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podflow.lab import manager
from podflow.lab.netns import list_netns
from podflow.lab.spec import parse_spec
from podflow.lab.state import LabState, lab_dir, lab_store_path
from podflow.lab.truth import read_truth
from tests.integration.promserver import MISSING, PROMETHEUS, query, run_prometheus, serve_metrics

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / \
    "hubble-dashboards.json"
BLACKHOLE = "192.168.100.99"
RUN = 95.0
"""Seconds of traffic before the panels are read (a full 1m rate window after warm-up)."""
WINDOW = 60.0
OPTIONS = ("flow:sourceContext=pod;destinationContext=pod "
           "drop:sourceContext=pod;destinationContext=pod tcp icmp port-distribution "
           "dns:query;sourceContext=pod;destinationContext=pod;"
           "labelsContext=source_namespace,destination_namespace "
           "httpV2:labelsContext=source_namespace,source_workload,destination_namespace,"
           "destination_workload podflow")
"""What the stock dashboards group by: ``source``/``destination`` on flow, drop and DNS
panels, the namespace and workload labels on the DNS and L7 HTTP dashboards (httpV2, which
the "L7 HTTP by Workload" dashboard is written for)."""
VARIABLES = {"$__rate_interval": "1m", "${cluster}": ".*", "$cluster": ".*",
             "${reporter}": "server", "$reporter": "server"}
"""Grafana variables: every other ``$name``/``${name}`` is a label matcher's "All" (.*)."""
NO_TRAFFIC = (
    (re.compile(r'family="IPv6"'), "the lab has no IPv6"),
    (re.compile(r'reason="POLICY_DENIED"'), "the lab enforces no NetworkPolicy"),
    (re.compile(r"Missing DNS responses"), "every query was answered (the panel keeps > 0)"),
    (re.compile(r"hubble_http_responses_total"), "http (v1) only: httpV2, which the L7 HTTP "
     "dashboard needs, replaces it (Hubble cannot run both either)"),
)
PING = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(1)
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xFFFF)
    return ~(t + (t >> 16)) & 0xFFFF
for seq in range(int(sys.argv[2])):
    body = struct.pack("!HH", 0x5046, seq) + b"podflow-ping"
    msg = struct.pack("!BBH", 8, 0, 0) + body
    s.sendto(struct.pack("!BBH", 8, 0, csum(msg)) + body, (sys.argv[1], 0))
    try:
        s.recv(1024)
    except OSError:
        pass
    time.sleep(0.2)
"""
UDP_CLOSED = """
import socket, sys, time
for _ in range(int(sys.argv[3])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"anyone?", (sys.argv[1], int(sys.argv[2]))); s.close(); time.sleep(0.3)
"""
SYN = """
import socket, sys
for _ in range(int(sys.argv[3])):
    s = socket.socket(); s.settimeout(0.5)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
    except OSError:
        pass
    s.close()
"""


def _spec(name: str) -> dict[str, object]:
    return {
        "name": name, "cni": "flannel-vxlan", "nodes": 2, "namespaces": ["app"],
        "workloads": [
            {"namespace": "app", "name": "web", "labels": {"app": "web"}, "ports": ["tcp/8080"],
             "node": 1},
            {"namespace": "app", "name": "api", "labels": {"app": "api"}, "ports": ["tcp/9000"],
             "node": 2},
        ],
        "services": [{"namespace": "app", "name": "api", "selector": {"app": "api"},
                      "ports": [{"name": "http", "port": 9000}]}],
        "externals": [{"name": "db", "ip": "192.168.100.10", "ports": ["tcp/5432"],
                       "dns": ["db.example.com"]}],
        "traffic": [
            {"from": "app/web", "to": "service/app/api:9000", "every": "500ms"},
            {"from": "app/web", "to": "service/app/api:9000", "every": "1s",
             "http": {"path": "/status/503", "expect": 503}},
            {"from": "app/web", "to": "dns/db.example.com:5432", "every": "1s"},
            {"from": "app/web", "to": "dns/nosuch.example.com:5432", "every": "2s"},
        ],
    }


def _in(netns: str, script: str, *args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", script,
                             *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def panels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabState, int, float]]:
    """(the lab, Prometheus' port, when the panels are read) after RUN seconds of traffic,
    with the side traffic (pings, UDP to a closed port, SYNs into a blackhole) running."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PODFLOW_LAB_ROOT", str(tmp_path_factory.mktemp("labs")))
    name = "hd" + secrets.token_hex(2)
    side: list[subprocess.Popen[bytes]] = []
    try:
        state = manager.up(parse_spec(_spec(name)))
        fabric = next(n for n in state.extra_netns if n.endswith("-fabric"))
        subprocess.run(["ip", "-n", fabric, "route", "add", "blackhole", f"{BLACKHOLE}/32"],
                       check=True)
        web, api = state.pods_of("app", "web")[0], state.pods_of("app", "api")[0]
        work = tmp_path_factory.mktemp("prometheus")
        agents = [n.agent_metrics for n in state.nodes if n.agent_metrics]
        assert len(agents) == 2, "each lab agent serves its node's /metrics"
        with serve_metrics(lab_store_path(name), OPTIONS) as port, \
                run_prometheus(work, port, ready="hubble_flows_processed_total",
                               agents=agents) as prom:
            end = time.time() + RUN
            while time.time() < end:
                side = [_in(web.netns, PING, api.ip, 5), _in(web.netns, UDP_CLOSED, api.ip, 9, 3),
                        _in(web.netns, SYN, BLACKHOLE, 5432, 2)]
                for p in side:
                    p.wait(30)
                time.sleep(max(0.0, min(10.0, end - time.time())))
            yield state, prom, time.time()
    finally:
        for p in side:
            if p.poll() is None:
                p.kill()
                p.wait()
        manager.down(name)
        assert list_netns(f"pf-{name}-") == []
        mp.undo()


def _expressions() -> list[tuple[str, str, str]]:
    """(dashboard, panel, PromQL with the Grafana variables substituted)."""
    doc = json.loads(DASHBOARDS.read_text())
    out = []
    for board in doc["dashboards"]:
        for panel in board["panels"]:
            for expr in panel["exprs"]:
                for k, v in VARIABLES.items():
                    expr = expr.replace(k, v)
                expr = re.sub(r"\$\{?[A-Za-z_]+\}?", ".*", expr)
                out.append((board["title"], panel["title"], expr))
    return out


def _no_traffic(panel: str, expr: str) -> str | None:
    for pattern, why in NO_TRAFFIC:
        if pattern.search(expr) or pattern.search(panel):
            return why
    return None


def _value(result: list[dict[str, Any]]) -> float:
    return sum(float(r["value"][1]) for r in result)


@pytest.mark.skipif(not DASHBOARDS.exists(), reason=f"{DASHBOARDS} is absent (../shared)")
@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason=MISSING)
def test_every_panel_whose_traffic_the_lab_made_has_data(
        panels: tuple[LabState, int, float]) -> None:
    _, prom, _ = panels
    empty, judged = [], 0
    for board, panel, expr in _expressions():
        if _no_traffic(panel, expr):
            continue
        judged += 1
        if not query(prom, expr):
            empty.append(f"{board} / {panel}: {expr}")
    assert judged >= 40, judged
    assert not empty, "panels without data:\n" + "\n".join(empty)


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason=MISSING)
def test_rates_agree_with_the_ground_truth(panels: tuple[LabState, int, float]) -> None:
    """HTTP requests/s, DNS queries/s and TCP connections/s over the last minute against
    what the lab's processes recorded in the same minute (a few seconds earlier: what
    happens reaches the metrics after conntrack's and the packets vantage's reports)."""
    state, prom, at = panels
    truth = read_truth(lab_dir(state.name))
    lag = 5.0
    lo, hi = at - lag - WINDOW, at - lag

    def per_s(times: list[float]) -> float:
        return sum(lo <= t < hi for t in times) / WINDOW

    web = [c for c in truth.connects if c.client.startswith("app/web-")]
    want = {
        "http": per_s([c.time for c in web if c.http_status is not None]),
        "dns": per_s([d.time for d in truth.dns]),
        "tcp": per_s([c.time for c in web if c.outcome == "ok" and c.purpose == "traffic"]),
    }
    cluster = 'job="podflow"'   # podflow serve's cluster view (the agents are another job)
    got = {
        "http": _value(query(prom, f'sum(rate(hubble_http_requests_total{{{cluster},'
                                   f'reporter="client"}}[1m]))')),
        "dns": _value(query(prom, f"sum(rate(hubble_dns_queries_total{{{cluster}}}[1m]))")),
        "tcp": _value(query(prom, f'sum(rate(hubble_tcp_flags_total{{{cluster},'
                                  f'flag="SYN-ACK"}}[1m]))')),
    }
    # each node's agent counts at its own observation point: the client's node as client
    got["http (agents)"] = _value(query(
        prom, 'sum(rate(hubble_http_requests_total{job="podflow-agent",reporter="client"}'
              "[1m]))"))
    want["http (agents)"] = want["http"]
    for k in want:
        print(f"{k}: podflow {got[k]:.3f}/s, ground truth {want[k]:.3f}/s")
    assert all(v > 0 for v in want.values()), want
    off = {k: (got[k], want[k]) for k in want if abs(got[k] - want[k]) > 0.05 * want[k]}
    assert not off, f"podflow vs truth (per second): {off}"


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason=MISSING)
def test_each_agent_serves_what_its_node_observed(panels: tuple[LabState, int, float]) -> None:
    """Hubble's per-node metrics: every agent is a scrape target of its own; the HTTP
    server's node reports as server, the client's node as client."""
    state, prom, _ = panels
    by_node = {n.agent_metrics: n.name for n in state.nodes}

    def reporters(who: str) -> set[str]:
        return {by_node[r["metric"]["instance"]] for r in query(
            prom, f'sum by (instance) (hubble_http_requests_total{{job="podflow-agent",'
                  f'reporter="{who}"}})') if float(r["value"][1]) > 0}

    web, api = state.pods_of("app", "web")[0], state.pods_of("app", "api")[0]
    assert reporters("client") == {web.node}
    assert reporters("server") == {api.node}
    flows = query(prom, 'sum by (instance) (hubble_flows_processed_total{job="podflow-agent"})')
    assert {by_node[r["metric"]["instance"]] for r in flows} == {web.node, api.node}
