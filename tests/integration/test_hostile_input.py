"""Hostile packets from a pod never stop collection (a lab, its real agents, real packets).

A pod sends what once killed every agent that saw it (issue 8): UDP datagrams to the VXLAN
ports whose payload carries an inner IPv4 header with IHL 0, cut short, and an ICMP
port-unreachable quoting such a header, to every node of a 3-node Flannel-VXLAN lab. Every
agent must still be running afterwards, count what it skipped in its health report, go on
recording the lab's traffic, and flush and report when SIGTERM stops it.

All packets go to the lab's own node addresses, from a pod namespace of the lab.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podflow.lab import manager
from podflow.lab.agents import stop_agents
from podflow.lab.netns import list_netns
from podflow.lab.spec import parse_spec
from podflow.lab.state import LabState, lab_store_path
from podflow.metrics.podflow_health import lost_events
from podflow.store.duckdb import DuckDBStore

pytestmark = pytest.mark.integration

ATTACK = r"""
import socket, struct, sys

def inner(n, proto):  # an IPv4 header with IHL 0, cut after n bytes
    h = bytearray(28); h[0] = 0x40; h[9] = proto
    return bytes(h[:n])

eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"    # inner Ethernet, IPv4
vxlan = b"\x08\x00\x00\x00" + (1).to_bytes(3, "big") + b"\x00"
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)

def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack(f"!{len(b) // 2}H", b)); s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF

for ip in sys.argv[1:]:
    for n, proto in ((12, 17), (16, 6), (16, 17), (0, 0)):
        for port in (8472, 4789):
            udp.sendto(vxlan + eth + inner(n or 28, proto), (ip, port))
    body = b"\x03\x03\x00\x00" + b"\x00" * 4 + inner(12, 6)  # port unreachable
    icmp.sendto(body[:2] + struct.pack("!H", csum(body)) + body[4:], (ip, 0))
print("sent")
"""


def _spec(name: str) -> dict[str, object]:
    return {
        "name": name, "cni": "flannel-vxlan", "nodes": 3, "namespaces": ["app"],
        "workloads": [
            {"namespace": "app", "name": "web", "labels": {"app": "web"}, "ports": ["tcp/8080"],
             "node": 1},
            {"namespace": "app", "name": "api", "labels": {"app": "api"}, "ports": ["tcp/9000"],
             "node": 2},
        ],
        "services": [{"namespace": "app", "name": "api", "selector": {"app": "api"},
                      "ports": [{"name": "http", "port": 9000}]}],
        "traffic": [{"from": "app/web", "to": "service/app/api:9000", "every": "1s"}],
    }


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return b"podflow\x00agent" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _store(state: LabState) -> DuckDBStore:
    return DuckDBStore(lab_store_path(state.name), read_only=True)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("PODFLOW_LAB_ROOT", str(tmp_path_factory.mktemp("labs")))
    name = "hx" + secrets.token_hex(2)
    try:
        state = manager.up(parse_spec(_spec(name)))
        with _store(state) as st:  # agents report at start, not after the first 10 s
            started = {s["node"] for s in st.statuses()}
        time.sleep(3)
        web = state.pods_of("app", "web")[0]
        at = time.time()
        out = subprocess.run(["ip", "netns", "exec", web.netns, sys.executable, "-c", ATTACK,
                              *(n.ip for n in state.nodes)],
                             capture_output=True, text=True, check=True, timeout=30)
        assert out.stdout.strip() == "sent"
        time.sleep(8)
        alive = {n.name: _alive(n.agent_pid) for n in state.nodes}
        pids = [n.agent_pid for n in state.nodes]
        stopped_at = time.time()
        stop_agents(state, timeout=20)
        gone = not any(_alive(p) for p in pids)
        with _store(state) as st:
            statuses = st.statuses()
            after = [f for f in st.flows() if f.time >= at + 2]
        yield {"state": state, "started": started, "alive": alive, "statuses": statuses,
               "after": after, "stopped_at": stopped_at, "gone": gone}
    finally:
        manager.down(name)
        assert list_netns(f"pf-{name}-") == []
        mp.undo()


def test_agents_report_health_at_start(attacked: dict[str, object]) -> None:
    assert attacked["started"] == {"node1", "node2", "node3"}


def test_every_agent_survives_the_hostile_packets(attacked: dict[str, object]) -> None:
    assert attacked["alive"] == {"node1": True, "node2": True, "node3": True}


def test_the_skipped_packets_are_counted_on_every_node(attacked: dict[str, object]) -> None:
    statuses = attacked["statuses"]
    assert isinstance(statuses, list) and len(statuses) == 3
    for s in statuses:
        lost = {(src, reason): n for src, reason, n in lost_events(s["status"])}
        from_packets = {k: n for k, n in lost.items() if k[0] == "packets" and n > 0}
        assert from_packets, f"{s['node']}: no skipped packet counted ({lost})"
        # decoders skip the packet at its cause; nothing reached the loop's last resort
        assert not s["status"].get("lost", {}).get("packets"), s["status"]["lost"]


def test_traffic_is_still_recorded_after_the_attack(attacked: dict[str, object]) -> None:
    after = attacked["after"]
    assert isinstance(after, list)
    to_api = [f for f in after if f.destination.pod_name and "api" in f.destination.pod_name]
    assert len(to_api) >= 3, "the lab's traffic stopped being recorded after the attack"


def test_sigterm_flushes_and_writes_a_last_report(attacked: dict[str, object]) -> None:
    assert attacked["gone"], "an agent ignored SIGTERM"
    stopped_at = attacked["stopped_at"]
    assert isinstance(stopped_at, float)
    statuses = attacked["statuses"]
    assert isinstance(statuses, list)
    assert all(s["time"] >= stopped_at for s in statuses), "no report written at SIGTERM"
