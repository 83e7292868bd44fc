"""What a DuckDB error says about the store file, as one of the :mod:`~podflow.store.base`
errors with a message that names the file and what to do.

DuckDB reports every problem of a database file as an exception whose type is too coarse to
act on (a held lock, a truncated file and a file that is not a database are all
``duckdb.IOException``; a checksum mismatch is a bare ``duckdb.Error``), so this module reads
the message, anchored at its start, for the exact wordings DuckDB 1.x/2.x uses (each is
produced for real by ``tests/unit/store/test_errors.py``):

========================================================  ===============================
DuckDB says                                               raised as
========================================================  ===============================
``IO Error: Could not set lock on file "F": Conflicting   :class:`StoreBusy` (retryable)
lock is held in PROGRAM (PID N)``
``Connection Error: Can't open a connection to same       :class:`StoreBusy` (this process
database file with a different configuration ...``        holds it in the other mode)
``Corrupt database file: computed checksum X does not     :class:`StoreCorrupt`
match stored checksum Y in block at location L``
``IO Error: Could not read enough bytes from file "F":    :class:`StoreTruncated`
attempted to read N bytes from location L``
``IO Error: The file "F" exists, but it is not a valid    :class:`StoreNotDuckDB`
DuckDB database file!``
``[... Error: ]Failure while replaying WAL file "F": ...``  :class:`StoreWalCorrupt`
``IO Error: Trying to read a database file with version   :class:`StoreSchemaError`
number N, but we can only read ...``
``IO Error: Cannot open database "F" in read-only mode:   :class:`StoreMissing`
database does not exist``
========================================================  ===============================

Anything else is left to the caller (:func:`classify` returns None): a filter DuckDB rejects
is the request's fault, not the file's.

Example::

    >>> from pathlib import Path
    >>> err = classify(RuntimeError('IO Error: Could not read enough bytes from file '
    ...                '"/d/f.duckdb": attempted to read 4096 bytes from location 4096'),
    ...                Path("/d/f.duckdb"))
    >>> type(err).__name__, err.retryable
    ('StoreTruncated', False)
"""

from __future__ import annotations

import re
from pathlib import Path

from podflow.store.base import (
    StoreBusy,
    StoreCorrupt,
    StoreError,
    StoreMissing,
    StoreNotDuckDB,
    StoreSchemaError,
    StoreTruncated,
    StoreUnreadable,
    StoreWalCorrupt,
)

_IO = r"^(?:IO Error: )"
LOCKED = re.compile(_IO + r'Could not set lock on file "[^"]*": (?P<why>.*)$', re.S)
OTHER_CONFIG = re.compile(r"^Connection Error: Can't open a connection to same database file "
                          r"with a different configuration than existing connections")
CHECKSUM = re.compile(r"^Corrupt database file: computed checksum \d+ does not match stored "
                      r"checksum \d+ in block at location (?P<at>\d+)")
SHORT_READ = re.compile(_IO + r'Could not read enough bytes from file "[^"]*": attempted to '
                        r"read (?P<n>\d+) bytes from location (?P<at>\d+)")
NOT_DUCKDB = re.compile(_IO + r'The file "[^"]*" exists, but it is not a valid DuckDB '
                        r"database file!")
WAL = re.compile(r'^(?:[A-Z][A-Za-z ]* Error: )?Failure while replaying WAL file '
                 r'"(?P<wal>[^"]*)": (?P<why>.*)$', re.S)
VERSION = re.compile(_IO + r"Trying to read a database file with version number (?P<v>\d+)")
NO_DATABASE = re.compile(_IO + r'Cannot open database "[^"]*" in read-only mode: database '
                         r"does not exist")
CANNOT_OPEN = re.compile(_IO + r'(?:Cannot open|Could not read from) file "[^"]*": '
                         r"(?P<why>.*)$", re.S)
_PID = re.compile(r"Conflicting lock is held in (?P<prog>.*) \(PID (?P<pid>\d+)\)")

ASIDE = ("restore it from a backup, or move it aside (podflow then starts a new store at "
         "that path)")
"""What to do about a damaged store file (the end of every damaged-file message)."""


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def busy(path: Path, waited: float, detail: str) -> StoreBusy:
    """The error for a store still locked after ``waited`` seconds (``detail``: DuckDB's)."""
    m = _PID.search(detail)
    who = (f"process {m['pid']} ({Path(m['prog']).name})" if m
           else "another connection of this process" if OTHER_CONFIG.match(detail)
           else "another process")
    return StoreBusy(f"flow store {path} stayed locked by {who} for {waited:g}s: an agent "
                     "or reader holds it; retry, or stop that process", path)


def is_lock(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckDB refusing a file another connection holds (retry later)."""
    msg = str(exc)
    return bool(LOCKED.match(msg) or OTHER_CONFIG.match(msg))


def classify(exc: BaseException, path: Path) -> StoreError | None:
    """The store error ``exc`` (a DuckDB error about ``path``) stands for, or None.

    Lock errors are not classified here (the caller retries them, then calls :func:`busy`).
    """
    msg = str(exc)
    if m := CHECKSUM.match(msg):
        return StoreCorrupt(f"flow store {path} is corrupt (block at byte {m['at']} fails "
                            f"its checksum): {ASIDE}", path)
    if m := SHORT_READ.match(msg):
        size = _size(path)
        return StoreTruncated(
            f"flow store {path} is truncated ({size} on disk, DuckDB needs bytes up to "
            f"{int(m['at']) + int(m['n'])}): {ASIDE}", path)
    if NOT_DUCKDB.match(msg):
        return StoreNotDuckDB(f"{path} is not a DuckDB database ({_size(path)}): check "
                              f"the path, or {ASIDE}", path)
    if m := WAL.match(msg):
        return StoreWalCorrupt(
            f"the write-ahead log {m['wal']} of flow store {path} cannot be replayed "
            f"({_first_line(m['why'])}): move the .wal file aside to open the store without "
            "its last unsaved writes, or restore both files from a backup", path)
    if m := VERSION.match(msg):
        return StoreSchemaError(f"flow store {path} was written by a newer DuckDB (storage "
                                f"version {m['v']}): upgrade podflow", path)
    if NO_DATABASE.match(msg):
        return StoreMissing(f"no flow store at {path}", path)
    if m := CANNOT_OPEN.match(msg):
        return StoreUnreadable(f"cannot open flow store {path}: {_first_line(m['why'])}",
                               path)
    return None


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size} bytes"
    except OSError as exc:
        return exc.strerror or "unreadable"
