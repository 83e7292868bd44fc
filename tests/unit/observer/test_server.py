"""Hubble's Observer API served from an agent's buffer, over real gRPC on loopback.

The stock ``hubble`` CLI (``../shared/tools/hubble``) is the acceptance client: each of its
filters must give the same connections as ``podflow observe --server`` with podflow's
filters. Those tests skip, with the reason, when the shared tool is absent; the rest use
grpcio's own client.
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from podflow.cli.main import app
from podflow.model.flow import (
    L7,
    DnsInfo,
    Endpoint,
    EndpointKind,
    Flow,
    FlowState,
    ObservationPoint,
    Protocol,
    Service,
    TcpInfo,
    Verdict,
    Workload,
)
from podflow.observer.buffer import FlowBuffer
from podflow.observer.client import FlowReader, ServerError
from podflow.observer.convert import timestamp
from podflow.observer.proto.hubble import flow_pb2 as pb
from podflow.observer.proto.hubble import observer_pb2 as obs
from podflow.observer.proto.hubble import observer_pb2_grpc as obs_grpc
from podflow.observer.server import HEALTH_SERVICE, ObserverServer
from podflow.query.filter import FilterSpec
from tests.hubblecli import HUBBLE, Key, hubble, hubble_keys, needs_hubble, podflow_key

NOW = time.time()
SINCE = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 45.5))
"""An absolute --since that the last three connections of :func:`_flows` were alive at."""
SEEN = (ObservationPoint("node1", "conntrack", instance="ct/1"),)


def _pod(ns: str, name: str, ip: str, port: int | None, node: str, app_: str) -> Endpoint:
    return Endpoint(ip, port, EndpointKind.POD, ns, name, Workload("Deployment", app_),
                    (("app", app_),), node)


def _flows() -> list[Flow]:
    """Eight connections of node1: TCP through a Service, UDP, DNS, a drop, an external."""
    web = lambda i: _pod("shop", f"web-{i}", f"10.244.0.{10 + i}", 40000 + i,  # noqa: E731
                         "node1", "web")
    api = _pod("shop", "api-1", "10.244.1.7", 8080, "node2", "api")
    db = _pod("data", "db-0", "10.244.1.9", 5432, "node2", "db")
    dns = _pod("kube-system", "coredns-1", "10.244.0.3", 53, "node1", "coredns")
    ext = Endpoint("192.168.100.10", 443, EndpointKind.EXTERNAL, name="db.example.com")
    out = []
    for i in range(8):
        kw: dict[str, Any] = {"flow_id": f"c{i}", "observations": SEEN,
                              "state": FlowState.ENDED, "end_time": NOW - 50 + i}
        src, dst, proto = web(i), api, Protocol.TCP
        if i in (0, 1):
            kw["destination_service"] = Service("shop", "api")
            kw["tcp"] = TcpInfo("TIME_WAIT", ("SYN", "SYN-ACK", "FIN"))
        elif i == 2:
            dst, proto = db, Protocol.UDP
        elif i == 3:
            dst, proto = dns, Protocol.UDP
            kw["l7"] = L7(dns=DnsInfo("api.shop.svc.cluster.local", ("A",), 0, ("10.96.0.9",)))
        elif i == 4:
            kw["verdict"], kw["drop_reason_desc"] = Verdict.DROPPED, "timed out: SYN not " \
                "answered in 5s"
        elif i == 5:
            dst = ext
        elif i == 6:
            src = _pod("data", "db-0", "10.244.0.40", 40006, "node1", "db")
        out.append(Flow(NOW - 60 + i, src, dst, proto, **kw))
    return out


@pytest.fixture
def served() -> Iterator[tuple[ObserverServer, str]]:
    buf = FlowBuffer("node1", capacity=64)
    buf.add(_flows(), now=NOW)
    srv = ObserverServer(buf, "127.0.0.1:0")
    addr = srv.start()
    try:
        yield srv, addr
    finally:
        srv.stop()


def _get(addr: str, **req: Any) -> list[obs.GetFlowsResponse]:
    with grpc.insecure_channel(addr) as ch:
        stub = obs_grpc.ObserverStub(ch)   # type: ignore[no-untyped-call]
        return list(stub.GetFlows(obs.GetFlowsRequest(**req), timeout=10))


def _ports(responses: list[obs.GetFlowsResponse]) -> list[int]:
    return [r.flow.l4.TCP.source_port or r.flow.l4.UDP.source_port for r in responses]


def test_get_flows_number_first_and_time_window(served: tuple[ObserverServer, str]) -> None:
    _, addr = served
    assert _ports(_get(addr, number=3)) == [40005, 40006, 40007]   # newest, oldest first
    assert _ports(_get(addr, number=2, first=True)) == [40000, 40001]
    assert len(_get(addr)) == 8    # number 0: all of them
    # since: still open or ended by then (each ended 10 s after its start)
    assert _ports(_get(addr, since=timestamp(NOW - 45.5))) == [40005, 40006, 40007]
    assert _ports(_get(addr, until=timestamp(NOW - 58.5))) == [40000, 40001]
    r = _get(addr, number=1)[0]
    assert (r.node_name, r.time) == ("node1", r.flow.time)


def test_whitelist_blacklist_and_refusals(served: tuple[ObserverServer, str]) -> None:
    _, addr = served
    wl = [pb.FlowFilter(source_pod=["shop/"], protocol=["udp"])]
    assert _ports(_get(addr, whitelist=wl)) == [40002, 40003]
    bl = [pb.FlowFilter(destination_pod=["kube-system/"])]
    assert _ports(_get(addr, whitelist=wl, blacklist=bl)) == [40002]
    for bad, why in (({"first": True, "follow": True}, "follow"),
                     ({"whitelist": [pb.FlowFilter(protocol=["carrier-pigeon"])]}, "protocol"),
                     ({"whitelist": [pb.FlowFilter(source_pod=[""])]}, "empty"),
                     ({"podflow_filter": "nosuch=1"}, "nosuch")):
        with pytest.raises(grpc.RpcError) as err:
            _get(addr, **bad)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert why in (err.value.details() or "")


def test_status_nodes_namespaces_and_health(served: tuple[ObserverServer, str]) -> None:
    _, addr = served
    with grpc.insecure_channel(addr) as ch:
        stub = obs_grpc.ObserverStub(ch)   # type: ignore[no-untyped-call]
        st = stub.ServerStatus(obs.ServerStatusRequest(), timeout=5)
        assert (st.num_flows, st.max_flows, st.seen_flows) == (8, 64, 8)
        assert st.uptime_ns > 0 and st.version.startswith("podflow")
        nodes = stub.GetNodes(obs.GetNodesRequest(), timeout=5).nodes
        assert [(n.name, n.state, n.address) for n in nodes] == [
            ("node1", obs.NODE_CONNECTED, addr)]
        nss = stub.GetNamespaces(obs.GetNamespacesRequest(), timeout=5).namespaces
        assert [n.namespace for n in nss] == ["data", "kube-system", "shop"]
        check = health_pb2_grpc.HealthStub(ch)
        for name in (HEALTH_SERVICE, ""):
            got = check.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert got.status == health_pb2.HealthCheckResponse.SERVING


def test_follow_streams_new_events_and_reports_what_the_ring_overwrote() -> None:
    buf = FlowBuffer("node1", capacity=4)
    srv = ObserverServer(buf, "127.0.0.1:0")
    addr = srv.start()
    flows = _flows()
    try:
        with grpc.insecure_channel(addr) as ch:
            stub = obs_grpc.ObserverStub(ch)   # type: ignore[no-untyped-call]
            stream = stub.GetFlows(obs.GetFlowsRequest(follow=True), timeout=20)
            time.sleep(0.3)   # the stream is waiting for new events
            buf.add(flows[:1], now=NOW)
            first = next(stream)
            assert first.flow.l4.TCP.source_port == 40000
            # the reader is slow: 6 events arrive while it looks away, the ring keeps 4
            events, _ = buf.since(0)
            cursor = events[-1].seq
            buf.add(flows[1:7], now=NOW)
            got, lost = buf.since(cursor)
            assert (len(got), lost) == (4, 2)
            kinds = [next(stream).WhichOneof("response_types") for _ in range(5)]
            assert kinds == ["lost_events", "flow", "flow", "flow", "flow"]
            stream.cancel()
    finally:
        srv.stop()


def test_a_stopping_server_ends_its_follow_streams() -> None:
    buf = FlowBuffer("node1")
    srv = ObserverServer(buf, "127.0.0.1:0")
    addr = srv.start()
    with grpc.insecure_channel(addr) as ch:
        stub = obs_grpc.ObserverStub(ch)   # type: ignore[no-untyped-call]
        stream = stub.GetFlows(obs.GetFlowsRequest(follow=True), timeout=20)
        time.sleep(0.3)
        started = time.monotonic()
        srv.stop(grace=1.0)
        with contextlib.suppress(grpc.RpcError):   # ended or cancelled by the stop
            list(stream)   # never hangs
        assert time.monotonic() - started < 10


def test_podflow_reader_gets_connections_with_podflow_filters(
        served: tuple[ObserverServer, str]) -> None:
    srv, addr = served
    srv.buffer.add(_flows()[:1], now=NOW)   # c0 again: a second event of one connection
    reader = FlowReader(addr)
    got = list(reader.flows(FilterSpec(), number=0))
    assert sorted(f.flow_id for f in got) == [f"c{i}" for i in range(8)]   # one each
    assert [f.flow_id for f in reader.flows(FilterSpec(), number=2)] == ["c7", "c0"]
    fqdn = list(reader.flows(FilterSpec(to_fqdn=("*.example.com",)), number=0))
    assert [f.flow_id for f in fqdn] == ["c5"]
    db = reader.flows(FilterSpec(to_workload=("data/db",)), number=0)
    assert [f.flow_id for f in db] == ["c2"]


def test_podflow_reader_says_what_went_wrong() -> None:
    with pytest.raises(ServerError, match="no answer"):
        list(FlowReader("127.0.0.1:1", timeout=0.5).flows(FilterSpec()))


def test_observe_server_cli(served: tuple[ObserverServer, str]) -> None:
    _, addr = served
    r = CliRunner().invoke(app, ["observe", "--server", addr, "-n", "data", "-o", "json"])
    assert r.exit_code == 0, r.output
    assert sorted(f["flow_id"] for f in json.loads(r.output)) == ["c2", "c6"]
    r = CliRunner().invoke(app, ["observe", "--server", addr, "--store", "x.duckdb"])
    assert r.exit_code == 2 and "only one of" in r.output


# -- the stock Hubble CLI ------------------------------------------------------------------

def _keys_podflow(addr: str, *args: str) -> set[Key]:
    r = CliRunner().invoke(app, ["observe", "--server", addr, "-o", "json", *args])
    assert r.exit_code == 0, r.output
    return {podflow_key(f) for f in json.loads(r.output)}


@needs_hubble
def test_hubble_status_against_podflow(served: tuple[ObserverServer, str]) -> None:
    _, addr = served
    r = hubble(addr, "status")
    assert r.returncode == 0, r.stderr
    assert "Healthcheck (via" in r.stdout and "Ok" in r.stdout
    assert "Current/Max Flows: 8/64" in r.stdout


@needs_hubble
@pytest.mark.parametrize(("hubble_args", "podflow_args"), [
    ((), ()),
    (("--namespace", "data"), ("-n", "data")),
    (("--pod", "shop/web-1"), ("--pod", "shop/web-1")),
    (("--from-pod", "shop/web"), ("--from-pod", "shop/web")),
    (("--to-service", "shop/api"), ("--to-service", "shop/api")),
    (("--verdict", "DROPPED"), ("--verdict", "DROPPED")),
    (("--verdict", "FORWARDED"), ("--verdict", "FORWARDED")),
    (("--protocol", "udp"), ("--protocol", "UDP")),
    (("--protocol", "tcp"), ("--protocol", "TCP")),
    (("--protocol", "dns"), ("--protocol", "dns")),
    (("--since", SINCE), ("--since", SINCE)),
    (("--label", "app=db"), ("--label", "app=db")),
    (("--to-ip", "192.168.100.0/24"), ("--to-ip", "192.168.100.0/24")),
    (("--to-port", "5432"), ("--to-port", "5432")),
    (("--namespace", "shop", "--protocol", "tcp", "--verdict", "FORWARDED"),
     ("-n", "shop", "--protocol", "TCP", "--verdict", "FORWARDED")),
])
def test_hubble_filters_give_the_same_connections_as_podflow(
        served: tuple[ObserverServer, str], hubble_args: tuple[str, ...],
        podflow_args: tuple[str, ...]) -> None:
    _, addr = served
    want = _keys_podflow(addr, "--all", *podflow_args)
    assert want, "the case selects something"
    assert hubble_keys(addr, "--all", *hubble_args) == want


@needs_hubble
def test_hubble_last_and_follow(served: tuple[ObserverServer, str]) -> None:
    srv, addr = served
    assert len(hubble_keys(addr, "--last", "3")) == 3
    assert hubble_keys(addr, "--last", "3") <= _keys_podflow(addr, "--last", "3")
    proc = subprocess.Popen([str(HUBBLE), "observe", "--server", addr, "--follow", "-o", "json",
                             "--protocol", "udp"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        late = _flows()[2]
        srv.buffer.add([Flow(NOW, late.source, late.destination, Protocol.UDP, flow_id="late",
                             observations=SEEN),
                        Flow(NOW, late.source, late.destination, Protocol.TCP, flow_id="tcp",
                             observations=SEEN)], now=NOW)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no flow within 30 s"
        line = json.loads(proc.stdout.readline())
        assert line["flow"]["l4"]["UDP"]["source_port"] == late.source.port
        assert line["flow"]["time"].startswith(time.strftime("%Y-", time.gmtime(NOW)))
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_event_keeps_its_uuid_across_reads(served: tuple[ObserverServer, str]) -> None:
    _, addr = served
    first, again = _get(addr, number=3), _get(addr, number=3)
    assert [r.flow.uuid for r in first] == [r.flow.uuid for r in again]
    assert len({r.flow.uuid for r in _get(addr)}) == 8
