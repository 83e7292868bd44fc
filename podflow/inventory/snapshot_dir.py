"""Cluster state from a directory of ``kubectl get ... -A -o json`` files (I/O edge).

:class:`ClusterStateDir` watches a directory of Kubernetes JSON: every ``*.json`` file in
it (at most :data:`MAX_FILES`; hidden files are skipped, so an atomic writer's temporary
``.name.json`` is not read half-written) is a ``List``, a list or a single object, and its
items are sorted by their ``kind`` (Pod, ReplicaSet, Job, Deployment, Service, EndpointSlice,
Node, Namespace, ConfigMap; see :data:`KINDS`). So both shapes work: one file per kind
(``pods.json``, ``services.json``, ...; items without a ``kind`` take the file's or the
List's, ``PodList`` -> Pod) and one file of mixed kinds, as
``kubectl get pods,services,endpointslices,replicasets,nodes -A -o json > cluster.json``
writes it. Other kinds are ignored (said once per kind). ``poll(now)`` re-reads only the
files whose (inode, size, mtime) changed, parses them and, if any changed, applies the
merged snapshot to its :class:`~podflow.inventory.history.Inventory`.

Robustness rules (the input is untrusted; ``poll`` never raises): a missing file counts as
empty until it first appears; a file that cannot be read or parsed (not a regular file, larger
than ``max_file_bytes``, not JSON, nested deeper than :data:`MAX_DEPTH`, not a Kubernetes
document) logs one warning per change, is counted in ``losses`` by reason, and the last good
data of that file is kept; an object that cannot be understood is counted as ``bad_object``
and skipped while the rest of its file loads (:mod:`podflow.inventory.k8s`);
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
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from podflow.inventory import k8s
from podflow.inventory.history import Inventory
from podflow.model.losses import DecodeError, Losses

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 128 * 1024 * 1024
"""Largest cluster-state file read (``kubectl get pods -A -o json`` of ~10k pods fits)."""
MAX_DEPTH = 100
"""Deepest JSON nesting accepted (Kubernetes objects nest a few dozen levels at most)."""

MAX_FILES = 256
"""Most ``*.json`` files read from the directory (sorted by name; the rest are ignored)."""

KINDS: dict[str, Callable[[Any, Losses], list[Any]]] = {
    "Pod": k8s.parse_pods,
    "ReplicaSet": lambda d, losses: k8s.parse_controllers(d, "ReplicaSet", losses),
    "Job": lambda d, losses: k8s.parse_controllers(d, "Job", losses),
    "Deployment": k8s.items_of,
    "Service": k8s.parse_services,
    "EndpointSlice": k8s.items_of,
    "Node": k8s.parse_nodes,
    "Namespace": k8s.parse_namespaces,
    "ConfigMap": k8s.parse_external_names,
}
"""Kind -> parser of a List of that kind. Parsers count bad objects in the given Losses and
raise DecodeError (a ValueError) on a document of the wrong shape."""

FILE_KINDS: dict[str, str] = {
    "pods.json": "Pod", "replicasets.json": "ReplicaSet", "jobs.json": "Job",
    "deployments.json": "Deployment", "services.json": "Service",
    "endpointslices.json": "EndpointSlice", "nodes.json": "Node",
    "namespaces.json": "Namespace", "configmaps.json": "ConfigMap",
}
"""The kind of items without a ``kind`` in the one-file-per-kind layout."""

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest (brackets in strings ignored).

    Linear and iterative (no recursion, C-speed loops), so it is safe on any input.

    >>> nesting_depth('{"a": [1, {"b": "[[["}]}'), nesting_depth("3")
    (3, 0)
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def decode_document(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON document in ``data``.

    Raises:
        DecodeError: reason ``bad_json`` (not JSON text) or ``too_deep`` (nested deeper
            than ``max_depth``).
    """
    try:
        text = data.decode(json.detect_encoding(data), "surrogatepass")
    except (UnicodeDecodeError, LookupError) as exc:
        raise DecodeError("bad_json", f"not UTF-8/16/32 text: {exc}") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise DecodeError("too_deep", f"JSON nested {depth} levels deep (limit {max_depth})")
    try:
        return json.loads(text)
    except RecursionError:
        raise DecodeError("too_deep", "JSON nested too deeply") from None
    except ValueError as exc:
        raise DecodeError("bad_json", str(exc)) from None


def parse_document(doc: Any, losses: Losses, default_kind: str | None = None,
                   ignored: set[str] | None = None) -> dict[str, list[Any]]:
    """The records of a decoded document, by kind (keys of :data:`KINDS`).

    An item's kind is its own ``kind``, else the List's (``PodList`` -> ``Pod``), else
    ``default_kind``; an item with none is counted as ``no_kind``, one whose ``kind`` is not
    a string as ``bad_object``. Items of kinds podflow does not read are skipped and their
    kind added to ``ignored``.

    >>> doc = {"kind": "List", "items": [{"kind": "Namespace", "metadata": {"name": "a"}},
    ...                                  {"kind": "Secret", "metadata": {"name": "s"}}]}
    >>> ignored = set()
    >>> parse_document(doc, Losses(), ignored=ignored), ignored
    ({'Namespace': ['a']}, {'Secret'})

    Raises:
        DecodeError: ``not_kubernetes``: the document is not a List, a list or an object.
    """
    items = k8s.items_of(doc, losses)
    list_kind = doc.get("kind") if isinstance(doc, dict) and "items" in doc else None
    if isinstance(list_kind, str) and len(list_kind) > 4 and list_kind.endswith("List"):
        default_kind = list_kind[:-4]
    groups: dict[str, list[Any]] = {}
    for item in items:
        kind = item.get("kind", default_kind)
        if kind is None:
            losses.count("no_kind")
        elif not isinstance(kind, str):
            losses.count("bad_object")
        elif kind in KINDS:
            groups.setdefault(kind, []).append(item)
        elif ignored is not None and len(ignored) < 64:
            ignored.add(kind[:64])
    return {kind: KINDS[kind]({"kind": "List", "items": objs}, losses)
            for kind, objs in groups.items()}


def parse_file(name: str, data: bytes, losses: Losses,
               ignored: set[str] | None = None) -> dict[str, list[Any]]:
    """The records of cluster-state file ``name`` with content ``data`` by kind, as
    :class:`ClusterStateDir` reads it; bad objects are counted in ``losses``.

    Raises:
        DecodeError: the file as a whole is unusable (see :func:`decode_document`, and
            ``not_kubernetes`` for a document of the wrong shape).
    """
    return parse_document(decode_document(data), losses, FILE_KINDS.get(name), ignored)


def objects_from(by_kind: Mapping[str, Sequence[Any]]) -> k8s.ClusterObjects:
    """The inventory's snapshot from records by kind (missing kinds are empty)."""
    def of(kind: str) -> tuple[Any, ...]:
        return tuple(by_kind.get(kind, ()))

    return k8s.ClusterObjects(
        pods=of("Pod"), controllers=of("ReplicaSet") + of("Job"), services=of("Service"),
        nodes=of("Node"), namespaces=of("Namespace"), external_names=of("ConfigMap"),
        extra={"deployments": of("Deployment"), "endpointslices": of("EndpointSlice")})


def read_bounded(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """The content of regular file ``path`` (at most ``limit`` bytes) and its ``fstat``.

    Opened non-blocking, so a FIFO or device put in place of a file cannot hang the reader.

    Raises:
        DecodeError: reason ``unreadable_file`` or ``oversized_file``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise DecodeError("unreadable_file", exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError("unreadable_file", "not a regular file")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise DecodeError("unreadable_file", exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise DecodeError("oversized_file", f"larger than {limit} bytes")
    return data, st


@dataclass(frozen=True, slots=True)
class _Stamp:
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Stamp:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


class ClusterStateDir:
    """A polled directory of Kubernetes JSON feeding an :class:`Inventory`.

    Args:
        path: the directory.
        inventory: the inventory to update (a new one if omitted; see ``.inventory``).
        max_file_bytes: larger files are refused (counted as ``oversized_file``).
    """

    def __init__(self, path: Path, inventory: Inventory | None = None,
                 max_file_bytes: int = MAX_FILE_BYTES) -> None:
        """Nothing is read until the first :meth:`poll`."""
        self.path = Path(path)
        self.inventory = inventory if inventory is not None else Inventory()
        self.max_file_bytes = max_file_bytes
        self._stamps: dict[str, _Stamp | None] = {}
        self._data: dict[str, dict[str, list[Any]]] = {}
        """Last good records of each file read, by kind."""
        self._ignored: set[str] = set()
        self._said_ignored: set[str] = set()
        self._said_too_many = False
        self.errors = 0
        """Number of unreadable/invalid file versions met so far."""
        self.losses = Losses()
        """What could not be used, by reason: ``bad_object`` (one skipped object),
        ``unreadable_file``, ``oversized_file``, ``bad_json``, ``too_deep``,
        ``not_kubernetes`` (one refused file version each), ``poll_failed`` (a defect caught
        by :meth:`poll`). Cumulative; for the agent's health report (``as_stats()``)."""
        self._warned_missing_dir = False

    def poll(self, now: float) -> bool:
        """Reload changed files and apply them at time ``now``; True if the inventory changed.

        Never raises: bad input is logged and counted in ``errors`` and ``losses``, and an
        unexpected failure is logged and counted as ``poll_failed``.
        """
        try:
            return self._poll(now)
        except Exception:   # the inventory's one guarded place: a defect, not bad input
            self.losses.count("poll_failed")
            log.exception("cluster state %s: poll failed; keeping the last good state",
                          self.path)
            return False

    def _poll(self, now: float) -> bool:
        if not self._dir_exists():
            if not self._warned_missing_dir:
                log.warning("cluster state directory %s does not exist (yet)", self.path)
                self._warned_missing_dir = True
            return False
        self._warned_missing_dir = False
        reloaded = False
        for name in self._file_names():
            reloaded |= self._reload(name)
        self._say_ignored()
        if not reloaded:
            return False
        return self.inventory.apply(self.objects(), now)

    def _file_names(self) -> list[str]:
        """``*.json`` in the directory (not hidden), plus every file read before (a vanished
        one keeps its last good data, see the module doc)."""
        try:
            with os.scandir(self.path) as it:
                found = sorted(e.name for e in it
                               if e.name.endswith(".json") and not e.name.startswith("."))
        except OSError as exc:
            log.warning("cluster state %s: cannot list: %s", self.path, exc)
            found = []
        if len(found) > MAX_FILES:
            if not self._said_too_many:
                log.warning("cluster state %s holds %d .json files; reading the first %d",
                            self.path, len(found), MAX_FILES)
                self._said_too_many = True
            found = found[:MAX_FILES]
        return sorted(set(found) | set(self._stamps))

    def _say_ignored(self) -> None:
        new = self._ignored - self._said_ignored
        if new:
            log.info("cluster state %s: ignoring objects of kind %s (not used for identity)",
                     self.path, ", ".join(sorted(new)))
            self._said_ignored |= new

    def _dir_exists(self) -> bool:
        try:
            return stat.S_ISDIR(os.stat(self.path).st_mode)
        except (OSError, ValueError):
            return False

    def _reload(self, name: str) -> bool:
        f = self.path / name
        try:
            stamp: _Stamp | None = _Stamp.of(os.stat(f))
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            stamp = _Stamp(-1, -1, -1)
            if self._stamps.get(name) != stamp:
                self._refuse(name, DecodeError("unreadable_file", exc.strerror or str(exc)))
                self._stamps[name] = stamp
            return False
        if name in self._stamps and self._stamps[name] == stamp:
            return False
        self._stamps[name] = stamp
        if stamp is None:
            if self._data.get(name):
                log.warning("%s disappeared; keeping its last good data", f)
            return False
        try:
            data, st = read_bounded(f, self.max_file_bytes)
            self._stamps[name] = _Stamp.of(st)
            records = parse_file(name, data, self.losses, self._ignored)
        except DecodeError as exc:
            self._refuse(name, exc)
            return False
        self._data[name] = records
        return True

    def _refuse(self, name: str, exc: DecodeError) -> None:
        self.errors += 1
        self.losses.count(exc.reason)
        log.warning("%s: %s; keeping its last good data", self.path / name, exc)

    def objects(self) -> k8s.ClusterObjects:
        """The merged last good data of every file."""
        merged: dict[str, list[Any]] = {}
        for name in sorted(self._data):
            for kind, records in self._data[name].items():
                merged.setdefault(kind, []).extend(records)
        return objects_from(merged)

    @property
    def pod_count(self) -> int:
        """Pods in the last good data (0 means no endpoint can be named a pod)."""
        return sum(len(d.get("Pod", ())) for d in self._data.values())

    @property
    def description(self) -> str:
        """Where the state comes from, for messages."""
        return (f"the cluster-state directory {self.path} (Kubernetes JSON as `kubectl get "
                "pods,services,... -A -o json` prints it)")

    def start(self) -> None:
        """Nothing to start: :meth:`poll` reads the directory."""

    def stop(self) -> None:
        """Nothing to stop."""

    @property
    def current(self) -> bool:
        """Each :meth:`poll` reads the directory as it is: always current."""
        return True

    def wait_synced(self, timeout: float) -> bool:
        """A directory is read whole by each :meth:`poll`: nothing to wait for."""
        return True

    def health(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """No watches: nothing per resource (the losses say what could not be read)."""
        return {}
