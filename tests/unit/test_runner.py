"""Agent loop pieces that need no root: identity grace for flows of not-yet-known pods."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from podflow.cni.detect import detect
from podflow.cni.snapshot import NodeSnapshot
from podflow.model.flow import EndpointKind
from podflow.pipeline.decode import DecodeContext
from podflow.pipeline.runner import Agent, AgentConfig
from podflow.sources.conntrack_plugin import ConntrackPlugin
from podflow.sources.registry import Report, SourceOptions
from podflow.store.duckdb import DuckDBStore
from tests.conftest import DATA
from tests.unit.test_decode import clusterip_entry

PLUGIN = ConntrackPlugin(SourceOptions(node_name="node1"))
CLIENT = "frontend-6d8f9c7b5-x2k4p"  # 10.244.0.2 in tests/data/k8s/pods.json


def _state_dir(tmp: Path, *, with_client: bool) -> Path:
    d = tmp / "cluster-state"
    d.mkdir(exist_ok=True)
    for f in (DATA / "k8s").glob("*.json"):
        if f.name != "pods-restarted.json":
            shutil.copy(f, d / f.name)
    if not with_client:
        pods = json.loads((DATA / "k8s" / "pods.json").read_text())
        pods["items"] = [p for p in pods["items"] if p["metadata"]["name"] != CLIENT]
        (d / "pods.json").write_text(json.dumps(pods))
    return d


def _agent(tmp: Path, grace: float) -> tuple[Agent, DecodeContext]:
    cfg = AgentConfig(node_name="node1", cluster_state=_state_dir(tmp, with_client=False),
                      store=tmp / "flows.duckdb", identity_grace=grace)
    agent = Agent(cfg)
    agent.cluster.poll(0.0)
    snap = NodeSnapshot.from_json((DATA / "nodes" / "flannel-vxlan-node1.json").read_text())
    profile = detect(snap, agent.cluster.inventory, node_name="node1").profile
    return agent, DecodeContext("node1", agent.cluster.inventory, profile)


def _stored(path: Path) -> list[tuple[EndpointKind, str | None]]:
    with DuckDBStore(path, read_only=True) as st:
        return [(f.source.kind, f.source.pod_name) for f in st.flows()]


def test_flow_of_a_pod_not_yet_in_the_inventory_waits_and_gets_its_name(tmp_path: Path) -> None:
    agent, ctx = _agent(tmp_path, grace=60)
    agent._emit(PLUGIN, [Report(clusterip_entry(), True)], ctx)
    assert agent.stats.deferred == 1 and agent.writer.pending == 0
    agent._retry_deferred(ctx, changed=False)
    assert agent.writer.pending == 0, "nothing changed and time is left: keep waiting"

    _state_dir(tmp_path, with_client=True)  # the pod object reaches the agent
    assert agent.cluster.poll(1.0)
    agent._retry_deferred(ctx, changed=True)
    assert agent.stats.deferred_resolved == 1
    agent.writer.flush()
    assert _stored(tmp_path / "flows.duckdb") == [(EndpointKind.POD, CLIENT)]


def test_unresolved_flow_is_stored_as_unknown_when_the_grace_runs_out(tmp_path: Path) -> None:
    agent, ctx = _agent(tmp_path, grace=0)
    agent._emit(PLUGIN, [Report(clusterip_entry(), True)], ctx)
    agent._retry_deferred(ctx, changed=False)
    agent.writer.flush()
    assert _stored(tmp_path / "flows.duckdb") == [(EndpointKind.UNKNOWN, None)]
    assert agent.stats.deferred_resolved == 0 and agent.stats.flows == 1


class CrashOnce:
    """A source whose I/O loop raises the first time and works the second."""

    name = "crashy"
    ready = True

    def __init__(self) -> None:
        self.calls = 0

    def run(self, sink: object, stop: object) -> None:
        import threading

        assert callable(sink) and isinstance(stop, threading.Event)
        self.calls += 1
        if self.calls == 1:
            raise OSError(100, "Network is down")
        sink(["record"], "event")
        stop.wait(10)


def test_a_source_that_dies_is_restarted_and_counted(tmp_path: Path) -> None:
    import threading

    agent, _ = _agent(tmp_path, grace=5)
    plugin = CrashOnce()
    t = threading.Thread(target=agent._supervise,  # type: ignore[arg-type]
                         args=(plugin, lambda r, k: agent.queue.put(r, f"crashy/{k}")))
    t.start()
    try:
        got = agent.queue.get(timeout=5)
    finally:
        agent.stop.set()
        t.join(5)
    assert got == (["record"], "crashy/event")
    assert plugin.calls == 2 and agent.stats.source_failures == {"crashy": 1}
    assert not t.is_alive()


def test_other_views_wait_for_conntrack_then_are_stored(tmp_path: Path) -> None:
    import dataclasses
    import time

    agent, ctx = _agent(tmp_path, grace=5)
    agent.cfg = dataclasses.replace(agent.cfg, view_delay=0.2)
    _state_dir(tmp_path, with_client=True)
    agent.cluster.poll(1.0)
    packets = ConntrackPlugin(SourceOptions(node_name="node1"))
    packets.nat_aware = False  # stands in for a non-NAT-aware view of the same connection
    packets.name = "packets"
    agent.plugins = {"conntrack": PLUGIN, "packets": packets}
    agent._emit(packets, [Report(clusterip_entry(), True)], ctx)
    assert agent.writer.pending == 0 and len(agent._held) == 1
    agent._release_held(ctx)
    assert agent.writer.pending == 0, "released before its delay"
    time.sleep(0.25)
    agent._release_held(ctx)
    assert agent.writer.pending == 1 and agent._held == []
    agent._emit(PLUGIN, [Report(clusterip_entry(), True)], ctx)  # conntrack is never held
    assert agent.writer.pending == 2
