"""PacketTracker: one flow per connection / DNS exchange, L7 fields, verdicts, dedup."""

from __future__ import annotations

from pathlib import Path

import dpkt

from podflow.model.flow import Verdict
from podflow.pcap import icmp_error_frame, read_pcap_file, tcp_frame, udp_frame, vxlan_frame
from podflow.pipeline.pktparse import ACK, FIN, PSH, RST, SYN, parse
from podflow.pipeline.pkttrack import MAX_DNS_MESSAGES, PacketFlow, PacketTracker, TrackerConfig

PCAPS = Path(__file__).parents[2] / "data" / "pcap"
C, S = "10.244.0.5", "10.244.1.7"


def feed(t: PacketTracker, frames: list[tuple[float, bytes]]) -> None:
    for ts, f in frames:
        t.feed(parse(f, ts))


def http_conn(t0: float = 1.0) -> list[tuple[float, bytes]]:
    return [(t0, tcp_frame(C, S, 41000, 80, SYN, 100)),
            (t0 + .001, tcp_frame(S, C, 80, 41000, SYN | ACK, 500, 101)),
            (t0 + .002, tcp_frame(C, S, 41000, 80, PSH | ACK, 101, 501,
                                  b"POST /api?q=1 HTTP/1.1\r\nHost: shop\r\n\r\n")),
            (t0 + .012, tcp_frame(S, C, 80, 41000, PSH | ACK, 501, 140,
                                  b"HTTP/1.1 503 Service Unavailable\r\n\r\n")),
            (t0 + .013, tcp_frame(C, S, 41000, 80, FIN | ACK, 140, 540)),
            (t0 + .014, tcp_frame(S, C, 80, 41000, FIN | ACK, 540, 141))]


def test_http_connection() -> None:
    t = PacketTracker()
    feed(t, http_conn())
    [f] = t.take()
    assert (f.client, f.client_port, f.server, f.server_port) == (C, 41000, S, 80)
    assert f.l7 is not None and f.l7.http is not None
    assert (f.l7.http.method, f.l7.http.url, f.l7.http.host, f.l7.http.code) == (
        "POST", "/api", "shop", 503)  # the query string is dropped by default
    assert f.l7.latency_ns == 10_000_000
    assert set(f.flags) == {"SYN", "SYN-ACK", "ACK", "PSH", "FIN"} and f.state == "CLOSE"
    assert f.verdict is Verdict.FORWARDED


def test_http_query_kept_only_when_asked() -> None:
    t = PacketTracker(TrackerConfig(http_query=True))
    feed(t, http_conn())
    [f] = t.take()
    assert f.l7 is not None and f.l7.http is not None and f.l7.http.url == "/api?q=1"


def test_duplicates_across_interfaces_count_once() -> None:
    t = PacketTracker(TrackerConfig(counters=True))
    frames = http_conn()
    doubled = [x for pair in zip(frames, frames, strict=True) for x in pair]
    doubled += [(ts, vxlan_frame("172.18.0.1", "172.18.0.2", f)) for ts, f in frames]
    feed(t, doubled)
    [f] = t.take()
    assert f.to_server[0] == 3 and f.to_client[0] == 3
    assert t.stats.duplicates == 12


def test_refused_timed_out_unreachable() -> None:
    t = PacketTracker(TrackerConfig(syn_timeout=3))
    syn = tcp_frame(C, S, 41001, 9, SYN)
    feed(t, [(1.0, syn), (1.001, tcp_frame(S, C, 9, 41001, RST | ACK)),
             (1.0, tcp_frame(C, S, 41002, 82, SYN)), (2.0, tcp_frame(C, S, 41002, 82, SYN)),
             (1.0, tcp_frame(C, "10.98.0.5", 41003, 80, SYN)),
             (1.01, icmp_error_frame("10.0.0.1", C, tcp_frame(C, "10.98.0.5", 41003, 80, SYN),
                                     3, 1)),
             (1.02, icmp_error_frame(S, C, udp_frame(C, S, 41004, 5000, b"x"), 3, 3))])
    t.expire(3.5)
    assert t.take() and not t.take()  # taken once
    t2 = PacketTracker(TrackerConfig(syn_timeout=3))
    feed(t2, [(1.0, syn), (1.001, tcp_frame(S, C, 9, 41001, RST | ACK)),
              (1.0, tcp_frame(C, S, 41002, 82, SYN)), (2.0, tcp_frame(C, S, 41002, 82, SYN)),
              (1.01, icmp_error_frame("10.0.0.1", C, tcp_frame(C, "10.98.0.5", 41003, 80, SYN),
                                      3, 1)),
              (1.02, icmp_error_frame(S, C, udp_frame(C, S, 41004, 5000, b"x"), 3, 3))])
    t2.expire(2.9)
    by_port = {f.server_port: f for f in t2.take()}
    assert 82 not in by_port
    assert (by_port[9].verdict, by_port[9].reason) == (Verdict.ERROR,
                                                       "refused: RST answering SYN")
    assert by_port[80].verdict is Verdict.DROPPED and by_port[80].server == "10.98.0.5"
    assert by_port[80].reason == "unreachable: host unreachable (ICMP 3/1) from 10.0.0.1"
    assert by_port[5000].verdict is Verdict.ERROR
    assert by_port[5000].reason == f"refused: ICMP port unreachable (ICMP 3/3) from {S}"
    t2.expire(4.1)
    [late] = t2.take()
    assert (late.server_port, late.verdict) == (82, Verdict.DROPPED)
    assert late.reason == "timed out: SYN not answered in 3s"
    feed(t2, [(8.0, tcp_frame(C, S, 41002, 82, SYN))])  # retransmission: absorbed
    t2.expire(20.0)
    assert t2.take() == []


def dns(qid: int, name: str, qtype: int, answer: str | None = None, rcode: int = 0) -> bytes:
    m = dpkt.dns.DNS(id=qid, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)])
    if answer is not None or rcode:
        m.qr, m.rcode = 1, rcode
        if answer:
            m.an = [dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, ttl=20,
                                    rdata=bytes(int(x) for x in answer.split(".")))]
    return bytes(m)


def test_dns_exchange_a_and_aaaa_one_record() -> None:
    t = PacketTracker()
    q = [(1.0, udp_frame(C, "10.96.0.10", 5000, 53, dns(1, "db.ext", dpkt.dns.DNS_A))),
         (1.002, udp_frame("10.96.0.10", C, 53, 5000,
                           dns(1, "db.ext", dpkt.dns.DNS_A, "192.0.2.1"))),
         (1.003, udp_frame(C, "10.96.0.10", 5000, 53, dns(2, "db.ext", dpkt.dns.DNS_AAAA))),
         (1.004, udp_frame("10.96.0.10", C, 53, 5000, dns(2, "db.ext", dpkt.dns.DNS_AAAA, "")))]
    feed(t, q)
    t.expire(1.1)
    assert t.take() == []  # held: another query could follow
    t.expire(2.0)
    [f] = t.take()
    assert f.l7 is not None and f.l7.dns is not None
    d = f.l7.dns
    assert (d.query, d.qtypes, d.rcode, d.ips, d.ttl) == ("db.ext", ("A", "AAAA"), 0,
                                                           ("192.0.2.1",), 20)
    assert f.l7.latency_ns == 2_000_000


def test_dns_without_answer_times_out() -> None:
    t = PacketTracker(TrackerConfig(dns_timeout=2))
    feed(t, [(1.0, udp_frame(C, "10.96.0.10", 5001, 53, dns(3, "x", dpkt.dns.DNS_A)))])
    t.expire(3.5)
    [f] = t.take()
    assert f.verdict is Verdict.DROPPED and f.l7 is not None and f.l7.dns is not None
    assert f.l7.dns.rcode is None and (f.reason or "").startswith("timed out")


def test_nflog_drop_and_retransmissions() -> None:
    t = PacketTracker()
    p = parse(tcp_frame(C, S, 41005, 81, SYN), 1.0)
    assert p is not None
    t.drop(p, "policy deny")
    t.drop(p._replace(ts=2.0), "policy deny")
    feed(t, [(1.0, tcp_frame(C, S, 41005, 81, SYN))])
    [f] = t.take()
    assert (f.verdict, f.reason, f.server_port) == (Verdict.DROPPED, "policy deny", 81)


def test_active_report_flush_and_bound() -> None:
    t = PacketTracker(TrackerConfig(active_after=5, max_connections=10))
    feed(t, http_conn()[:3])
    t.expire(7.0)
    reports = t.take_reports()
    assert [(r.server_port, final) for r, final in reports] == [(80, False)]
    for k in range(30):
        feed(t, [(8.0, tcp_frame(C, S, 42000 + k, 443, SYN))])
    assert len(t) <= 11 and t.stats.evicted > 0
    assert all(not final for _, final in t.flush())


def test_golden_pcaps() -> None:
    got: dict[str, list[PacketFlow]] = {}
    for name in ("dns", "http", "failures", "vxlan"):
        t = PacketTracker(TrackerConfig(syn_timeout=1.5))
        last = 0.0
        for ts, data in read_pcap_file(PCAPS / f"{name}.pcap"):
            t.feed(parse(data, ts))
            last = ts
        t.expire(last + 10)
        got[name] = [f for f, _ in t.flush()]
    [d] = got["dns"]
    assert d.l7 is not None and d.l7.dns is not None and d.l7.dns.ips == ("192.0.2.10",)
    [h] = got["http"]
    assert h.l7 is not None and h.l7.http is not None and h.l7.http.code == 404
    verdicts = {f.server_port: (f.verdict, (f.reason or "").split(":")[0])
                for f in got["failures"]}
    assert verdicts == {9: (Verdict.ERROR, "refused"), 82: (Verdict.DROPPED, "timed out"),
                        80: (Verdict.DROPPED, "unreachable")}
    [v] = got["vxlan"]
    assert (v.client, v.server, v.vni) == ("10.77.0.1", "10.77.0.2", 42)


def test_packets_to_themselves_expire() -> None:
    """A datagram whose two ends are the same address and port has one tuple key; it used to
    be stored as the reverse direction only, so it never expired and could not be evicted:
    spoofed ones grew the table without bound."""
    t = PacketTracker(TrackerConfig(idle_timeout=10, max_connections=10))
    for k in range(50):
        feed(t, [(1.0, udp_frame(C, C, 5000 + k, 5000 + k, b"x"))])
    assert len(t._conns) <= 2 * 10 + 1
    t.expire(100.0)
    assert len(t) == 0 and t._conns == {}


def test_dns_messages_per_exchange_are_bounded() -> None:
    t = PacketTracker()
    for k in range(200):
        feed(t, [(1.0 + k / 1000, udp_frame(C, "10.96.0.10", 5002, 53,
                                            dns(k, "x", dpkt.dns.DNS_A)))])
    [f] = [f for f, _ in t.flush()]
    assert t.losses.by_reason() == {"dns_messages_over_limit": 200 - MAX_DNS_MESSAGES}
    assert f.l7 is not None and f.l7.dns is not None and f.l7.dns.query == "x"


def test_a_port_used_again_is_a_new_connection_and_a_retransmitted_syn_is_not() -> None:
    """A client reusing its port on the same tuple within the linger: two connections."""
    t = PacketTracker()
    first = http_conn(1.0)
    again = [(ts, tcp_frame(C, S, 41000, 80, SYN, 9000)) for ts in (1.5, 1.6)] + [
        (1.7, tcp_frame(S, C, 80, 41000, SYN | ACK, 7000, 9001))]
    feed(t, first + again)
    flows = t.take()
    assert [f.state for f in flows] == ["CLOSE"] and t.stats.reopened == 1
    t.expire(12.0)  # the new one is open: reported once it is old enough
    [f] = t.take()
    assert f.client_port == 41000 and f.state != "CLOSE" and f.start > 1.4
    assert t.stats.connections == 2


def test_a_new_syn_ends_a_connection_whose_close_was_not_seen() -> None:
    t = PacketTracker()
    feed(t, [*http_conn(1.0)[:4], (3.0, tcp_frame(C, S, 41000, 80, SYN, 5555))])
    [f] = t.take()  # the FINs were never captured: the new SYN tells it ended
    assert f.end < 2.0 and t.stats.reopened == 1 and len(t) == 1
