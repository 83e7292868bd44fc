"""Fuzz target: one receive buffer of the conntrack netlink socket, through the ctnetlink decoder.

The input is what one ``recv()`` on the event or dump socket returns. It goes through
:func:`podflow.sources.ctnetlink.parse` both ways the source calls it (as events, and as a
table dump). ``parse`` never raises: a message it cannot decode is counted in ``malformed``
with a reason and skipped. Its bounds checks are meant to name every cause, so a message that
reached the decoder's safety net (a reason starting ``decoder_``) is a crash here too, as is
a ``malformed`` count that the reasons do not add up to.
"""

from __future__ import annotations

import struct

from podflow.sources import ctnetlink
from tests.conftest import DATA
from tests.fuzz.targets import Target

_FRAME = struct.Struct("<dI")


def _buffers(name: str) -> list[bytes]:
    """The ``recv()`` buffers of one golden file (framing: tests/data/conntrack/README.md)."""
    data, off, out = (DATA / "conntrack" / name).read_bytes(), 0, []
    while off + _FRAME.size <= len(data):
        _t, n = _FRAME.unpack_from(data, off)
        out.append(data[off + _FRAME.size:off + _FRAME.size + n])
        off += _FRAME.size + n
    return out


def seeds() -> list[bytes]:
    """Every buffer of the event and dump recordings."""
    return _buffers("events.bin") + _buffers("dump.bin")


def run(data: bytes) -> None:
    """Decode ``data`` as events and as a dump; the counts must be honest."""
    for dump in (False, True):
        res = ctnetlink.parse(data, 0.0, dump=dump)
        if res.malformed != sum(res.reasons.values()):
            raise AssertionError(f"malformed {res.malformed} but reasons {res.reasons}")
        unnamed = [r for r in res.reasons if r.startswith("decoder_")]
        if unnamed:
            raise AssertionError(f"a message reached the safety net: {unnamed}")


TARGET = Target("ctnetlink", seeds, run, examples=1500)
