"""Netlink framing, declared once: headers, message and attribute walks, request building.

Every netlink family podflow speaks (ctnetlink and nfnetlink_log over ``NETLINK_NETFILTER``,
inet_diag over ``NETLINK_SOCK_DIAG``, rtnetlink) frames its data the same way
(``linux/netlink.h``): a receive buffer holds messages, each a ``struct nlmsghdr`` (length,
type, flags, sequence, port id) and a body padded to 4 bytes; a body holds a family header
(each decoder's own struct table) and then attributes, each a ``struct nlattr`` (length,
type) and a value padded to 4 bytes. This module walks that framing with every length checked
before it is used; what the bytes *mean* stays in each decoder (:mod:`.ctnetlink`,
:mod:`.nflog`, :mod:`.sockdiag`, :mod:`.nsdiscovery`), as pyroute2 keeps one ``nlmsg_base``
and per-family ``nla_map`` tables.

The rules, for every decoder:

- a message whose ``nlmsg_len`` is below 16 or runs past the buffer ends the walk, counted
  ``bad_nlmsg_len`` (the next message cannot be found); 1-15 bytes after the last message
  are counted ``truncated_nlmsg_header``;
- control messages (``NLMSG_ERROR``, ``NLMSG_DONE``, ``NLMSG_OVERRUN``) are yielded like the
  others, since families react to them differently (a dump stops at ``NLMSG_DONE``, an event
  stream does not); :func:`nlmsg_error` reads an error's code with its bounds check;
- an attribute's type is masked with :data:`NLA_TYPE_MASK` (``0x3FFF``: the nested and
  byte-order flags off, as the kernel's ``nla_type()``); an attribute whose length is below
  4 or runs past its enclosing message or nest raises
  :class:`~podflow.model.losses.DecodeError` ``bad_attribute_length`` and the caller decides
  what is lost with it;
- a repeated attribute type: the last one wins, as the kernel's ``nla_parse()`` fills its
  table (:func:`attribute_table`). :func:`attributes` yields every attribute in order, so a
  decoder that keeps the first of a type does so itself and says so.

One decoder, :mod:`.ctnetlink` (every conntrack event), writes both walks out inline because
the generators cost it measurably; it keeps these structs, mask, checks and reasons, and
``tests/unit/sources/test_netlink.py`` checks that all four decoders count bad framing alike. A hot
loop should bind a struct by assignment (``_NLA = netlink.NLATTR``), not by
``from ... import``: CPython 3.11 compiles ``Name.method()`` on an imported name without
``LOAD_METHOD``, which costs ~10% of a parse.

Example::

    >>> from podflow.model.losses import Losses
    >>> msg = nlmsg(NLMSG_DONE, NLM_F_MULTI, 7, nla(1 | NLA_F_NESTED, b"ab"))
    >>> [(t, f, s, e) for t, f, s, e in messages(msg, Losses())]
    [(3, 2, 16, 24)]
    >>> [(t, msg[s:e]) for t, s, e in attributes(msg, 16, 24)]
    [(1, b'ab')]
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Protocol

from podflow.model.losses import DecodeError

NETLINK_ROUTE, NETLINK_SOCK_DIAG, NETLINK_NETFILTER = 0, 4, 12
"""Netlink protocol numbers (``socket(AF_NETLINK, SOCK_RAW, proto)``)."""
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
"""Control message types (below ``NLMSG_MIN_TYPE`` = 16)."""
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x8, 0x10
NLM_F_ROOT, NLM_F_MATCH, NLM_F_DUMP = 0x100, 0x200, 0x300
"""Flags of GET requests (``NLM_F_DUMP`` = root | match)."""
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
"""Flags of NEW requests (ctnetlink sets ``CREATE|EXCL`` on the event of a new entry)."""
NLA_F_NESTED, NLA_F_NET_BYTEORDER = 1 << 15, 1 << 14
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF
"""``0x3FFF``: what is left of ``nla_type`` once both flag bits are off."""

NLMSGHDR = struct.Struct("=IHHII")
"""``struct nlmsghdr``: length, type, flags, seq, pid (host byte order)."""
NLATTR = struct.Struct("=HH")
"""``struct nlattr``: length, type (host byte order)."""
NLMSGERR = struct.Struct("=i")
"""The ``error`` field that starts ``struct nlmsgerr`` (0: an ack, else ``-errno``)."""
NFGENMSG = struct.Struct("!BBH")
"""``struct nfgenmsg``, the header of every nfnetlink body: family, version, res_id (be16)."""
NLMSG_HDRLEN, NLA_HDRLEN = NLMSGHDR.size, NLATTR.size  # 16, 4


class Counter(Protocol):
    """Where framing losses go: a :class:`~podflow.model.losses.Losses`, or a decoder's own
    result that counts by reason."""

    def count(self, reason: str) -> None:
        """Count one loss of ``reason``."""


def align(n: int) -> int:
    """``n`` rounded up to the netlink alignment (4 bytes, ``NLMSG_ALIGN``/``NLA_ALIGN``)."""
    return (n + 3) & ~3


def messages(data: bytes, lost: Counter) -> Iterator[tuple[int, int, int, int]]:
    """``(type, flags, body_start, body_end)`` of every message in one ``recv()`` buffer.

    The body is ``data[body_start:body_end]`` (``nlmsg_len`` bounds it: the padding after it
    is not part of it). Bad framing ends the walk and is counted in ``lost`` (see the module
    doc); a caller that stops early (at ``NLMSG_DONE``) does not see the trailing check.
    """
    off, n = 0, len(data)
    while off + 16 <= n:
        mlen, mtype, mflags, _seq, _pid = NLMSGHDR.unpack_from(data, off)
        if mlen < 16 or off + mlen > n:
            lost.count("bad_nlmsg_len")
            return
        yield mtype, mflags, off + 16, off + mlen
        off += (mlen + 3) & ~3
    if off < n:
        lost.count("truncated_nlmsg_header")


def nlmsg_error(data: bytes, start: int, end: int) -> int | None:
    """The errno of the ``NLMSG_ERROR`` whose body is ``data[start:end]``: 0 for an ack,
    ``None`` when the body is too short to hold its code (callers count
    ``short_error_message``)."""
    if end - start < NLMSGERR.size:
        return None
    return -int(NLMSGERR.unpack_from(data, start)[0])


def attributes(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(type, value_start, value_end)`` of every attribute in ``data[start:end]``, in order.

    The type is masked with :data:`NLA_TYPE_MASK`. Raises
    :class:`~podflow.model.losses.DecodeError` ``bad_attribute_length`` at an attribute whose
    length is below 4 or runs past ``end``; the attributes before it have been yielded.
    """
    while start + 4 <= end:
        alen, atype = NLATTR.unpack_from(data, start)
        if alen < 4 or start + alen > end:
            raise bad_attribute_length("", alen)
        yield atype & NLA_TYPE_MASK, start + 4, start + alen
        start += (alen + 3) & ~3


def attribute_table(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """The attributes of ``data[start:end]`` by masked type; the last of a type wins, as in
    the kernel's ``nla_parse()``. Raises as :func:`attributes` does."""
    return {t: data[s:e] for t, s, e in attributes(data, start, end)}


def bad_attribute_length(what: str, alen: int) -> DecodeError:
    """The error of an attribute whose length does not fit (``what``: where it stood)."""
    where = f"{what} attribute" if what else "attribute"
    return DecodeError("bad_attribute_length", f"{where} of length {alen}")


def nlmsg(mtype: int, flags: int, seq: int, payload: bytes) -> bytes:
    """Frame ``payload`` as one netlink message (``nlmsghdr`` + payload, padded, pid 0)."""
    return NLMSGHDR.pack(16 + len(payload), mtype, flags, seq, 0) + payload + \
        b"\0" * (-len(payload) % 4)


def nla(atype: int, value: bytes) -> bytes:
    """Frame ``value`` as one netlink attribute, padded to 4 bytes."""
    return NLATTR.pack(4 + len(value), atype) + value + b"\0" * (-len(value) % 4)

