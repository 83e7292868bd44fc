"""The lab's cluster DNS: zone from cluster state, message handling, server and resolver.

No root: messages are packed with dpkt and fed to the handler; the server and the resolver
talk over loopback on a free port.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from pathlib import Path

import dpkt
import pytest

from podflow.lab.dns import DnsServer, QueryEvent, handle, qtype_name
from podflow.lab.dnszone import HOSTS_CONFIGMAP, Zone, ZoneCache, load_zone, parse_hosts
from podflow.lab.resolver import (
    ResolvConf,
    build_query,
    parse_response,
    resolve_name,
    search_names,
)

DATA = Path(__file__).parents[2] / "data" / "k8s"


def _hosts_cm(text: str) -> dict[str, object]:
    ns, name = HOSTS_CONFIGMAP
    return {"kind": "ConfigMap", "metadata": {"namespace": ns, "name": name},
            "data": {"hosts": text}}


def _write_state(d: Path, hosts: str = "192.168.100.10 db.example.com db\n") -> None:
    services = json.loads((DATA / "services.json").read_text())
    cms = json.loads((DATA / "configmaps.json").read_text())
    cms["items"].append(_hosts_cm(hosts))
    d.mkdir(parents=True, exist_ok=True)
    (d / "services.json").write_text(json.dumps(services))
    (d / "configmaps.json").write_text(json.dumps(cms))


@pytest.fixture
def zone(tmp_path: Path) -> Zone:
    _write_state(tmp_path)
    return load_zone(tmp_path)


def _query(name: str, qtype: int = dpkt.dns.DNS_A, msg_id: int = 4242) -> bytes:
    return bytes(dpkt.dns.DNS(id=msg_id, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)]))


def _ask(zone: Zone, name: str, qtype: int = dpkt.dns.DNS_A) -> dpkt.dns.DNS:
    wire, _ = handle(_query(name, qtype), zone)
    assert wire is not None
    return dpkt.dns.DNS(wire)


def test_zone_from_cluster_state(zone: Zone) -> None:
    services = json.loads((DATA / "services.json").read_text())["items"]
    svc = next(s for s in services if s["spec"].get("clusterIP") not in (None, "None"))
    name = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    assert zone.lookup(name, "A").ips == (svc["spec"]["clusterIP"],)
    assert zone.lookup(name.upper() + ".", "A").rcode == 0
    assert zone.lookup(name, "AAAA").ips == () and zone.lookup(name, "AAAA").rcode == 0
    assert zone.lookup("10-244-1-7.shop.pod.cluster.local", "A").ips == ("10.244.1.7",)
    assert zone.lookup("10-244-1-777.shop.pod.cluster.local", "A").rcode == 3
    assert zone.lookup("nothing.shop.svc.cluster.local", "A").rcode == 3
    assert zone.lookup(f"{svc['metadata']['namespace']}.svc.cluster.local", "A") \
        .rcode == 0  # an empty non-terminal
    assert zone.lookup("db.example.com", "A").ips == ("192.168.100.10",)
    assert zone.lookup("db", "A").ips == ("192.168.100.10",)
    assert zone.lookup("example.com", "A").ips == ()
    other = zone.lookup("www.example.org", "A")
    assert other.rcode == 3 and not other.authoritative


def test_parse_hosts() -> None:
    hosts = parse_hosts("# comment\n10.0.0.1 a b # trailing\nbogus x\n\nfd00::1 a\n10.0.0.1 A\n")
    assert hosts == {"a": ("10.0.0.1", "fd00::1"), "b": ("10.0.0.1",)}
    z = Zone({}, hosts)
    assert z.lookup("a", "AAAA").ips == ("fd00::1",) and z.lookup("a", "MX").ips == ()


def test_handle_answers_and_errors(zone: Zone) -> None:
    r = _ask(zone, "db.example.com")
    assert r.qr == 1 and r.id == 4242 and r.rcode == 0 and r.aa == 1 and r.ra == 0
    assert [socket.inet_ntoa(a.rdata) for a in r.an] == ["192.168.100.10"]
    assert r.an[0].ttl == 3600 and r.qd[0].name == "db.example.com"
    assert _ask(zone, "db.example.com", dpkt.dns.DNS_AAAA).an == []
    nx = _ask(zone, "missing.default.svc.cluster.local")
    assert nx.rcode == 3 and nx.an == [] and nx.aa == 1
    # the log of a query
    _, info = handle(_query("10-1-2-3.x.pod.cluster.local", msg_id=9), zone)
    assert info is not None and (info.id, info.qtype, info.rcode, info.ips, info.ttl) == (
        9, "A", 0, ("10.1.2.3",), 5)
    # responses are never answered; garbage gets FORMERR or nothing
    wire, _ = handle(_query("db"), zone)
    assert wire is not None and handle(wire, zone) == (None, None)
    assert handle(b"\x00\x01", zone) == (None, None)
    bad, info = handle(b"\x12\x34\x01\x00\x00\x05" + b"\x00" * 6 + b"\xff", zone)
    assert bad is not None and info is None
    assert dpkt.dns.DNS(bad).rcode == 1 and dpkt.dns.DNS(bad).id == 0x1234
    two = dpkt.dns.DNS(id=1, qd=[dpkt.dns.DNS.Q(name="a"), dpkt.dns.DNS.Q(name="b")])
    wire, _ = handle(bytes(two), zone)
    assert wire is not None and dpkt.dns.DNS(wire).rcode == 1
    notify = dpkt.dns.DNS(id=1, qd=[dpkt.dns.DNS.Q(name="a")])
    notify.opcode = 4
    wire, _ = handle(bytes(notify), zone)
    assert wire is not None and dpkt.dns.DNS(wire).rcode == 4
    assert qtype_name(28) == "AAAA" and qtype_name(99) == "TYPE99"


def test_truncation_over_udp_only() -> None:
    many = Zone({}, {"big.example.com": tuple(f"10.0.{i // 250}.{i % 250 + 1}"
                                              for i in range(60))})
    wire, info = handle(_query("big.example.com"), many)
    assert wire is not None and info is not None and info.truncated
    assert dpkt.dns.DNS(wire).tc == 1 and dpkt.dns.DNS(wire).an == []
    wire, info = handle(_query("big.example.com"), many, max_size=None)
    assert wire is not None and len(dpkt.dns.DNS(wire).an) == 60


def test_zone_cache_reloads(tmp_path: Path) -> None:
    _write_state(tmp_path)
    cache = ZoneCache(tmp_path)
    assert cache.get().lookup("db.example.com", "A").ips == ("192.168.100.10",)
    _write_state(tmp_path, hosts="192.168.100.11 db.example.com\n# bigger file now\n")
    st = (tmp_path / "configmaps.json").stat()
    os.utime(tmp_path / "configmaps.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.get().lookup("db.example.com", "A").ips == ("192.168.100.11",)
    (tmp_path / "configmaps.json").write_text("{not json")
    assert cache.get().lookup("db.example.com", "A").ips == ("192.168.100.11",)
    assert ZoneCache(tmp_path / "missing").get().lookup("db", "A").rcode == 3


def test_resolv_conf_and_search_order() -> None:
    conf = ResolvConf.parse("# k8s\nsearch shop.svc.cluster.local svc.cluster.local "
                            "cluster.local\nnameserver 10.96.0.10\nnameserver 10.96.0.11\n"
                            "options ndots:5 timeout:1\n")
    assert conf == ResolvConf(("10.96.0.10", "10.96.0.11"),
                              ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local"),
                              5)
    assert search_names("backend", conf) == [
        "backend.shop.svc.cluster.local", "backend.svc.cluster.local",
        "backend.cluster.local", "backend"]
    assert search_names("db.example.com", conf)[-1] == "db.example.com"
    assert search_names("a.b.c.d.e.f", conf)[0] == "a.b.c.d.e.f"
    assert search_names("x.", conf) == ["x"]
    assert ResolvConf.parse("").nameservers == ()


def test_build_and_parse_response(zone: Zone) -> None:
    q = build_query("db.example.com", "A", 77)
    wire, _ = handle(q, zone)
    assert wire is not None
    got = parse_response(wire, 77, "db.example.com")
    assert got is not None and got.ips == ("192.168.100.10",) and got.ttl == 3600
    assert parse_response(wire, 78, "db.example.com") is None      # wrong id
    assert parse_response(wire, 77, "other.example.com") is None   # wrong question
    assert parse_response(q, 77, "db.example.com") is None         # a query, not a response
    assert parse_response(b"junk", 77, "x") is None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        u.bind(("127.0.0.1", 0))
        port: int = u.getsockname()[1]
        t.bind(("127.0.0.1", port))
        return port


def test_server_and_resolver_over_loopback(zone: Zone) -> None:
    """UDP and TCP queries to a real server; search expansion over one UDP socket."""
    events: list[QueryEvent] = []
    accepts: list[tuple[int, str]] = []
    port = _free_port()
    conf = ResolvConf(("127.0.0.1",), ("default.svc.cluster.local", "svc.cluster.local"), 5)

    async def run() -> None:
        server = DnsServer(lambda: zone, events.append,
                           lambda p, peer, proto: accepts.append((p, proto)))
        opened = await server.start("127.0.0.1", port)
        try:
            udp = await resolve_name("db.example.com", conf, port=port)
            assert udp.error is None and udp.proto == "udp" and udp.local_port
            assert udp.asked == ["db.example.com.default.svc.cluster.local",
                                 "db.example.com.svc.cluster.local", "db.example.com"]
            assert [x.rcode for x in udp.lookups] == [3, 3, 0]
            assert udp.answer is not None and udp.answer.ips == ("192.168.100.10",)
            tcp = await resolve_name("db.", conf, tcp=True, port=port)
            assert tcp.proto == "tcp" and tcp.answer is not None and tcp.rcode == 0
            nx = await resolve_name("nothing", conf, port=port)
            assert nx.answer is None and nx.rcode == 3 and nx.error is None
            # raw TCP: two queries on one connection, length-prefixed
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in (1, 2):
                q = build_query("db", "A", i)
                writer.write(struct.pack("!H", len(q)) + q)
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                assert parse_response(await reader.readexactly(size), i, "db") is not None
            writer.close()
        finally:
            for o in opened:
                o.close()
        silent = await resolve_name("db", conf, port=port, timeout=0.2)
        assert silent.error is not None and silent.answer is None

    asyncio.run(run())
    assert {e.proto for e in events} == {"udp", "tcp"}
    assert all(e.local_port == port and e.peer[0] == "127.0.0.1" for e in events)
    assert [e.log.query for e in events if e.proto == "udp"][:3] == [
        "db.example.com.default.svc.cluster.local", "db.example.com.svc.cluster.local",
        "db.example.com"]
    assert (port, "tcp") in accepts and (port, "udp") in accepts
