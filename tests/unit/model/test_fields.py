"""The Flow's one field table: today's JSON shape and store columns are pinned, and both are
derived from :data:`podflow.model.fields.FLOW`."""

from __future__ import annotations

import dataclasses
import json

from podflow.model import fields
from podflow.model.flow import (
    L7,
    Address,
    Counters,
    DnsInfo,
    Endpoint,
    EndpointKind,
    Flow,
    FlowState,
    HttpInfo,
    Nat,
    ObservationPoint,
    Protocol,
    Service,
    TcpInfo,
    Traffic,
    Verdict,
    Workload,
)
from podflow.model.serialize import flow_from_dict, flow_to_dict
from podflow.store.schema import (
    _SQL_TYPES,
    COLUMNS,
    DDL,
    GROUPING_COLUMNS,
    columns_to_flows,
    flow_to_rows,
    row_to_flow,
    rows_to_table,
)

# Store schema version 3, as written by hand before the table (column, SQL type), in order.
PINNED_COLUMNS = [
    ('seq', 'BIGINT'), ('flow_id', 'VARCHAR'), ('time', 'DOUBLE'), ('end_time', 'DOUBLE'),
    ('state', 'VARCHAR'), ('protocol', 'VARCHAR'), ('src_ip', 'VARCHAR'),
    ('src_ipkey', 'VARCHAR'), ('src_port', 'INTEGER'), ('src_kind', 'VARCHAR'),
    ('src_namespace', 'VARCHAR'), ('src_pod', 'VARCHAR'), ('src_workload_kind', 'VARCHAR'),
    ('src_workload', 'VARCHAR'), ('src_labels', 'MAP(VARCHAR, VARCHAR)'),
    ('src_node', 'VARCHAR'), ('src_name', 'VARCHAR'), ('dst_ip', 'VARCHAR'),
    ('dst_ipkey', 'VARCHAR'), ('dst_port', 'INTEGER'), ('dst_kind', 'VARCHAR'),
    ('dst_namespace', 'VARCHAR'), ('dst_pod', 'VARCHAR'), ('dst_workload_kind', 'VARCHAR'),
    ('dst_workload', 'VARCHAR'), ('dst_labels', 'MAP(VARCHAR, VARCHAR)'),
    ('dst_node', 'VARCHAR'), ('dst_name', 'VARCHAR'), ('svc_namespace', 'VARCHAR'),
    ('svc_name', 'VARCHAR'), ('svc_port_name', 'VARCHAR'), ('svc_type', 'VARCHAR'),
    ('svc_frontend_ip', 'VARCHAR'), ('svc_frontend_port', 'INTEGER'),
    ('nat_orig_dst_ip', 'VARCHAR'), ('nat_orig_dst_port', 'INTEGER'), ('nat_snat_ip', 'VARCHAR'),
    ('nat_snat_port', 'INTEGER'), ('packets_to_dst', 'BIGINT'), ('bytes_to_dst', 'BIGINT'),
    ('packets_to_src', 'BIGINT'), ('bytes_to_src', 'BIGINT'), ('tcp_state', 'VARCHAR'),
    ('tcp_flags', 'VARCHAR[]'), ('rtt_us', 'DOUBLE'), ('verdict', 'VARCHAR'),
    ('drop_reason', 'VARCHAR'), ('is_reply', 'BOOLEAN'), ('obs_node', 'VARCHAR'),
    ('obs_source', 'VARCHAR'), ('obs_original', 'VARCHAR'), ('obs_reply', 'VARCHAR'),
    ('obs_instance', 'VARCHAR'), ('cni_profile', 'VARCHAR'), ('ingested_at', 'DOUBLE'),
    ('client_key', 'VARCHAR'), ('l7_latency_ns', 'BIGINT'), ('dns_query', 'VARCHAR'),
    ('dns_qtypes', 'VARCHAR[]'), ('dns_rcode', 'INTEGER'), ('dns_ips', 'VARCHAR[]'),
    ('dns_ttl', 'BIGINT'), ('dns_cnames', 'VARCHAR[]'), ('dns_queries', 'INTEGER'),
    ('dns_rcodes', 'INTEGER[]'), ('http_method', 'VARCHAR'),
    ('http_url', 'VARCHAR'), ('http_host', 'VARCHAR'), ('http_code', 'INTEGER'),
    ('http_protocol', 'VARCHAR'), ('conn_id', 'BIGINT'), ('conn_key', 'VARCHAR'),
    ('bridge_time', 'DOUBLE'), ('bridge_seq', 'BIGINT'),
]

FULL = Flow(
    time=100.25,
    source=Endpoint("10.244.0.5", 41000, EndpointKind.POD, "shop", "frontend-x",
                    Workload("Deployment", "frontend"), (("app", "frontend"),), "node1", "fe"),
    destination=Endpoint("fd00::7", 9000, EndpointKind.HOST_NETWORK_POD, "shop", "backend-y",
                         None, (), "node2"),
    protocol=Protocol.TCP, end_time=101.5, state=FlowState.ACTIVE,
    destination_service=Service("shop", "backend", "api", "NodePort", "10.96.0.20", 30080),
    nat=Nat(Address("10.96.0.20", 30080), Address("172.18.0.2", 61000)),
    traffic=Traffic(Counters(6, 400), Counters(4, 900)),
    tcp=TcpInfo("ESTABLISHED", ("SYN", "FIN")), rtt_us=12.5, verdict=Verdict.DROPPED,
    drop_reason_desc="POLICY",
    observations=(ObservationPoint("node1", "conntrack", "a", "b", "0/7"),
                  ObservationPoint("node2", "sockets")),
    cni_profile="flannel-vxlan", flow_id="abc", client_key="ck",
    l7=L7(DnsInfo("db.example.com", ("A",), 0, ("192.168.100.10",), 30, ("x.example",), 4,
                  (3, 3, 3, 0)),
          HttpInfo("GET", "/x", "h", 200, "HTTP/1.0"), 1500))
MINIMAL = Flow(time=1.0, source=Endpoint("10.0.0.1"), destination=Endpoint("10.0.0.2", 2),
               protocol=Protocol.UDP)

# json.dumps(flow_to_dict(...)) as the hand-written serialiser printed them.
FULL_JSON = (
    '{"schema_version": 1, "flow_id": "abc", "time": 100.25, "end_time": 101.5, "state": '
    '"active", "source": {"ip": "10.244.0.5", "port": 41000, "kind": "pod", "namespace": '
    '"shop", "pod_name": "frontend-x", "workload": {"kind": "Deployment", "name": '
    '"frontend"}, "labels": {"app": "frontend"}, "node_name": "node1", "name": "fe"}, '
    '"destination": {"ip": "fd00::7", "port": 9000, "kind": "host-network-pod", "namespace": '
    '"shop", "pod_name": "backend-y", "workload": null, "labels": {}, "node_name": "node2", '
    '"name": null}, "protocol": "TCP", "destination_service": {"namespace": "shop", "name": '
    '"backend", "port_name": "api", "type": "NodePort", "frontend_ip": "10.96.0.20", '
    '"frontend_port": 30080}, "nat": {"original_destination": {"ip": "10.96.0.20", "port": '
    '30080}, "translated_source": {"ip": "172.18.0.2", "port": 61000}}, "traffic": '
    '{"to_destination": {"packets": 6, "bytes": 400}, "to_source": {"packets": 4, "bytes": '
    '900}}, "tcp": {"state": "ESTABLISHED", "flags": ["SYN", "FIN"]}, "rtt_us": 12.5, '
    '"verdict": "DROPPED", "drop_reason_desc": "POLICY", "is_reply": false, "observations": '
    '[{"node_name": "node1", "source": "conntrack", "original": "a", "reply": "b", '
    '"instance": "0/7"}, {"node_name": "node2", "source": "sockets", "original": null, '
    '"reply": null, "instance": ""}], "cni_profile": "flannel-vxlan", "client_key": "ck", '
    '"l7": {"latency_ns": 1500, "dns": {"query": "db.example.com", "qtypes": ["A"], "rcode": '
    '0, "ips": ["192.168.100.10"], "ttl": 30, "cnames": ["x.example"], "queries": 4, '
    '"rcodes": [3, 3, 3, 0]}, "http": {"method": "GET", "url": "/x", "host": "h", "code": '
    '200, "protocol": "HTTP/1.0"}}}'
)
MINIMAL_JSON = (
    '{"schema_version": 1, "flow_id": "", "time": 1.0, "end_time": null, "state": "ended", '
    '"source": {"ip": "10.0.0.1", "port": null, "kind": "unknown", "namespace": null, '
    '"pod_name": null, "workload": null, "labels": {}, "node_name": null, "name": null}, '
    '"destination": {"ip": "10.0.0.2", "port": 2, "kind": "unknown", "namespace": null, '
    '"pod_name": null, "workload": null, "labels": {}, "node_name": null, "name": null}, '
    '"protocol": "UDP", "destination_service": null, "nat": {"original_destination": null, '
    '"translated_source": null}, "traffic": {"to_destination": {"packets": 0, "bytes": 0}, '
    '"to_source": {"packets": 0, "bytes": 0}}, "tcp": null, "rtt_us": null, "verdict": '
    '"FORWARDED", "drop_reason_desc": null, "is_reply": false, "observations": [], '
    '"cni_profile": null, "client_key": "", "l7": null}'
)

# flow_to_rows(FULL, 7.0) as the hand-written row builder made it (one row per point).
FULL_ROWS = [{'seq': None,
  'flow_id': 'abc',
  'time': 100.25,
  'end_time': 101.5,
  'state': 'active',
  'protocol': 'TCP',
  'src_ip': '10.244.0.5',
  'src_ipkey': '00000000000000000000ffff0af40005',
  'src_port': 41000,
  'src_kind': 'pod',
  'src_namespace': 'shop',
  'src_pod': 'frontend-x',
  'src_workload_kind': 'Deployment',
  'src_workload': 'frontend',
  'src_labels': [('app', 'frontend')],
  'src_node': 'node1',
  'src_name': 'fe',
  'dst_ip': 'fd00::7',
  'dst_ipkey': 'fd000000000000000000000000000007',
  'dst_port': 9000,
  'dst_kind': 'host-network-pod',
  'dst_namespace': 'shop',
  'dst_pod': 'backend-y',
  'dst_workload_kind': None,
  'dst_workload': None,
  'dst_labels': [],
  'dst_node': 'node2',
  'dst_name': None,
  'svc_namespace': 'shop',
  'svc_name': 'backend',
  'svc_port_name': 'api',
  'svc_type': 'NodePort',
  'svc_frontend_ip': '10.96.0.20',
  'svc_frontend_port': 30080,
  'nat_orig_dst_ip': '10.96.0.20',
  'nat_orig_dst_port': 30080,
  'nat_snat_ip': '172.18.0.2',
  'nat_snat_port': 61000,
  'packets_to_dst': 6,
  'bytes_to_dst': 400,
  'packets_to_src': 4,
  'bytes_to_src': 900,
  'tcp_state': 'ESTABLISHED',
  'tcp_flags': ['SYN', 'FIN'],
  'rtt_us': 12.5,
  'verdict': 'DROPPED',
  'drop_reason': 'POLICY',
  'is_reply': False,
  'cni_profile': 'flannel-vxlan',
  'ingested_at': 7.0,
  'client_key': 'ck',
  'l7_latency_ns': 1500,
  'dns_query': 'db.example.com',
  'dns_qtypes': ['A'],
  'dns_rcode': 0,
  'dns_ips': ['192.168.100.10'],
  'dns_ttl': 30,
  'dns_cnames': ['x.example'],
  'dns_queries': 4,
  'dns_rcodes': [3, 3, 3, 0],
  'http_method': 'GET',
  'http_url': '/x',
  'http_host': 'h',
  'http_code': 200,
  'http_protocol': 'HTTP/1.0',
  'conn_id': None,
  'conn_key': None,
  'bridge_time': None,
  'bridge_seq': None,
  'obs_node': 'node1',
  'obs_source': 'conntrack',
  'obs_original': 'a',
  'obs_reply': 'b',
  'obs_instance': '0/7'},
 {'seq': None,
  'flow_id': 'abc',
  'time': 100.25,
  'end_time': 101.5,
  'state': 'active',
  'protocol': 'TCP',
  'src_ip': '10.244.0.5',
  'src_ipkey': '00000000000000000000ffff0af40005',
  'src_port': 41000,
  'src_kind': 'pod',
  'src_namespace': 'shop',
  'src_pod': 'frontend-x',
  'src_workload_kind': 'Deployment',
  'src_workload': 'frontend',
  'src_labels': [('app', 'frontend')],
  'src_node': 'node1',
  'src_name': 'fe',
  'dst_ip': 'fd00::7',
  'dst_ipkey': 'fd000000000000000000000000000007',
  'dst_port': 9000,
  'dst_kind': 'host-network-pod',
  'dst_namespace': 'shop',
  'dst_pod': 'backend-y',
  'dst_workload_kind': None,
  'dst_workload': None,
  'dst_labels': [],
  'dst_node': 'node2',
  'dst_name': None,
  'svc_namespace': 'shop',
  'svc_name': 'backend',
  'svc_port_name': 'api',
  'svc_type': 'NodePort',
  'svc_frontend_ip': '10.96.0.20',
  'svc_frontend_port': 30080,
  'nat_orig_dst_ip': '10.96.0.20',
  'nat_orig_dst_port': 30080,
  'nat_snat_ip': '172.18.0.2',
  'nat_snat_port': 61000,
  'packets_to_dst': 6,
  'bytes_to_dst': 400,
  'packets_to_src': 4,
  'bytes_to_src': 900,
  'tcp_state': 'ESTABLISHED',
  'tcp_flags': ['SYN', 'FIN'],
  'rtt_us': 12.5,
  'verdict': 'DROPPED',
  'drop_reason': 'POLICY',
  'is_reply': False,
  'cni_profile': 'flannel-vxlan',
  'ingested_at': 7.0,
  'client_key': 'ck',
  'l7_latency_ns': 1500,
  'dns_query': 'db.example.com',
  'dns_qtypes': ['A'],
  'dns_rcode': 0,
  'dns_ips': ['192.168.100.10'],
  'dns_ttl': 30,
  'dns_cnames': ['x.example'],
  'dns_queries': 4,
  'dns_rcodes': [3, 3, 3, 0],
  'http_method': 'GET',
  'http_url': '/x',
  'http_host': 'h',
  'http_code': 200,
  'http_protocol': 'HTTP/1.0',
  'conn_id': None,
  'conn_key': None,
  'bridge_time': None,
  'bridge_seq': None,
  'obs_node': 'node2',
  'obs_source': 'sockets',
  'obs_original': None,
  'obs_reply': None,
  'obs_instance': None}]


def _structs(s: fields.Struct = fields.FLOW) -> list[fields.Struct]:
    return [s, *(x for f in s.fields if f.struct for x in _structs(f.struct))]


def test_store_columns_are_pinned_and_derived_from_the_table() -> None:
    assert [(n, _SQL_TYPES[t]) for n, t in COLUMNS] == PINNED_COLUMNS
    assert DDL[1] == ("CREATE TABLE IF NOT EXISTS flows ("
                      + ", ".join(f"{n} {t}" for n, t in PINNED_COLUMNS) + ")")
    store_only = {"seq", "ingested_at", *GROUPING_COLUMNS}
    derived = list(fields.columns(fields.FLOW))
    assert sorted(derived) == sorted(c for c in PINNED_COLUMNS if c[0] not in store_only)
    assert len(set(derived)) == len(derived)


def test_json_is_pinned_and_keyed_by_the_table() -> None:
    assert json.dumps(flow_to_dict(FULL)) == FULL_JSON
    assert json.dumps(flow_to_dict(MINIMAL)) == MINIMAL_JSON
    assert flow_from_dict(json.loads(FULL_JSON)) == FULL
    assert flow_from_dict(json.loads(MINIMAL_JSON)) == MINIMAL

    def keys(d: object, s: fields.Struct) -> None:
        assert isinstance(d, dict)
        assert list(d) == [f.attr for f in s.fields if not f.index]
        for f in s.fields:
            if f.struct is not None and d[f.attr] is not None:
                for x in (d[f.attr] if f.many else [d[f.attr]]):
                    keys(x, f.struct)

    d = flow_to_dict(FULL)
    assert d.pop("schema_version") == 1
    keys(d, fields.FLOW)


def test_rows_are_pinned() -> None:
    rows = flow_to_rows(FULL, 7.0)
    assert rows == FULL_ROWS
    assert [row_to_flow(r) for r in rows] == [
        dataclasses.replace(FULL, observations=(o,)) for o in FULL.observations]
    table = rows_to_table(flow_to_rows(FULL) + flow_to_rows(MINIMAL))
    assert columns_to_flows(table.to_pydict())[2] == MINIMAL


def test_every_attribute_of_every_value_object_is_declared() -> None:
    for s in _structs():
        declared = [f.attr for f in s.fields if not f.index]
        assert sorted(declared) == sorted(x.name for x in dataclasses.fields(s.cls)), s.cls


def test_codecs_are_compiled_from_the_table() -> None:
    from podflow.model import serialize
    from podflow.store import schema

    assert "'destination_service'" in serialize._flow_to_dict.__source__
    assert "'svc_frontend_port'" in schema._flow_to_rows.__source__
    assert "cols['dns_cnames']" in schema._columns_to_flows.__source__
