"""Packets -> connections (pure): TCP flags, HTTP and DNS exchanges, failure verdicts.

:class:`PacketTracker` is fed parsed packets (:class:`~podflow.pipeline.pktparse.Pkt`, in
any order between interfaces) and produces a :class:`PacketFlow` per TCP connection and per
DNS exchange (UDP, one 5-tuple: the A and AAAA queries of one lookup share a socket and so
one record; a later lookup on the same socket after every query was answered is a new one).
Time only moves with the packets and the ``now`` given to :meth:`PacketTracker.expire`.

Client and server: the sender of a SYN (without ACK), of an HTTP request line or of a
query to port 53 is the client; the receiver of a SYN-ACK, an HTTP status line or a DNS
response is the client; otherwise the end with the higher port.

Verdicts (Hubble's names; the reason in ``drop_reason_desc`` always starts with the word):

=========================================  ========  ==============================
what was seen                              verdict   reason
=========================================  ========  ==============================
RST from the server answering a SYN        ERROR     ``refused: RST answering SYN``
ICMP port unreachable for the flow         ERROR     ``refused: ICMP port unreachable
                                                     (ICMP 3/3) from IP``
other ICMP destination unreachable, time   DROPPED   ``unreachable: host unreachable
exceeded (before the connection is up)               (ICMP 3/1) from IP``
SYN not answered within ``syn_timeout``    DROPPED   ``timed out: SYN not answered in
                                                     5s``
DNS query without response in              DROPPED   ``timed out: no DNS response in
``dns_timeout``                                      5s``
the packet logged to NFLOG (see nflog.py)  DROPPED   the log prefix
=========================================  ========  ==============================

Refused is ERROR, not DROPPED: the network delivered the SYN and the answer; the endpoint
said no. Unreachable and timed out are DROPPED: a packet was discarded on the way (a
router, a REJECT/DROP rule, a blackhole route), which is what ``--verdict DROPPED`` and
``--type drop`` are for.

The same packet seen on several interfaces of one node (pod veth, cni0, flannel.1, the
underlay with VXLAN decoded) counts once: within ``dedup_window`` seconds a packet with the
same direction, flags, sequence/ack numbers and length (UDP: the first payload bytes, i.e.
the DNS id) is a duplicate. A closed or failed connection lingers a while, so late copies
and SYN retransmissions do not open a new one.

HTTP request paths are kept without their query string and fragment (they often carry
tokens) unless :attr:`TrackerConfig.http_query`. A DNS or HTTP payload that cannot be decoded
is counted by reason in the tracker's :attr:`PacketTracker.losses` (the packet still counts
for its connection); an exchange keeps at most :data:`MAX_DNS_MESSAGES` messages.

Example::

    >>> from podflow.pcap import tcp_frame
    >>> from podflow.pipeline.pktparse import parse
    >>> t = PacketTracker()
    >>> t.feed(parse(tcp_frame("10.0.0.1", "10.0.0.2", 40000, 80, flags=0x02), 1.0))
    >>> t.feed(parse(tcp_frame("10.0.0.2", "10.0.0.1", 80, 40000, flags=0x14), 1.001))
    >>> [(f.client, f.server_port, f.verdict.value, f.reason) for f in t.take()]
    [('10.0.0.1', 80, 'ERROR', 'refused: RST answering SYN')]
"""

from __future__ import annotations

from dataclasses import dataclass

from podflow.model.flow import L7, HttpInfo, Verdict
from podflow.model.icmp import tag as icmp_tag
from podflow.model.losses import Losses
from podflow.pipeline.l7dns import DnsMessage, parse_dns, parse_dns_tcp, to_info
from podflow.pipeline.l7http import (
    HttpRequest,
    HttpResponse,
    is_request,
    is_response,
    parse_request,
    parse_response,
)
from podflow.pipeline.pktparse import ACK, ICMP, RST, SYN, TCP, UDP, Pkt, ip_str

_ICMP_NAMES = {0: "net unreachable", 1: "host unreachable", 2: "protocol unreachable",
               3: "port unreachable", 9: "net prohibited", 10: "host prohibited",
               13: "administratively prohibited"}
_ICMP6_NAMES = {0: "no route", 1: "administratively prohibited", 3: "address unreachable",
                4: "port unreachable"}

MAX_DNS_MESSAGES = 64
"""DNS messages kept per exchange (a stub resolver's search-list walk needs a dozen); more
on one socket are counted as ``dns_messages_over_limit``, so a flood cannot grow one record
without bound."""

_SYN_ACK = 0x1000
"""Not a header bit: a packet carried SYN and ACK together (the server's answer), named
``SYN-ACK`` as Hubble names it, since the other names say only which bits any packet had."""
_FLAG_NAMES = ((0x01, "FIN"), (0x02, "SYN"), (_SYN_ACK, "SYN-ACK"), (0x04, "RST"),
               (0x08, "PSH"), (0x10, "ACK"), (0x20, "URG"), (0x40, "ECE"), (0x80, "CWR"),
               (0x100, "NS"))


@dataclass(frozen=True)
class TrackerConfig:
    """Time-outs and bounds of a :class:`PacketTracker`."""

    syn_timeout: float = 5.0
    """A SYN without SYN-ACK, RST or ICMP answer after this long is ``timed out``."""
    dns_timeout: float = 5.0
    """A DNS query without response after this long is ``timed out``."""
    dns_hold: float = 0.3
    """A DNS exchange is reported once every query was answered and nothing came for this
    long (the AAAA query may follow the A answer); later copies are absorbed as long."""
    active_after: float = 10.0
    """An open connection is reported once (non-final) after this long."""
    idle_timeout: float = 300.0
    """An open connection with no packet for this long is forgotten."""
    linger: float = 2.0
    """A closed connection is kept this long to absorb late copies."""
    failed_linger: float = 130.0
    """A failed one this long, to absorb SYN retransmissions (Linux: ~127 s)."""
    dedup_window: float = 0.2
    """Copies of one packet closer than this are one packet."""
    dedup: bool = True
    """Deduplicate at all (off for a single-interface file)."""
    counters: bool = False
    """Count packets/bytes: only meaningful when every packet is seen (a pcap, no filter)."""
    max_connections: int = 200_000
    """Bound on tracked connections; the oldest tenth is evicted beyond it."""
    scan_interval: float = 0.5
    """Seconds between two time-out scans."""
    http_query: bool = False
    """Keep the query string (and fragment) of HTTP request targets; dropped by default,
    since they often carry tokens."""


@dataclass
class PktTrackerStats:
    """What the tracker did."""

    packets: int = 0
    unparsed: int = 0
    ignored: int = 0
    duplicates: int = 0
    after_close: int = 0
    reopened: int = 0
    """Connections opened by a new SYN on the tuple of an earlier one (a port used again)."""
    connections: int = 0
    reported: int = 0
    evicted: int = 0
    idle_forgotten: int = 0


@dataclass(frozen=True, slots=True)
class PacketFlow:
    """One connection or DNS exchange as the packets showed it (addresses as seen)."""

    proto: int
    """IP protocol number."""
    client: str
    """Client address as seen on the wire."""
    client_port: int
    """Client port."""
    server: str
    """Server address as seen (a service VIP before DNAT, the backend after)."""
    server_port: int
    """Server port."""
    start: float
    """First packet, Unix seconds."""
    end: float
    """Last packet."""
    flags: tuple[str, ...] = ()
    """TCP flags seen (either way), and ``SYN-ACK`` when a packet carried both."""
    state: str | None = None
    """TCP state: SYN_SENT, ESTABLISHED, FIN_WAIT, CLOSE."""
    l7: L7 | None = None
    """DNS or HTTP record."""
    verdict: Verdict = Verdict.FORWARDED
    """Failure verdict (module docstring), else FORWARDED."""
    reason: str | None = None
    """Why it failed."""
    to_server: tuple[int, int] = (0, 0)
    """(packets, bytes) client -> server, with counting on."""
    to_client: tuple[int, int] = (0, 0)
    """(packets, bytes) server -> client."""
    vni: int = -1
    """VXLAN VNI when seen encapsulated."""


class Conn:
    """Mutable state of one tracked connection (internal to the tracker)."""

    __slots__ = (
        "bc",
        "bs",
        "client",
        "cport",
        "dns",
        "dns_port",
        "done_at",
        "fin_c",
        "fin_s",
        "first",
        "flags",
        "last",
        "looks",
        "pc",
        "pending",
        "proto",
        "ps",
        "reason",
        "recent",
        "reported_active",
        "req",
        "req_ts",
        "resp",
        "resp_ts",
        "server",
        "sport",
        "syn_seq",
        "syn_ts",
        "synack",
        "verdict",
        "vni",
    )

    def __init__(self, proto: int, client: bytes, cport: int, server: bytes, sport: int,
                 ts: float, vni: int) -> None:
        """A new connection first seen at ``ts``."""
        self.proto, self.client, self.cport, self.server, self.sport = (
            proto, client, cport, server, sport)
        self.first = self.last = ts
        self.flags = 0
        self.syn_ts = 0.0
        self.syn_seq: int | None = None
        """Sequence number of the client's SYN: a SYN with another one on the same tuple
        opens a new connection (a port used again), the same one is a retransmission."""
        self.synack = self.fin_c = self.fin_s = self.reported_active = False
        self.req: HttpRequest | None = None
        self.resp: HttpResponse | None = None
        self.req_ts = self.resp_ts = 0.0
        self.dns_port = sport == 53
        self.dns: list[DnsMessage] = []
        self.pending: set[int] = set()
        self.verdict = Verdict.FORWARDED
        self.reason: str | None = None
        self.done_at: float | None = None
        self.recent: dict[tuple[object, ...], float] = {}
        self.pc = self.bc = self.ps = self.bs = 0
        self.vni = vni
        self.looks = 4
        """Payloads still worth parsing: the first ones of each side carry the HTTP request
        and status lines; 0 once both were found (DNS: always)."""

    @classmethod
    def open(cls, p: Pkt) -> Conn:
        """A connection from its first packet, deciding who is the client."""
        f = p.flags
        if p.proto == TCP and f & SYN:
            forward = not f & ACK
        elif p.proto == TCP and p.end > p.off and is_request(p.data[p.off:p.off + 8]):
            forward = True
        elif p.proto == TCP and p.end > p.off and is_response(p.data[p.off:p.off + 8]):
            forward = False
        elif p.dport == 53 or p.sport == 53:
            forward = p.dport == 53
        else:
            forward = p.sport >= p.dport
        if forward:
            return cls(p.proto, p.src, p.sport, p.dst, p.dport, p.ts, p.vni)
        return cls(p.proto, p.dst, p.dport, p.src, p.sport, p.ts, p.vni)

    @classmethod
    def for_quoted(cls, p: Pkt) -> Conn:
        """A connection known only from the packet an ICMP error quotes (sent by the client)."""
        assert p.quoted is not None
        proto, src, dst, sport, dport = p.quoted
        return cls(proto, src, sport, dst, dport, p.ts, p.vni)

    def payload(self, p: Pkt, forward: bool, losses: Losses | None = None,
                http_query: bool = False) -> None:
        """Look at a payload for HTTP or DNS (what cannot be decoded is counted in
        ``losses``; ``http_query``: keep HTTP query strings)."""
        if not self.dns_port:
            self.looks -= 1
        if self.dns_port:
            msg = (parse_dns_tcp if p.proto == TCP else parse_dns)(p.payload, losses)
            if msg is None:
                return
            if len(self.dns) < MAX_DNS_MESSAGES:
                self.dns.append(msg)
            elif losses is not None:
                losses.count("dns_messages_over_limit")
            if msg.response:
                self.pending.discard(msg.id)
                self.resp_ts = self.resp_ts or p.ts
            else:
                self.pending.add(msg.id)
                self.req_ts = self.req_ts or p.ts
        elif forward and self.req is None:
            self.req = parse_request(p.payload, http_query, losses)
            if self.req is not None:
                self.req_ts = p.ts
        elif not forward and self.resp is None:
            self.resp = parse_response(p.payload, losses)
            if self.resp is not None:
                self.resp_ts = p.ts
        if self.req is not None and self.resp is not None:
            self.looks = 0

    def fail(self, verdict: Verdict, reason: str) -> None:
        """Record a failure (the first one wins)."""
        if self.reason is None:
            self.verdict, self.reason = verdict, reason

    def snapshot(self) -> PacketFlow:
        """The current state as an immutable record."""
        l7 = None
        lat = int((self.resp_ts - self.req_ts) * 1e9) if self.req_ts and self.resp_ts else None
        if self.dns:
            l7 = L7(dns=to_info(self.dns), latency_ns=lat)
        elif self.req is not None or self.resp is not None:
            r, s = self.req, self.resp
            http = HttpInfo(method=r.method if r else None, url=r.url if r else None,
                            host=r.host if r else None, code=s.code if s else None,
                            protocol=(r.protocol if r else s.protocol if s else "HTTP/1.1"))
            l7 = L7(http=http, latency_ns=lat if lat is not None and lat >= 0 else None)
        state = None
        if self.proto == TCP:
            state = ("CLOSE" if self.flags & RST or (self.fin_c and self.fin_s) else
                     "FIN_WAIT" if self.fin_c or self.fin_s else
                     "ESTABLISHED" if self.synack or self.req or self.resp else
                     "SYN_SENT" if self.syn_ts else None)
        return PacketFlow(
            self.proto, ip_str(self.client), self.cport, ip_str(self.server), self.sport,
            self.first, self.last,
            tuple(n for bit, n in _FLAG_NAMES if self.flags & bit), state, l7, self.verdict,
            self.reason, (self.pc, self.bc), (self.ps, self.bs), self.vni)


class PacketTracker:
    """See the module docstring."""

    def __init__(self, cfg: TrackerConfig | None = None, losses: Losses | None = None) -> None:
        """An empty tracker with ``cfg`` (defaults: live capture settings); payloads it
        cannot decode (DNS, HTTP) are counted in ``losses`` (its own if not given)."""
        self.cfg = cfg or TrackerConfig()
        self.stats = PktTrackerStats()
        self.losses = Losses() if losses is None else losses
        """Payloads skipped as undecodable, by reason."""
        self._conns: dict[tuple[int, bytes, int, bytes, int], tuple[Conn, bool]] = {}
        self._out: list[tuple[PacketFlow, bool]] = []
        self._last_scan = 0.0

    def __len__(self) -> int:
        """Connections tracked (open or lingering)."""
        return len(self._conns) // 2

    # -- feeding -------------------------------------------------------------------------
    def feed(self, p: Pkt | None) -> None:
        """One packet (None, for an unparsable one, is counted and skipped)."""
        if p is None:
            self.stats.unparsed += 1
            return
        ts, src, dst, proto, sport, dport, f, seq, ack, length, data, off, end, _v, q = p
        self.stats.packets += 1
        hit = self._conns.get((proto, src, sport, dst, dport))
        if hit is None:
            if q is not None:
                self._icmp(p)
                return
            if proto != TCP and proto != UDP:
                self.stats.ignored += 1
                return
            c, fwd = self._new(p), True
        else:
            c, fwd = hit
            if proto == TCP and fwd and f & SYN and not f & ACK and seq != c.syn_seq:
                c = self._reopen(c, p)
        if self.cfg.dedup and (f & 7 or c.looks or self.cfg.counters):
            fp = (fwd, f, seq, ack, end - off) if proto == TCP else (
                fwd, data[off:off + 4], end - off)
            seen = c.recent.get(fp)
            if seen is not None and -self.cfg.dedup_window < ts - seen < self.cfg.dedup_window:
                self.stats.duplicates += 1
                return
            if len(c.recent) > 32:
                c.recent.clear()
            c.recent[fp] = ts
        if self.cfg.counters:
            if fwd:
                c.pc += 1
                c.bc += length
            else:
                c.ps += 1
                c.bs += length
        if c.done_at is not None:
            self.stats.after_close += 1
            return
        if ts > c.last:
            c.last = ts
        if proto == TCP:
            c.flags |= f | (_SYN_ACK if f & (SYN | ACK) == SYN | ACK else 0)
            if f & 7:
                self._tcp(c, p, fwd, f)
        if c.looks and end > off:
            c.payload(p, fwd, self.losses, self.cfg.http_query)

    def drop(self, p: Pkt, reason: str) -> None:
        """A packet that a netfilter rule logged (NFLOG) and dropped: a DROPPED flow."""
        if p.quoted is not None or p.proto not in (TCP, UDP):
            self.stats.ignored += 1
            return
        hit = self._conns.get((p.proto, p.src, p.sport, p.dst, p.dport))
        c = self._new(p) if hit is None else hit[0]
        if c.done_at is None:
            c.fail(Verdict.DROPPED, reason)
            self._finish(c, p.ts, linger=self.cfg.failed_linger)

    def _new(self, p: Pkt) -> Conn:
        c = Conn.open(p)
        self._index(c)
        self.stats.connections += 1
        if len(self._conns) > 2 * self.cfg.max_connections:
            self._evict()
        return c

    def _reopen(self, old: Conn, p: Pkt) -> Conn:
        """A new SYN on ``old``'s tuple: the client used the port again. ``old`` ends (if a
        lost FIN left it open) and is forgotten; the new connection starts with ``p``."""
        if old.done_at is None:
            self._finish(old, old.last)
        self._forget(old)
        self.stats.reopened += 1
        return self._new(p)

    def _index(self, c: Conn) -> None:
        """Find ``c`` by its tuple both ways. A packet to itself (same address and port at
        both ends) has one key: it is the forward one, so the connection still expires."""
        self._conns[(c.proto, c.server, c.sport, c.client, c.cport)] = (c, False)
        self._conns[(c.proto, c.client, c.cport, c.server, c.sport)] = (c, True)

    def _tcp(self, c: Conn, p: Pkt, fwd: bool, f: int) -> None:
        if f & SYN:
            if not f & ACK and fwd:
                c.syn_ts = c.syn_ts or p.ts
                if c.syn_seq is None:
                    c.syn_seq = p.seq
            elif f & ACK and not fwd:
                c.synack = True
        if f & RST:
            if not fwd and c.syn_ts and not c.synack:
                c.fail(Verdict.ERROR, "refused: RST answering SYN")
                self._finish(c, p.ts, linger=self.cfg.linger)
            else:
                self._finish(c, p.ts)
        elif f & 1:
            if fwd:
                c.fin_c = True
            else:
                c.fin_s = True
            if c.fin_c and c.fin_s:
                self._finish(c, p.ts)

    def _icmp(self, p: Pkt) -> None:
        assert p.quoted is not None
        proto, qsrc, qdst, qsport, qdport = p.quoted
        hit = self._conns.get((proto, qsrc, qsport, qdst, qdport))
        if hit is None:
            if proto not in (TCP, UDP):
                self.stats.ignored += 1
                return
            c = Conn.for_quoted(p)
            self._index(c)
            self.stats.connections += 1
        else:
            c = hit[0]
        if c.done_at is not None or (proto == TCP and c.synack):
            return  # late, or an established connection's ICMP (e.g. PMTU): not a failure
        t, code = p.sport, p.dport
        names = _ICMP_NAMES if p.proto == ICMP else _ICMP6_NAMES
        port_unreach = code == (3 if p.proto == ICMP else 4) and t in (3, 1)
        icmp = icmp_tag(p.proto != ICMP, t, code)
        if port_unreach:
            c.fail(Verdict.ERROR, f"refused: ICMP port unreachable {icmp} from {ip_str(p.src)}")
        else:
            what = names.get(code, f"code {code}") if t in (3, 1) else "time exceeded"
            c.fail(Verdict.DROPPED, f"unreachable: {what} {icmp} from {ip_str(p.src)}")
        self._finish(c, p.ts, linger=self.cfg.failed_linger)

    # -- reporting -----------------------------------------------------------------------
    def _finish(self, c: Conn, ts: float, linger: float | None = None) -> None:
        c.last = max(c.last, ts)
        c.done_at = ts + (self.cfg.linger if linger is None else linger)
        self._out.append((c.snapshot(), True))
        self.stats.reported += 1

    def expire(self, now: float) -> None:
        """Time-outs, active reports and forgetting lingering connections, as of ``now``.

        Scans at most once per ``scan_interval`` seconds of ``now``.
        """
        if now - self._last_scan < self.cfg.scan_interval:
            return
        self._last_scan = now
        cfg = self.cfg
        gone: list[Conn] = []
        for c, fwd in self._conns.values():
            if not fwd:
                continue
            if c.done_at is not None:
                if now >= c.done_at:
                    gone.append(c)
            elif c.proto == TCP and c.syn_ts and not c.synack and \
                    now - c.syn_ts >= cfg.syn_timeout:
                c.fail(Verdict.DROPPED, f"timed out: SYN not answered in {cfg.syn_timeout:g}s")
                self._finish(c, now, linger=cfg.failed_linger)
            elif c.dns_port and c.pending and now - c.last >= cfg.dns_timeout:
                c.fail(Verdict.DROPPED, f"timed out: no DNS response in {cfg.dns_timeout:g}s")
                self._finish(c, now, linger=cfg.failed_linger)
            elif c.dns_port and c.resp_ts and not c.pending and now - c.last >= cfg.dns_hold:
                self._finish(c, c.last, linger=cfg.dns_hold)
            elif now - c.last >= cfg.idle_timeout:
                gone.append(c)
                self.stats.idle_forgotten += 1
            elif not c.reported_active and now - c.first >= cfg.active_after:
                c.reported_active = True
                self._out.append((c.snapshot(), False))
        for c in gone:
            self._forget(c)

    def _forget(self, c: Conn) -> None:
        self._conns.pop((c.proto, c.client, c.cport, c.server, c.sport), None)
        self._conns.pop((c.proto, c.server, c.sport, c.client, c.cport), None)

    def _evict(self) -> None:
        """Over the bound: drop the oldest tenth (reported if open, as non-final)."""
        victims = []
        for c, fwd in self._conns.values():
            if fwd:
                victims.append(c)
            if len(victims) >= max(1, self.cfg.max_connections // 10):
                break
        for c in victims:
            if c.done_at is None:
                self._out.append((c.snapshot(), False))
            self._forget(c)
            self.stats.evicted += 1

    def take(self) -> list[PacketFlow]:
        """The flows ready since the last call (final and active alike)."""
        return [f for f, _ in self.take_reports()]

    def take_reports(self) -> list[tuple[PacketFlow, bool]]:
        """Like :meth:`take`, with whether each is final."""
        out, self._out = self._out, []
        return out

    def flush(self) -> list[tuple[PacketFlow, bool]]:
        """Everything still open as non-final reports (agent stop / end of a file)."""
        out = self.take_reports()
        for c, fwd in self._conns.values():
            if fwd and c.done_at is None:
                out.append((c.snapshot(), False))
        return out
