"""Cluster state from the Kubernetes API server: list, then watch (I/O edge).

:class:`ClusterAPI` keeps one list+watch per resource (:data:`RESOURCES`) on a thread of its
own, and :meth:`ClusterAPI.poll` applies what changed to the time-indexed
:class:`~podflow.inventory.history.Inventory`, as
:class:`~podflow.inventory.snapshot_dir.ClusterStateDir` does for a directory: the agent's
loop polls it once a second and never waits for the API.

The watch discipline (each resource, ``docs/k8s-api-inventory.md``):

- list (in pages of :data:`PAGE`), then watch from the list's ``resourceVersion`` with
  ``allowWatchBookmarks=true``; every event and bookmark moves the version on;
- a watch that ends (the server's ``timeoutSeconds``, a dropped connection) resumes from the
  last version seen, without a list;
- ``410 Gone`` (the version was compacted, as an ERROR event or an HTTP status) means
  events were missed: list again and reconcile. The relist replaces the resource's objects,
  so an object missing from it is closed in the inventory at the next poll, at that time;
- errors back off exponentially with jitter (:data:`BACKOFF_MAX`); a refused credential
  (401) or a missing permission (403) is said once, with what to fix, and counted as
  ``api_unauthorized``/``api_forbidden`` in :attr:`ClusterAPI.losses`; never silence.

Objects are parsed by the same per-kind parsers as the directory
(:data:`~podflow.inventory.snapshot_dir.KINDS`), so both inputs name endpoints alike.
Deployments and CronJobs are not watched: a pod's top owner is found from the
``ownerReferences`` of its ReplicaSet or Job, which name them. NetworkPolicies are watched
and kept (:meth:`ClusterAPI.objects_of`) for the policy work; identity does not use them.

Client library: lightkube (measured against the official client and kubernetes-asyncio in
``docs/k8s-api-inventory.md``: a tenth of the install, a fifth of the memory, 8x faster on a
10,000-pod list + watch). podflow uses its configuration layer (kubeconfig files, the
in-cluster service account with token reload, exec plugins, CAs) and the HTTP client it
ships, and speaks list/watch itself: lightkube's ``watch()`` has no bookmark parameter and
re-watches from "now" after a 410 without a relist, which would lose deletions.

Example::

    api = ClusterAPI(load_config(kubeconfig=Path("~/.kube/config").expanduser()))
    api.start()
    while running:
        api.poll(time.time())     # cheap when nothing changed
    api.stop()
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError

from podflow.inventory import k8s
from podflow.inventory.history import Inventory
from podflow.inventory.snapshot_dir import KINDS, objects_from
from podflow.model.losses import Losses

log = logging.getLogger(__name__)

PAGE = 500
"""Objects per list page (``limit``): bounds the memory of one response."""
WATCH_TIMEOUT = 300
"""``timeoutSeconds`` asked of each watch (jittered up to +20%); the server ends it then and
the watch resumes from the last version, as client-go does."""
BACKOFF_MIN = 0.25
"""First wait after an error: an API server that restarts is back within a second or two,
and flows of pods created meanwhile wait only ``identity_grace`` (5 s) for their names."""
BACKOFF_MAX = 30.0
"""Longest wait between retries after errors (doubling from :data:`BACKOFF_MIN`, with
jitter)."""
EXTERNAL_NAMES = ("podflow", "external-names")
"""The ConfigMap that names external addresses (namespace, name)."""


class APIError(Exception):
    """The API server answered with an error status (``code``: the HTTP status)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Gone(APIError):
    """410: the resourceVersion is too old (compacted); list again."""


@dataclass(frozen=True)
class Resource:
    """One watched resource: the kind its objects have and where to list it."""

    kind: str
    """The object kind (a key of :data:`~podflow.inventory.snapshot_dir.KINDS`, or one that
    is only kept)."""
    path: str
    """The collection's URL path."""
    field_selector: str | None = None
    """``fieldSelector`` of the list and watch (None: every object)."""
    label_selector: str | None = None
    """``labelSelector`` of the list and watch (None: every object)."""


def resources(node: str | None = None) -> list[Resource]:
    """The resources an agent watches. ``node`` limits Pods to that node's (the hub of a
    later part names the other ends; ``docs/k8s-api-inventory.md``); None watches every
    pod, as an agent without a hub must to name both ends."""
    ns, name = EXTERNAL_NAMES
    return [
        Resource("Pod", "/api/v1/pods", f"spec.nodeName={node}" if node else None),
        Resource("ReplicaSet", "/apis/apps/v1/replicasets"),
        Resource("Job", "/apis/batch/v1/jobs"),
        Resource("Service", "/api/v1/services"),
        Resource("EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices"),
        Resource("Node", "/api/v1/nodes"),
        Resource("Namespace", "/api/v1/namespaces"),
        Resource("ConfigMap", f"/api/v1/namespaces/{ns}/configmaps", f"metadata.name={name}"),
        Resource("NetworkPolicy", "/apis/networking.k8s.io/v1/networkpolicies"),
    ]


RESOURCES = resources()
"""Every resource watched by an agent without a hub."""


def load_config(kubeconfig: Path | None = None, context: str | None = None) -> SingleConfig:
    """The API server and credentials: ``kubeconfig`` if given, else the in-cluster service
    account when ``KUBERNETES_SERVICE_HOST`` is set, else ``$KUBECONFIG`` or
    ``~/.kube/config``.

    Raises:
        ConfigError: no usable configuration (the message says which file or variable).
    """
    if kubeconfig is not None:
        cfg = KubeConfig.from_file(kubeconfig)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = KubeConfig.from_service_account()
    else:
        cfg = KubeConfig.from_env()
    single = cfg.get(context_name=context)
    if single is None:
        raise ConfigError(f"no context {context!r} in the Kubernetes configuration")
    return single


@dataclass
class WatchHealth:
    """How one resource's list+watch is doing (for ``--explain``, health and /metrics)."""

    kind: str
    synced: bool = False
    """A list has completed (the objects are the server's)."""
    resource_version: str = ""
    """The newest version seen (list, event or bookmark)."""
    last_seen: float = 0.0
    """Unix time of the newest version seen."""
    objects: int = 0
    """Objects held."""
    lists: int = 0
    """Lists completed (the first, then one per relist)."""
    relists: int = 0
    """Lists after a 410 Gone (events were compacted before the watch resumed)."""
    watches: int = 0
    """Watch requests made (one per resume)."""
    errors: int = 0
    """Failed requests (each retried after a backoff)."""
    last_error: str | None = None
    """The newest error, for people."""

    def as_stats(self, now: float) -> dict[str, Any]:
        """JSON-ready, with the age of the newest version (``resource_version_age``)."""
        out = asdict(self)
        out["resource_version_age"] = round(now - self.last_seen, 3) if self.last_seen else None
        return out


def _key(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    name, ns = meta.get("name"), meta.get("namespace", "")
    if not isinstance(name, str) or not isinstance(ns, str):
        return None
    return ns, name


def _version(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return rv if isinstance(rv, str) and rv else None


def _status_error(code: int, body: Any) -> APIError:
    message = body.get("message") if isinstance(body, dict) else None
    text = f"{code} {message or httpx.codes.get_reason_phrase(code)}"
    return Gone(code, text) if code == 410 else APIError(code, text)


class _Watcher:
    """List+watch of one resource on its own thread (see the module docstring)."""

    def __init__(self, api: ClusterAPI, res: Resource) -> None:
        self.api, self.res = api, res
        self.health = WatchHealth(res.kind)
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._response: httpx.Response | None = None
        self._said: int | None = None
        self.rv: str | None = None
        """The newest version seen (None: list first)."""
        self.streaming = False
        """A watch stream is open: changes reach the agent as they happen."""
        self.thread = threading.Thread(target=self._run, name=f"watch-{res.kind}",
                                       daemon=True)

    def _url(self, **params: str) -> str:
        if self.res.field_selector:
            params["fieldSelector"] = self.res.field_selector
        if self.res.label_selector:
            params["labelSelector"] = self.res.label_selector
        return f"{self.res.path}?{urlencode(params)}"

    def _run(self) -> None:
        delay = BACKOFF_MIN
        while not self.api.stopped.is_set():
            pause = False
            try:
                if self.rv is None:
                    self.rv = self._list()
                began = time.monotonic()
                events = self._watch()   # moves self.rv on with every event and bookmark
                # a watch that ends at once with nothing (a proxy, a server going away) is
                # retried after a backoff, not in a tight loop
                pause = events == 0 and time.monotonic() - began < 1.0
                if not pause:
                    delay = BACKOFF_MIN
            except Gone as exc:
                self.health.relists += 1
                log.info("%s watch: %s; listing again", self.res.kind, exc)
                self.rv = None
                pause = self.health.relists > 1   # a relist storm must not spin
            except Exception as exc:   # an I/O edge: any failure is retried
                if self.api.stopped.is_set():
                    return
                self._failed(exc)
                pause = True
            if pause:
                self.api.stopped.wait(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, BACKOFF_MAX)

    def _failed(self, exc: Exception) -> None:
        h = self.health
        h.errors += 1
        h.last_error = f"{type(exc).__name__}: {exc}"
        code = exc.code if isinstance(exc, APIError) else None
        if code in (401, 403):
            self.api.losses.count("api_unauthorized" if code == 401 else "api_forbidden")
            if self._said != code:
                what = ("refused the credentials: check the kubeconfig's token or the "
                        "service account" if code == 401 else
                        "forbids it: the ClusterRole must allow get/list/watch on "
                        f"{self.res.path.rsplit('/', 1)[-1]}")
                log.error("Kubernetes API %s: listing %s %s (%s)", self.api.server,
                          self.res.kind, what, exc)
                self._said = code
        elif self._said != 0:
            log.warning("Kubernetes API %s: %s list/watch failed, retrying: %s",
                        self.api.server, self.res.kind, h.last_error)
            self._said = 0

    def _get_json(self, url: str) -> Any:
        r = self.api.client.get(url)
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code != 200:
            raise _status_error(r.status_code, body)
        return body

    def _list(self) -> str:
        """List every page; replace the objects (reconcile); return the list's version."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        cont: str | None = None
        paged = True
        while True:
            params = {"limit": str(PAGE)} if paged else {}
            if cont:
                params["continue"] = cont
            try:
                doc = self._get_json(self._url(**params))
            except Gone:
                if not cont:
                    raise
                # the continue token expired before the list ended: once more, whole (as
                # client-go does), rather than relist in pages that may never finish
                found, cont, paged = {}, None, False
                continue
            if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
                raise ValueError(f"{self.res.kind} list: not a List")
            for obj in doc["items"]:
                if isinstance(obj, dict) and (k := _key(obj)) is not None:
                    found[k] = obj
                else:
                    self.api.losses.count("bad_object")
            meta = doc.get("metadata")
            if not isinstance(meta, dict):
                meta = {}
            cont = meta.get("continue") or None
            rv = meta.get("resourceVersion")
            if not cont:
                break
        if not isinstance(rv, str) or not rv:
            raise ValueError(f"{self.res.kind} list: no resourceVersion")
        first = not self.health.synced
        self.api.replace(self, found, rv)
        if first:
            log.info("Kubernetes API %s: %d %s listed", self.api.server, len(found),
                     self.res.kind)
        if self._said is not None:
            log.warning("Kubernetes API %s: %s listed again", self.api.server, self.res.kind)
            self._said = None
        return rv

    def _watch(self) -> int:
        """Watch from :attr:`rv` until the server ends the stream (every event and bookmark
        moves :attr:`rv` on, so a watch that fails resumes where it got); return the number
        of lines received."""
        assert self.rv is not None
        timeout = int(WATCH_TIMEOUT * random.uniform(1.0, 1.2))
        url = self._url(watch="true", resourceVersion=self.rv, allowWatchBookmarks="true",
                        timeoutSeconds=str(timeout))
        self.health.watches += 1
        read = httpx.Timeout(10.0, read=timeout + 30.0)
        with self.api.client.stream("GET", url, timeout=read) as r:
            if r.status_code != 200:
                r.read()
                try:
                    body = r.json()
                except ValueError:
                    body = None
                raise _status_error(r.status_code, body)
            if self._said is not None:
                log.warning("Kubernetes API %s: %s watched again", self.api.server,
                            self.res.kind)
                self._said = None
            self._response = r
            self.streaming = True
            lines = 0
            try:
                for line in r.iter_lines():
                    if line.strip():
                        lines += 1
                        self._event(line)
            finally:
                self._response = None
                self.streaming = False
        return lines

    def _event(self, line: str) -> None:
        try:
            ev = json.loads(line)
        except ValueError:
            self.api.losses.count("bad_watch_event")
            return
        kind = ev.get("type") if isinstance(ev, dict) else None
        obj = ev.get("object") if isinstance(ev, dict) else None
        if not isinstance(obj, dict):
            self.api.losses.count("bad_watch_event")
            return
        if kind == "ERROR":
            code = obj.get("code")
            raise _status_error(code if isinstance(code, int) else 500, obj)
        new = _version(obj)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            k = _key(obj)
            if k is None:
                self.api.losses.count("bad_object")
            else:
                self.api.change(self, k, None if kind == "DELETED" else obj)
        elif kind != "BOOKMARK":
            self.api.losses.count("bad_watch_event")
        if new is not None:
            self.rv = new
            h = self.health
            h.resource_version, h.last_seen = new, time.time()

    def close(self) -> None:
        """End the watch in progress: its socket is shut down, which wakes the thread
        blocked reading it (closing the response from another thread would not)."""
        r = self._response
        if r is None:
            return
        stream = r.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError as exc:   # already closed: nothing to wake
            log.debug("closing the %s watch: %s", self.res.kind, exc)


class ClusterAPI:
    """The cluster state from the Kubernetes API, feeding an :class:`Inventory`.

    Args:
        config: the server and credentials (:func:`load_config`).
        inventory: the inventory to update (a new one if omitted).
        node: watch only this node's Pods (None: every pod; see :func:`resources`).
        client: an HTTP client to use instead of one built from ``config`` (tests).
        watched: the resources to list and watch (None: :func:`resources` of ``node``).
    """

    def __init__(self, config: SingleConfig, inventory: Inventory | None = None,
                 node: str | None = None, client: httpx.Client | None = None,
                 watched: list[Resource] | None = None) -> None:
        """Nothing is requested until :meth:`start`."""
        self.server = config.cluster.server
        self.inventory = inventory if inventory is not None else Inventory()
        self.client = client if client is not None else httpx.Client(
            **ConnectionParams(timeout=httpx.Timeout(10.0)).httpx_params(config))
        self.losses = Losses()
        """What could not be used, by reason (``bad_object``, ``bad_watch_event``,
        ``api_unauthorized``, ``api_forbidden``, ``poll_failed``)."""
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._dirty = False
        self._watchers = [_Watcher(self, r) for r in
                          (resources(node) if watched is None else watched)]

    @property
    def description(self) -> str:
        """Where the state comes from, for messages."""
        return f"the Kubernetes API at {self.server}"

    def start(self) -> None:
        """Start every list+watch (each on its own thread)."""
        for w in self._watchers:
            w.thread.start()

    def stop(self) -> None:
        """Stop the watches (streams closed; threads are daemons and end with them)."""
        self.stopped.set()
        for w in self._watchers:
            w.close()
        end = time.monotonic() + 3.0   # one deadline for all of them
        for w in self._watchers:
            if w.thread.is_alive():
                w.thread.join(timeout=max(0.0, end - time.monotonic()))
        self.client.close()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every resource has been listed once; False on timeout."""
        end = time.monotonic() + timeout
        while not all(w.health.synced for w in self._watchers):
            if time.monotonic() >= end or self.stopped.is_set():
                return False
            time.sleep(0.05)
        return True

    # -- called from the watch threads ---------------------------------------------------
    def replace(self, w: _Watcher, objects: dict[tuple[str, str], dict[str, Any]],
                rv: str) -> None:
        """A list's objects (at version ``rv``) replace the watcher's (what is missing is
        gone); the resource is synced from now on."""
        with self._lock:
            w.objects = objects
            h = w.health
            h.objects, h.synced, h.lists = len(objects), True, h.lists + 1
            h.resource_version, h.last_seen = rv, time.time()
            self._dirty = True

    def change(self, w: _Watcher, key: tuple[str, str], obj: dict[str, Any] | None) -> None:
        """One watch event: an object added or modified, or (None) deleted."""
        with self._lock:
            if obj is None:
                w.objects.pop(key, None)
            else:
                w.objects[key] = obj
            w.health.objects = len(w.objects)
            self._dirty = True

    # -- called from the agent loop ------------------------------------------------------
    def poll(self, now: float) -> bool:
        """Apply what changed since the last poll at time ``now``; True if the inventory
        changed. Never raises (a defect is logged and counted as ``poll_failed``)."""
        try:
            with self._lock:
                if not self._dirty:
                    return False
                self._dirty = False
            return self.inventory.apply(self.objects(), now)
        except Exception:
            self.losses.count("poll_failed")
            log.exception("Kubernetes API: applying the watched state failed; keeping the "
                          "last good state")
            return False

    def objects(self) -> k8s.ClusterObjects:
        """The parsed objects held now (the resources listed so far), as the inventory
        takes them."""
        with self._lock:
            docs = {w.res.kind: list(w.objects.values()) for w in self._watchers
                    if w.health.synced}
        return objects_from({kind: KINDS[kind]({"kind": "List", "items": items}, self.losses)
                             for kind, items in docs.items() if kind in KINDS})

    def objects_of(self, kind: str) -> list[dict[str, Any]]:
        """The objects of ``kind`` held now (e.g. NetworkPolicy), as the server sent them."""
        with self._lock:
            return [o for w in self._watchers if w.res.kind == kind for o in w.objects.values()]

    @property
    def current(self) -> bool:
        """The Pod watch is streaming: a pod the API has is known here within a moment (while
        the API is unreachable, flows of unknown pods wait longer for their names)."""
        return all(w.streaming for w in self._watchers if w.res.kind == "Pod")

    @property
    def pod_count(self) -> int:
        """Pods held (0 means no endpoint can be named a pod)."""
        return sum(len(w.objects) for w in self._watchers if w.res.kind == "Pod")

    def health(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Per resource: synced, resourceVersion and its age, lists, relists, errors."""
        now = time.time() if now is None else now
        return {w.res.kind: w.health.as_stats(now) for w in self._watchers}

