"""Traffic spec parsing, target resolution, workload configs, truth files; a loopback run."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path

import pytest

from podflow.lab.traffic import Resolved, Target, parse_every, parse_port, parse_target, resolve
from podflow.lab.truth import ConnectRecord, read_truth
from podflow.lab.workload import Workload, external_config, pod_config
from tests.unit.test_cluster_state import lab_state


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
        task = asyncio.create_task(Workload(pod_config(st, pod, tmp_path)).run())
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
