"""The hub pulls agents' spools into one store: each record once, across kills of the hub.

The agents here are the real spool and feed service of an agent, served over real gRPC on
loopback, fed by the test instead of a kernel (no root needed); the hub is the real one, in
a thread or as a ``podflow hub`` process killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from podflow.cluster.feed import (
    MAX_BATCH_BYTES,
    FeedClient,
    FeedService,
    SpoolFull,
    SpoolSink,
    add_feed,
    decode_flows,
)
from podflow.cluster.hub import Hub, HubConfig
from podflow.cluster.spool import Spool
from podflow.model.flow import Endpoint, EndpointKind, Flow, ObservationPoint, Protocol
from podflow.observer.buffer import FlowBuffer
from podflow.observer.client import FlowReader
from podflow.observer.server import ObserverServer
from podflow.query.filter import FilterSpec
from podflow.store import open_store
from podflow.store.beacons import read_beacons
from tests.hubblecli import HUBBLE, hubble, hubble_keys


class FakeAgent:
    """An agent's spool and feed without its sources: the test writes the flows."""

    def __init__(self, base: Path, node: str) -> None:
        self.node = node
        self.spool = Spool(base / node)
        self.sink = SpoolSink(self.spool, node)
        self.server = ObserverServer(FlowBuffer(node), "127.0.0.1:0", [
            partial(add_feed, service=FeedService(self.spool, node))])
        self.address = self.server.start()
        self.sent = 0

    def send(self, n: int) -> None:
        """Spool ``n`` flows (one batch), each a connection of its own."""
        flows = [flow(self.node, self.sent + i) for i in range(n)]
        self.sent += n
        self.sink.write(flows)

    def stop(self) -> None:
        self.server.stop()


def flow(node: str, i: int) -> Flow:
    src = Endpoint(f"10.244.{node[-1]}.5", 10000 + i, EndpointKind.POD, "shop",
                   f"web-{node}", node_name=node)
    dst = Endpoint("10.244.250.7", 80, EndpointKind.POD, "shop", "api-1", node_name="nodeX")
    return Flow(1_700_000_000.0 + i, src, dst, Protocol.TCP, end_time=1_700_000_001.0 + i,
                flow_id=f"{node}/{i}", client_key=f"{node}/{i}",
                observations=(ObservationPoint(node, "conntrack", instance=f"ct/{i}"),))


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[FakeAgent]]:
    made = [FakeAgent(tmp_path / "spools", n) for n in ("node1", "node2")]
    try:
        yield made
    finally:
        for a in made:
            a.stop()


def stored(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [f.flow_id for f in open_store(path, read_only=True).flows(merged=False)]


def wait_for(cond: object, timeout: float = 30.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if cond():   # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_the_hub_stores_every_agents_records_once_and_acknowledges(
        tmp_path: Path, agents: list[FakeAgent]) -> None:
    store = tmp_path / "flows.duckdb"
    for a in agents:
        a.send(30)
        a.sink.write_status(a.node, {"sources": ["conntrack"], "reported_through": 5.0}, at=6.0)
        a.sink.mark_progress(a.node, 1_700_000_050.0, at=1_700_000_051.0)
    hub = Hub(HubConfig(store=store, peers=[a.address for a in agents], flush_interval=0.1))
    t = threading.Thread(target=hub.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: len(stored(store)) == 60)
        for a in agents:
            a.send(20)   # while the hub runs
        wait_for(lambda: len(stored(store)) == 100)
        wait_for(lambda: all(a.spool.pending == 0 for a in agents))   # all acknowledged
    finally:
        hub.stop.set()
        t.join(10)
    ids = stored(store)
    assert len(set(ids)) == len(ids) == 100
    s = open_store(store, read_only=True)
    assert {st["node"] for st in s.statuses()} == {"node1", "node2"}
    assert s.feed_cursors() == {a.node: (a.spool.epoch, a.spool.last) for a in agents}
    assert {n: b[1] for n, b in read_beacons(store, 0).items()} == {
        "node1": 1_700_000_050.0, "node2": 1_700_000_050.0}
    assert {p["node"]: p["state"] for p in hub.peers_status()} == {"node1": "connected",
                                                                   "node2": "connected"}


def test_a_new_hub_resumes_from_the_committed_cursors(tmp_path: Path,
                                                      agents: list[FakeAgent]) -> None:
    store = tmp_path / "flows.duckdb"
    for a in agents:
        a.send(10)
    peers = [a.address for a in agents]
    Hub(HubConfig(store=store, peers=peers, flush_interval=0.1, duration=2.0)).run()
    assert len(stored(store)) == 20
    for a in agents:
        a.spool.acked = 0   # as if the acks were lost: the agents resend everything
        a.send(5)
    Hub(HubConfig(store=store, peers=peers, flush_interval=0.1, duration=2.0)).run()
    ids = stored(store)
    assert len(ids) == len(set(ids)) == 30


def test_an_unreachable_agent_is_retried_and_the_others_go_on(tmp_path: Path,
                                                              agents: list[FakeAgent]) -> None:
    store = tmp_path / "flows.duckdb"
    agents[0].send(5)
    hub = Hub(HubConfig(store=store, peers=[agents[0].address, "127.0.0.1:1"],
                        flush_interval=0.1, duration=2.5))
    hub.run()
    assert len(stored(store)) == 5
    states = {p["address"]: p["state"] for p in hub.peers_status()}
    assert states == {agents[0].address: "connected", "127.0.0.1:1": "unavailable"}


def _hub_process(store: Path, peers: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "podflow", "hub", "--store", str(store),
                                 "--peers", ",".join(peers), "--flush-interval", "0.2"],
                                stdout=out, stderr=out, start_new_session=True)


def test_kill_9_of_the_hub_in_the_middle_of_traffic_loses_and_repeats_nothing(
        tmp_path: Path, agents: list[FakeAgent]) -> None:
    store, log = tmp_path / "flows.duckdb", tmp_path / "hub.log"
    peers = [a.address for a in agents]
    stop = threading.Event()

    def traffic() -> None:   # both agents keep spooling small batches
        while not stop.is_set():
            for a in agents:
                a.send(3)
            time.sleep(0.01)

    feeder = threading.Thread(target=traffic, daemon=True)
    hub = _hub_process(store, peers, log)
    feeder.start()
    try:
        wait_for(lambda: len(stored(store)) > 200, 60)
        os.kill(hub.pid, signal.SIGKILL)   # mid-traffic, mid-write perhaps
        hub.wait(10)
        time.sleep(0.5)
        hub = _hub_process(store, peers, log)
        time.sleep(1.5)
        stop.set()
        feeder.join(10)
        total = sum(a.sent for a in agents)
        wait_for(lambda: len(stored(store)) >= total, 60)
        wait_for(lambda: all(a.spool.pending == 0 for a in agents), 30)
    finally:
        stop.set()
        if hub.poll() is None:
            hub.terminate()
            hub.wait(20)
    ids = stored(store)
    assert len(ids) == total, log.read_text()[-2000:]
    assert len(set(ids)) == total   # none twice
    assert hub.returncode == 0


def test_the_feed_restarts_a_sequence_of_another_epoch_and_heartbeats(
        agents: list[FakeAgent]) -> None:
    a = agents[0]
    a.send(3)
    client = FeedClient(a.address)
    try:
        hello = client.hello()
        assert (hello.node, hello.epoch, hello.last) == ("node1", a.spool.epoch, 1)
        stream = client.pull("another-epoch", after=1)   # a cursor of a wiped spool
        first = next(stream)
        assert [r.seq for r in first.records] == [1] and first.epoch == a.spool.epoch
        idle = next(stream)   # nothing new: a heartbeat
        assert list(idle.records) == [] and idle.last == 1
        stream.cancel()
        assert client.ack("another-epoch", 1) == 0   # not this spool's: ignored
        assert client.ack(a.spool.epoch, 1) == 1
    finally:
        client.close()


def test_a_full_spool_is_a_retryable_store_error(tmp_path: Path) -> None:
    sink = SpoolSink(Spool(tmp_path, max_bytes=10), "node1")
    with pytest.raises(SpoolFull) as err:
        sink.write([flow("node1", 0)])
    assert err.value.kind == "spool_full" and err.value.retryable
    assert sink.spool.refused == 1


def test_the_hub_serves_every_agents_flows_over_the_observer_api(
        tmp_path: Path, agents: list[FakeAgent]) -> None:
    for a in agents:
        a.send(4)
    hub = Hub(HubConfig(store=tmp_path / "flows.duckdb", flush_interval=0.1,
                        peers=[a.address for a in agents] + ["127.0.0.1:1"],
                        observer_listen="127.0.0.1:0"))
    t = threading.Thread(target=hub.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: hub.observer is not None and len(hub.observer.buffer) == 8)
        assert hub.observer is not None and hub.observer.address is not None
        reader = FlowReader(hub.observer.address)
        got = list(reader.flows(FilterSpec(), number=0))
        assert sorted(f.flow_id for f in got) == sorted(f"{a.node}/{i}" for a in agents
                                                        for i in range(4))
        status = reader.status()
        assert (status.num_connected_nodes.value, status.num_unavailable_nodes.value) == (2, 1)
        assert list(status.unavailable_nodes) == ["127.0.0.1:1"]
        if HUBBLE.exists():   # the stock CLI against the hub, as against Hubble Relay
            r = hubble(hub.observer.address, "status")
            assert r.returncode == 0 and "Connected Nodes: 2/3" in r.stdout, r.stdout
            nodes = {k[0] for k in hubble_keys(hub.observer.address, "--all")}
            assert len(nodes) == 2   # each agent's client address
    finally:
        hub.stop.set()
        t.join(10)


def test_a_big_batch_is_spooled_in_records_a_batch_of_which_fits_a_message(
        tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    SpoolSink(sp, "node1").write([flow("node1", i) for i in range(2500)])
    records = sp.read(0)
    assert [len(decode_flows(r.data)) for r in records] == [1000, 1000, 500]
    assert len(sp.read(0, max_bytes=MAX_BATCH_BYTES)) < 3   # ~0.7 MB each


def test_the_hub_serves_the_api_over_its_store_while_it_writes(
        tmp_path: Path, agents: list[FakeAgent]) -> None:
    import json as _json
    import urllib.request

    hub = Hub(HubConfig(store=tmp_path / "flows.duckdb", flush_interval=0.1,
                        peers=[a.address for a in agents], api_listen="127.0.0.1:0"))
    t = threading.Thread(target=hub.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: hub.api is not None)
        assert hub.api is not None
        for round_ in range(5):   # reads while the hub keeps writing
            for a in agents:
                a.send(20)
            with urllib.request.urlopen(f"{hub.api.url}api/flows?limit=1000", timeout=10) as r:
                got = _json.loads(r.read())
            assert isinstance(got, (list, dict)), round_
        wait_for(lambda: len(stored(tmp_path / "flows.duckdb")) == 200)
        with urllib.request.urlopen(f"{hub.api.url}api/flows?limit=1000", timeout=10) as r:
            body = _json.loads(r.read())
        flows = body["flows"] if isinstance(body, dict) else body
        assert len(flows) == 200
    finally:
        hub.stop.set()
        t.join(10)


def test_a_flow_no_store_can_hold_is_counted_and_the_rest_stored(
        tmp_path: Path, agents: list[FakeAgent]) -> None:
    bad = flow("node1", 99)
    bad = Flow(bad.time, Endpoint(bad.source.ip, 70000), bad.destination, Protocol.TCP,
               flow_id="bad", observations=bad.observations)   # port out of range
    agents[0].sink.write([flow("node1", 1), bad, flow("node1", 2)])
    hub = Hub(HubConfig(store=tmp_path / "flows.duckdb", peers=[agents[0].address],
                        flush_interval=0.1, duration=2.0))
    stats = hub.run()
    assert sorted(stored(tmp_path / "flows.duckdb")) == ["node1/1", "node1/2"]
    assert stats["rejected_flows"] == 1 and agents[0].spool.pending == 0
