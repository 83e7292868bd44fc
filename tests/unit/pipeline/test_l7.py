"""DNS and HTTP/1.x extraction."""

from __future__ import annotations

import socket
import struct

import dpkt
import pytest

from podflow.model.losses import Losses
from podflow.pipeline.l7dns import parse_dns, parse_dns_tcp, qtype_name, read_name, to_info
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
    (b"GET /a?b=c#d HTTP/1.1\nHost: e\n\n", ("GET", "/a", "HTTP/1.1", "e")),
    (b"GET /\x00\x1b[2J\xff%41 HTTP/1.0\r\nHost: x\ty\x7f\r\n",
     ("GET", "/%00%1B[2J%FF%41", "HTTP/1.0", "x%09y%7F")),
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


def test_http_lines_of_any_bytes_are_counted_not_decoded() -> None:
    losses = Losses()
    for raw in (b"GET \x00\xff HTTP/9\r\n", b"POST  / HTTP/1.1\r\n", b"PUT  HTTP/1.1",
                b"GET / HTTP/1.1\xff\r\n", b"HEAD / HTTP/1.1 x\r\n"):
        assert parse_request(raw, losses=losses) is None, raw
    for raw in (b"HTTP/1.\xff 200", b"HTTP/1.1 2x0 OK", b"HTTP/1.1", b"HTTP/1.7 200 OK"):
        assert parse_response(raw, losses) is None, raw
    assert losses.by_reason() == {"bad_http_request_line": 5, "bad_http_status_line": 4}
    assert parse_request(b"\x16\x03\x01", losses=losses) is None  # not HTTP: not a loss
    assert losses.total() == 9


def test_http_query_kept_when_asked() -> None:
    raw = b"GET /login?user=a&token=s3cret HTTP/1.1\r\n\r\n"
    r, kept = parse_request(raw), parse_request(raw, query=True)
    assert r is not None and r.url == "/login"
    assert kept is not None and kept.url == "/login?user=a&token=s3cret"


def _header(qd: int = 1, an: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 7, 0x8180, qd, an, 0, 0)


@pytest.mark.parametrize(("msg", "reason"), [
    (b"\x00" * 11, "short_dns"),
    (_header() + b"\xc0\x0c\x00\x01\x00\x01", "bad_dns_pointer"),  # to itself
    (_header() + b"\xc0\x20\x00\x01\x00\x01", "bad_dns_pointer"),  # forwards
    (_header() + b"\x01a\xc0\x0c\x00\x01\x00\x01", "bad_dns_pointer"),  # back into a loop
    (_header() + b"\x01a\xc0", "short_dns_name"),
    (_header() + b"\x05ab", "short_dns_name"),
    (_header() + b"\x01a", "short_dns_name"),
    (_header() + b"\x41" + b"a" * 65 + b"\x00\x00\x01\x00\x01", "bad_dns_label"),
    (_header() + b"\x81a\x00\x00\x01\x00\x01", "bad_dns_label"),
    (_header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01", "long_dns_name"),
    (_header() + b"\x01a\x00\x00\x01", "short_dns_question"),
    (_header(1, 1) + b"\x01a\x00\x00\x01\x00\x01\xc0\x0c\x00\x01", "short_dns_answer"),
    (_header(1, 1) + b"\x01a\x00\x00\x01\x00\x01\xc0\x0c" + struct.pack("!HHIH", 1, 1, 9, 4)
     + b"\x01", "short_dns_answer"),
    (_header(1, 1) + b"\x01a\x00\x00\x01\x00\x01\xc0\x0c" + struct.pack("!HHIH", 1, 1, 9, 3)
     + b"\x01\x02\x03", "bad_dns_rdata"),
    (_header(1, 1) + b"\x01a\x00\x00\x01\x00\x01\xc0\x0c" + struct.pack("!HHIH", 5, 1, 9, 2)
     + b"\x01b\x00", "short_dns_name"),  # a CNAME running past its rdata
    (_header(1, 1) + b"\x01a\x00\x00\x01\x00\x01\xc0\x0c" + struct.pack("!HHIH", 5, 1, 9, 4)
     + b"\x01b\x00\x00", "bad_dns_rdata"),  # a CNAME shorter than its rdata
])
def test_dns_bounds(msg: bytes, reason: str) -> None:
    losses = Losses()
    assert parse_dns(msg, losses) is None
    assert losses.by_reason() == {reason: 1}


def test_dns_names_of_any_bytes_are_printable() -> None:
    name, end = read_name(b"\x04a.\x00\xff\x03WW\\\x00", 0)
    assert (name, end) == ("a\\046\\000\\255.ww\\092", 10)
    m = parse_dns(_header() + b"\x03\x1b[H\x00\x00\x01\x00\x01")
    assert m is not None and m.query == "\\027\\091h"


def test_dns_tcp_split_message_is_counted() -> None:
    losses = Losses()
    raw = _response("a.b")
    assert parse_dns_tcp(len(raw).to_bytes(2, "big") + raw[:20], losses) is None
    assert parse_dns_tcp(b"\x00", losses) is None
    assert losses.by_reason() == {"short_dns_tcp": 2}


def test_dns_decoder_agrees_with_dpkt() -> None:
    """The hand-written decoder reads what dpkt reads (compressed names included)."""
    for name in ("www.Example.com", "a.b", "x"):
        raw = _response(name)
        d, m = dpkt.dns.DNS(raw), parse_dns(raw)
        assert m is not None and m.id == d.id and m.rcode == d.rcode
        assert m.query == d.qd[0].name.lower()
        assert m.cnames == tuple(rr.cname for rr in d.an if rr.type == dpkt.dns.DNS_CNAME)
        assert m.ttl == min(rr.ttl for rr in d.an)
    assert b"\xc0" in _response("www.example.com")  # dpkt compressed it


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
    assert (info.queries, info.rcodes) == (2, (3, 0))   # every message, for the metrics
    failed = to_info([msg("a.cluster.local", False), msg("a.cluster.local", True, 3),
                      msg("a", False), msg("a", True, 3)])
    assert failed is not None and failed.query == "a" and failed.rcode == 3
    assert (failed.queries, failed.rcodes) == (2, (3, 3))
