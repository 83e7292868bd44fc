"""Fuzz target ``pcap``: the project's pcap reader (:mod:`podflow.pcap`) on any file bytes.

The reader may refuse a file only with :class:`~podflow.pcap.PcapError` (a broken header, a
record claiming more than ``MAX_CAPLEN`` bytes, a file cut inside a record); anything else
it raises (MemoryError, ``struct.error``, ...) is a crash, and so is an end of the records
before the end of the file without that error (a silently dropped tail). Seeds: the golden
recordings whole, and each cut at a few places (inside the header, inside a record header, inside a
record's bytes).
"""

from __future__ import annotations

import io
from pathlib import Path

from podflow.pcap import PcapError, read_pcap
from tests.fuzz.targets import Target

PCAPS = Path(__file__).resolve().parents[1] / "data" / "pcap"


def seeds() -> list[bytes]:
    """Every golden pcap whole, and prefixes of it."""
    out = []
    for p in sorted(PCAPS.glob("*.pcap")):
        whole = p.read_bytes()
        out += [whole, whole[:20], whole[:24 + 10], whole[:24 + 16 + 30], whole[:-1]]
    return out


def run(data: bytes) -> None:
    """Read every record of ``data`` as a pcap file; PcapError is the one allowed refusal."""
    used = 24
    try:
        for ts, frame in read_pcap(io.BytesIO(data)):
            assert isinstance(ts, float) and isinstance(frame, bytes)
            used += 16 + len(frame)
    except PcapError as exc:
        assert str(exc)
        return
    assert used == len(data), f"stopped silently after {used} of {len(data)} bytes"


TARGET = Target(name="pcap", seeds=seeds, run=run, examples=1500)
