"""What one server instance reads: the store, the cluster state, the UI build.

Kept on ``app.state.config`` by :func:`podflow.server.app.create_app`; the routes read it.

Example::

    >>> cfg = ServerConfig(Path("/tmp/none.duckdb"), web_dist=None)
    >>> cfg.cluster_state is None, cfg.lab_externals()
    (True, [])
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podflow.inventory.source import ClusterSource, open_cluster

WEB_DIST_ENV = "PODFLOW_WEB_DIST"
"""Environment variable naming the built UI directory (default: the checkout's web/dist)."""


def default_web_dist() -> Path:
    """``$PODFLOW_WEB_DIST`` or ``<checkout>/web/dist`` (where ``npm run build`` writes)."""
    env = os.environ.get(WEB_DIST_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "web" / "dist"


def find_web_dist(path: Path | None = None) -> Path | None:
    """The UI build directory if it holds an ``index.html``, else None."""
    d = path or default_web_dist()
    return d if (d / "index.html").is_file() else None


@dataclass
class ServerConfig:
    """Paths and settings of one server."""

    store_path: Path
    """The DuckDB flow store read by every endpoint."""
    lab: str | None = None
    """The lab name, when serving a lab (adds its externals to the inventory)."""
    cluster_state_dir: Path | None = None
    """Directory of Kubernetes JSON (pods.json, services.json ...) for the inventory."""
    kubeconfig: Path | None = None
    """The API server to watch for the inventory (when ``cluster_state_dir`` is None)."""
    web_dist: Path | None = None
    """The built UI (``web/dist``), or None when it is not built."""
    metrics_mounted: bool = False
    """True when ``/metrics`` is served."""
    lock_timeout: float = 5.0
    """How long one request waits for a store locked by writers."""
    poll_interval: float = 0.5
    """Seconds between two polls of the store by live streams."""
    inventory_lock: threading.Lock = field(default_factory=threading.Lock)
    _state: ClusterSource | None = None
    _started: bool = False

    @property
    def cluster_state(self) -> ClusterSource | None:
        """The one feed of the cluster state: the directory, else the API's watches
        (started on first use; hold ``inventory_lock``)."""
        if self.cluster_state_dir is None and self.kubeconfig is None:
            return None
        if self._state is None:
            self._state = self.open_cluster()
        if not self._started:
            self._started = True
            self._state.start()
            self._state.wait_synced(5.0)
        return self._state

    def open_cluster(self) -> ClusterSource:
        """Open (not start) the cluster state's feed; raises
        :class:`~podflow.inventory.source.ClusterConfigError` for an unusable kubeconfig,
        so a server can refuse to start rather than fail every request."""
        if self._state is None:
            self._state = open_cluster(cluster_state=self.cluster_state_dir,
                                       kubeconfig=self.kubeconfig)
        return self._state

    def close(self) -> None:
        """Stop the cluster state's feed (the API's watches), if it was started."""
        with self.inventory_lock:
            if self._state is not None and self._started:
                self._state.stop()
            self._state, self._started = None, False

    def lab_externals(self) -> list[dict[str, Any]]:
        """The lab's external hosts (name, ip), or [] when not serving a lab."""
        if self.lab is None:
            return []
        from podflow.lab.state import LabState

        try:
            state = LabState.load(self.lab)
        except (FileNotFoundError, ValueError):
            return []
        return [{"name": e.name, "ip": e.ip} for e in state.externals]
