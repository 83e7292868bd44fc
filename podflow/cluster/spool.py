"""The agent's bounded on-disk queue of what the hub has not acknowledged yet.

In hub mode an agent writes no store: every batch it would have stored (its flows, its
health report, its progress) is appended to the spool as one record with the next sequence
number, and the hub pulls the records after the last one it has committed
(:mod:`podflow.cluster.feed`), then acknowledges; acknowledged segments are deleted. So
nothing is lost while the hub is down or restarting (it resumes from the cursor it
committed with the flows), nor when the agent is killed (the records are on disk; the
next agent on the node continues the sequence).

On disk: a directory with ``epoch`` (a random id made when the spool is created: a hub
that sees another epoch knows the sequence started again), ``acked`` (the newest
acknowledged sequence number) and segments ``<first seq>.spool`` of lines
``SEQ<TAB>KIND<TAB>JSON``. A record is flushed to the kernel before :meth:`Spool.append`
returns, so a process killed with SIGKILL loses nothing it appended (a machine crash may
lose the last seconds unless ``fsync`` is set). A line cut short by a crash is dropped when
the spool is opened again.

Bounded: beyond ``max_bytes`` of segments holding unacknowledged records (so to within a
segment, :data:`SEGMENT_BYTES`, of the unacknowledged bytes) a new record is refused and counted
in :attr:`Spool.refused` (the agent reports it as lost events, ``spool_full``), never
silent; what is already spooled is kept.

Example::

    >>> import tempfile
    >>> sp = Spool(tempfile.mkdtemp())
    >>> sp.append("flows", "[]"), sp.append("status", '{"ok": true}')
    (1, 2)
    >>> [(r.seq, r.kind) for r in sp.read(after=1)]
    [(2, 'status')]
    >>> sp.ack(2); sp.pending
    0
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SEGMENT_BYTES = 4 << 20
"""A segment is closed and a new one begun past this size."""

DEFAULT_MAX_BYTES = 1 << 30
"""Unacknowledged bytes kept at most by default (1 GiB)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled batch."""

    seq: int
    """Its sequence number (1, 2, ... for the spool's epoch)."""
    kind: str
    """``flows`` (a JSON list of podflow flow records), ``status`` or ``progress``."""
    data: str
    """The JSON text, as appended."""


@dataclass
class _Segment:
    first: int
    path: Path
    last: int
    size: int


class SpoolError(RuntimeError):
    """The spool directory cannot be used (message says why)."""


class Spool:
    """The queue (see the module doc); thread-safe."""

    def __init__(self, directory: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 fsync: bool = False) -> None:
        """Open (or create) the spool in ``directory``; :class:`SpoolError` if unusable."""
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._lock = threading.Condition()
        self.refused = 0
        """Records refused because the spool was full."""
        self.bad_lines = 0
        """Lines read back that were not records (damaged on disk), skipped."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            epoch_file = self.dir / "epoch"
            if not epoch_file.exists():
                _write_atomic(epoch_file, uuid.uuid4().hex)
            self.epoch = epoch_file.read_text().strip()
            acked = self.dir / "acked"
            self.acked = int(acked.read_text().strip() or 0) if acked.exists() else 0
            self._segments = self._scan()
        except (OSError, ValueError) as exc:
            raise SpoolError(f"cannot use spool {self.dir}: {exc}") from None
        self.last = max([self.acked, *(s.last for s in self._segments)])
        """The newest sequence number appended."""
        self._out: BinaryIO | None = None
        """The segment being appended to (opened at the first append)."""

    def _scan(self) -> list[_Segment]:
        """The segments on disk, a cut-short last line dropped, fully acknowledged ones
        deleted."""
        segments = []
        for path in sorted(self.dir.glob("*.spool")):
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):   # a line cut short by a crash
                with open(path, "r+b") as f:
                    f.truncate(end)
                data = data[:end]
            seqs = [q for line in data.splitlines() if (q := _seq(line)) is not None]
            if not seqs:   # nothing readable in it
                path.unlink()
                continue
            first, last = seqs[0], seqs[-1]
            if last <= self.acked:
                path.unlink()
                continue
            segments.append(_Segment(first, path, last, end))
        return segments

    @property
    def pending(self) -> int:
        """Records appended but not acknowledged."""
        return self.last - self.acked

    @property
    def disk_bytes(self) -> int:
        """Bytes of the segments on disk."""
        return sum(s.size for s in self._segments)

    def append(self, kind: str, data: str) -> int | None:
        """Add one record; return its sequence number, or None when the spool is full
        (counted in :attr:`refused`). OSError if the disk refuses."""
        got = self.append_all(kind, [data])
        return None if got is None else got[0]

    def append_all(self, kind: str, items: list[str]) -> list[int] | None:
        """Add one record per item, all of them or none (None: the spool is full, counted
        in :attr:`refused`); return their sequence numbers. OSError if the disk refuses."""
        if "\t" in kind or any("\n" in d for d in items):
            raise ValueError("a spool record's kind has no tab and its JSON no newline")
        with self._lock:
            lines = [f"{self.last + 1 + i}\t{kind}\t{d}\n".encode()
                     for i, d in enumerate(items)]
            if self.disk_bytes + sum(map(len, lines)) > self.max_bytes:
                self.refused += len(lines)
                return None
            seqs = []
            for line in lines:
                self._write(line)
                seqs.append(self.last)
            if self._out is not None:
                self._out.flush()
                if self.fsync:
                    os.fsync(self._out.fileno())
            self._lock.notify_all()
            return seqs

    def _write(self, line: bytes) -> None:
        """Append one encoded line as the next record (the lock is held)."""
        seq = self.last + 1
        if self._out is None and self._segments and \
                self._segments[-1].size < SEGMENT_BYTES:
            self._out = open(self._segments[-1].path, "ab")  # noqa: SIM115
        elif self._out is None or self._segments[-1].size >= SEGMENT_BYTES:
            if self._out is not None:
                self._out.flush()
                self._out.close()
            path = self.dir / f"{seq:020d}.spool"
            self._out = open(path, "ab")  # noqa: SIM115 (kept open between appends)
            self._segments.append(_Segment(seq, path, seq - 1, 0))
        self._out.write(line)
        seg = self._segments[-1]
        seg.last, seg.size = seq, seg.size + len(line)
        self.last = seq

    def read(self, after: int, limit: int = 1000, max_bytes: int | None = None
             ) -> list[Record]:
        """Up to ``limit`` records after sequence number ``after``, oldest first, and no
        more once ``max_bytes`` of data are reached (the first record always comes); those
        already deleted, acknowledged by an earlier hub, are not there."""
        with self._lock:
            segments = [s for s in self._segments if s.last > after]
            out: list[Record] = []
            size = 0
            for seg in segments:
                with open(seg.path, "rb") as f:
                    data = f.read(seg.size)
                for line in data.splitlines():
                    seq = _seq(line)
                    if seq is None:   # damaged on disk: skip, count
                        self.bad_lines += 1
                        continue
                    if seq <= after:
                        continue
                    kind, _, payload = line.split(b"\t", 1)[1].partition(b"\t")
                    if out and max_bytes is not None and size + len(payload) > max_bytes:
                        return out
                    out.append(Record(seq, kind.decode(), payload.decode()))
                    size += len(payload)
                    if len(out) >= limit:
                        return out
            return out

    def wait(self, after: int, timeout: float) -> bool:
        """Wait until a record after ``after`` exists (True) or ``timeout`` passed."""
        with self._lock:
            return self._lock.wait_for(lambda: self.last > after, timeout)

    def ack(self, seq: int) -> None:
        """Everything up to ``seq`` is safe at the hub: remember it, delete what it frees."""
        with self._lock:
            if seq <= self.acked:
                return
            self.acked = min(seq, self.last)
            _write_atomic(self.dir / "acked", str(self.acked))
            while self._segments and self._segments[0].last <= self.acked:
                if len(self._segments) == 1 and self._out is not None:
                    self._out.close()   # the segment being appended to: begin a new one
                    self._out = None
                self._segments.pop(0).path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the open segment (appending after this reopens it)."""
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None


def _seq(line: bytes) -> int | None:
    """The sequence number of a record line (None: not a record, damaged on disk)."""
    head, sep, rest = line.partition(b"\t")
    return int(head) if sep and head.isdigit() and b"\t" in rest else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
