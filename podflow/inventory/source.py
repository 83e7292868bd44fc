"""Where the cluster state comes from: the one interface the agent and the server use.

Two inputs feed the time-indexed :class:`~podflow.inventory.history.Inventory`: the
Kubernetes API (:class:`~podflow.inventory.kubeapi.ClusterAPI`, list+watch, the normal
mode) and a directory of Kubernetes JSON
(:class:`~podflow.inventory.snapshot_dir.ClusterStateDir`, the offline mode). Both are a
:class:`ClusterSource`; :func:`open_cluster` picks one.

Example::

    cluster = open_cluster(cluster_state=None, kubeconfig=None, node="node1")  # in-cluster
    cluster.start()
    cluster.poll(time.time())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from podflow.inventory.history import Inventory
from podflow.inventory.k8s import ClusterObjects
from podflow.model.losses import Losses


class ClusterSource(Protocol):
    """A feed of the cluster state into an inventory."""

    inventory: Inventory
    """The time-indexed inventory it updates."""
    losses: Losses
    """What it could not use, by reason (the health report's ``lost["inventory"]``)."""

    @property
    def description(self) -> str:
        """Where the state comes from, for messages."""
        ...

    @property
    def current(self) -> bool:
        """Whether changes reach the inventory as they happen (False while the API is
        unreachable: flows of pods not known yet wait longer for their names)."""
        ...

    @property
    def pod_count(self) -> int:
        """Pods known now (0: no endpoint can be named a pod)."""
        ...

    def start(self) -> None:
        """Begin (the API's watches start; a directory has nothing to start)."""
        ...

    def stop(self) -> None:
        """End what :meth:`start` began."""
        ...

    def wait_synced(self, timeout: float) -> bool:
        """Wait (``timeout`` s at most) until the whole state has been read once."""
        ...

    def poll(self, now: float) -> bool:
        """Apply what changed at time ``now``; True if the inventory changed. Never raises."""
        ...

    def objects(self) -> ClusterObjects:
        """The parsed objects known now (nodes, pods, services, ...)."""
        ...

    def health(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Per-resource state for ``--explain``, the health report and /metrics."""
        ...


class ClusterConfigError(ValueError):
    """No usable cluster state was configured (the message says what to give)."""


def open_cluster(*, cluster_state: Path | None = None, kubeconfig: Path | None = None,
                 node: str | None = None, inventory: Inventory | None = None
                 ) -> ClusterSource:
    """The directory ``cluster_state`` if given (offline mode), else the Kubernetes API from
    ``kubeconfig``, the in-cluster service account or ``$KUBECONFIG``/``~/.kube/config``
    (:func:`~podflow.inventory.kubeapi.load_config`). ``node`` is the agent's node (all
    pods are watched until a hub names the remote ends; see
    :func:`~podflow.inventory.kubeapi.resources`). Nothing is requested before ``start``.

    Raises:
        ClusterConfigError: neither a directory nor a usable Kubernetes configuration.
    """
    if cluster_state is not None:
        from podflow.inventory.snapshot_dir import ClusterStateDir

        return ClusterStateDir(cluster_state, inventory)
    from lightkube.core.exceptions import ConfigError

    from podflow.inventory.kubeapi import ClusterAPI, load_config

    try:
        config = load_config(kubeconfig)
        return ClusterAPI(config, inventory)   # builds the client: reads the CA, the token
    except (ConfigError, OSError, ValueError, KeyError, AssertionError) as exc:
        where = f"--kubeconfig {kubeconfig}" if kubeconfig else (
            "the in-cluster service account, $KUBECONFIG or ~/.kube/config")
        raise ClusterConfigError(
            f"no Kubernetes API configuration from {where}: {exc}; give --kubeconfig PATH, "
            "run in a pod with a service account, or give --cluster-state DIR (a directory "
            "of Kubernetes JSON) for the offline mode") from exc
