"""Agents' progress beside a store file, written without taking the store's lock.

A live map draws a connection only once every agent has stored its end of it
(:meth:`~podflow.store.base.FlowStore.progress`). The health report in the store says how
far an agent got, but it is written through the store's file lock: when several agents
share one file under load, one of them can wait tens of seconds for its turn (measured on
the 6-node load lab: health reports 60-80 s old while the agents ran), and a reader could
not tell that agent (alive, its connections still to come) from one that stopped. So each
agent also leaves a small *beacon* next to the file, ``.<name>.progress/<node>.json``,
replaced atomically after every flush attempt, whether the store took the flows or not::

    {"at": <when written>, "through": <every connection up to here is stored>}

Readers merge beacons with the reports in the store (the newest of each wins). A store
file copied elsewhere without its beacons still has its reports.

Example::

    >>> import tempfile, pathlib
    >>> store = pathlib.Path(tempfile.mkdtemp()) / "flows.duckdb"
    >>> write_beacon(store, "node1", through=90.0, at=100.0)
    >>> read_beacons(store, since=50.0)
    {'node1': (100.0, 90.0)}
"""

from __future__ import annotations

import json
import os
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote, unquote

MAX_BYTES = 4096
"""A beacon is a few dozen bytes; anything larger is not one (and is not read)."""


def beacons_dir(path: Path) -> Path:
    """Where the agents writing ``path`` leave their beacons."""
    return path.parent / f".{path.name}.progress"


def write_beacon(path: Path, node: str, *, through: float, at: float) -> None:
    """Say that agent ``node`` was alive at ``at`` with every connection up to ``through``
    stored in ``path``. Atomic (a reader sees the old beacon or the new one); raises
    ``OSError`` when the directory cannot be written, ``ValueError`` for an empty name."""
    if not node:
        raise ValueError("a beacon needs a node name")
    d = beacons_dir(path)
    d.mkdir(exist_ok=True)
    name = quote(node, safe="").replace(".", "%2E")   # any name is one plain, visible file
    tmp = d / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"at": at, "through": through}))
    os.replace(tmp, d / f"{name}.json")


def read_beacons(path: Path, since: float) -> dict[str, tuple[float, float]]:
    """``node -> (at, through)`` of every beacon written at or after ``since``; a beacon
    that cannot be read or is not one is skipped."""
    out: dict[str, tuple[float, float]] = {}
    with suppress(OSError):
        for e in os.scandir(beacons_dir(path)):
            if not e.name.endswith(".json") or e.name.startswith("."):
                continue
            try:
                if e.stat().st_size > MAX_BYTES:
                    continue
                doc = json.loads(Path(e.path).read_bytes())
            except (OSError, ValueError):
                continue
            if not isinstance(doc, dict):
                continue
            at, through = doc.get("at"), doc.get("through")
            if (isinstance(at, (int, float)) and isinstance(through, (int, float))
                    and not isinstance(at, bool) and not isinstance(through, bool)
                    and at >= since):
                out[unquote(e.name[:-len(".json")])] = (float(at), float(through))
    return out
