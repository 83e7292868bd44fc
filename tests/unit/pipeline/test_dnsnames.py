"""DnsNameCache: externals named by what the client resolved, within the TTL."""

from __future__ import annotations

from podflow.model.flow import L7, DnsInfo, Endpoint, EndpointKind, Flow, Protocol
from podflow.pipeline.dnsnames import DnsNameCache

POD = Endpoint("10.244.0.5", 41000, EndpointKind.POD)
OTHER = Endpoint("10.244.0.9", 41000, EndpointKind.POD)
DNS_SVC = Endpoint("10.96.0.10", 53, EndpointKind.SERVICE)


def dns_flow(at: float, ips: tuple[str, ...], rcode: int = 0, ttl: int = 60) -> Flow:
    return Flow(at, POD, DNS_SVC, Protocol.UDP,
                l7=L7(dns=DnsInfo("db.example.com", ("A",), rcode, ips, ttl, ("db.cdn",))))


def to(ip: str, at: float, src: Endpoint = POD, name: str | None = None) -> Flow:
    return Flow(at, src, Endpoint(ip, 5432, EndpointKind.EXTERNAL, name=name), Protocol.TCP)


def test_names_external_destination_for_that_client() -> None:
    c = DnsNameCache(min_ttl=10)
    assert c.observe(dns_flow(100.0, ("192.0.2.10", "192.0.2.11"))) == 2
    assert c.apply(to("192.0.2.11", 101.0)).destination.name == "db.example.com"
    assert c.apply(to("192.0.2.10", 159.0)).destination.name == "db.example.com"
    assert c.apply(to("192.0.2.10", 161.0)).destination.name is None  # TTL over
    assert c.apply(to("192.0.2.10", 101.0, src=OTHER)).destination.name is None
    assert DnsNameCache(any_client=True).apply(to("192.0.2.10", 1.0)).destination.name is None
    shared = DnsNameCache(any_client=True)
    shared.observe(dns_flow(100.0, ("192.0.2.10",)))
    assert shared.apply(to("192.0.2.10", 101.0, src=OTHER)).destination.name == "db.example.com"
    res = c.lookup(POD.ip, "192.0.2.10", 100.0)
    assert res is not None and res.names == ("db.example.com", "db.cdn")
    assert c.named == 2 and c.learnt == 2


def test_keeps_configured_names_pods_and_failures() -> None:
    c = DnsNameCache()
    c.observe(dns_flow(100.0, ("192.0.2.10",)))
    assert c.observe(dns_flow(100.0, ("192.0.2.12",), rcode=3)) == 0
    assert c.observe(to("192.0.2.10", 100.0)) == 0
    named = to("192.0.2.10", 101.0, name="db")
    assert c.apply(named) is named
    f = Flow(101.0, POD, Endpoint("192.0.2.10", 1, EndpointKind.POD), Protocol.TCP)
    assert c.apply(f) is f
    assert c.apply(to("192.0.2.12", 101.0)).destination.name is None


def test_reply_source_named_and_bound() -> None:
    c = DnsNameCache(max_entries=2)
    c.observe(dns_flow(100.0, ("192.0.2.10",)))
    reply = Flow(101.0, Endpoint("192.0.2.10", 5432, EndpointKind.EXTERNAL), POD, Protocol.TCP,
                 is_reply=True)
    assert c.apply(reply).source.name == "db.example.com"
    c.observe(dns_flow(102.0, ("192.0.2.20", "192.0.2.21")))
    assert len(c) == 2 and c.lookup(POD.ip, "192.0.2.10", 102.0) is None
