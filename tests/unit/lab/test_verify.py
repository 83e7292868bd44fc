"""lab verify: strict matching of hand-built flows against hand-built ground truth."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from podflow.lab.state import LabState
from podflow.lab.truth import AcceptRecord, ConnectRecord, StartRecord, Truth
from podflow.lab.verify import CATEGORIES, VerifyReport, Window, evaluate, run_verify
from podflow.lab.verify.match import same_udp_flow
from podflow.model.flow import (
    Address,
    Endpoint,
    EndpointKind,
    Flow,
    FlowState,
    Nat,
    Protocol,
    Service,
    Workload,
)
from tests.unit.lab.test_kubeobjects import T0, lab_state

STATE = lab_state()
OLD_FE = "frontend-7c9f8d6b5-zzzzz"
"""A frontend pod restarted away before the snapshot; its IP 10.244.0.2 went to ...-aaaaa."""
FE1, FE2 = "frontend-7c9f8d6b5-aaaaa", "frontend-7c9f8d6b5-bbbbb"
BE1, BE2 = "backend-7c9f8d6b5-ccccc", "backend-7c9f8d6b5-ddddd"
CACHE = "cache-7c9f8d6b5-fffff"
T = T0 + 100
WINDOW = Window(T - 10, T + 100)

PODS = {f"{p.namespace}/{p.name}": (p.ip, p.node, p.workload) for p in STATE.pods}
PODS[f"shop/{OLD_FE}"] = ("10.244.0.2", "node1", "frontend")


def pod(key: str, port: int | None) -> Endpoint:
    ip, node, wl = PODS[key]
    ns, name = key.split("/")
    return Endpoint(ip, port, EndpointKind.POD, ns, name, Workload("Deployment", wl),
                    (("app", wl),), node)


def ext(name: str, port: int | None) -> Endpoint:
    return Endpoint(STATE.external(name).ip, port, EndpointKind.EXTERNAL, name=name)


def connect(t: float, client: str, target: str, cat: str, remote: tuple[str, int],
            lport: int, outcome: str = "ok") -> ConnectRecord:
    if client.startswith("external/"):
        ip, node, wl = STATE.external(client.split("/")[1]).ip, None, client
    else:
        ip, node, w = PODS[client]
        wl = f"{client.split('/')[0]}/{w}"
    return ConnectRecord(t, client, ip, target, cat, "tcp", remote[0], remote[1], ip, lport,
                         outcome, None, 0.01, wl, node)


def accept(t: float, server: str, port: int, peer: tuple[str, int]) -> AcceptRecord:
    ip = STATE.external(server.split("/")[1]).ip if server.startswith("external/") \
        else PODS[server][0]
    return AcceptRecord(t + 0.001, server, ip, port, peer[0], peer[1], "tcp")


def scenario() -> tuple[Truth, list[Flow]]:
    """One connection of every category, each with its correct flow."""
    fe1, fe2, be1, be2 = (f"shop/{n}" for n in (FE1, FE2, BE1, BE2))
    old, cache = f"shop/{OLD_FE}", f"data/{CACHE}"
    backend = Service("shop", "backend", "api", "ClusterIP", "10.96.0.11", 9000)
    frontend = Service("shop", "frontend", "http", "NodePort", "172.18.0.3", 30080)
    conns = [
        connect(T, fe1, "service/shop/backend:9000", "clusterip", ("10.96.0.11", 9000), 40001),
        connect(T + 1, fe1, "service/shop/backend:9000", "clusterip", ("10.96.0.11", 9000),
                40002),
        connect(T + 2, "external/visitor", "nodeport/30080", "nodeport", ("172.18.0.3", 30080),
                40003),
        connect(T + 3, be1, "external/db:5432", "egress", ("192.168.100.10", 5432), 40004),
        connect(T + 4, fe1, "pod/data/cache:6379", "podip", ("10.244.2.3", 6379), 40005),
        connect(T - 5, old, "service/shop/backend:9000", "clusterip", ("10.96.0.11", 9000),
                40006),
    ]
    accepts = [accept(T, be2, 9000, ("10.244.0.2", 40001)),
               accept(T + 1, be1, 9000, ("10.244.0.2", 40002)),
               accept(T + 2, fe2, 8080, ("172.18.0.3", 40003)),
               accept(T + 3, "external/db", 5432, ("172.18.0.2", 40004)),
               accept(T + 4, cache, 6379, ("10.244.0.2", 40005)),
               accept(T - 5, be2, 9000, ("10.244.0.2", 40006))]
    flows = [
        Flow(T + 0.01, pod(fe1, 40001), pod(be2, 9000), Protocol.TCP, destination_service=backend,
             nat=Nat(Address("10.96.0.11", 9000))),
        Flow(T + 1.01, pod(fe1, 40002), pod(be1, 9000), Protocol.TCP,
             destination_service=backend, nat=Nat(Address("10.96.0.11", 9000))),
        Flow(T + 2.01, ext("visitor", 40003), pod(fe2, 8080), Protocol.TCP,
             destination_service=frontend,
             nat=Nat(Address("172.18.0.3", 30080), Address("172.18.0.3", 40003))),
        Flow(T + 3.01, pod(be1, 40004), ext("db", 5432), Protocol.TCP,
             nat=Nat(None, Address("172.18.0.2", 40004))),
        Flow(T + 4.01, pod(fe1, 40005), pod(cache, 6379), Protocol.TCP),
        Flow(T - 4.99, pod(old, 40006), pod(be2, 9000), Protocol.TCP,
             destination_service=backend, nat=Nat(Address("10.96.0.11", 9000))),
    ]
    starts = [StartRecord(T0, old, "10.244.0.2", "shop/frontend", "node1", {"app": "frontend"})]
    return Truth(starts, conns, accepts), flows


def run(truth: Truth, flows: list[Flow], state: LabState = STATE) -> VerifyReport:
    return evaluate(truth, state, flows, WINDOW)


def failing(report: VerifyReport) -> dict[str, set[str]]:
    """Category -> names of the ratios below 100%."""
    out: dict[str, set[str]] = {}
    for c, s in report.scores.items():
        bad = {k for k, r in s.ratios().items() if r.hit != r.total}
        if bad:
            out[c] = bad
    return out


def test_perfect_store_scores_100_everywhere() -> None:
    truth, flows = scenario()
    rep = run(truth, flows)
    assert rep.ok, rep.mismatches
    sc = rep.scores
    assert sc["overall"].conn_recall.total == 6 and sc["overall"].conn_precision.total == 6
    assert sc["clusterip"].conn_recall.total == 3 and sc["nodeport"].conn_recall.total == 1
    assert sc["egress"].conn_recall.total == 1 and sc["podip"].conn_recall.total == 1
    assert sc["same-node"].conn_recall.total == 2  # fe1->be1 (node1), visitor->node2->fe2
    assert sc["cross-node"].conn_recall.total == 3  # fe1->be2, fe1->cache, old->be2
    assert sc["restarted-pods"].conn_recall.total == 1
    assert sc["overall"].edge_recall.total == 4  # the three frontend->backend are one edge
    assert set(rep.scores) == set(CATEGORIES)
    assert json.loads(json.dumps(rep.to_dict()))["ok"] is True


def test_every_traffic_category_has_a_row() -> None:
    from podflow.lab.truth import CATEGORIES_BY_TARGET

    assert set(CATEGORIES_BY_TARGET.values()) <= set(CATEGORIES)
    assert CATEGORIES[:3] == ("clusterip", "nodeport", "loadbalancer")
    truth, flows = scenario()
    lb = run(truth, flows).to_dict()["categories"]["loadbalancer"]
    assert lb["connections_recall"] == {"hit": 0, "total": 0, "value": 1.0}


def test_wrong_backend_fails_clusterip() -> None:
    truth, flows = scenario()
    # the store says fe1's first connection reached be1, but be2 accepted it
    flows[0] = replace(flows[0], destination=pod(f"shop/{BE1}", 9000))
    rep = run(truth, flows)
    bad = failing(rep)
    assert "connections_recall" in bad["clusterip"]
    assert "connections_precision" in bad["clusterip"]
    assert "nodeport" not in bad and "egress" not in bad
    assert any("accepted nothing" in m.reason for m in rep.mismatches if m.kind == "missed")


def test_backend_not_selected_by_service_fails() -> None:
    truth, flows = scenario()
    flows[0] = replace(flows[0], destination=pod(f"data/{CACHE}", 9000))
    bad = failing(run(truth, flows))
    assert "connections_recall" in bad["clusterip"] and "overall" in bad


def test_wrong_identity_after_restart_fails_restarted_pods() -> None:
    truth, flows = scenario()
    # the IP now belongs to frontend-...-aaaaa; the store must still say the old pod
    flows[5] = replace(flows[5], source=pod(f"shop/{FE1}", 40006))
    rep = run(truth, flows)
    bad = failing(rep)
    assert "connections_recall" in bad["restarted-pods"]
    assert "connections_recall" in bad["clusterip"]
    assert any("source identity" in m.reason for m in rep.mismatches)


def test_missing_snat_fails_egress() -> None:
    truth, flows = scenario()
    flows[3] = replace(flows[3], nat=Nat())
    rep = run(truth, flows)
    bad = failing(rep)
    assert set(bad) == {"egress", "overall"}
    assert {"connections_recall", "connections_precision"} <= bad["egress"]
    assert any("masquerade" in m.reason for m in rep.mismatches)


def test_egress_snat_to_wrong_node_fails() -> None:
    truth, flows = scenario()
    flows[3] = replace(flows[3], nat=Nat(None, Address("172.18.0.3", 40004)))
    assert "egress" in failing(run(truth, flows))


def test_nodeport_without_unsnat_or_original_destination_fails() -> None:
    truth, flows = scenario()
    no_snat = replace(flows[2], nat=Nat(Address("172.18.0.3", 30080)))
    assert "nodeport" in failing(run(truth, [*flows[:2], no_snat, *flows[3:]]))
    no_dnat = replace(flows[2], nat=Nat(None, Address("172.18.0.3", 40003)))
    assert "nodeport" in failing(run(truth, [*flows[:2], no_dnat, *flows[3:]]))
    # the visitor's address must be restored as source, not the node's
    node_src = replace(flows[2], source=Endpoint("172.18.0.3", 40003, EndpointKind.NODE))
    assert "nodeport" in failing(run(truth, [*flows[:2], node_src, *flows[3:]]))


def test_service_type_and_podip_without_service() -> None:
    truth, flows = scenario()
    wrong_type = replace(flows[2], destination_service=replace(
        flows[2].destination_service or Service("x", "y"), type="ClusterIP"))
    assert "nodeport" in failing(run(truth, [*flows[:2], wrong_type, *flows[3:]]))
    podip = replace(flows[4], destination_service=Service("data", "cache"))
    assert "podip" in failing(run(truth, [*flows[:4], podip, flows[5]]))


def test_missing_flow_fails_recall_only() -> None:
    truth, flows = scenario()
    rep = run(truth, flows[:4] + flows[5:])
    bad = failing(rep)
    assert bad["podip"] == {"connections_recall", "edges_recall"}
    assert bad["overall"] == {"connections_recall", "edges_recall"}
    assert "cross-node" in bad


def test_unexplained_and_duplicate_flows_fail_precision() -> None:
    truth, flows = scenario()
    extra = Flow(T + 5, pod(f"shop/{FE2}", 41000), pod(f"shop/{BE1}", 9000), Protocol.TCP)
    bad = failing(run(truth, [*flows, extra]))
    assert bad["podip"] == {"connections_precision", "edges_precision"}
    dup = replace(flows[0], time=flows[0].time + 0.5)
    bad = failing(run(truth, [*flows, dup]))
    assert bad["clusterip"] == {"connections_precision"}


def test_wrong_workload_claim_fails_edge_precision() -> None:
    truth, flows = scenario()
    src = replace(flows[3].source, workload=Workload("Deployment", "backend-old"))
    rep = run(truth, [*flows[:3], replace(flows[3], source=src), *flows[4:]])
    assert failing(rep)["egress"] == {"edges_precision"}


def test_infrastructure_failed_attempts_and_window_are_ignored() -> None:
    truth, flows = scenario()
    vxlan = Flow(T, Endpoint("172.18.0.2", 50000, EndpointKind.NODE),
                 Endpoint("172.18.0.3", 8472, EndpointKind.NODE), Protocol.UDP)
    refused = connect(T + 6, f"shop/{FE1}", "pod/data/cache:6379", "podip",
                      ("10.244.2.3", 6379), 40007, outcome="refused")
    refused_flow = Flow(T + 6, pod(f"shop/{FE1}", 40007), pod(f"data/{CACHE}", 6379),
                        Protocol.TCP)
    late = connect(T + 200, f"shop/{FE1}", "pod/data/cache:6379", "podip",
                   ("10.244.2.3", 6379), 40008)
    before = Flow(WINDOW.start - 30, pod(f"shop/{FE2}", 1), pod(f"shop/{BE1}", 9000),
                  Protocol.TCP)
    truth.connects += [refused, late]
    rep = run(truth, [*flows, vxlan, refused_flow, before])
    assert rep.ok, rep.mismatches
    assert rep.scores["overall"].conn_precision.total == 6


def test_mismatches_are_capped_per_category() -> None:
    truth, _ = scenario()
    many = [connect(T + i * 0.1, f"shop/{FE1}", "service/shop/backend:9000", "clusterip",
                    ("10.96.0.11", 9000), 42000 + i) for i in range(30)]
    rep = run(Truth(truth.starts, many, []), [])
    assert rep.scores["clusterip"].conn_recall.total == 30
    assert 0 < sum(1 for m in rep.mismatches if "clusterip" in m.categories) <= 11


def test_run_verify_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PODFLOW_LAB_ROOT", str(tmp_path))
    assert run_verify("nolab") == 2
    STATE.save(tmp_path / "shop" / "state.json")
    assert run_verify("shop") == 2
    assert "no ground truth" in capsys.readouterr().err
    assert run_verify("shop", output="yaml") == 2


def test_run_verify_reads_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    duck = pytest.importorskip("podflow.store.duckdb")
    monkeypatch.setenv("PODFLOW_LAB_ROOT", str(tmp_path))
    truth, flows = scenario()
    lab = tmp_path / "shop"
    STATE.save(lab / "state.json")
    (lab / "truth").mkdir()
    lines = [json.dumps({"type": "connect", **asdict(r)}) for r in truth.connects]
    lines += [json.dumps({"type": "accept", **asdict(a)}) for a in truth.accepts]
    lines += [json.dumps({"type": "start", **asdict(s)}) for s in truth.starts]
    (lab / "truth" / "all.jsonl").write_text("\n".join(lines) + "\n")
    with duck.DuckDBStore(lab / "store.duckdb") as st:
        st.write(flows)
    assert run_verify("shop", output="json", settle=-1e9) == 0, capsys.readouterr()
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["categories"]["overall"]["connections_recall"]["total"] == 6
    assert run_verify("shop", output="table", settle=-1e9) == 0
    assert "PASS" in capsys.readouterr().out


def test_unmatched_records_still_get_their_locality() -> None:
    truth, flows = scenario()
    # masquerade may pick a new source port: the accept is found by node IP and time
    truth.accepts[2] = accept(T + 2, f"shop/{FE2}", 8080, ("172.18.0.3", 61234))
    bad = failing(run(truth, [*flows[:2], *flows[3:]]))
    assert "connections_recall" in bad["nodeport"] and "connections_recall" in bad["same-node"]
    assert "cross-node" not in bad


def test_a_connection_still_open_without_its_record_is_in_flight() -> None:
    truth, flows = scenario()
    fe1 = flows[0].source
    open_ = Flow(T + 5, replace(fe1, port=41999), pod(f"shop/{BE1}", 9000), Protocol.TCP,
                 state=FlowState.ACTIVE)
    assert failing(run(truth, [*flows, open_])) == {}, "its client writes a record when done"
    ended = replace(open_, state=FlowState.ENDED)
    assert failing(run(truth, [*flows, ended]))["podip"] == {"connections_precision",
                                                             "edges_precision"}


def test_udp_exchanges_on_one_tuple_within_the_conntrack_timeout_are_one_flow() -> None:
    a = connect(T, f"shop/{FE1}", "pod/data/cache:6379", "podip", ("10.244.2.3", 6379), 40005)
    a = replace(a, proto="udp")
    assert same_udp_flow(a, replace(a, time=T + 4))
    assert not same_udp_flow(a, replace(a, time=T + 40)), "the entry expired in between"
    assert not same_udp_flow(replace(a, proto="tcp"), replace(a, proto="tcp", time=T + 4))
    assert not same_udp_flow(a, replace(a, time=T + 4, local_port=40006))


def test_udp_exchanges_chained_on_one_tuple_match_the_flow_their_first_began() -> None:
    """Exchanges 17 s and then 20 s apart on one 5-tuple are one conntrack entry, so one
    flow with the first exchange's time; one 40 s after the last is a flow of its own."""
    truth, flows = scenario()
    cache = f"data/{CACHE}"
    ex = [replace(connect(T + dt, f"shop/{FE1}", "pod/data/cache:6379", "podip",
                          ("10.244.2.3", 6379), 40100), proto="udp") for dt in (1, 18, 38)]
    udp = Flow(T + 1.01, pod(f"shop/{FE1}", 40100), pod(cache, 6379), Protocol.UDP)
    truth.connects.extend(ex)
    truth.accepts.extend(replace(accept(T + dt, cache, 6379, ("10.244.0.2", 40100)),
                                 proto="udp") for dt in (1, 18, 38, 78))
    assert failing(run(truth, [*flows, udp])) == {}
    late = replace(ex[0], time=T + 78)            # the entry expired after T + 38 + 30
    truth.connects.append(late)
    assert "connections_recall" in failing(run(truth, [*flows, udp]))["podip"]
    assert failing(run(truth, [*flows, udp, replace(udp, time=T + 78.01)])) == {}
