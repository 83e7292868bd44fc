"""Agent loop pieces that need no root: identity grace for flows of not-yet-known pods."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from podflow.agent.runner import Agent, AgentConfig
from podflow.cni.detect import detect
from podflow.cni.snapshot import NodeSnapshot
from podflow.model.conntrack import CtEventType
from podflow.model.flow import EndpointKind
from podflow.pipeline.context import DecodeContext, Report
from podflow.sources.conntrack import ConntrackPlugin
from podflow.sources.registry import SourceOptions
from podflow.store.base import StoreBusy
from podflow.store.duckdb import DuckDBStore
from tests.conftest import DATA
from tests.unit.pipeline.test_ctdecode import clusterip_entry

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


def test_while_the_inventory_is_not_current_the_grace_stretches(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  ) -> None:
    """The API is unreachable: a pod created meanwhile cannot be known yet, so its flows
    wait STALE_GRACE longer for their names instead of being stored unnamed."""
    agent, ctx = _agent(tmp_path, grace=0)
    monkeypatch.setattr(type(agent.cluster), "current", property(lambda self: False))
    agent._emit(PLUGIN, [Report(clusterip_entry(), True)], ctx)
    agent._retry_deferred(ctx, changed=False)
    assert agent.writer.pending == 0 and len(agent._deferred) == 1
    _state_dir(tmp_path, with_client=True)   # the watches are back with the pod
    monkeypatch.setattr(type(agent.cluster), "current", property(lambda self: True))
    assert agent.cluster.poll(1.0)
    agent._retry_deferred(ctx, changed=True)
    agent.writer.flush()
    assert _stored(tmp_path / "flows.duckdb") == [(EndpointKind.POD, CLIENT)]


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


class Hostile:
    """A source whose processing and decoding raise on the records named "bad"."""

    name = "hostile"
    nat_aware = True
    ready = True
    synced_at = 0.0
    reported_through = 0.0

    def process(self, records: list[str], kind: str, now: float) -> list[Report]:
        if "bad" in records:
            raise ValueError("invalid length of packed IP address string")
        return [Report(r, True) for r in records]

    def decode(self, record: str, ctx: object, final: bool) -> None:
        if record == "undecodable":
            raise IndexError("index out of range")

    def flush(self, now: float) -> list[Report]:
        raise RuntimeError("flush failed")

    def stats(self) -> dict[str, int]:
        return {}


def test_records_that_raise_are_counted_by_source_and_reason_and_skipped(
        tmp_path: Path) -> None:
    from podflow.metrics.podflow_health import lost_events

    agent, ctx = _agent(tmp_path, grace=5)
    agent.plugins = {"hostile": Hostile()}  # type: ignore[dict-item]
    agent._consume(["ok", "bad", "ok"], "hostile/pkt", ctx)  # the batch is lost, counted
    agent._consume(["undecodable", "fine"], "hostile/pkt", ctx)
    agent._consume(["undecodable"], "hostile/pkt", ctx)
    assert agent.stats.lost == {"hostile": {"process_valueerror": 3, "decode_indexerror": 2}}
    assert agent.stats.skipped == 1  # "fine" decodes to None: skipped, not lost
    report = agent.health()
    assert ("hostile", "process_valueerror", 3.0) in lost_events(report)


def test_the_final_flush_survives_a_failing_source_and_still_reports(tmp_path: Path) -> None:
    agent, ctx = _agent(tmp_path, grace=5)
    agent.plugins = {"hostile": Hostile()}  # type: ignore[dict-item]
    agent._finish([], ctx)
    assert agent.stats.lost == {"hostile": {"flush_runtimeerror": 1}}
    with DuckDBStore(tmp_path / "flows.duckdb", read_only=True) as st:
        (status,) = st.statuses()
    assert status["status"]["lost"] == {"hostile": {"flush_runtimeerror": 1}}


def test_an_inventory_poll_that_raises_keeps_the_loop_and_is_counted(tmp_path: Path) -> None:
    agent, _ = _agent(tmp_path, grace=5)

    def broken(now: float) -> bool:
        raise RecursionError("maximum recursion depth exceeded")

    agent.cluster.poll = broken  # type: ignore[method-assign]
    assert agent._poll_inventory(1.0) is False
    assert agent.stats.lost == {"inventory": {"poll_recursionerror": 1}}


def test_a_decoders_own_reason_names_the_loss(tmp_path: Path) -> None:
    from podflow.model.losses import DecodeError

    agent, _ = _agent(tmp_path, grace=5)

    def refuse() -> None:
        raise DecodeError("short_ipv4_header", "12 bytes")

    agent._guard("packets", "process", 2, refuse)
    assert agent.stats.lost == {"packets": {"short_ipv4_header": 2}}


def test_kubernetes_objects_the_inventory_skipped_are_in_the_health_report(
        tmp_path: Path) -> None:
    from podflow.metrics.podflow_health import lost_events

    agent, _ = _agent(tmp_path, grace=5)
    d = tmp_path / "cluster-state"
    pods = json.loads((d / "pods.json").read_text())
    pods["items"].append({"kind": "Pod", "metadata": "oops"})
    (d / "pods.json").write_text(json.dumps(pods))
    agent._poll_inventory(2.0)
    report = agent.health()
    assert report["lost"]["inventory"]["bad_object"] >= 1
    assert any(s == "inventory" and r == "bad_object" for s, r, _ in lost_events(report))


def test_flows_without_any_pod_known_are_said_once_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cluster-state directory in a shape the agent cannot read (or empty): every endpoint
    stays unknown; that must not be silent."""
    empty = tmp_path / "empty-state"
    empty.mkdir()
    cfg = AgentConfig(node_name="node1", cluster_state=empty, store=tmp_path / "f.duckdb",
                      identity_grace=0)
    agent = Agent(cfg)
    agent._poll_inventory(0.0)
    snap = NodeSnapshot.from_json((DATA / "nodes" / "flannel-vxlan-node1.json").read_text())
    ctx = DecodeContext("node1", agent.cluster.inventory,
                        detect(snap, agent.cluster.inventory, node_name="node1").profile)
    with caplog.at_level("WARNING"):
        agent._emit(PLUGIN, [Report(clusterip_entry(), True)], ctx, retrying=True)
        agent._emit(PLUGIN, [Report(clusterip_entry(), True)], ctx, retrying=True)
    said = [r for r in caplog.records if "holds no pods" in r.getMessage()]
    assert len(said) == 1
    assert agent.health()["lost"]["inventory"]["no_pods"] == 2


def test_a_record_with_the_same_keys_does_not_release_a_view(tmp_path: Path) -> None:
    """A client port used again brings back the keys of an earlier connection: conntrack's
    record of that one must not let the new connection's view out before its own."""
    import dataclasses

    agent, ctx = _agent(tmp_path, grace=5)
    agent.cfg = dataclasses.replace(agent.cfg, view_delay=60.0)
    _state_dir(tmp_path, with_client=True)
    agent.cluster.poll(1.0)
    packets = ConntrackPlugin(SourceOptions(node_name="node1"))
    packets.nat_aware = False
    packets.name = "packets"
    agent.plugins = {"conntrack": PLUGIN, "packets": packets}
    agent._emit(packets, [Report(clusterip_entry(), True)], ctx)
    agent._emit(PLUGIN, [Report(clusterip_entry(), True)], ctx)
    assert agent.writer.pending == 1 and len(agent._held) == 1


def _conntrack_and_packets(tmp_path: Path) -> tuple[Agent, DecodeContext, ConntrackPlugin,
                                                     ConntrackPlugin]:
    """An agent with a conntrack source and a non-NAT-aware one whose views it holds."""
    import dataclasses

    agent, ctx = _agent(tmp_path, grace=5)
    agent.cfg = dataclasses.replace(agent.cfg, view_delay=60.0)
    _state_dir(tmp_path, with_client=True)
    agent.cluster.poll(1.0)
    conntrack = ConntrackPlugin(SourceOptions(node_name="node1"))
    packets = ConntrackPlugin(SourceOptions(node_name="node1"))
    packets.nat_aware = False
    packets.name = "packets"
    agent.plugins = {"conntrack": conntrack, "packets": packets}
    return agent, ctx, conntrack, packets


def test_a_view_is_released_once_a_conntrack_dump_began_after_it(tmp_path: Path) -> None:
    """Conntrack behind (its dumps processed late): a view waits for a dump requested after
    it was held, not for a wall-clock delay, so it never goes out before its bridge."""
    import dataclasses
    import time

    from podflow.agent.runner import SYNC_MARGIN

    agent, ctx, _, packets = _conntrack_and_packets(tmp_path)
    agent._emit(packets, [Report(clusterip_entry(), True)], ctx)
    held_at = agent._held[0].held_at
    other = dataclasses.replace(clusterip_entry(), orig=dataclasses.replace(
        clusterip_entry().orig, sport=1), reply=dataclasses.replace(clusterip_entry().reply,
                                                                    dport=1))

    def dump(requested: float) -> None:
        entry = dataclasses.replace(other, event=CtEventType.DUMP, received_at=requested)
        agent._consume([entry], "conntrack/dump", ctx)

    dump(held_at - 5)                       # requested before: the record may still come
    dump(held_at + SYNC_MARGIN / 2)         # too soon after (the last ACK may be pending)
    assert len(agent._held) == 1
    agent._consume([], "conntrack/dump", ctx)   # an empty table moves nothing on
    assert len(agent._held) == 1
    before = agent.writer.pending
    dump(held_at + SYNC_MARGIN + 0.1)
    assert agent._held == [] and agent.writer.pending > before
    assert time.time() - held_at < 60


def test_a_view_waits_for_the_first_report_of_a_connection_conntrack_tracks(
        tmp_path: Path) -> None:
    """A long-lived connection's own record comes first_report_after its start (it has not
    ended): a later dump alone does not release its other views, its first report does."""
    import dataclasses
    import time

    from podflow.agent.runner import SYNC_MARGIN

    agent, ctx, conntrack, packets = _conntrack_and_packets(tmp_path)
    begun = time.time()
    open_conn = dataclasses.replace(clusterip_entry(), event=CtEventType.NEW,
                                    tcp_state="ESTABLISHED", received_at=begun)
    agent._consume([open_conn], "conntrack/event", ctx)
    agent._emit(packets, [Report(clusterip_entry(), False)], ctx)
    held_at = agent._held[0].held_at

    def dump(requested: float) -> None:
        agent._consume([dataclasses.replace(open_conn, event=CtEventType.DUMP,
                                            received_at=requested)], "conntrack/dump", ctx)

    dump(held_at + SYNC_MARGIN + 0.1)      # the table is current, the connection unreported
    assert len(agent._held) == 1 and conntrack.reported_through == begun
    conntrack.tracker.first_report_after = 0.0   # its first report is due
    dump(held_at + SYNC_MARGIN + 0.2)
    assert agent._held == [] and agent.writer.pending == 2   # its record, then the view


def test_the_health_report_says_how_far_conntrack_has_reported(tmp_path: Path) -> None:
    import dataclasses
    import time

    agent, ctx = _agent(tmp_path, grace=5)
    conntrack = ConntrackPlugin(SourceOptions(node_name="node1"))
    agent.plugins = {"conntrack": conntrack}
    assert agent.health()["reported_through"] == 0.0     # no dump processed yet
    requested = time.time() - 7                         # a dump late by 7 s
    agent._consume([dataclasses.replace(clusterip_entry(), event=CtEventType.DUMP,
                                        received_at=requested)], "conntrack/dump", ctx)
    assert agent.health()["reported_through"] == requested
    agent.plugins = {}                                   # no NAT-aware source: now
    assert agent.health()["reported_through"] >= requested + 7


def test_the_beacon_says_how_far_the_store_has_everything(tmp_path: Path) -> None:
    """The beacon beside the store carries the newest dump whose flows are all stored: a
    store that refuses the write keeps the beacon where it was (the agent is alive and
    behind), and readers see it without the store's lock."""
    import dataclasses
    import time

    from podflow.store.beacons import read_beacons

    agent, ctx = _agent(tmp_path, grace=5)
    agent.plugins = {"conntrack": ConntrackPlugin(SourceOptions(node_name="node1"))}
    requested = time.time() - 3
    agent._consume([dataclasses.replace(clusterip_entry(), event=CtEventType.DUMP,
                                        received_at=requested)], "conntrack/dump", ctx)
    agent.writer.mark(agent._through(time.time()))
    agent.writer.flush()
    agent._mark_progress()
    (at, through), = read_beacons(agent.cfg.store, since=0.0).values()
    assert through == requested and at >= requested
    agent._consume([dataclasses.replace(clusterip_entry(), event=CtEventType.DUMP,
                                        received_at=requested + 2)], "conntrack/dump", ctx)
    agent.writer.mark(agent._through(time.time()))
    agent.writer.add(["a flow"])

    def busy() -> DuckDBStore:
        raise StoreBusy("locked by another agent")

    agent.writer._open = busy
    agent.writer.flush()
    assert not agent.writer.drained
    agent._mark_progress()
    assert read_beacons(agent.cfg.store, since=0.0)["node1"][1] == requested
