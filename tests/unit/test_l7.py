"""DNS and HTTP/1.x extraction."""

from __future__ import annotations

import socket

import dpkt
import pytest

from podflow.pipeline.l7dns import parse_dns, parse_dns_tcp, qtype_name, to_info
from podflow.pipeline.l7http import parse_request, parse_response


def _response(name: str) -> bytes:
    m = dpkt.dns.DNS(id=9, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)])
    m.qr = 1
    m.an = [dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_CNAME, ttl=300, cname="edge.cdn.net"),
            dpkt.dns.DNS.RR(name="edge.cdn.net", type=dpkt.dns.DNS_A, ttl=20,
                            rdata=socket.inet_aton("192.0.2.7")),
            dpkt.dns.DNS.RR(name="edge.cdn.net", type=dpkt.dns.DNS_AAAA, ttl=40,
                            rdata=socket.inet_pton(socket.AF_INET6, "2001:db8::7"))]
    return bytes(m)


def test_dns_response_with_cname() -> None:
    m = parse_dns(_response("WWW.Example.com"))
    assert m is not None
    assert (m.id, m.response, m.query, m.qtypes, m.rcode) == (9, True, "www.example.com",
                                                              ("A",), 0)
    assert m.ips == ("192.0.2.7", "2001:db8::7") and m.cnames == ("edge.cdn.net",)
    assert m.ttl == 20


def test_dns_tcp_and_garbage() -> None:
    raw = _response("a.b")
    assert parse_dns_tcp(len(raw).to_bytes(2, "big") + raw) == parse_dns(raw)
    assert parse_dns_tcp(b"\x00\x50" + raw[:10]) is None
    assert parse_dns(b"\x01\x02") is None
    assert qtype_name(28) == "AAAA" and qtype_name(99) == "TYPE99"


def test_to_info_merges_a_and_aaaa() -> None:
    nx = dpkt.dns.DNS(id=2, qd=[dpkt.dns.DNS.Q(name="a.b", type=dpkt.dns.DNS_AAAA)])
    nx.qr, nx.rcode = 1, 3
    msgs = [parse_dns(bytes(nx)), parse_dns(_response("a.b"))]
    info = to_info(m for m in msgs if m is not None)
    assert info is not None
    assert (info.query, info.qtypes, info.rcode, info.ttl) == ("a.b", ("AAAA", "A"), 0, 20)
    assert to_info([]) is None


@pytest.mark.parametrize(("raw", "want"), [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", ("GET", "/", "HTTP/1.1", "a")),
    (b"DELETE /x HTTP/1.0\r\nhost:  b:8080 \r\nX: y", ("DELETE", "/x", "HTTP/1.0", "b:8080")),
    (b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nHost: no", ("POST", "/p", "HTTP/1.1", None)),
])
def test_http_requests(raw: bytes, want: tuple[str, str, str, str | None]) -> None:
    r = parse_request(raw)
    assert r is not None and (r.method, r.url, r.protocol, r.host) == want


def test_http_not_requests_and_responses() -> None:
    assert parse_request(b"GETX / HTTP/1.1\r\n") is None
    assert parse_request(b"GET / SPDY/3\r\n") is None
    assert parse_request(b"\x16\x03\x01") is None
    r = parse_response(b"HTTP/1.1 200 OK\r\nServer: x\r\n")
    assert r is not None and (r.protocol, r.code) == ("HTTP/1.1", 200)
    assert parse_response(b"HTTP/1.1 2000 OK\r\n") is None
    assert parse_response(b"HTTP/2 200") is None


def test_search_list_walk_is_named_by_the_name_that_resolved() -> None:
    from podflow.pipeline.l7dns import DnsMessage, to_info

    def msg(q: str, response: bool, rcode: int = 0, ips: tuple[str, ...] = ()) -> DnsMessage:
        return DnsMessage(id=1, response=response, query=q, qtypes=("A",), rcode=rcode,
                          ips=ips)

    walk = [msg("db.example.com.app.svc.cluster.local", False),
            msg("db.example.com.app.svc.cluster.local", True, 3),
            msg("db.example.com", False), msg("db.example.com", True, 0, ("192.168.100.10",))]
    info = to_info(walk)
    assert info is not None and info.query == "db.example.com" and info.rcode == 0
    assert info.ips == ("192.168.100.10",)
    failed = to_info([msg("a.cluster.local", False), msg("a.cluster.local", True, 3),
                      msg("a", False), msg("a", True, 3)])
    assert failed is not None and failed.query == "a" and failed.rcode == 3
