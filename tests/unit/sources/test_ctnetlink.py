"""The ctnetlink decoder against golden recordings (tests/data/conntrack) and crafted input."""

from __future__ import annotations

import json
import random
import re
import socket
import struct

import pytest

from podflow.model.conntrack import CtEntry, CtEventType, CtStatus
from podflow.sources import ctnetlink as ct
from podflow.sources import netlink as nl
from tests.conftest import DATA

GOLD = DATA / "conntrack"
FRAME = struct.Struct("<dI")


def frames(name: str) -> list[tuple[float, bytes]]:
    """Buffers of a golden .bin file (framing described in tests/data/conntrack/README.md)."""
    data, off, out = (GOLD / name).read_bytes(), 0, []
    while off < len(data):
        t, n = FRAME.unpack_from(data, off)
        out.append((t, data[off + 12 : off + 12 + n]))
        off += 12 + n
    return out


def decode(name: str, dump: bool) -> list[CtEntry]:
    out: list[CtEntry] = []
    for t, buf in frames(name):
        res = ct.parse(buf, t, dump=dump)
        assert res.malformed == 0 and res.errors == [] and not res.overrun
        out += res.entries
    return out


def conntrack_text(line: str) -> dict[str, object]:
    """The fields of one ``conntrack -o extended,id`` line (what we compare against)."""
    kv = re.findall(r"(\w+)=(\S+)", line)
    firsts: dict[str, str] = {}
    seconds: dict[str, str] = {}
    for k, v in kv[:-1]:  # the last id= is the conntrack id
        (seconds if k in firsts and k not in seconds and "src" in firsts else firsts)[k] = v
    words = line.split()
    state = next((w for w in words if w in ct.TCP_STATES), None)
    ev = re.search(r"\[(NEW|UPDATE|DESTROY)\]", line)
    return {"event": ev.group(1) if ev else "DUMP", "id": int(kv[-1][1]), "first": firsts,
            "second": seconds, "state": state, "assured": "[ASSURED]" in line}


def check_against_text(e: CtEntry, ref: dict[str, object]) -> None:
    first, second = ref["first"], ref["second"]
    assert isinstance(first, dict) and isinstance(second, dict)
    assert e.id == ref["id"] and e.event.name == ref["event"]
    assert (e.orig.src, e.orig.dst) == (first["src"], first["dst"])
    assert (e.reply.src, e.reply.dst) == (second["src"], second["dst"])
    if "sport" in first:
        assert (e.orig.sport, e.orig.dport) == (int(first["sport"]), int(first["dport"]))
        assert (e.reply.sport, e.reply.dport) == (int(second["sport"]), int(second["dport"]))
    else:
        assert e.orig.sport is None and e.orig.dport is None
    if "packets" in first:
        assert (e.orig_packets, e.orig_bytes) == (int(first["packets"]), int(first["bytes"]))
        assert (e.reply_packets, e.reply_bytes) == (int(second["packets"]),
                                                    int(second["bytes"]))
    else:
        assert e.orig_packets is None
    assert e.tcp_state == ref["state"]
    assert bool(e.status & CtStatus.ASSURED) == ref["assured"]


def test_dump_matches_conntrack_L() -> None:
    entries = decode("dump.bin", dump=True)
    refs = {r["id"]: r for r in map(conntrack_text, (GOLD / "dump.txt").read_text().splitlines())}
    assert len(entries) == len(refs) == 5
    for e in entries:
        check_against_text(e, refs[e.id])
        assert e.event is CtEventType.DUMP and e.start_ns and e.stop_ns is None
    assert {e.orig.proto for e in entries} == {1, 6, 17}
    assert any(":" in e.orig.src for e in entries)  # the IPv6 one


def test_events_match_conntrack_E() -> None:
    entries = decode("events.bin", dump=False)
    refs = [conntrack_text(x) for x in (GOLD / "events.txt").read_text().splitlines()]
    assert len(entries) == len(refs) == 28
    by_id: dict[int, list[dict[str, object]]] = {}
    for r in refs:  # two listeners may interleave connections differently: compare per id
        by_id.setdefault(int(str(r["id"])), []).append(r)
    for e in entries:
        assert e.id is not None
        check_against_text(e, by_id[e.id].pop(0))
        has_ts = e.event is CtEventType.DESTROY
        assert (e.stop_ns is not None) == has_ts and (e.start_ns is not None) == has_ts
        if has_ts:
            assert e.stop_ns is not None and e.start_ns is not None and e.stop_ns > e.start_ns


def test_expected_json_pins_every_field() -> None:
    from tests.data.conntrack.record import summary

    expected = json.loads((GOLD / "expected.json").read_text())
    assert [summary(e) for e in decode("dump.bin", True)] == expected["dump"]
    assert [summary(e) for e in decode("events.bin", False)] == expected["events"]


def test_nat_flags_on_golden_dump() -> None:
    entries = {e.orig.dport: e for e in decode("dump.bin", True) if e.orig.proto == 6}
    dnat, snat = entries[80], entries[9090]
    assert dnat.is_dnat and not dnat.is_snat and dnat.reply.src == "10.77.2.2"
    assert snat.is_snat and not snat.is_dnat and snat.reply.dst == "10.77.2.1"


def test_truncated_and_corrupt_input_never_raises() -> None:
    rng = random.Random(7)
    bufs = [b for _, b in frames("events.bin") + frames("dump.bin")]
    for buf in bufs:
        for cut in range(0, len(buf), 7):
            ct.parse(buf[:cut], 0.0)
        for _ in range(50):
            bad = bytearray(buf)
            for _ in range(3):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
            res = ct.parse(bytes(bad), 0.0, dump=True)
            assert len(res.entries) + res.malformed >= 0


def test_bad_message_is_skipped_and_counted() -> None:
    good = frames("dump.bin")[0][1]
    first_len = struct.unpack_from("=I", good)[0]
    msg = bytearray(good[: (first_len + 3) & ~3])
    broken = bytearray(msg)
    struct.pack_into("=H", broken, 20, 2000)  # first attribute claims to be too long
    res = ct.parse(bytes(broken) + bytes(msg), 0.0, dump=True)
    assert res.malformed == 1 and len(res.entries) == 1


def _msg(attrs: bytes, msg: int = ct.IPCTNL_MSG_CT_NEW, flags: int = 0) -> bytes:
    return nl.nlmsg((1 << 8) | msg, flags, 0, struct.pack("=BBH", 2, 0, 0) + attrs)


def _tuple(src: str, dst: str, proto: int, sport: int, dport: int) -> bytes:
    ip = nl.nla(1, socket.inet_aton(src)) + nl.nla(2, socket.inet_aton(dst))
    pr = nl.nla(1, bytes([proto])) + nl.nla(2, struct.pack(">H", sport)) + nl.nla(
        3, struct.pack(">H", dport))
    return nl.nla(ct.CTA_TUPLE_IP | nl.NLA_F_NESTED, ip) + nl.nla(
        ct.CTA_TUPLE_PROTO | nl.NLA_F_NESTED, pr)


def test_crafted_32bit_counters_flags_zone_mark() -> None:
    nest = nl.NLA_F_NESTED
    attrs = (nl.nla(ct.CTA_TUPLE_ORIG | nest, _tuple("1.1.1.1", "2.2.2.2", 132, 5, 6))
             + nl.nla(ct.CTA_TUPLE_REPLY | nest, _tuple("2.2.2.2", "1.1.1.1", 132, 6, 5))
             + nl.nla(ct.CTA_COUNTERS_ORIG | nest, nl.nla(3, struct.pack(">I", 7))
                      + nl.nla(4, struct.pack(">I", 700)))
             + nl.nla(ct.CTA_ZONE | nl.NLA_F_NET_BYTEORDER, struct.pack(">H", 3))
             + nl.nla(ct.CTA_MARK, struct.pack(">I", 0xBEEF))
             + nl.nla(99, b"unknown attributes are ignored"))
    flags = nl.NLM_F_CREATE | nl.NLM_F_EXCL
    res = ct.parse(_msg(attrs, flags=flags) + _msg(attrs) + _msg(attrs, ct.IPCTNL_MSG_CT_DELETE),
                   1.5)
    assert [e.event for e in res.entries] == [CtEventType.NEW, CtEventType.UPDATE,
                                              CtEventType.DESTROY]
    e = res.entries[0]
    assert (e.orig.proto, e.orig.sport, e.zone, e.mark) == (132, 5, 3, 0xBEEF)
    assert (e.orig_packets, e.orig_bytes, e.reply_packets) == (7, 700, None)
    assert e.received_at == 1.5


def test_control_messages() -> None:
    err = nl.nlmsg(nl.NLMSG_ERROR, 0, 1, struct.pack("=i", -1) + b"\0" * 16)
    ack = nl.nlmsg(nl.NLMSG_ERROR, 0, 1, struct.pack("=i", 0) + b"\0" * 16)
    res = ct.parse(err + ack + nl.nlmsg(nl.NLMSG_OVERRUN, 0, 0, b"")
                   + nl.nlmsg(nl.NLMSG_DONE, nl.NLM_F_MULTI, 1, b"\0" * 4), 0.0)
    assert res.errors == [1] and res.overrun and res.done and res.entries == []


@pytest.mark.parametrize("family", [socket.AF_UNSPEC, socket.AF_INET6])
def test_dump_request(family: int) -> None:
    req = ct.dump_request(seq=9, family=family)
    length, mtype, flags, seq, _ = struct.unpack_from("=IHHII", req)
    assert (length, mtype, flags, seq) == (20, 0x101, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, 9)
    assert req[16] == family
    assert ct.event_groups_mask() == 0b111


# -- hostile input: every bound checked at its cause, every skip counted with a reason --------

def _entry_attrs(orig: bytes | None = None, extra: bytes = b"") -> bytes:
    nest = nl.NLA_F_NESTED
    orig = _tuple("10.0.0.1", "10.0.0.2", 6, 1000, 80) if orig is None else orig
    return (nl.nla(ct.CTA_TUPLE_ORIG | nest, orig)
            + nl.nla(ct.CTA_TUPLE_REPLY | nest, _tuple("10.0.0.2", "10.0.0.1", 6, 80, 1000))
            + extra)


def _raw_nla(atype: int, length: int, value: bytes) -> bytes:
    """An attribute whose length field says ``length`` whatever ``value`` holds."""
    return struct.pack("=HH", length, atype) + value


def _only(res: ct.ParseResult) -> dict[str, int]:
    assert res.malformed == sum(res.reasons.values())
    return res.reasons


GOOD = _msg(_entry_attrs())


def test_crafted_good_message_decodes() -> None:
    res = ct.parse(GOOD, 0.0)
    assert len(res.entries) == 1 and res.malformed == 0 and res.reasons == {}


@pytest.mark.parametrize("atype,length", [(ct.CTA_STATUS, 4), (ct.CTA_STATUS, 7), (ct.CTA_ID, 6),
                                          (ct.CTA_TIMEOUT, 5), (ct.CTA_MARK, 4),
                                          (ct.CTA_ZONE, 5)])
def test_short_value_is_counted_not_read_from_the_next_attribute(atype: int, length: int
                                                                 ) -> None:
    """Today a 4-byte CTA_STATUS reads the next attribute's header as the status."""
    short = _raw_nla(atype, length, bytes(length - 4) + bytes(-length % 4))
    res = ct.parse(_msg(_entry_attrs(extra=short + nl.nla(ct.CTA_MARK, b"\0\0\0\1"))) + GOOD,
                   0.0)
    assert _only(res) == {"short_attribute": 1} and len(res.entries) == 1
    assert res.entries[0].status == CtStatus(0)


@pytest.mark.parametrize("ip_attr", [
    _raw_nla(ct.CTA_IP_V4_SRC, 6, b"\x0a\x00\0\0"),          # 2 of 4 address bytes
    _raw_nla(ct.CTA_IP_V6_SRC, 12, socket.inet_aton("10.0.0.1") * 2),  # 8 of 16
], ids=["v4", "v6"])
def test_short_address_is_counted(ip_attr: bytes) -> None:
    ip = ip_attr + nl.nla(ct.CTA_IP_V4_DST, socket.inet_aton("10.0.0.2"))
    pr = nl.nla(ct.CTA_PROTO_NUM, b"\x06")
    orig = nl.nla(ct.CTA_TUPLE_IP | nl.NLA_F_NESTED, ip) + nl.nla(
        ct.CTA_TUPLE_PROTO | nl.NLA_F_NESTED, pr)
    res = ct.parse(_msg(_entry_attrs(orig)), 0.0)
    assert _only(res) == {"short_attribute": 1} and res.entries == []


def test_unknown_ip_attribute_is_skipped() -> None:
    """Today type 5 is read as an IPv6 source (16 bytes from wherever it stands)."""
    ip = (nl.nla(ct.CTA_IP_V4_SRC, socket.inet_aton("10.0.0.1"))
          + nl.nla(ct.CTA_IP_V4_DST, socket.inet_aton("10.0.0.2")) + nl.nla(5, b"\0\0\0\7"))
    pr = nl.nla(ct.CTA_PROTO_NUM, b"\x11") + nl.nla(ct.CTA_PROTO_SRC_PORT, b"\0\x35")
    orig = nl.nla(ct.CTA_TUPLE_IP | nl.NLA_F_NESTED, ip) + nl.nla(
        ct.CTA_TUPLE_PROTO | nl.NLA_F_NESTED, pr)
    res = ct.parse(_msg(_entry_attrs(orig)), 0.0)
    assert res.malformed == 0 and res.entries[0].orig.src == "10.0.0.1"
    assert res.entries[0].orig.sport == 53


@pytest.mark.parametrize("proto_attr", [_raw_nla(ct.CTA_PROTO_NUM, 4, b""),
                                        _raw_nla(ct.CTA_PROTO_SRC_PORT, 5, b"\x06\0\0\0")],
                         ids=["proto", "port"])
def test_short_protocol_or_port_is_counted(proto_attr: bytes) -> None:
    ip = (nl.nla(ct.CTA_IP_V4_SRC, socket.inet_aton("10.0.0.1"))
          + nl.nla(ct.CTA_IP_V4_DST, socket.inet_aton("10.0.0.2")))
    pr = proto_attr + nl.nla(ct.CTA_PROTO_NUM, b"\x06")
    orig = nl.nla(ct.CTA_TUPLE_IP | nl.NLA_F_NESTED, ip) + nl.nla(
        ct.CTA_TUPLE_PROTO | nl.NLA_F_NESTED, pr)
    res = ct.parse(_msg(_entry_attrs(orig)), 0.0)
    assert _only(res) == {"short_attribute": 1}


def test_short_64bit_counter_is_counted() -> None:
    """Today a CTA_COUNTERS_BYTES of 4 bytes is silently dropped (counters look absent)."""
    counters = nl.nla(ct.CTA_COUNTERS_PACKETS, struct.pack(">Q", 3)) + nl.nla(
        ct.CTA_COUNTERS_BYTES, struct.pack(">I", 300))
    extra = nl.nla(ct.CTA_COUNTERS_ORIG | nl.NLA_F_NESTED, counters)
    res = ct.parse(_msg(_entry_attrs(extra=extra)), 0.0)
    assert _only(res) == {"short_attribute": 1} and res.entries == []


def test_nested_length_beyond_its_parent_is_counted() -> None:
    inner = _raw_nla(ct.CTA_COUNTERS_PACKETS, 200, struct.pack(">Q", 3))
    extra = nl.nla(ct.CTA_COUNTERS_ORIG | nl.NLA_F_NESTED, inner)
    res = ct.parse(_msg(_entry_attrs(extra=extra)) + GOOD, 0.0)
    assert _only(res) == {"bad_attribute_length": 1} and len(res.entries) == 1


def test_tcp_state_attribute_of_length_4_is_counted() -> None:
    tcp = nl.nla(ct.CTA_PROTOINFO_TCP | nl.NLA_F_NESTED, _raw_nla(ct.CTA_PROTOINFO_TCP_STATE, 4,
                                                                   b""))
    res = ct.parse(_msg(_entry_attrs(extra=nl.nla(ct.CTA_PROTOINFO | nl.NLA_F_NESTED, tcp))),
                   0.0)
    assert _only(res) == {"short_attribute": 1}


def test_zero_length_attributes_never_loop() -> None:
    res = ct.parse(_msg(_raw_nla(ct.CTA_STATUS, 0, b"\0" * 8)) + GOOD, 0.0)
    assert _only(res) == {"bad_attribute_length": 1} and len(res.entries) == 1


def test_message_without_nfgenmsg_is_counted_as_such() -> None:
    bare = nl.nlmsg((1 << 8) | ct.IPCTNL_MSG_CT_NEW, 0, 0, b"")
    assert _only(ct.parse(bare + GOOD, 0.0)) == {"short_nfgenmsg": 1}
    assert _only(ct.parse(GOOD + bare, 0.0)) == {"short_nfgenmsg": 1}


@pytest.mark.parametrize("mlen", [0, 15, 10_000])
def test_unusable_nlmsg_len_ends_the_buffer_counted(mlen: int) -> None:
    bad = struct.pack("=IHHII", mlen, (1 << 8), 0, 0, 0) + bytes(8)
    res = ct.parse(GOOD + bad + GOOD, 0.0)
    assert _only(res) == {"bad_nlmsg_len": 1} and len(res.entries) == 1


def test_trailing_bytes_after_the_last_message_are_counted() -> None:
    """Today 1-15 bytes after the last message vanish without a trace."""
    res = ct.parse(GOOD + b"\x10\0\0\0\0\0\0\0", 0.0)
    assert _only(res) == {"truncated_nlmsg_header": 1} and len(res.entries) == 1


def test_short_error_message_is_counted() -> None:
    res = ct.parse(nl.nlmsg(nl.NLMSG_ERROR, 0, 1, b"") + GOOD, 0.0)
    assert _only(res) == {"short_error_message": 1} and res.errors == []


def test_missing_and_incomplete_tuples_have_reasons() -> None:
    no_reply = nl.nla(ct.CTA_TUPLE_ORIG | nl.NLA_F_NESTED, _tuple("1.1.1.1", "2.2.2.2", 6, 1, 2))
    no_proto = nl.nla(ct.CTA_TUPLE_IP | nl.NLA_F_NESTED,
                      nl.nla(ct.CTA_IP_V4_SRC, socket.inet_aton("1.1.1.1"))
                      + nl.nla(ct.CTA_IP_V4_DST, socket.inet_aton("2.2.2.2")))
    res = ct.parse(_msg(no_reply) + _msg(_entry_attrs(no_proto)), 0.0)
    assert _only(res) == {"missing_tuple": 1, "incomplete_tuple": 1}


def test_caches_stay_bounded() -> None:
    """Odd status words and oversized tuple nests are decoded, not kept forever."""
    big = _tuple("10.9.9.1", "10.9.9.2", 6, 1, 2) + nl.nla(99, bytes(200))
    res = ct.parse(_msg(_entry_attrs(big)), 0.0)
    assert len(res.entries) == 1 and res.entries[0].orig.src == "10.9.9.1"
    assert big not in ct._TUPLE_CACHE and max(map(len, ct._TUPLE_CACHE)) <= ct._TUPLE_KEY_MAX
    msgs = b"".join(_msg(_entry_attrs(extra=nl.nla(ct.CTA_STATUS, struct.pack(">I", s))))
                    for s in range(1 << 16, (1 << 16) + ct._STATUS_CACHE_MAX + 50))
    res = ct.parse(msgs, 0.0)
    assert res.malformed == 0 and res.entries[-1].status == (1 << 16) + ct._STATUS_CACHE_MAX + 49
    assert len(ct._STATUS_CACHE) <= ct._STATUS_CACHE_MAX


def test_safety_net_counts_a_defect_as_decoder_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(ct, "_entry", broken)
    res = ct.parse(GOOD + GOOD, 0.0)
    assert _only(res) == {"decoder_keyerror": 2}


class _EventSocket:
    """A netlink event socket that holds ``bufs`` and then nothing."""

    def __init__(self, bufs: list[bytes]) -> None:
        self.bufs = bufs

    def recv(self, _size: int, _flags: int = 0) -> bytes:
        if not self.bufs:
            raise BlockingIOError
        return self.bufs.pop(0)


def test_malformed_messages_reach_the_plugin_stats_as_lost_reasons() -> None:
    from podflow.sources.conntrack import ConntrackPlugin
    from podflow.sources.registry import SourceOptions

    plugin = ConntrackPlugin(SourceOptions(node_name="node1"))
    got: list[list[CtEntry]] = []
    sock = _EventSocket([GOOD + b"\1\2\3\4", _msg(b""), GOOD])
    plugin.source._drain(sock, lambda batch, _kind: got.append(batch))  # type: ignore[arg-type]
    stats = plugin.stats()
    assert sum(len(b) for b in got) == 2 and stats["parse_errors"] == 2
    assert stats["lost_truncated_nlmsg_header"] == 1 and stats["lost_missing_tuple"] == 1
    from podflow.metrics.podflow_health import lost_events

    lost = lost_events({"source_stats": {"conntrack": stats}})
    assert ("conntrack", "missing_tuple", 1.0) in lost


def test_an_empty_table_dump_moves_synced_at_by_its_request_time() -> None:
    """An idle node's dump holds no entry to carry its request time: the source notes it
    beside the batch, and the plugin is current once it processed it (else one idle node
    would hold every live map back)."""
    from podflow.sources.conntrack import ConntrackPlugin
    from podflow.sources.registry import SourceOptions

    plugin = ConntrackPlugin(SourceOptions(node_name="node1"))
    plugin.process([], "dump", 500.0)
    assert plugin.synced_at == 0.0                # nothing noted: nothing moves
    plugin.source.empty_dumps.extend([100.0, 102.0])
    plugin.process([], "dump", 500.0)
    assert plugin.synced_at == 100.0              # the batch processed, not the newest noted
    plugin.process([], "dump", 500.0)
    assert plugin.synced_at == 102.0 and not plugin.source.empty_dumps
