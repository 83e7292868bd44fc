"""Parse the store limits the commands take: ``--retention 14d`` and ``--max-size 20GB``.

Durations are :func:`podflow.query.timeparse.parse_duration`'s (``30s``, ``5m``, ``12h``,
``14d``, ``2w``, ``1d12h``), the same as ``--since``. Sizes are a number of bytes with an
optional unit, as Kubernetes writes quantities: ``KB``/``MB``/``GB``/``TB`` (also ``K``,
``M``, ``G``, ``T``) are powers of 1000, ``KiB``/``MiB``/``GiB``/``TiB`` (also ``Ki`` ...)
powers of 1024; case does not matter and a space may precede the unit.

Example::

    >>> parse_size("20GB"), parse_size("1.5 GiB"), parse_size("4096")
    (20000000000, 1610612736, 4096)
    >>> parse_retention("14d")
    1209600.0
"""

from __future__ import annotations

import math
import re
from typing import Any

import typer

from podflow.query.timeparse import parse_duration

MIN_STORE_BYTES = 10_000_000
"""Smallest ``--max-size``: an empty store already takes about 1 MB, and DuckDB frees space
in row groups of about 120,000 rows."""

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20,
          "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40}
_SIZE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]*)$")

RETENTION_HELP = ("Delete connections that ended (or, still open, started) longer ago than "
                  "this: 30m, 12h, 14d, 2w, 1d12h. Default: keep everything.")
MAX_SIZE_HELP = ("Keep the store file under this size by deleting the oldest connections: "
                 "500MB, 20GB, 1.5TiB (KB/MB/GB/TB = powers of 1000, KiB/MiB/GiB/TiB = "
                 "1024). The data is kept to about half of it: DuckDB's file needs the rest "
                 "as free space. Default: no limit.")


def parse_size(text: str) -> int:
    """Bytes in a size like ``20GB``, ``512MiB`` or ``1048576``; ValueError if malformed.

    >>> parse_size("500mb")
    500000000
    """
    m = _SIZE.match(text.strip().lower())
    unit = _UNITS.get(m["unit"]) if m else None
    if m is None or unit is None:
        raise ValueError(f"bad size {text!r}: expected a number of bytes with an optional "
                         "unit, e.g. 500MB, 20GB, 1.5TiB (KB/MB/GB/TB = powers of 1000, "
                         "KiB/MiB/GiB/TiB = powers of 1024)")
    value = float(m["n"]) * unit
    if not math.isfinite(value) or value >= 2**63:
        raise ValueError(f"bad size {text!r}: too large")
    return int(value)


def parse_store_size(text: str) -> int:
    """:func:`parse_size` for ``--max-size``: at least :data:`MIN_STORE_BYTES`.

    >>> parse_store_size("1MB")
    Traceback (most recent call last):
    ...
    ValueError: '1MB' is too small for a flow store: give at least 10MB
    """
    size = parse_size(text)
    if size < MIN_STORE_BYTES:
        raise ValueError(f"{text!r} is too small for a flow store: give at least 10MB")
    return size


def parse_retention(text: str) -> float:
    """Seconds in a positive duration like ``14d`` (see the module doc); ValueError if not.

    >>> parse_retention("0s")
    Traceback (most recent call last):
    ...
    ValueError: retention '0s' keeps nothing: give a positive duration, e.g. 14d
    """
    seconds = parse_duration(text)
    if not seconds > 0:
        raise ValueError(f"retention {text!r} keeps nothing: give a positive duration, "
                         "e.g. 14d")
    return seconds


def store_limits(retention: str | None, max_size: str | None,
                 command: str) -> dict[str, Any]:
    """The config fields (``retention``, ``max_store_bytes``) of ``--retention`` and
    ``--max-size`` of ``podflow COMMAND`` (exit 2 with the reason if malformed)."""
    try:
        age = None if retention is None else parse_retention(retention)
    except ValueError as exc:
        typer.echo(f"podflow {command}: --retention: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        size = None if max_size is None else parse_store_size(max_size)
    except ValueError as exc:
        typer.echo(f"podflow {command}: --max-size: {exc}", err=True)
        raise typer.Exit(2) from None
    return {"retention": age, "max_store_bytes": size}
