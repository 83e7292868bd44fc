"""A test double of the Kubernetes API server, serving the lab's cluster state (issue 10).

Why a double: no kube-apiserver can be installed on the machines the lab runs on. No package
registry ships one (Debian has only the old ``kubernetes-client``, PyPI and npm have clients,
not servers), and a real one would need etcd and the whole control plane besides. So the lab
serves its own state through the real protocol instead, and the agents use their production
API path (kubeconfig, TLS, bearer token, list -> watch -> relist on 410) against it. It is a
stand-in, not a reimplementation: read-only, JSON only, and only what podflow watches.

Source of truth: the lab's cluster-state directory (:mod:`podflow.lab.kubeobjects`), one
``List`` per file (the names of :data:`~podflow.inventory.snapshot_dir.FILE_KINDS`, plus
``cronjobs.json`` and ``networkpolicies.json``; a kind without a file lists as empty). The
server polls it (only files whose inode, size or mtime changed; a file that vanishes or
turns unreadable keeps its last good content, as the agent's reader does), diffs the objects
by (kind, namespace, name) and uid (a same-name object with another uid is DELETED then
ADDED) and turns each change into a watch event with the next resourceVersion.

resourceVersions are global integers, strictly increasing, derived from time:
``max(last + 1, time_ns() // 1000)``. A restarted server (the same directory, a new
process) therefore never reuses one, and since its event history starts empty, a watch from
a version older than its start gets 410 Gone, as from a compacted etcd. (The double could
only run ahead of the clock by one microsecond per event of a burst: far less than a
restart takes.) :meth:`KubeAPIServer.compact`, also ``POST /podflow-test/compact``, makes
every version handed out so far too old (open watches end with the 410 ERROR event) so that
tests can provoke a relist at will.

API surface (HTTPS; every request needs ``Authorization: Bearer <token>``, else 401 Status):

- ``GET`` lists and watches of pods, services, configmaps, nodes, namespaces (``/api/v1``),
  endpointslices (``discovery.k8s.io/v1``), replicasets, deployments (``apps/v1``), jobs,
  cronjobs (``batch/v1``), networkpolicies (``networking.k8s.io/v1``), cluster-wide and, for
  namespaced kinds, under ``namespaces/{ns}/``; a single ``GET .../{name}`` of every kind.
- Lists: ``limit`` and ``continue`` (an opaque token; one older than the history, or garbage,
  gives 410 Expired; pages after the first are cut from the current state, which a watch from
  the list's resourceVersion then reconciles: a real server reads them from the snapshot),
  ``fieldSelector`` (``metadata.name``, ``metadata.namespace`` and, for pods,
  ``spec.nodeName``, ``spec.hostNetwork``, ``status.phase``, ``status.podIP``; ``=``, ``==``,
  ``!=``, comma = AND; others are 400 as on a real server), ``labelSelector`` (``a=b``,
  ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x)``). Items carry no kind/apiVersion,
  as in real lists; every object carries ``metadata.resourceVersion``.
- Watches (``watch=true``): chunked JSON lines ``{"type": ..., "object": ...}``;
  ``resourceVersion`` absent, empty or ``"0"`` sends ADDED for every current object first;
  a version older than the history gets one ERROR event (Status 410 Expired) and the end of
  the stream; ``allowWatchBookmarks=true`` adds a BOOKMARK every ``bookmark_interval``
  seconds; ``timeoutSeconds`` ends the stream (default and cap 1800). With a selector, an
  object that starts or stops matching is ADDED or DELETED, as the watch cache does.
- ``GET /version``, ``GET /healthz``; ``POST /podflow-test/compact``. Anything else is a 404
  (unknown path) or 405 (other verbs) Status.

TLS: a self-signed CA and a server certificate for ``127.0.0.1`` / ``localhost`` (EC P-256),
made with the ``openssl`` command (Debian package ``openssl``) in ``cert_dir`` when absent.

Run as a process (``podflow lab up`` does)::

    python -m podflow.lab.apiserver --state DIR --certs DIR --token-file FILE \\
        --port 0 --kubeconfig FILE --url-file FILE

It writes the kubeconfig, then the URL file (so the URL file's appearance means "ready"),
and exits 0 on SIGTERM or SIGINT. In-process::

    server = KubeAPIServer(state_dir, cert_dir, token)
    server.start()
    write_kubeconfig(path, server.url, server.ca_path, token)
    ...
    server.stop()
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import select
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from podflow.inventory.snapshot_dir import (
    FILE_KINDS,
    MAX_FILE_BYTES,
    decode_document,
    read_bounded,
)
from podflow.model.losses import DecodeError

log = logging.getLogger(__name__)

FILES: dict[str, str] = {**FILE_KINDS, "cronjobs.json": "CronJob",
                         "networkpolicies.json": "NetworkPolicy"}
"""File of the cluster-state directory -> kind of its items (the snapshot reader's, plus the
kinds only the API serves)."""

MAX_WATCH_SECONDS = 1800.0
"""Default and longest watch (a real server picks 30-60 min)."""
IDLE_TIMEOUT = 120.0
"""A connection that sends no request (or stalls a write) this long is closed."""
HANDSHAKE_TIMEOUT = 10.0
DISCONNECT_CHECK = 0.5
"""How often an idle watch checks whether its client went away."""
OPENSSL = "openssl"
_BOOLS = {"1": True, "t": True, "T": True, "true": True, "TRUE": True, "True": True,
          "0": False, "f": False, "F": False, "false": False, "FALSE": False, "False": False}


@dataclass(frozen=True, slots=True)
class Resource:
    """One kind the double serves."""

    plural: str
    kind: str
    group_version: str
    namespaced: bool
    fields: tuple[str, ...] = ()
    """Field selectors beyond ``metadata.name`` and ``metadata.namespace``."""

    @property
    def prefix(self) -> str:
        """``/api/v1`` or ``/apis/GROUP/VERSION``."""
        return "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"


RESOURCES: tuple[Resource, ...] = (
    Resource("pods", "Pod", "v1", True,
             ("spec.nodeName", "spec.hostNetwork", "status.phase", "status.podIP")),
    Resource("services", "Service", "v1", True),
    Resource("configmaps", "ConfigMap", "v1", True),
    Resource("nodes", "Node", "v1", False),
    Resource("namespaces", "Namespace", "v1", False),
    Resource("endpointslices", "EndpointSlice", "discovery.k8s.io/v1", True),
    Resource("replicasets", "ReplicaSet", "apps/v1", True),
    Resource("deployments", "Deployment", "apps/v1", True),
    Resource("jobs", "Job", "batch/v1", True),
    Resource("cronjobs", "CronJob", "batch/v1", True),
    Resource("networkpolicies", "NetworkPolicy", "networking.k8s.io/v1", True),
)
_BY_KIND = {r.kind: r for r in RESOURCES}
_ROUTES: dict[str, dict[str, Resource]] = {}
for _r in RESOURCES:
    _ROUTES.setdefault(_r.group_version, {})[_r.plural] = _r

Key = tuple[str, str]
"""(namespace, name); the namespace is "" for cluster-scoped kinds."""


class APIError(Exception):
    """An error answered with a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        """``reason``: the Status reason (``NotFound``, ``Expired``, ...)."""
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        """The Status object."""
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(code: int, reason: str, message: str,
                  details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure ``Status`` as the API server returns it."""
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "message": message, "reason": reason}
    if details:
        out["details"] = details
    out["code"] = code
    return out


@dataclass(frozen=True, slots=True)
class _Stored:
    rv: int
    uid: str
    raw: dict[str, Any]
    """As read (canonical kind/apiVersion), without a resourceVersion: compared on change."""
    obj: dict[str, Any]
    """As served: ``raw`` with ``metadata.resourceVersion``. Never mutated."""


@dataclass(frozen=True, slots=True)
class _Event:
    rv: int
    type: str
    kind: str
    namespace: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None
    line: bytes


def _with_rv(raw: dict[str, Any], rv: int) -> dict[str, Any]:
    return {**raw, "metadata": {**raw["metadata"], "resourceVersion": str(rv)}}


def _item(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object as a list item: without kind/apiVersion."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _line(type_: str, obj: Mapping[str, Any]) -> bytes:
    return json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"


def objects_of(doc: Any, file_kind: str) -> dict[str, dict[Key, dict[str, Any]]]:
    """The served objects of one decoded cluster-state file: kind -> key -> object.

    An item's kind is its own, else the List's (``PodList`` -> Pod), else the file's; kinds
    the double does not serve and items without a name are skipped. Each object gets its
    kind's canonical ``kind``/``apiVersion`` and loses any ``metadata.resourceVersion``.

    Raises:
        DecodeError: the document is not a List, a list or an object.
    """
    if isinstance(doc, list):
        items: Any = doc
    elif isinstance(doc, dict) and "items" in doc:
        items = doc["items"] or []
    elif isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
        items = [doc]
    else:
        raise DecodeError("not_kubernetes", "expected a List, an object or a list of objects")
    if not isinstance(items, list):
        raise DecodeError("not_kubernetes", "'items' is not a list")
    list_kind = doc.get("kind") if isinstance(doc, dict) else None
    default = (list_kind[:-4] if isinstance(list_kind, str) and len(list_kind) > 4
               and list_kind.endswith("List") else file_kind)
    out: dict[str, dict[Key, dict[str, Any]]] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("metadata"), dict):
            continue
        kind = item.get("kind", default)
        res = _BY_KIND.get(kind) if isinstance(kind, str) else None
        name = item["metadata"].get("name")
        if res is None or not isinstance(name, str) or not name:
            continue
        meta = {k: v for k, v in item["metadata"].items() if k != "resourceVersion"}
        ns = ""
        if res.namespaced:
            given = meta.get("namespace")
            ns = given if isinstance(given, str) and given else "default"
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        obj = {"kind": res.kind, "apiVersion": res.group_version,
               **{k: v for k, v in item.items() if k not in ("kind", "apiVersion")},
               "metadata": meta}
        out.setdefault(res.kind, {})[(ns, name)] = obj
    return out


# ---------------------------------------------------------------------------- selectors

_LABEL_SET = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^()]*)\)\s*$")
_LABEL_OP = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_.-]*))?\s*$")


def _field_value(obj: Mapping[str, Any], namespace: str, path: str) -> str:
    if path == "metadata.namespace":
        return namespace
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


def parse_field_selector(text: str, res: Resource) -> tuple[tuple[str, bool, str], ...]:
    """``a=b,c!=d`` -> ((field, wanted equal, value), ...).

    Raises:
        APIError: 400 for a term that does not parse or a field the kind does not support.
    """
    out: list[tuple[str, bool, str]] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(.*)", term)
        if m is None:
            raise APIError(400, "BadRequest", f"invalid selector: '{text}'; can't understand "
                           f"'{term}'")
        path, op, value = m.groups()
        if path not in ("metadata.name", "metadata.namespace", *res.fields):
            raise APIError(400, "BadRequest", f'field label not supported: {path}')
        out.append((path, op != "!=", value.strip()))
    return tuple(out)


def parse_label_selector(text: str) -> tuple[Callable[[Mapping[str, Any]], bool], ...]:
    """Equality, existence and set-based requirements -> predicates on a label map.

    Raises:
        APIError: 400 for a requirement that does not parse.
    """
    out: list[Callable[[Mapping[str, Any]], bool]] = []
    for term in filter(None, (t.strip() for t in re.split(r",(?![^()]*\))", text))):
        if m := _LABEL_SET.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            out.append(_requirement(m.group(1), m.group(2), values))
            continue
        m2 = _LABEL_OP.match(term)
        if m2 is None or (m2.group(1) and m2.group(3)):
            raise APIError(400, "BadRequest", f"unable to parse requirement: found '{term}'")
        neg, key, op, value = m2.group(1), m2.group(2), m2.group(3), m2.group(4) or ""
        if op is None:
            out.append(_requirement(key, "!exists" if neg else "exists", frozenset()))
        else:
            out.append(_requirement(key, "notin" if op == "!=" else "in", frozenset([value])))
    return tuple(out)


def _requirement(key: str, op: str, values: frozenset[str]) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate on a label map: ``exists``, ``!exists``, ``in`` or ``notin`` ``values``
    (``notin`` and ``!=`` match objects without the label, as on a real server)."""
    if op == "exists":
        return lambda labels: key in labels
    if op == "!exists":
        return lambda labels: key not in labels
    if op == "in":
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values


@dataclass(frozen=True, slots=True)
class Selector:
    """What one request selects of its kind: a namespace, field and label requirements."""

    namespace: str | None = None
    fields: tuple[tuple[str, bool, str], ...] = ()
    labels: tuple[Callable[[Mapping[str, Any]], bool], ...] = field(default=())

    def matches(self, obj: Mapping[str, Any] | None, namespace: str) -> bool:
        """Whether ``obj`` (in ``namespace``) is selected; None never is."""
        if obj is None or (self.namespace is not None and namespace != self.namespace):
            return False
        for path, equal, value in self.fields:
            if (_field_value(obj, namespace, path) == value) != equal:
                return False
        if self.labels:
            labels = obj.get("metadata", {}).get("labels")
            labels = labels if isinstance(labels, Mapping) else {}
            return all(pred(labels) for pred in self.labels)
        return True


# ---------------------------------------------------------------------------- certificates

_CA_CONF = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = podflow-lab-ca
[ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""
_SERVER_CONF = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = podflow-lab-apiserver
[ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""
CERT_FILES = ("ca.crt", "ca.key", "server.crt", "server.key")


def ensure_certificates(cert_dir: Path, host: str = "127.0.0.1") -> None:
    """Make a CA and a server certificate in ``cert_dir`` unless all four files exist.

    The server certificate names ``IP:127.0.0.1`` and ``DNS:localhost`` (and ``host`` when
    it is another address or name). Keys are mode 0600.

    Raises:
        RuntimeError: ``openssl`` is missing or failed (its message included).
    """
    if all((cert_dir / f).is_file() for f in CERT_FILES):
        return
    cert_dir.mkdir(parents=True, exist_ok=True)
    san = ["IP:127.0.0.1", "DNS:localhost"]
    if host not in ("127.0.0.1", "localhost", "", "0.0.0.0", "::"):
        try:
            san.append(f"IP:{ipaddress.ip_address(host)}")
        except ValueError:
            san.append(f"DNS:{host}")
    with tempfile.TemporaryDirectory(dir=cert_dir, prefix=".certs-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "ca.cnf").write_text(_CA_CONF)
        (tmp / "server.cnf").write_text(_SERVER_CONF.format(san=",".join(san)))
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl(["req", "-x509", "-new", *ec, "-config", "ca.cnf", "-extensions", "ext",
                  "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650"], tmp)
        _openssl(["req", "-new", *ec, "-config", "server.cnf", "-keyout", "server.key",
                  "-out", "server.csr"], tmp)
        _openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                  "-set_serial", f"0x{os.urandom(16).hex()}", "-days", "825",
                  "-extfile", "server.cnf", "-extensions", "ext", "-out", "server.crt"], tmp)
        for name in CERT_FILES:
            os.chmod(tmp / name, 0o600 if name.endswith(".key") else 0o644)
        for name in ("ca.key", "server.key", "server.crt", "ca.crt"):   # ca.crt last
            os.replace(tmp / name, cert_dir / name)


def _openssl(args: list[str], cwd: Path) -> None:
    try:
        done = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True,
                              timeout=60, check=False)
    except OSError as exc:
        raise RuntimeError(f"cannot run {OPENSSL} (Debian package openssl): {exc}") from exc
    if done.returncode != 0:
        raise RuntimeError(f"{OPENSSL} {args[0]} failed: {done.stderr.strip()}")


# ---------------------------------------------------------------------------- the server


class KubeAPIServer:
    """The test double: polls ``state_dir`` and serves it over HTTPS on its own threads.

    Args:
        state_dir: the lab's cluster-state directory.
        cert_dir: where the CA and server certificate are (made by :meth:`start` if absent).
        token: the bearer token every request must carry.
        host, port: where to listen (port 0: any free port; see :attr:`url`).
        bookmark_interval: seconds between BOOKMARK events of a watch that asked for them.
        history: how many events are kept for watches that resume from a resourceVersion.
        poll_interval: seconds between polls of ``state_dir``.
    """

    def __init__(self, state_dir: Path, cert_dir: Path, token: str, *, host: str = "127.0.0.1",
                 port: int = 0, bookmark_interval: float = 1.0, history: int = 10_000,
                 poll_interval: float = 0.2) -> None:
        """Nothing happens until :meth:`start`."""
        if not token:
            raise ValueError("the bearer token must not be empty")
        self.state_dir = Path(state_dir)
        self.cert_dir = Path(cert_dir)
        self._token = token.encode()
        self.host, self._port = host, port
        self.bookmark_interval = bookmark_interval
        self.history_size = max(1, history)
        self.poll_interval = poll_interval
        self._cond = threading.Condition()
        self._objects: dict[str, dict[Key, _Stored]] = {}
        self._history: deque[_Event] = deque()
        self._rv = 0
        self._floor = 0
        """The oldest resourceVersion a watch may resume from (all later events are kept)."""
        self._stamps: dict[str, tuple[int, int, int] | None] = {}
        self._files: dict[str, dict[str, dict[Key, dict[str, Any]]]] = {}
        self._stopping = threading.Event()
        self._loading = True
        self._streams = 0
        """Watch responses being written (stop lets them end their stream properly)."""
        self._httpd: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle

    def start(self) -> None:
        """Make certificates if absent, load the state, bind, and serve on threads.

        Raises:
            RuntimeError: certificates could not be made; OSError: cannot bind.
        """
        ensure_certificates(self.cert_dir, self.host)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_dir / "server.crt", self.cert_dir / "server.key")
        with self._cond:
            self._next_rv()
        self._loading = True
        self._poll()
        with self._cond:
            self._floor = self._rv
            self._loading = False
        httpd = _HTTPServer((self.host, self._port), self, ctx)
        self._httpd, self._port = httpd, int(httpd.server_address[1])
        self._threads = [
            threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                             name="apiserver-http", daemon=True),
            threading.Thread(target=self._poll_loop, name="apiserver-poll", daemon=True)]
        for t in self._threads:
            t.start()
        log.info("Kubernetes API test double at %s serving %s", self.url, self.state_dir)

    def stop(self) -> None:
        """End every stream and connection, stop polling, and join all threads."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._streams == 0, timeout=1.0)
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.close_connections()
            httpd.server_close()   # joins the request threads
        for t in self._threads:
            t.join()
        self._threads = []

    def __enter__(self) -> KubeAPIServer:
        """Start; stop on leaving."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop."""
        self.stop()

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT`` (the bound port)."""
        port = self._port
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        return f"https://{host}:{port}"

    @property
    def ca_path(self) -> Path:
        """The CA certificate clients verify the server with."""
        return self.cert_dir / "ca.crt"

    @property
    def resource_version(self) -> int:
        """The newest resourceVersion."""
        with self._cond:
            return self._rv

    def compact(self) -> None:
        """Drop the event history up to a new version: every version handed out so far is
        too old. Open watches end with the 410 ERROR event, and a watch or list resumed
        from any earlier version gets it too, so every client lists again (what a client
        that fell behind a compacted etcd meets)."""
        with self._cond:
            self._history.clear()
            self._floor = self._next_rv()
            self._cond.notify_all()
        log.info("history compacted at resourceVersion %d", self._floor)

    def check_token(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token."""
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self._token)

    # -- state

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` has begun."""
        return self._stopping.is_set()

    def _next_rv(self) -> int:
        self._rv = max(self._rv + 1, time.time_ns() // 1000)
        return self._rv

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.poll_interval):
            try:
                self._poll()
            except Exception:   # never let the poll thread die: a defect, logged
                log.exception("polling %s failed; keeping the last state", self.state_dir)

    def _poll(self) -> bool:
        """Re-read changed files (outside the lock), turn the differences into events."""
        if not any([self._reload(name, kind) for name, kind in FILES.items()]):
            return False
        merged: dict[str, dict[Key, dict[str, Any]]] = {}
        for name in FILES:
            for kind, objs in self._files.get(name, {}).items():
                merged.setdefault(kind, {}).update(objs)
        with self._cond:
            before = self._rv
            for res in RESOURCES:
                self._diff(res.kind, self._objects.get(res.kind, {}), merged.get(res.kind, {}))
            if self._rv == before:
                return False
            self._cond.notify_all()
            return True

    def _reload(self, name: str, kind: str) -> bool:
        """Re-read file ``name`` if its (inode, size, mtime) changed; True if it was."""
        path = self.state_dir / name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False   # not there yet (empty), or vanished (keeps its last good data)
        except OSError as exc:
            if self._stamps.get(name) is not None:
                log.warning("%s: %s; keeping its last good content", path, exc)
                self._stamps[name] = None
            return False
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._stamps.get(name) == stamp:
            return False
        self._stamps[name] = stamp
        try:
            data, st = read_bounded(path, MAX_FILE_BYTES)
            self._stamps[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
            self._files[name] = objects_of(decode_document(data), kind)
        except DecodeError as exc:
            log.warning("%s: %s; keeping its last good content", path, exc)
            return False
        return True

    def _diff(self, kind: str, old: dict[Key, _Stored], new: dict[Key, dict[str, Any]]) -> None:
        """Events (under the lock) for the objects of ``kind`` going from ``old`` to ``new``."""
        if not old and not new:
            return
        out = dict(old)
        for key in sorted(old.keys() - new.keys()):
            self._emit("DELETED", kind, key, old[key], None, out)
        for key in sorted(new):
            raw, was = new[key], old.get(key)
            if was is not None and (was.raw is raw or was.raw == raw):
                continue
            uid = str(raw["metadata"].get("uid") or "")
            if was is not None and was.uid != uid:
                self._emit("DELETED", kind, key, was, None, out)
                was = None
            self._emit("MODIFIED" if was else "ADDED", kind, key, was, raw, out)
        self._objects[kind] = out

    def _emit(self, type_: str, kind: str, key: Key, was: _Stored | None,
              raw: dict[str, Any] | None, out: dict[Key, _Stored]) -> None:
        rv = self._next_rv()
        if raw is None:
            assert was is not None
            obj = _with_rv(was.raw, rv)
            del out[key]
        else:
            obj = _with_rv(raw, rv)
            out[key] = _Stored(rv, str(raw["metadata"].get("uid") or ""), raw, obj)
        if self._loading:
            return   # the objects found at start are the first state, not events
        prev = was.obj if was is not None and type_ == "MODIFIED" else None
        self._history.append(_Event(rv, type_, kind, key[0], obj, prev, _line(type_, obj)))
        while len(self._history) > self.history_size:
            self._floor = self._history.popleft().rv

    # -- serving

    def get_object(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        """One object as served (with kind and apiVersion).

        Raises:
            APIError: 404 NotFound.
        """
        with self._cond:
            stored = self._objects.get(res.kind, {}).get((namespace, name))
        if stored is None:
            raise APIError(404, "NotFound", f'{res.plural} "{name}" not found',
                           {"name": name, "kind": res.plural})
        return stored.obj

    def list_page(self, res: Resource, sel: Selector, limit: int = 0,
                  token: str = "") -> tuple[str, list[dict[str, Any]], str, int]:
        """(resourceVersion, items, continue token, remaining count) of one list page.

        Raises:
            APIError: 410 Expired for a continue token that is garbage or older than the
                history.
        """
        start: Key | None = None
        with self._cond:
            rv = self._rv
            if token:
                rv, start = self._decode_continue(token, res)
            objs = self._objects.get(res.kind, {})
            keys = sorted(k for k in objs if start is None or k > start)
            chosen = [(k, objs[k].obj) for k in keys if sel.matches(objs[k].obj, k[0])]
        more = 0
        if 0 < limit < len(chosen):
            more = len(chosen) - limit
            chosen = chosen[:limit]
        cont = self._encode_continue(rv, res, chosen[-1][0]) if more else ""
        return str(rv), [_item(o) for _, o in chosen], cont, more

    @staticmethod
    def _encode_continue(rv: int, res: Resource, last: Key) -> str:
        doc = {"v": "podflow/1", "rv": rv, "res": res.plural, "start": list(last)}
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()

    def _decode_continue(self, token: str, res: Resource) -> tuple[int, Key]:
        """(list resourceVersion, last key served) of a continue token (under the lock)."""
        try:
            doc = json.loads(base64.urlsafe_b64decode(token.encode()))
            rv, start = doc["rv"], doc["start"]
            ok = (doc["v"] == "podflow/1" and doc["res"] == res.plural
                  and isinstance(rv, int) and self._floor <= rv <= self._rv
                  and isinstance(start, list) and len(start) == 2
                  and all(isinstance(s, str) for s in start))
        except (ValueError, KeyError, TypeError, binascii.Error):
            ok = False
        if not ok:
            raise APIError(410, "Expired", "The provided continue parameter is too old to "
                           "display a consistent list result. You can start a new list "
                           "without the continue parameter.")
        return rv, (start[0], start[1])

    def watch(self, res: Resource, sel: Selector, since: int | None, timeout: float,
              bookmarks: bool, alive: Callable[[], bool]) -> Generator[bytes, None, None]:
        """The chunks (one or more JSON lines each) of one watch stream.

        ``since`` None: ADDED for every current object first. The stream ends at
        ``timeout`` seconds, on :meth:`stop`, when ``alive()`` turns false, or after the
        ERROR event (410 Expired) for a version older than the history.
        """
        deadline = time.monotonic() + timeout
        initial: list[bytes] = []
        with self._cond:
            expired = since is not None and since < self._floor
            floor = self._floor
            cursor = self._rv if since is None else since
            if since is None:
                objs = self._objects.get(res.kind, {})
                initial = [_line("ADDED", s.obj) for k, s in sorted(objs.items())
                           if sel.matches(s.obj, k[0])]
        if expired:
            yield _too_old(cursor, floor)
            return
        for i in range(0, len(initial), 256):
            yield b"".join(initial[i:i + 256])
        del initial
        next_bookmark = time.monotonic() + self.bookmark_interval if bookmarks else math.inf
        while True:
            now = time.monotonic()
            wake = min(deadline, next_bookmark, now + DISCONNECT_CHECK)
            events: list[_Event] = []
            with self._cond:
                self._cond.wait_for(partial(self._changed_since, cursor),
                                    timeout=max(0.0, wake - now))
                if self._stopping.is_set():
                    return
                expired, floor = cursor < self._floor, self._floor
                if not expired:
                    for ev in reversed(self._history):
                        if ev.rv <= cursor:
                            break
                        events.append(ev)
                    cursor = max(cursor, self._rv)
            if expired:   # fell behind a history that moved on
                yield _too_old(cursor, floor)
                return
            lines = [line for ev in reversed(events)
                     if ev.kind == res.kind and (line := _visible(ev, sel)) is not None]
            now = time.monotonic()
            if now >= next_bookmark:
                lines.append(_line("BOOKMARK", {
                    "kind": res.kind, "apiVersion": res.group_version,
                    "metadata": {"resourceVersion": str(cursor)}}))
                next_bookmark = now + self.bookmark_interval
            if lines:
                yield b"".join(lines)
            if now >= deadline or not alive():
                return


    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """Around the writing of one watch response: :meth:`stop` waits (1 s at most) for
        open streams to send their last chunk before it cuts the connections."""
        with self._cond:
            self._streams += 1
        try:
            yield
        finally:
            with self._cond:
                self._streams -= 1
                self._cond.notify_all()

    def _changed_since(self, cursor: int) -> bool:
        return self._stopping.is_set() or self._rv > cursor


def _too_old(since: int, floor: int) -> bytes:
    return _line("ERROR", status_object(
        410, "Expired", f"too old resource version: {since} ({floor})"))


def _visible(ev: _Event, sel: Selector) -> bytes | None:
    """The line a watcher with ``sel`` gets for ``ev`` (an object entering or leaving the
    selection is ADDED or DELETED), None if none."""
    now = sel.matches(ev.obj, ev.namespace)
    if ev.type != "MODIFIED":
        return ev.line if now else None
    before = sel.matches(ev.prev, ev.namespace)
    if now and before:
        return ev.line
    if now:
        return _line("ADDED", ev.obj)
    return _line("DELETED", ev.obj) if before else None


# ---------------------------------------------------------------------------- HTTP


class _HTTPServer(ThreadingHTTPServer):
    """One thread per connection; TLS is negotiated on that thread, not the accept loop."""

    daemon_threads = True
    block_on_close = True

    def __init__(self, address: tuple[str, int], api: KubeAPIServer,
                 ctx: ssl.SSLContext) -> None:
        self.api, self.ssl_context = api, ctx
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._closing = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the address."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake on the connection's thread, then serve it; closes it in the end."""
        sock = cast(socket.socket, request)
        sock.settimeout(HANDSHAKE_TIMEOUT)
        tls = self.ssl_context.wrap_socket(sock, server_side=True,
                                           do_handshake_on_connect=False)
        try:
            if not self._track(tls):
                return
            try:
                tls.do_handshake()
            except (OSError, ValueError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
            _Handler(tls, client_address, self)
        finally:
            self._untrack(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def _track(self, sock: socket.socket) -> bool:
        with self._conns_lock:
            if self._closing:
                return False
            self._conns.add(sock)
            return True

    def _untrack(self, sock: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(sock)

    def close_connections(self) -> None:
        """Shut every open connection down (idle keep-alive ones block in a read)."""
        with self._conns_lock:
            self._closing = True
            conns = list(self._conns)
        for sock in conns:   # the plain socket's shutdown: the TLS one unhooks its state
            with contextlib.suppress(OSError, ValueError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is not an error worth a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ValueError)):
            log.debug("connection from %s ended: %r", client_address, exc)
        else:
            log.exception("request from %s failed", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "podflow-lab-apiserver"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (OSError, ValueError) as exc:   # the client went away mid-request
            log.debug("connection from %s ended: %r", self.client_address, exc)
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        self._drain_body()
        api = self.server.api
        try:
            if not api.check_token(self.headers.get("Authorization")):
                raise APIError(401, "Unauthorized", "Unauthorized")
            url = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            self._route(method, [unquote(p) for p in url.path.strip("/").split("/")], params)
        except APIError as exc:
            self._send_json(exc.code, exc.status())

    def _drain_body(self) -> None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or (length and not length.isdigit()):
            self.close_connection = True
        elif length and int(length) > 0:
            if int(length) > 1 << 20:
                self.close_connection = True
            else:
                self.rfile.read(int(length))

    def _route(self, method: str, parts: list[str], params: dict[str, str]) -> None:
        api = self.server.api
        if parts == ["podflow-test", "compact"]:
            if method != "POST":
                raise _not_allowed(method)
            api.compact()
            self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Success", "code": 200})
            return
        if parts in (["version"], ["healthz"], ["readyz"], ["livez"]):
            if method != "GET":
                raise _not_allowed(method)
            if parts == ["version"]:
                self._send_json(200, {"major": "1", "minor": "31", "gitVersion":
                                      "v1.31.0-podflow-lab", "platform": "linux/amd64"})
            else:
                self._send(200, b"ok", "text/plain")
            return
        res, namespace, name = _resolve(parts)
        if method != "GET":
            raise _not_allowed(method)
        if name is not None:
            self._send_json(200, api.get_object(res, namespace or "", name))
            return
        sel = Selector(namespace, parse_field_selector(params.get("fieldSelector", ""), res),
                       parse_label_selector(params.get("labelSelector", "")))
        if _BOOLS.get(params.get("watch", ""), False):
            self._watch(res, sel, params)
            return
        limit = _int_param(params, "limit")
        rv, items, cont, more = api.list_page(res, sel, limit, params.get("continue", ""))
        meta: dict[str, Any] = {"resourceVersion": rv}
        if cont:
            meta["continue"] = cont
            meta["remainingItemCount"] = more
        self._send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.group_version,
                              "metadata": meta, "items": items})

    def _watch(self, res: Resource, sel: Selector, params: dict[str, str]) -> None:
        since: int | None = None
        text = params.get("resourceVersion", "")
        if text not in ("", "0"):
            since = _int_param(params, "resourceVersion")
        seconds = _float_param(params, "timeoutSeconds")
        timeout = MAX_WATCH_SECONDS if seconds <= 0 else min(seconds, MAX_WATCH_SECONDS)
        bookmarks = _BOOLS.get(params.get("allowWatchBookmarks", ""), False)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        api = self.server.api
        chunks = api.watch(res, sel, since, timeout, bookmarks, self._client_alive)
        try:
            with api.stream():
                for data in chunks:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.write(b"0\r\n\r\n")
        except (OSError, ValueError) as exc:
            log.debug("watch client %s went away: %r", self.client_address, exc)
            self.close_connection = True
        finally:
            chunks.close()
        if self.server.api.stopping:
            self.close_connection = True

    def _client_alive(self) -> bool:
        """False once the watching client closed its end (it sends nothing while watching)."""
        sock = cast(ssl.SSLSocket, self.connection)
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        if not readable:
            return True
        timeout = sock.gettimeout()
        try:
            sock.settimeout(0)
            return bool(sock.recv(4096))
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return True   # TLS housekeeping, no data
        except (OSError, ValueError):
            return False
        finally:
            with contextlib.suppress(OSError, ValueError):
                sock.settimeout(timeout)

    def _send_json(self, code: int, doc: Mapping[str, Any]) -> None:
        self._send(code, json.dumps(doc, separators=(",", ":")).encode(), "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()
            self.wfile.write(body)
        except (OSError, ValueError) as exc:
            log.debug("client %s went away: %r", self.client_address, exc)
            self.close_connection = True


def _not_allowed(method: str) -> APIError:
    return APIError(405, "MethodNotAllowed",
                    f"the server does not allow this method on the requested resource "
                    f"({method}): the lab's API server is read-only")


def _resolve(parts: list[str]) -> tuple[Resource, str | None, str | None]:
    """Path segments -> (resource, namespace or None, name or None).

    Raises:
        APIError: 404 for a path the double does not serve.
    """
    not_found = APIError(404, "NotFound", "the server could not find the requested resource")
    if parts[:2] == ["api", "v1"]:
        routes, rest = _ROUTES["v1"], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        routes, rest = _ROUTES.get(f"{parts[1]}/{parts[2]}", {}), parts[3:]
    else:
        raise not_found
    if len(rest) in (3, 4) and rest[0] == "namespaces" and rest[1]:
        res = routes.get(rest[2])
        if res is None or not res.namespaced or (len(rest) == 4 and not rest[3]):
            raise not_found
        return res, rest[1], rest[3] if len(rest) == 4 else None
    if len(rest) in (1, 2):
        res = routes.get(rest[0])
        if res is None or (len(rest) == 2 and (res.namespaced or not rest[1])):
            raise not_found
        return res, None, rest[1] if len(rest) == 2 else None
    raise not_found


def _int_param(params: Mapping[str, str], name: str) -> int:
    text = params.get(name, "")
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise APIError(400, "BadRequest", f"{name}: Invalid value: {text!r}") from None


def _float_param(params: Mapping[str, str], name: str) -> float:
    text = params.get(name, "")
    try:
        value = float(text) if text else 0.0
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise APIError(400, "BadRequest", f"{name}: Invalid value: {text!r}")
    return value


# ---------------------------------------------------------------------------- kubeconfig


def write_kubeconfig(path: Path, url: str, ca_path: Path, token: str, *,
                     name: str = "lab") -> None:
    """Write a kubeconfig (one cluster, user and context, all ``name``) for ``url``, trusting
    ``ca_path`` and sending ``token``; mode 0600, replaced atomically."""
    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": {
            "server": url, "certificate-authority": str(Path(ca_path).resolve())}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    _write_atomic(Path(path), yaml.safe_dump(doc, sort_keys=False))


def _write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fd, mode)
        fh.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- process


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT (exit 0); 2 on bad arguments or a start that failed."""
    parser = argparse.ArgumentParser(
        prog="python -m podflow.lab.apiserver",
        description="Kubernetes API test double serving a lab's cluster-state directory.")
    parser.add_argument("--state", type=Path, required=True, help="cluster-state directory")
    parser.add_argument("--certs", type=Path, required=True,
                        help="certificate directory (CA and server certificate made if absent)")
    parser.add_argument("--token-file", type=Path, required=True, help="bearer token file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--url-file", type=Path, help="written with the URL once listening")
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig to write")
    parser.add_argument("--bookmark-interval", type=float, default=1.0)
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        token = args.token_file.read_text().strip()
        server = KubeAPIServer(args.state, args.certs, token, host=args.host, port=args.port,
                               bookmark_interval=args.bookmark_interval, history=args.history,
                               poll_interval=args.poll_interval)
        server.start()
    except (OSError, RuntimeError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    try:
        if args.kubeconfig is not None:
            write_kubeconfig(args.kubeconfig, server.url, server.ca_path, token)
        if args.url_file is not None:
            _write_atomic(args.url_file, server.url + "\n", 0o644)
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
