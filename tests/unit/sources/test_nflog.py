"""The NFLOG decoder on kernel-shaped messages, and on messages no kernel should send."""

from __future__ import annotations

import struct

import pytest

from podflow.model.losses import Losses
from podflow.sources import netlink, nflog
from tests.fuzz.target_nflog import _message, _nla, seeds

IP = bytes.fromhex("4500003c48524000400600000a6300010a630002") + bytes(20)
PACKET = (nflog.NFNL_SUBSYS_ULOG << 8) | nflog.NFULNL_MSG_PACKET


def _msg(attrs: bytes, length: int | None = None, group: int = 7) -> bytes:
    body = struct.pack("!BBH", 2, 0, group) + attrs
    n = 16 + len(body) if length is None else length
    return struct.pack("=IHHII", n, PACKET, 0, 0, 0) + body


def _parse(data: bytes) -> tuple[list[nflog.NflogPacket], dict[str, int]]:
    """Decode as the packets source does today (no Losses), then again counting."""
    plain = nflog.parse_messages(data, now=9.0)
    losses = Losses()
    got = nflog.parse_messages(data, now=9.0, losses=losses)
    assert got == plain
    return got, losses.by_reason()


GOOD = _msg(_nla(nflog.NFULA_PREFIX, b"deny\0") + _nla(nflog.NFULA_PAYLOAD, IP))


def test_kernel_shaped_seeds_decode() -> None:
    for seed in seeds():
        got, lost = _parse(seed)
        assert got and lost == {}
        assert all(m.group == 7 and m.prefix == "pf-test deny 81" and m.payload[:1] == b"E"
                   for m in got)
    [m], _ = _parse(_message(IP, 1.25, 0))
    assert (m.ts, m.indev, m.outdev, m.payload) == (1.25, 4, 5, IP)


@pytest.mark.parametrize("size", [0, 8, 15])
def test_short_timestamp_is_counted(size: int) -> None:
    """Today: struct.error (16 bytes unpacked from fewer)."""
    [m], lost = _parse(_msg(_nla(nflog.NFULA_TIMESTAMP, bytes(size))
                            + _nla(nflog.NFULA_PAYLOAD, IP)))
    assert m.ts == 9.0 and m.payload == IP and lost == {"short_attribute": 1}


@pytest.mark.parametrize("kind", [nflog.NFULA_IFINDEX_INDEV, nflog.NFULA_IFINDEX_OUTDEV])
def test_short_interface_index_is_counted(kind: int) -> None:
    """Today: struct.error for 1-3 bytes."""
    [m], lost = _parse(_msg(_nla(kind, b"\0\3") + _nla(nflog.NFULA_PAYLOAD, IP)))
    assert (m.indev, m.outdev) == (None, None) and lost == {"short_attribute": 1}


@pytest.mark.parametrize("sec,usec", [(1 << 63, 0), (5, 1_000_000), (2 ** 64 - 1, 2 ** 64 - 1)])
def test_impossible_timestamp_is_counted(sec: int, usec: int) -> None:
    """Today a timestamp of 2**63 s becomes the packet's time."""
    [m], lost = _parse(_msg(_nla(nflog.NFULA_TIMESTAMP, struct.pack("!QQ", sec, usec))))
    assert m.ts == 9.0 and lost == {"bad_timestamp": 1}


def test_message_without_nfgenmsg() -> None:
    """Today: struct.error at the end of the data (or the next message read as nfgenmsg)."""
    bare = struct.pack("=IHHII", 16, PACKET, 0, 0, 0)
    got, lost = _parse(GOOD + bare)
    assert len(got) == 1 and lost == {"short_nfgenmsg": 1}
    got, lost = _parse(bare + GOOD)
    assert len(got) == 1 and got[0].group == 7 and lost == {"short_nfgenmsg": 1}


def test_payload_never_reaches_into_the_next_message() -> None:
    """Today the payload attribute's length is trusted: it swallows the following message."""
    runaway = _msg(struct.pack("=HH", 4 + 200, nflog.NFULA_PAYLOAD) + IP[:20])
    got, lost = _parse(runaway + GOOD)
    assert [m.payload for m in got] == [IP] and lost == {"bad_attribute_length": 1}


@pytest.mark.parametrize("alen", [0, 3])
def test_attribute_length_below_four(alen: int) -> None:
    got, lost = _parse(_msg(struct.pack("=HH", alen, 1) + bytes(4)) + GOOD)
    assert len(got) == 1 and lost == {"bad_attribute_length": 1}


@pytest.mark.parametrize("tail,reason", [
    (struct.pack("=IHHII", 15, PACKET, 0, 0, 0), "bad_nlmsg_len"),
    (struct.pack("=IHHII", 900, PACKET, 0, 0, 0), "bad_nlmsg_len"),
    (b"\1\2", "truncated_nlmsg_header"),
], ids=["too_short", "too_long", "trailing"])
def test_bad_framing_is_counted(tail: bytes, reason: str) -> None:
    got, lost = _parse(GOOD + tail)
    assert len(got) == 1 and lost == {reason: 1}


def test_last_attribute_of_a_type_wins_and_both_flag_bits_are_masked() -> None:
    """The walker's semantics (mask 0x3FFF as the kernel's nla_type(), last wins), pinned.

    Until the framing was shared (podflow.sources.netlink) NFLOG masked with 0x7FFF, which
    kept NLA_F_NET_BYTEORDER in the type: the INDEV below was then unknown (None)."""
    attrs = (_nla(nflog.NFULA_PREFIX, b"first\0") + _nla(nflog.NFULA_PREFIX, b"second\0")
             + _nla(nflog.NFULA_PAYLOAD | 0x8000, b"nested flag masked")
             + _nla(nflog.NFULA_IFINDEX_INDEV | 0x4000, struct.pack("!I", 3)))
    [m], _ = _parse(_msg(attrs))
    assert (m.prefix, m.payload, m.indev) == ("second", b"nested flag masked", 3)


def test_config_ack_without_its_errno() -> None:
    """Today: struct.error while opening the socket."""
    nflog._check_ack(struct.pack("=IHHII", 16, netlink.NLMSG_ERROR, 0, 1, 0))
    with pytest.raises(OSError, match="refused"):
        nflog._check_ack(struct.pack("=IHHII", 36, netlink.NLMSG_ERROR, 0, 1, 0)
                         + struct.pack("=i", -1) + bytes(16))
