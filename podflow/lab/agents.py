"""Start and stop one ``podflow agent`` per lab node.

The agents are ordinary ``podflow agent`` processes pointed at the node's namespace, the
lab's Kubernetes API server (its kubeconfig), the node's CNI config files and the lab's
store: exactly what a user would run on a real node. They run in the root namespace and open their
netlink sockets inside the node's namespace through a helper (never ``setns``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from podflow.lab.netns import runs_ours
from podflow.lab.state import LabState, lab_dir, lab_store_path


def agent_argv(state: LabState, node_name: str, ready_file: Path | None = None) -> list[str]:
    """The command line of the agent for one lab node."""
    node = state.node(node_name)
    base = lab_dir(state.name)
    # the production path: the lab's API server (a lab made before it had one: its files)
    inventory = (["--kubeconfig", str(base / "kubeconfig")] if state.apiserver_url
                 else ["--cluster-state", str(base / "cluster-state")])
    argv = [sys.executable, "-m", "podflow", "agent", "--node", node.name,
            "--netns", node.netns, *inventory,
            *(["--spool", str(base / "nodes" / node.name / "spool")]
              if state.spec.get("agentMode") == "hub"
              else ["--store", str(lab_store_path(state.name))]),
            "--cni-conf-dir", str(base / "nodes" / node.name / "cni" / "net.d"),
            "--subnet-env", str(base / "nodes" / node.name / "run" / "flannel" / "subnet.env"),
            # all lab nodes share one kernel: look for pod namespaces among this lab's only
            "--netns-prefix", f"pf-{state.name}-",
            # this node's /metrics, as a Hubble agent's :9965 (the port is in the ready file;
            # an agent started again keeps its node's ports, as a DaemonSet pod does)
            "--metrics-listen", node.agent_metrics or "127.0.0.1:0",
            # and its flows over Hubble's Observer API, as a Cilium agent's :4244
            "--observer-listen", node.agent_observer or "127.0.0.1:0"]
    for key, value in sorted(state.spec.get("agentOptions", {}).items()):
        argv += ["--source-option", f"{key}={json.dumps(value)}"]
    sources = state.spec.get("agentSources")
    if sources:
        argv += ["--sources", ",".join(sources)]
    if ready_file is not None:
        argv += ["--ready-file", str(ready_file)]
    return argv


def start_agents(state: LabState, timeout: float = 20.0,
                 only: list[str] | None = None) -> None:
    """Start an agent per node (``only``: on these nodes), record its pid, and wait until
    every one is subscribed."""
    base = lab_dir(state.name)
    (base / "logs").mkdir(parents=True, exist_ok=True)
    ready: list[Path] = []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    nodes = [n for n in state.nodes if only is None or n.name in only]
    for node in nodes:
        rf = base / "run" / f"agent-{node.name}.ready"
        rf.parent.mkdir(parents=True, exist_ok=True)
        rf.unlink(missing_ok=True)
        ready.append(rf)
        with open(base / "logs" / f"agent-{node.name}.log", "ab") as logf:
            proc = subprocess.Popen(agent_argv(state, node.name, rf), stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=logf, start_new_session=True)
        node.agent_pid = proc.pid
        procs[node.name] = proc
    state.save()
    end = time.time() + timeout
    while time.time() < end:
        if all(r.exists() for r in ready):
            for node, rf in zip(nodes, ready, strict=True):
                served = json.loads(rf.read_text())
                node.agent_metrics = served.get("metrics")
                node.agent_observer = served.get("observer")
            state.save()
            return
        for name, proc in procs.items():
            # the Popen handle, not /proc: right after the fork the child may not have
            # exec'd the agent yet, and its command line is still ours
            if proc.poll() is not None:
                raise RuntimeError(f"agent for {name} exited at start (status "
                                   f"{proc.returncode}); see "
                                   f"{base / 'logs' / f'agent-{name}.log'}")
        time.sleep(0.1)
    raise RuntimeError(f"agents not ready after {timeout:.0f}s; see {base / 'logs'}")


def _alive(pid: int, role: bytes = b"agent") -> bool:
    return runs_ours(pid, b"podflow\x00" + role)   # only ever signal our own processes


def start_hub(state: LabState, timeout: float = 20.0) -> None:
    """Start the lab's ``podflow hub`` over its agents (``agents.mode: hub``), record its
    pid, and wait until it runs and has stored what every agent spooled at its start."""
    base = lab_dir(state.name)
    peers = [n.agent_observer for n in state.nodes]
    if not all(peers):
        raise RuntimeError("the hub needs every agent's address; start the agents first")
    rf = base / "run" / "hub.ready"
    rf.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "podflow", "hub", "--store", str(lab_store_path(state.name)),
            "--peers", ",".join(p for p in peers if p), "--ready-file", str(rf),
            # the cluster's flows over Hubble's Observer API, as Hubble Relay's :4245
            "--observer-listen", state.hub_observer or "127.0.0.1:0"]
    # (the UI and API over the lab's store: `podflow serve --lab NAME`, another process)
    with open(base / "logs" / "hub.log", "ab") as logf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                start_new_session=True)
    state.hub_pid = proc.pid
    state.save()
    end = time.time() + timeout
    while time.time() < end:
        if rf.exists() and _hub_caught_up(state):
            served = json.loads(rf.read_text())
            state.hub_observer, state.hub_api = served.get("observer"), served.get("api")
            state.save()
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited at start (status {proc.returncode}); see "
                               f"{base / 'logs' / 'hub.log'}")
        time.sleep(0.1)
    raise RuntimeError(f"the hub was not ready after {timeout:.0f}s; see {base / 'logs'}")


def _hub_caught_up(state: LabState) -> bool:
    """The hub has committed records of every agent (their health at start among them), so
    that the store shows the agents from the start, as when they write it themselves."""
    store = lab_store_path(state.name)
    if not store.exists():
        return False
    from podflow.store import open_store
    from podflow.store.base import StoreError

    try:
        cursors = open_store(store, read_only=True, lock_timeout=1.0).feed_cursors()
    except StoreError:
        return False
    return {n.name for n in state.nodes} <= set(cursors)


def stop_hub(state: LabState, timeout: float = 15.0) -> None:
    """SIGTERM the hub (it writes what it has queued), SIGKILL it after ``timeout``."""
    pid = state.hub_pid
    if pid and _alive(pid, b"hub"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        end = time.time() + timeout
        while time.time() < end and _alive(pid, b"hub"):
            time.sleep(0.1)
        if _alive(pid, b"hub"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    state.hub_pid = None


def stop_agents(state: LabState, timeout: float = 15.0) -> None:
    """SIGTERM every agent (they flush to the store), SIGKILL what is left after ``timeout``."""
    pids = [n.agent_pid for n in state.nodes if n.agent_pid]
    # (in hub mode an agent waits a few seconds for the hub to take its last records)
    for pid in pids:
        if not _alive(pid):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    end = time.time() + timeout
    while time.time() < end and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for n in state.nodes:
        n.agent_pid = n.agent_metrics = n.agent_observer = None
