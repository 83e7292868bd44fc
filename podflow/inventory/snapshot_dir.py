"""Cluster state from a directory of ``kubectl get X -A -o json`` files (I/O edge).

:class:`ClusterStateDir` watches a directory holding ``pods.json``, ``replicasets.json``,
``jobs.json``, ``deployments.json``, ``services.json``, ``endpointslices.json``,
``nodes.json``, ``namespaces.json`` and ``configmaps.json``. ``poll(now)`` re-reads only the
files whose (inode, size, mtime) changed, parses them and, if any changed, applies the
merged snapshot to its :class:`~podflow.inventory.history.Inventory`.

Robustness rules: a missing file counts as empty until it first appears; a file that cannot
be read or parsed logs one warning per change and the last good data of that file is kept;
a file that disappears after it was read keeps its last good data too (writers replace
files atomically, so a vanished file is an accident, not "everything was deleted": write an
empty List for that). Deployments and EndpointSlices are read for completeness but identity
needs only Pods -> ReplicaSets/Jobs.

Example::

    inv = Inventory()
    state = ClusterStateDir(Path("/var/lib/podflow/cluster"), inv)
    while running:
        state.poll(time.time())   # cheap when nothing changed: one stat() per file
        ...
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podflow.inventory import k8s
from podflow.inventory.history import Inventory

log = logging.getLogger(__name__)

PARSERS: dict[str, Callable[[Any], list[Any]]] = {
    "pods.json": k8s.parse_pods,
    "replicasets.json": lambda d: k8s.parse_controllers(d, "ReplicaSet"),
    "jobs.json": lambda d: k8s.parse_controllers(d, "Job"),
    "deployments.json": k8s.items_of,
    "services.json": k8s.parse_services,
    "endpointslices.json": k8s.items_of,
    "nodes.json": k8s.parse_nodes,
    "namespaces.json": k8s.parse_namespaces,
    "configmaps.json": k8s.parse_external_names,
}
"""File name -> parser. Parsers raise ValueError on a document of the wrong shape."""


@dataclass(frozen=True, slots=True)
class _Stamp:
    ino: int
    size: int
    mtime_ns: int


class ClusterStateDir:
    """A polled directory of Kubernetes JSON feeding an :class:`Inventory`.

    Args:
        path: the directory.
        inventory: the inventory to update (a new one if omitted; see ``.inventory``).
    """

    def __init__(self, path: Path, inventory: Inventory | None = None) -> None:
        self.path = Path(path)
        self.inventory = inventory if inventory is not None else Inventory()
        self._stamps: dict[str, _Stamp | None] = {}
        self._data: dict[str, list[Any]] = {name: [] for name in PARSERS}
        self.errors = 0
        """Number of unreadable/invalid file versions met so far."""
        self._warned_missing_dir = False

    def poll(self, now: float) -> bool:
        """Reload changed files and apply them at time ``now``; True if the inventory changed.

        Never raises for bad input: problems are logged and counted in ``errors``.
        """
        if not self.path.is_dir():
            if not self._warned_missing_dir:
                log.warning("cluster state directory %s does not exist (yet)", self.path)
                self._warned_missing_dir = True
            return False
        self._warned_missing_dir = False
        reloaded = False
        for name, parse in PARSERS.items():
            reloaded |= self._reload(name, parse)
        if not reloaded:
            return False
        return self.inventory.apply(self.objects(), now)

    def _reload(self, name: str, parse: Callable[[Any], list[Any]]) -> bool:
        f = self.path / name
        try:
            st = f.stat()
            stamp: _Stamp | None = _Stamp(st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            log.warning("cannot stat %s: %s", f, exc)
            return False
        if name in self._stamps and self._stamps[name] == stamp:
            return False
        self._stamps[name] = stamp
        if stamp is None:
            if self._data[name]:
                log.warning("%s disappeared; keeping its last good data", f)
            return False
        try:
            data = parse(json.loads(f.read_bytes()))
        except (OSError, ValueError) as exc:
            self.errors += 1
            log.warning("%s is unreadable or not Kubernetes JSON (%s); keeping last good data",
                        f, exc)
            return False
        self._data[name] = data
        return True

    def objects(self) -> k8s.ClusterObjects:
        """The merged last good data of every file."""
        d = self._data
        return k8s.ClusterObjects(
            pods=tuple(d["pods.json"]),
            controllers=tuple(d["replicasets.json"] + d["jobs.json"]),
            services=tuple(d["services.json"]), nodes=tuple(d["nodes.json"]),
            namespaces=tuple(d["namespaces.json"]), external_names=tuple(d["configmaps.json"]),
            extra={"deployments": tuple(d["deployments.json"]),
                   "endpointslices": tuple(d["endpointslices.json"])})
