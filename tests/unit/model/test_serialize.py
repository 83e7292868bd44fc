"""Flow model: serialisation round trip and schema version checks."""

from __future__ import annotations

import pytest

from podflow.model.conntrack import CtEntry, CtEventType, CtStatus, CtTuple
from podflow.model.flow import (
    L7,
    Address,
    Counters,
    DnsInfo,
    Endpoint,
    EndpointKind,
    Flow,
    HttpInfo,
    Nat,
    ObservationPoint,
    Protocol,
    Service,
    Traffic,
    Workload,
)
from podflow.model.serialize import SCHEMA_VERSION, SchemaError, flow_from_dict, flow_to_dict


def _flow() -> Flow:
    return Flow(
        time=100.25,
        end_time=101.5,
        source=Endpoint("10.244.0.5", 41000, EndpointKind.POD, "shop", "frontend-x",
                        Workload("Deployment", "frontend"), (("app", "frontend"),), "node1"),
        destination=Endpoint("10.244.1.7", 9000, EndpointKind.POD, "shop", "backend-y",
                             Workload("Deployment", "backend"), (("app", "backend"),), "node2"),
        protocol=Protocol.TCP,
        destination_service=Service("shop", "backend", "api", "ClusterIP", "10.96.0.20", 9000),
        nat=Nat(original_destination=Address("10.96.0.20", 9000)),
        traffic=Traffic(Counters(6, 400), Counters(4, 900)),
        observations=(ObservationPoint("node1", "conntrack", "a", "b"),),
        cni_profile="flannel-vxlan",
        flow_id="abc",
    )


def test_round_trip_is_identity() -> None:
    f = _flow()
    d = flow_to_dict(f)
    assert d["schema_version"] == SCHEMA_VERSION
    assert d["source"]["workload"] == {"kind": "Deployment", "name": "frontend"}
    assert flow_from_dict(d) == f
    assert f.traffic.bytes == 1300 and f.node_name == "node1"


def test_newer_schema_is_refused_clearly() -> None:
    d = flow_to_dict(_flow())
    d["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaError, match="newer"):
        flow_from_dict(d)


def test_malformed_record_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="malformed"):
        flow_from_dict({"time": 1})


def test_ct_entry_nat_flags_follow_tuples() -> None:
    orig = CtTuple("10.244.0.5", "192.168.100.10", 6, 41000, 5432)
    reply = CtTuple("192.168.100.10", "172.18.0.1", 6, 5432, 61000)
    e = CtEntry(CtEventType.DESTROY, orig, reply)
    assert e.is_snat and not e.is_dnat
    assert CtEntry(CtEventType.NEW, orig, orig.reversed(), CtStatus(0)).is_snat is False
    assert str(orig) == "tcp 10.244.0.5:41000 -> 192.168.100.10:5432"


def test_l7_and_client_key_round_trip() -> None:
    import dataclasses

    f = dataclasses.replace(
        _flow(), client_key="ck",
        l7=L7(dns=DnsInfo("db.example.com", ("A",), 0, ("192.168.100.10",), 30),
              http=HttpInfo("GET", "/x?y=1", "backend", 200), latency_ns=1500))
    d = flow_to_dict(f)
    assert d["l7"]["dns"]["ips"] == ["192.168.100.10"] and d["l7"]["http"]["code"] == 200
    assert flow_from_dict(d) == f


@pytest.mark.parametrize("bad", [None, "x", [], 3])
def test_endpoint_that_is_not_an_object_is_a_schema_error(bad: object) -> None:
    d = flow_to_dict(_flow())
    d["source"] = bad
    with pytest.raises(SchemaError, match="malformed"):
        flow_from_dict(d)
