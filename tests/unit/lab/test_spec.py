"""Lab spec parsing and validation: the embedded demo spec and path-qualified errors."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from podflow.lab.spec import SpecError, load_default_spec, load_spec, parse_spec

Doc = dict[str, Any]


def _doc() -> Doc:
    text = resources.files("podflow.lab").joinpath("specs/shop.yaml").read_text()
    return copy.deepcopy(yaml.safe_load(text))


def test_default_spec_is_the_issue_example() -> None:
    spec = load_default_spec()
    assert (spec.name, spec.cni, spec.nodes) == ("shop", "flannel-vxlan", 3)
    assert [str(spec.node_cidr(k)) for k in (1, 2, 3)] == [
        "10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    assert spec.node_ip(1) == "172.18.0.1" and spec.underlay_gateway() == "172.18.0.254"
    backend = spec.services[1]
    assert backend.type == "ClusterIP" and backend.ports[0].targetPort == 9000
    assert spec.workloads[2].node == 3
    assert [t.every for t in spec.traffic] == [1.0, 2.0, 5.0, 2.0]
    d = spec.to_dict()
    assert d["traffic"][3]["from"] == "external/visitor"
    assert d["traffic"][3]["target"] == {"kind": "nodeport", "namespace": "", "name": "",
                                         "port": 30080}
    assert d["workloads"][0]["ports"] == ["tcp/8080"]


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    """A mutation setting ``a.b[1].c`` in the document."""
    def apply(doc: Doc) -> None:
        keys: list[Any] = []
        for part in path.split("."):
            name, _, idx = part.partition("[")
            keys.append(name)
            if idx:
                keys.append(int(idx.rstrip("]")))
        target: Any = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return apply


BAD: list[tuple[Callable[[Doc], None], str]] = [
    (_set("workloads[1].ports", ["8080"]),
     'workloads[1].ports[0]: expected "tcp/PORT" or "udp/PORT", got "8080"'),
    (_set("cni", "calico"), "cni: unsupported 'calico'; supported: flannel-vxlan"),
    (_set("name", "Shop"), "name: must match"),
    (_set("name", "abcdefghijklm"), "name: must match"),
    (_set("nodes", 0), "nodes: must be between 1 and 64, got 0"),
    (_set("nodes", "3"), 'nodes: expected an integer, got "3"'),
    (_set("workloads[0].namespace", "web"), "workloads[0].namespace: namespace 'web' is not "
                                            "declared"),
    (_set("workloads[2].node", 4), "workloads[2].node: must be between 1 and 3, got 4"),
    (_set("workloads[0].replica", 2), "workloads[0]: unknown field 'replica'"),
    (_set("services[1].selector", {"app": "nope"}), "services[1].selector: {'app': 'nope'} "
                                                    "matches no workload"),
    (_set("services[0].ports[0].nodePort", 29999),
     "services[0].ports[0].nodePort: must be between 30000 and 32767, got 29999"),
    (_set("services[1].ports[0].nodePort", 30081),
     "services[1].ports[0].nodePort: only NodePort and LoadBalancer services have a nodePort"),
    (_set("services[0].externalTrafficPolicy", "Global"),
     "services[0].externalTrafficPolicy: expected Cluster or Local"),
    (_set("services[1].type", "ExternalName"), "services[1].type: expected ClusterIP, "
                                               "NodePort or LoadBalancer"),
    (_set("services[1].loadBalancerIP", "172.18.0.240"),
     "services[1].loadBalancerIP: only LoadBalancer services have one"),
    (_set("services[1].externalTrafficPolicy", "Local"),
     "services[1].externalTrafficPolicy: Local needs type NodePort or LoadBalancer"),
    (_set("namespaces", ["shop", "data", "loadbalancer"]),
     "namespaces[2]: 'loadbalancer' is reserved"),
    (_set("traffic[0].to", "loadbalancer/shop/backend:9000"),
     "traffic[0].to: 'loadbalancer/shop/backend:9000' does not exist (service shop/backend is "
     "not of type LoadBalancer or has no port 9000)"),
    (_set("traffic[0].to", "loadbalancer/shop/nope:80"),
     "traffic[0].to: 'loadbalancer/shop/nope:80' does not exist (no such loadbalancer"),
    (_set("services[0].ports[0].protocol", "SCTP"), "services[0].ports[0].protocol: expected "
                                                    "TCP or UDP"),
    (_set("externals[0].ip", "10.244.3.7"), "externals[0].ip: 10.244.3.7 (its /24 "
                                            "10.244.3.0/24) overlaps podCIDR"),
    (_set("externals[0].ip", "172.18.0.77"), "overlaps underlay 172.18.0.0/24"),
    (_set("externals[0].ip", "10.96.5.5"), "overlaps serviceCIDR"),
    (_set("externals[1].ip", "192.168.100.10"), "externals: duplicate external ip"),
    (_set("externals[0].ip", "not-an-ip"), "externals[0].ip: not an IPv4 address"),
    (_set("serviceCIDR", "10.244.128.0/20"), "serviceCIDR: 10.244.128.0/20 overlaps podCIDR"),
    (_set("podCIDR", "10.244.0.0/25"), "podCIDR: 10.244.0.0/25 has room for fewer than 3"),
    (_set("underlay", "172.18.0.0/30"), "underlay: 172.18.0.0/30 has no room for 3 nodes"),
    (_set("namespaces", ["shop", "data", "shop"]), "namespaces: duplicate namespace shop"),
    (_set("namespaces", ["shop", "data", "external"]), "namespaces[2]: 'external' is reserved"),
    (_set("traffic[0].to", "service/shop/nope:9000"),
     "traffic[0].to: 'service/shop/nope:9000' does not exist"),
    (_set("traffic[0].to", "service/shop/backend:9999"), "does not exist"),
    (_set("traffic[2].to", "external/db:5433"), "traffic[2].to: 'external/db:5433' does not"),
    (_set("traffic[3].to", "nodeport/30081"), "traffic[3].to: 'nodeport/30081' does not"),
    (_set("traffic[0].to", "http://backend"), 'traffic[0].to: expected "service/NS/NAME:PORT"'),
    (_set("traffic[0].from", "shop/nope"), "traffic[0].from: no workload 'shop/nope'"),
    (_set("traffic[3].from", "external/nobody"), "traffic[3].from: no external named 'nobody'"),
    (_set("traffic[0].every", "50ms"), "traffic[0].every: 50ms is below the minimum of 100ms"),
    (_set("traffic[0].every", "1h"), 'traffic[0].every: expected a duration like "1s"'),
    (_set("services", [{"namespace": "shop", "name": "x", "selector": {"app": "backend"},
                        "ports": [{"port": 1}, {"port": 2}]}]),
     "services[0].ports: every port needs a name when there are several"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD,
                         ids=[m for _, m in BAD])
def test_invalid_specs_name_the_field(mutate: Callable[[Doc], None], message: str) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(SpecError) as err:
        parse_spec(doc)
    assert message in str(err.value)


def test_missing_fields_and_wrong_types() -> None:
    with pytest.raises(SpecError, match="spec: expected a mapping"):
        parse_spec(["name"])
    with pytest.raises(SpecError, match="spec: missing required field 'nodes'"):
        parse_spec({"name": "x"})


def test_defaults_and_nodeport_allocation() -> None:
    doc = _doc()
    doc["services"].append({"namespace": "shop", "name": "api", "type": "NodePort",
                            "selector": {"app": "backend"}, "ports": [{"port": 9000}]})
    spec = parse_spec(doc)
    api = next(s for s in spec.services if s.name == "api")
    assert api.ports[0].nodePort == 30000 and api.ports[0].targetPort == 9000
    minimal = parse_spec({"name": "tiny", "nodes": 1})
    assert (minimal.cni, minimal.podCIDR, minimal.namespaces) == (
        "flannel-vxlan", "10.244.0.0/16", ("default", "kube-system"))


def test_builtin_cluster_dns() -> None:
    spec = parse_spec({"name": "tiny", "nodes": 1, "serviceCIDR": "10.100.0.0/16",
                       "traffic": [{"from": "kube-system/coredns",
                                    "to": "service/kube-system/kube-dns:53"}]})
    (wl,) = spec.workloads
    assert (wl.namespace, wl.name, wl.replicas, wl.labels) == (
        "kube-system", "coredns", 1, {"k8s-app": "kube-dns"})
    assert [str(p) for p in wl.ports] == ["udp/53", "tcp/53"]
    (svc,) = spec.services
    assert (svc.name, svc.clusterIP, svc.selector) == ("kube-dns", "10.100.0.10",
                                                       {"k8s-app": "kube-dns"})
    assert [(p.name, p.port, p.protocol) for p in svc.ports] == [("dns", 53, "UDP"),
                                                                 ("dns-tcp", 53, "TCP")]
    assert spec.dns_ip() == "10.100.0.10" and spec.to_dict()["dns"] is True
    off = parse_spec({"name": "tiny", "nodes": 1, "dns": False})
    assert off.workloads == () and off.services == () and off.namespaces == ("default",)
    with pytest.raises(SpecError, match="dns: expected true or false"):
        parse_spec({"name": "tiny", "nodes": 1, "dns": "yes"})
    with pytest.raises(SpecError, match="kube-system/coredns is built in"):
        parse_spec({"name": "tiny", "nodes": 1, "namespaces": ["kube-system"],
                    "workloads": [{"namespace": "kube-system", "name": "coredns"}]})


def test_macvlan_has_no_services() -> None:
    doc = _doc()
    doc["cni"] = "macvlan"
    with pytest.raises(SpecError, match="services: cni macvlan has no ClusterIP/NodePort"):
        parse_spec(doc)
    doc["services"] = []
    with pytest.raises(SpecError, match=r"traffic\[0\].to: 'service/shop/backend:9000': cni "
                                        "macvlan has no"):
        parse_spec(doc)
    doc["traffic"] = [{"from": "shop/frontend", "to": "pod/shop/backend:9000"},
                      {"from": "shop/backend", "to": "external/db:5432"}]
    spec = parse_spec(doc)
    assert spec.cni == "macvlan" and spec.services == ()   # no kube-dns Service either
    assert any(w.name == "coredns" for w in spec.workloads)


def test_every_datapath_host_network_and_external_dns() -> None:
    for cni in ("flannel-vxlan", "flannel-host-gw", "calico-bgp", "calico-vxlan"):
        assert parse_spec({**_doc(), "cni": cni}).cni == cni
    doc = _doc()
    doc["workloads"].append({"namespace": "shop", "name": "agent", "hostNetwork": True,
                             "node": 2})
    doc["externals"][0]["dns"] = ["DB.example.com.", "pg.example.com"]
    spec = parse_spec(doc)
    agent = next(w for w in spec.workloads if w.name == "agent")
    assert agent.hostNetwork and spec.to_dict()["workloads"][-2]["hostNetwork"] is True
    assert spec.externals[0].dns == ("db.example.com", "pg.example.com")
    doc["workloads"][-1]["hostNetwork"] = "yes"
    with pytest.raises(SpecError, match=r"workloads\[3\].hostNetwork: expected true or false"):
        parse_spec(doc)
    doc["workloads"][-1]["hostNetwork"] = True
    doc["externals"][0]["dns"] = ["db.cluster.local"]
    with pytest.raises(SpecError, match=r"externals\[0\].dns\[0\]: not a valid DNS name"):
        parse_spec(doc)


def test_load_spec_prefixes_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: shop\nnodes: [1\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML"):
        load_spec(bad)
    bad.write_text(yaml.safe_dump({"name": "shop", "nodes": 2, "cni": "cilium"}))
    with pytest.raises(SpecError, match=r"bad\.yaml: cni: unsupported 'cilium'"):
        load_spec(bad)
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_dns_targets_and_http_sections_are_accepted_and_kept() -> None:
    from podflow.lab.spec import SpecError, parse_spec

    base = {"name": "l7", "nodes": 1, "namespaces": ["a"],
            "workloads": [{"namespace": "a", "name": "w", "labels": {"app": "w"},
                           "ports": ["tcp/80"]}]}
    spec = parse_spec({**base, "traffic": [
        {"from": "a/w", "to": "dns/w-svc.a.svc.cluster.local:80",
         "http": {"method": "POST", "path": "/status/500", "expect": 500}}]})
    t = spec.to_dict()["traffic"][0]
    assert t["target"]["kind"] == "dns" and t["http"]["path"] == "/status/500"
    with pytest.raises(SpecError, match=r"traffic\[0\]\.http"):
        parse_spec({**base, "traffic": [{"from": "a/w", "to": "dns/x:80", "http": "GET"}]})
    with pytest.raises(SpecError, match=r"traffic\[0\]\.to"):
        parse_spec({**base, "traffic": [{"from": "a/w", "to": "dns/:80"}]})


def test_every_supported_cni_has_a_datapath() -> None:
    from podflow.lab.datapath import DATAPATHS, datapath_for
    from podflow.lab.spec import SUPPORTED_CNIS

    assert set(SUPPORTED_CNIS) == set(DATAPATHS)
    assert [c for c in SUPPORTED_CNIS if not datapath_for(c).services] == ["macvlan"]
    assert [c for c in SUPPORTED_CNIS if not datapath_for(c).masquerade] == ["macvlan"]


# ---- hostile specs (issue 8) ---------------------------------------------------------------

def _bomb_yaml(levels: int, width: int = 9) -> bytes:
    """A "billion laughs" in ``name``: each level a list of ``width`` aliases of the one
    below, ``width ** levels`` strings in all."""
    items = ['&a0 "lol"'] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * width)}]"
                             for i in range(1, levels + 1)]
    return f"nodes: 1\nname: [{', '.join(items)}]\n".encode()


def test_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_bytes(_bomb_yaml(6))          # 9**6 strings: a 5 MB message before
    with pytest.raises(SpecError) as err:
        load_spec(bomb)
    message = str(err.value)
    assert message.startswith(f"{bomb}: not valid YAML: aliases (*name) are not allowed")
    assert len(message) < 1000
    bomb.write_bytes(_bomb_yaml(9))          # 486 bytes, like the issue's 407: 4.5 GB before
    with pytest.raises(SpecError, match="aliases"):
        load_spec(bomb)


def test_error_messages_render_a_bounded_value() -> None:
    leaf: list[Any] = ["lol"] * 10
    for _ in range(5):                       # 10**6 strings shared by reference
        leaf = [leaf] * 10
    with pytest.raises(SpecError) as err:
        parse_spec({"name": leaf, "nodes": 1})
    assert str(err.value).startswith("name: expected a non-empty string, got list [[[")
    assert len(str(err.value)) < 300
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "x" * 100_000, "nodes": 1})
    assert len(str(err.value)) < 300


def test_spec_files_are_bounded_utf8_flat_and_untagged(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    cases = [
        (b"name: shop\nnodes: 1\nnote: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 29)"),
        (b"name: shop\nnodes: " + b"[" * 10_000 + b"\n", "nested deeper than 32 levels"),
        (b"name: shop\nnodes: !!python/object:os.system 1\n", "explicit tags"),
        (b"name: shop\nnodes: !!int 3\n", "explicit tags"),
        (b"name: shop\nnodes: 2001-13-45\n", "not valid YAML: month must be in 1..12"),
        (b"name: shop\nnodes: " + b"1" * 5000 + b"\n", "not valid YAML: Exceeds the limit"),
        (b"name: shop\nnodes: 1\n" + b"#" * (1024 * 1024), "larger than 1048576 bytes"),
        (b"name: shop\x00\n", "not valid YAML"),
    ]
    for data, message in cases:
        f.write_bytes(data)
        with pytest.raises(SpecError) as err:
            load_spec(f)
        assert str(err.value).startswith(f"{f}: ") and message in str(err.value), data[:40]
        assert "\n" not in str(err.value) and len(str(err.value)) < 1000


NEWLINES: list[tuple[Callable[[Doc], None], str]] = [
    (_set("name", "shop\n"), "name: must match"),
    (_set("namespaces", ["shop\n", "data"]), "namespaces[0]: not a valid DNS label"),
    (_set("workloads[0].name", "frontend\n"), "workloads[0].name: not a valid DNS label"),
    (_set("services[1].name", "backend\n"), "services[1].name: not a valid DNS label"),
    (_set("services[1].ports[0].name", "api\n"), "services[1].ports[0].name: not a valid port"),
    (_set("externals[0].name", "db\n"), "externals[0].name: not a valid DNS label"),
    (_set("externals[0].dns", ["db.example.com\n"]), "externals[0].dns[0]: not a valid DNS"),
    (_set("traffic[0].every", "1s\n"), 'traffic[0].every: expected a duration like "1s"'),
    (_set("workloads[0].labels", {"app\n": "frontend"}), "invalid label key 'app\\\\n'"),
    (_set("workloads[0].labels", {"app": "frontend\n"}), "invalid label value"),
]


@pytest.mark.parametrize(("mutate", "message"), NEWLINES, ids=[m for _, m in NEWLINES])
def test_a_trailing_newline_never_passes_for_a_name(mutate: Callable[[Doc], None],
                                                     message: str) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(SpecError) as err:
        parse_spec(doc)
    assert message in str(err.value)


@pytest.mark.parametrize("key", ["", "-app", "app-", "a b", "a/b/c", "x" * 64, "/app",
                                 "Example.com/app", "example.com/", ("t",), 3])
def test_label_keys_follow_kubernetes_rules(key: Any) -> None:
    doc = _doc()
    doc["workloads"][0]["labels"] = {key: "frontend", "app": "frontend"}
    with pytest.raises(SpecError, match=r"workloads\[0\]\.labels: "):
        parse_spec(doc)


@pytest.mark.parametrize("value", ["-x", "x-", "a b", "x" * 64, "a/b", "é", 1.5, None, [1]])
def test_label_values_follow_kubernetes_rules(value: Any) -> None:
    doc = _doc()
    doc["workloads"][0]["labels"] = {"app": "frontend", "tier": value}
    with pytest.raises(SpecError, match=r"workloads\[0\]\.labels\['tier'\]: "):
        parse_spec(doc)


def test_valid_labels_prefixes_empty_values_and_numbers() -> None:
    doc = _doc()
    labels = {"app": "frontend", "app.kubernetes.io/name": "web", "tier": "",
              "Version_2.x": "A.b-c_9", "x" * 63: "y" * 63, "release": 2}
    doc["workloads"][0]["labels"] = labels
    spec = parse_spec(doc)
    assert spec.workloads[0].labels == {**labels, "release": "2"}


def test_service_and_port_names_follow_kubernetes_rules() -> None:
    for path, value, message in [
        ("services[1].name", "9backend", "a Service name must start with a letter"),
        ("services[1].ports[0].name", "a" * 16, "not a valid port name"),
        ("services[1].ports[0].name", "web--api", "not a valid port name"),
        ("services[1].ports[0].name", "8080", "not a valid port name"),
    ]:
        doc = _doc()
        _set(path, value)(doc)
        with pytest.raises(SpecError, match=f"{re.escape(path)}: {message}"):
            parse_spec(doc)


def test_agent_options_and_periods_stay_serialisable() -> None:
    base = {"name": "tiny", "nodes": 1}
    for options, message in [({"x": [1]}, "agents.options.x: expected a string"),
                             ({"x": float("nan")}, "agents.options.x: expected"),
                             ({1: 2}, "option names are lowercase words"),
                             ({"a b": 1}, "option names are lowercase words")]:
        with pytest.raises(SpecError, match=re.escape(message)):
            parse_spec({**base, "agents": {"options": options}})
    ok = parse_spec({**base, "agents": {"options": {"syn_timeout": 3, "mode": "x"}}})
    assert ok.agent_options == {"syn_timeout": 3, "mode": "x"}
    doc = _doc()
    doc["traffic"][0]["every"] = "9" * 400 + "s"       # float('inf') seconds before
    with pytest.raises(SpecError, match=r"traffic\[0\]\.every: .* is above the maximum"):
        parse_spec(doc)
    doc["traffic"][0]["every"] = "1s"
    doc["traffic"][0]["http"] = {"path": "/a\x00b"}
    with pytest.raises(SpecError, match=r"traffic\[0\]\.http\.path: must be printable"):
        parse_spec(doc)
    doc["traffic"][0]["http"] = None
    doc["traffic"][0]["to"] = "dns/db.example.com:0"
    with pytest.raises(SpecError, match=r"traffic\[0\]\.to: expected dns/NAME:PORT"):
        parse_spec(doc)


# ---- LoadBalancer Services (MetalLB L2 style) ------------------------------------------------

def _lb_doc(**top: Any) -> Doc:
    """The demo spec with LoadBalancer services ``web`` (Cluster) and ``api`` (Local)."""
    doc = _doc()
    doc.update(top)
    doc["services"] += [
        {"namespace": "shop", "name": "web", "type": "LoadBalancer",
         "selector": {"app": "frontend"}, "ports": [{"name": "https", "port": 443,
                                                     "targetPort": 8080}]},
        {"namespace": "shop", "name": "api", "type": "LoadBalancer",
         "externalTrafficPolicy": "Local", "selector": {"app": "backend"},
         "ports": [{"name": "api", "port": 9000, "nodePort": 31000}]}]
    doc["traffic"].append({"from": "external/visitor", "to": "loadbalancer/shop/web:443"})
    return doc


def test_load_balancers_get_vips_node_ports_and_a_default_pool() -> None:
    spec = parse_spec(_lb_doc())
    assert spec.loadBalancerPool == "172.18.0.240/28"     # the last 16 underlay addresses
    web, api = (next(s for s in spec.services if s.name == n) for n in ("web", "api"))
    assert (web.type, web.loadBalancerIP, web.externalTrafficPolicy) == (
        "LoadBalancer", "172.18.0.240", "Cluster")
    assert (api.loadBalancerIP, api.externalTrafficPolicy) == ("172.18.0.241", "Local")
    assert web.ports[0].nodePort == 30000 and api.ports[0].nodePort == 31000
    assert next(s for s in spec.services if s.name == "backend").loadBalancerIP is None
    d = spec.to_dict()
    assert d["loadBalancerPool"] == "172.18.0.240/28"
    assert [s["loadBalancerIP"] for s in d["services"] if s["type"] == "LoadBalancer"] == [
        "172.18.0.240", "172.18.0.241"]
    t = d["traffic"][-1]["target"]
    assert t == {"kind": "loadbalancer", "namespace": "shop", "name": "web", "port": 443}
    assert spec.traffic[-1].target_kind == "loadbalancer"


def test_load_balancer_ip_and_pool_are_honoured_and_allocation_skips_them() -> None:
    doc = _lb_doc(loadBalancerPool="172.18.0.128/30")
    doc["services"][-1]["loadBalancerIP"] = "172.18.0.128"
    spec = parse_spec(doc)
    assert spec.loadBalancerPool == "172.18.0.128/30"
    assert [s.loadBalancerIP for s in spec.services if s.type == "LoadBalancer"] == [
        "172.18.0.129", "172.18.0.128"]      # asked-for first, then the lowest free one


def test_small_underlays_keep_vips_off_node_gateway_and_broadcast_addresses() -> None:
    from ipaddress import IPv4Network

    from podflow.lab.spec import default_lb_pool, lb_pool_addresses

    und = IPv4Network("172.18.0.0/28")
    assert default_lb_pool(und) == und
    assert [str(ip) for ip in lb_pool_addresses(und, und, 3)] == [
        f"172.18.0.{i}" for i in range(4, 14)]          # not .0, node1-3, .14 (gateway), .15
    spec = parse_spec(_lb_doc(underlay="172.18.0.0/28"))
    assert [s.loadBalancerIP for s in spec.services if s.type == "LoadBalancer"] == [
        "172.18.0.4", "172.18.0.5"]
    with pytest.raises(SpecError, match=r"services\[4\]: no free address left for its VIP in "
                                        r"loadBalancerPool the default pool 172\.18\.0\.0/29 "
                                        r"\(the last 8 addresses of underlay 172\.18\.0\.0/29\) "
                                        r"\(1 usable addresses for 2 LoadBalancer services\)"):
        parse_spec(_lb_doc(underlay="172.18.0.0/29", nodes=4))   # .5 is the one usable
    # without LoadBalancer services the default pool may hold nothing usable
    assert parse_spec({**_doc(), "underlay": "172.18.0.0/29"}).loadBalancerPool == \
        "172.18.0.0/29"


LB_BAD: list[tuple[dict[str, Any], str]] = [
    ({"loadBalancerPool": "10.1.0.0/28"},
     "loadBalancerPool: 10.1.0.0/28 is not inside underlay 172.18.0.0/24"),
    ({"loadBalancerPool": "172.18.0.0/28"},
     "loadBalancerPool: 172.18.0.0/28 overlaps node1's address 172.18.0.1"),
    ({"loadBalancerPool": "172.18.0.250/28"}, "loadBalancerPool: not an IPv4 network"),
    ({"loadBalancerPool": 7}, "loadBalancerPool: expected a non-empty string, got int 7"),
    ({"loadBalancerPool": "172.18.0.254/32"},
     "services[3]: no free address left for its VIP in loadBalancerPool 172.18.0.254/32 "
     "(0 usable addresses for 2 LoadBalancer services)"),
    ({"lb0": "172.18.0.7"}, "services[3].loadBalancerIP: 172.18.0.7 is not in "
                            "loadBalancerPool (the default pool 172.18.0.240/28"),
    ({"lb0": "172.18.0.254"}, "services[3].loadBalancerIP: 172.18.0.254 is a node's, the "
                              "gateway's or the underlay's network or broadcast address"),
    ({"lb0": "172.18.0.300"}, "services[3].loadBalancerIP: not an IPv4 address"),
    ({"lb0": "172.18.0.242", "lb1": "172.18.0.242"},
     "services[4].loadBalancerIP: 172.18.0.242 is already services[3]'s"),
]


@pytest.mark.parametrize(("change", "message"), LB_BAD, ids=[m for _, m in LB_BAD])
def test_load_balancer_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    change = dict(change)
    ips = [change.pop("lb0", None), change.pop("lb1", None)]
    doc = _lb_doc(**change)
    for svc, ip in zip(doc["services"][3:], ips, strict=True):
        if ip is not None:
            svc["loadBalancerIP"] = ip
    with pytest.raises(SpecError) as err:
        parse_spec(doc)
    assert message in str(err.value)


def test_macvlan_refuses_load_balancer_targets() -> None:
    doc = _doc()
    doc["cni"], doc["services"] = "macvlan", []
    doc["traffic"] = [{"from": "external/visitor", "to": "loadbalancer/shop/web:443"}]
    with pytest.raises(SpecError, match=r"traffic\[0\].to: 'loadbalancer/shop/web:443': cni "
                                        "macvlan has no ClusterIP/NodePort/LoadBalancer"):
        parse_spec(doc)


def test_agents_mode_hub_by_default_or_store() -> None:
    base = {"name": "tiny", "nodes": 1}
    assert parse_spec(base).agent_mode == "hub"
    assert parse_spec({**base, "agents": {"sources": ["conntrack"]}}).agent_mode == "hub"
    store = parse_spec({**base, "agents": {"mode": "store"}})
    assert store.agent_mode == "store" and store.to_dict()["agentMode"] == "store"
    with pytest.raises(SpecError, match=r"agents\.mode: expected one of hub, store"):
        parse_spec({**base, "agents": {"mode": "relay"}})
