"""Cluster mode on a lab: agents spool, one ``podflow hub`` writes the store; kills lose nothing.

A 2-node flannel-vxlan lab with ``agents.mode: hub`` (each agent spools and serves its spool;
a hub pulls both into the lab's store) makes HTTP through a Service across nodes and DNS
lookups. Then:

- the lab verifies at 100% from the store the hub wrote;
- the hub is killed with SIGKILL in the middle of the traffic and started again some
  seconds later: the lab still verifies at 100%, no connection missing, none twice;
- an agent is killed with SIGKILL and started again on its node: every flow it had spooled
  and the hub had not taken yet reaches the store.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podflow.lab import manager
from podflow.lab.agents import start_agents, start_hub
from podflow.lab.netns import list_netns
from podflow.lab.spec import parse_spec
from podflow.lab.state import LabState, lab_dir, lab_store_path
from podflow.lab.verify import run_verify
from podflow.observer.client import FlowReader
from podflow.query.filter import FilterSpec
from podflow.store import open_store
from tests.hubblecli import hubble, hubble_keys, needs_hubble
from tests.integration.test_hubble_dashboards import _spec as dashboards_spec

pytestmark = pytest.mark.integration


def _spec(name: str) -> dict[str, object]:
    """The dashboards' lab (web -> Service api across two nodes) in hub mode."""
    spec = dashboards_spec(name)
    spec["agents"] = {"mode": "hub"}
    spec["traffic"] = [
        {"from": "app/web", "to": "service/app/api:9000", "every": "300ms"},
        {"from": "app/web", "to": "dns/db.example.com:5432", "every": "2s"},
    ]
    return spec


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    mp = pytest.MonkeyPatch()
    mp.setenv("PODFLOW_LAB_ROOT", str(tmp_path_factory.mktemp("labs")))
    name = "hm" + secrets.token_hex(2)
    try:
        yield manager.up(parse_spec(_spec(name)))
    finally:
        manager.down(name)
        assert list_netns(f"pf-{name}-") == []
        mp.undo()


def _stored_ids(name: str) -> list[tuple[object, ...]]:
    """Every stored row as (flow id, node, source and instance, state, end, bytes): one
    report stored twice shows twice (a later report of a connection differs in its end)."""
    flows = open_store(lab_store_path(name), read_only=True).flows(merged=False)
    return [(f.flow_id, o.node_name, f"{o.source}/{o.instance}", f.state.value, f.end_time,
             f.traffic.bytes) for f in flows for o in f.observations]


def test_the_hub_writes_what_every_agent_collected(lab: LabState) -> None:
    state = LabState.load(lab.name)
    status = state.to_status()
    assert status["hub"] is not None and status["hub"]["peers"] == [
        n.agent_observer for n in state.nodes]
    for n in state.nodes:   # each agent spools (and the hub acknowledges as it commits)
        assert (lab_dir(lab.name) / "nodes" / n.name / "spool" / "epoch").exists()
    time.sleep(40)   # lab verify judges what ended 15 s before the agents' progress
    assert run_verify(lab.name, "json") == 0
    rows = _stored_ids(lab.name)
    assert len(rows) == len(set(rows))
    assert {row[1] for row in rows} == {n.name for n in state.nodes}
    # the hub serves the cluster's flows over the Observer API, as Hubble Relay does
    addr = status["hub"]["observer"]
    served = FlowReader(addr).flows(FilterSpec(namespace=("app",)), number=0)
    assert {o.node_name for f in served for o in f.observations} == {n.name for n in state.nodes}
    assert FlowReader(addr).status().num_connected_nodes.value == len(state.nodes)


@needs_hubble
def test_hubble_status_and_observe_against_the_hub(lab: LabState) -> None:
    addr = LabState.load(lab.name).to_status()["hub"]["observer"]
    r = hubble(addr, "status")
    assert r.returncode == 0 and "Connected Nodes: 2/2" in r.stdout, r.stdout + r.stderr
    assert hubble_keys(addr, "--to-service", "app/api", "--last", "10")


def test_kill_9_of_the_hub_in_the_middle_of_traffic(lab: LabState) -> None:
    state = LabState.load(lab.name)
    assert state.hub_pid is not None
    os.kill(state.hub_pid, signal.SIGKILL)
    time.sleep(8)   # the agents spool meanwhile
    start_hub(state)
    time.sleep(35)   # the verify window now ends after the hub's downtime
    assert run_verify(lab.name, "json") == 0
    rows = _stored_ids(lab.name)
    assert len(rows) == len(set(rows)), "a row stored twice"


def test_kill_9_of_an_agent_keeps_what_it_had_spooled(lab: LabState) -> None:
    state = LabState.load(lab.name)
    node = state.nodes[1]
    spool = lab_dir(lab.name) / "nodes" / node.name / "spool"
    assert node.agent_pid is not None
    os.kill(state.hub_pid or 0, signal.SIGSTOP)   # the hub stalls: the agent's spool fills
    try:
        time.sleep(6)
        os.kill(node.agent_pid, signal.SIGKILL)
        pending = _spooled_flow_ids(spool)
        assert pending, "the agent had spooled flows the hub had not taken"
    finally:
        os.kill(state.hub_pid or 0, signal.SIGCONT)
    start_agents(state, only=[node.name])
    state.save()
    end = time.time() + 60
    while time.time() < end:
        stored = {str(row[0]) for row in _stored_ids(lab.name)}
        if pending <= stored:
            break
        time.sleep(1)
    assert pending <= stored, f"{len(pending - stored)} spooled flows never reached the store"
    rows = _stored_ids(lab.name)
    assert len(rows) == len(set(rows))


def _spooled_flow_ids(spool: Path) -> set[str]:
    acked = int((spool / "acked").read_text()) if (spool / "acked").exists() else 0
    out: set[str] = set()
    for seg in spool.glob("*.spool"):
        for line in seg.read_text().splitlines():
            seq, kind, data = line.split("\t", 2)
            if int(seq) > acked and kind == "flows":
                out.update(d["flow_id"] for d in json.loads(data))
    return out
