"""Start, stop, restart and compact the lab's Kubernetes API server process.

``lab up`` serves the lab's cluster state over the Kubernetes API protocol
(:mod:`podflow.lab.apiserver`, a test double: no kube-apiserver runs on these machines) and
writes a kubeconfig for it (``<lab>/kubeconfig``); the lab's agents use it, so every lab
exercises the production path (list+watch, bookmarks, 410 and relist). The server keeps its
port across restarts, so the kubeconfig stays valid; its token and certificates live in
``<lab>/api/``.

Example::

    start_apiserver(state)            # during lab up, before the agents
    restart_apiserver("shop")         # a test: the API server goes away and comes back
    compact_apiserver("shop")         # a test: every watch's version is now too old (410)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from podflow.lab.netns import runs_ours
from podflow.lab.state import LabState, lab_dir

START_TIMEOUT = 15.0
"""Seconds ``lab up`` waits for the API server to listen."""


def api_dir(name: str) -> Path:
    """Where lab ``name``'s API server keeps its token, certificates and URL."""
    return lab_dir(name) / "api"


def kubeconfig_path(name: str) -> Path:
    """The kubeconfig of lab ``name``'s API server (what its agents use)."""
    return lab_dir(name) / "kubeconfig"


def _argv(state: LabState, port: int) -> list[str]:
    d = api_dir(state.name)
    return [sys.executable, "-m", "podflow.lab.apiserver",
            "--state", str(lab_dir(state.name) / "cluster-state"), "--certs", str(d / "certs"),
            "--token-file", str(d / "token"), "--port", str(port),
            "--url-file", str(d / "url"), "--kubeconfig", str(kubeconfig_path(state.name))]


def start_apiserver(state: LabState, port: int = 0) -> None:
    """Start the API server (a new token the first time), wait until it listens, and record
    its pid and URL in ``state`` (saved by the caller)."""
    d = api_dir(state.name)
    d.mkdir(parents=True, exist_ok=True)
    token = d / "token"
    if not token.exists():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    url = d / "url"
    url.unlink(missing_ok=True)
    logs = lab_dir(state.name) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "apiserver.log", "ab") as logf:
        proc = subprocess.Popen(_argv(state, port), stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=logf, start_new_session=True)
    state.apiserver_pid = proc.pid
    end = time.monotonic() + START_TIMEOUT
    while not url.exists() or not url.read_text().strip():
        if proc.poll() is not None:
            raise RuntimeError(f"the lab's API server exited at start (status "
                               f"{proc.returncode}); see {logs / 'apiserver.log'}")
        if time.monotonic() > end:
            stop_apiserver(state)   # nothing of ours is left running
            raise RuntimeError(f"the lab's API server did not listen within "
                               f"{START_TIMEOUT:.0f}s; see {logs / 'apiserver.log'}")
        time.sleep(0.05)
    state.apiserver_url = url.read_text().strip()


def _ours(pid: int) -> bool:
    return runs_ours(pid, b"podflow.lab.apiserver")   # only ever signal our own server


def stop_apiserver(state: LabState, timeout: float = 5.0) -> None:
    """SIGTERM the API server, SIGKILL it after ``timeout``; forget its pid."""
    pid = state.apiserver_pid
    state.apiserver_pid = None
    if not pid or not _ours(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end and _ours(pid):
        time.sleep(0.05)
    if _ours(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def restart_apiserver(name: str, down_for: float = 0.0,
                      meanwhile: Callable[[], object] | None = None) -> None:
    """Stop lab ``name``'s API server, run ``meanwhile`` (e.g. restart a pod: the cluster
    changes while nobody can watch it), wait ``down_for`` seconds, start it on the same
    port (its watch history is gone: clients resuming from an older version get 410)."""
    state = LabState.load(name)
    port = int((state.apiserver_url or ":0").rsplit(":", 1)[1])
    stop_apiserver(state)
    state.save()
    if meanwhile is not None:
        meanwhile()
    time.sleep(down_for)
    state = LabState.load(name)   # what ``meanwhile`` changed
    start_apiserver(state, port)
    state.save()


def compact_apiserver(name: str) -> None:
    """Drop lab ``name``'s API server's event history (the next resumed watch gets 410)."""
    import httpx2 as httpx

    state = LabState.load(name)
    d = api_dir(name)
    r = httpx.post(f"{state.apiserver_url}/podflow-test/compact",
                   headers={"Authorization": f"Bearer {(d / 'token').read_text().strip()}"},
                   verify=ssl.create_default_context(cafile=d / "certs" / "ca.crt"),
                   timeout=5.0)
    r.raise_for_status()
