"""The shared netlink framing (podflow.sources.netlink) and the decoders that use it."""

from __future__ import annotations

import inspect
import struct

import pytest

from podflow.model.losses import DecodeError, Losses
from podflow.sources import ctnetlink, netlink, nflog, nsdiscovery, sockdiag
from podflow.sources.netlink import (
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    NLMSG_DONE,
    NLMSG_ERROR,
    attribute_table,
    attributes,
    messages,
    nla,
    nlmsg,
    nlmsg_error,
)

HDR = struct.Struct("=IHHII")


def _walk(data: bytes) -> tuple[list[tuple[int, int, int, int]], dict[str, int]]:
    losses = Losses()
    return list(messages(data, losses)), losses.by_reason()


def test_request_building_pads_but_does_not_count_the_padding() -> None:
    msg = nlmsg(0x101, 0x301, 9, b"abcde")
    assert HDR.unpack_from(msg) == (21, 0x101, 0x301, 9, 0) and len(msg) == 24
    assert msg[16:] == b"abcde\0\0\0"
    assert nla(7, b"xy") == struct.pack("=HH", 6, 7) + b"xy\0\0"
    assert nla(7, b"") == struct.pack("=HH", 4, 7)


def test_messages_yield_bodies_and_skip_padding() -> None:
    data = nlmsg(20, 2, 1, b"abcde") + nlmsg(NLMSG_DONE, 2, 1, b"\0\0\0\0")
    got, lost = _walk(data)
    assert got == [(20, 2, 16, 21), (NLMSG_DONE, 2, 40, 44)] and lost == {}
    assert data[16:21] == b"abcde"


@pytest.mark.parametrize("mlen", [0, 15, 10_000])
def test_unusable_nlmsg_len_ends_the_walk_counted(mlen: int) -> None:
    good = nlmsg(20, 0, 1, b"ok")
    got, lost = _walk(good + HDR.pack(mlen, 20, 0, 0, 0) + good)
    assert [m[0] for m in got] == [20] and lost == {"bad_nlmsg_len": 1}


def test_trailing_bytes_are_counted_unless_the_caller_stops_first() -> None:
    data = nlmsg(NLMSG_DONE, 0, 1, b"\0" * 4) + b"\1\2\3"
    got, lost = _walk(data)
    assert len(got) == 1 and lost == {"truncated_nlmsg_header": 1}
    losses = Losses()
    for mtype, *_ in messages(data, losses):
        if mtype == NLMSG_DONE:
            break
    assert losses.by_reason() == {}


def test_error_code() -> None:
    err = nlmsg(NLMSG_ERROR, 0, 1, struct.pack("=i", -22) + bytes(16))
    ack = nlmsg(NLMSG_ERROR, 0, 1, struct.pack("=i", 0) + bytes(16))
    short = nlmsg(NLMSG_ERROR, 0, 1, b"\0\0\0")
    codes = [nlmsg_error(d, s, e) for d in (err, ack, short) for _t, _f, s, e in _walk(d)[0]]
    assert codes == [22, 0, None]


def test_attribute_types_lose_both_flag_bits() -> None:
    assert netlink.NLA_TYPE_MASK == 0x3FFF
    data = (nla(1 | NLA_F_NESTED, b"n") + nla(2 | NLA_F_NET_BYTEORDER, b"b")
            + nla(3 | NLA_F_NESTED | NLA_F_NET_BYTEORDER, b"nb"))
    assert [(t, data[s:e]) for t, s, e in attributes(data, 0, len(data))] == [
        (1, b"n"), (2, b"b"), (3, b"nb")]


def test_every_attribute_is_yielded_and_the_table_keeps_the_last() -> None:
    data = nla(5, b"first") + nla(6, b"x") + nla(5, b"second")
    assert [t for t, _s, _e in attributes(data, 0, len(data))] == [5, 6, 5]
    assert attribute_table(data, 0, len(data)) == {5: b"second", 6: b"x"}


@pytest.mark.parametrize("alen", [0, 3, 200])
def test_bad_attribute_length_raises_after_the_good_ones(alen: int) -> None:
    data = nla(1, b"ok") + struct.pack("=HH", alen, 2) + bytes(8)
    seen: list[int] = []
    with pytest.raises(DecodeError) as exc:
        for t, _s, _e in attributes(data, 0, len(data)):
            seen.append(t)
    assert exc.value.reason == "bad_attribute_length" and seen == [1]


def test_attributes_never_read_past_their_end() -> None:
    data = nla(1, b"abcd") + nla(2, b"efgh")
    assert [t for t, _s, _e in attributes(data, 0, 8)] == [1]  # the second lies beyond
    with pytest.raises(DecodeError):
        list(attributes(data, 0, 6))


# -- the four decoders frame alike ------------------------------------------------------------

def _framing_reasons(data: bytes) -> list[dict[str, int]]:
    """Framing losses of ``data`` as each decoder counts them."""
    out = [ctnetlink.parse(data, 0.0).reasons]
    for decode in (lambda d, lost: nflog.parse_messages(d, 0.0, lost),
                   lambda d, lost: sockdiag.parse(d, sockdiag.IPPROTO_TCP, lost),
                   nsdiscovery.parse_links):
        losses = Losses()
        decode(data, losses)
        out.append(losses.by_reason())
    return out


@pytest.mark.parametrize("tail,reason", [(HDR.pack(15, 99, 0, 0, 0), "bad_nlmsg_len"),
                                         (HDR.pack(900, 99, 0, 0, 0), "bad_nlmsg_len"),
                                         (b"\1\2", "truncated_nlmsg_header")],
                         ids=["too_short", "too_long", "trailing"])
def test_decoders_count_bad_framing_alike(tail: bytes, reason: str) -> None:
    data = nlmsg(99, 0, 1, b"\0" * 8) + tail  # a type none of them decodes
    assert _framing_reasons(data) == [{reason: 1}] * 4


def test_framing_structs_are_declared_once() -> None:
    for mod in (ctnetlink, nflog, sockdiag, nsdiscovery):
        src = inspect.getsource(mod)
        assert '"=IHHII"' not in src and '"=HH"' not in src, mod.__name__
