"""Thin, batched wrappers around ``ip``, ``sysctl`` and friends, always aimed at a netns.

The main process never enters a namespace: every command runs as ``ip -n NS ...`` or
``ip netns exec NS ...`` in a subprocess.

Example::

    add_netns(["pf-shop-node1"])
    ip_batch("pf-shop-node1", ["link set lo up", "addr add 10.0.0.1/24 dev eth0"])
    sysctl("pf-shop-node1", {"net.ipv4.ip_forward": "1"})
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

NETNS_DIR = Path("/var/run/netns")
"""Where ``ip netns add`` bind-mounts named namespaces (and CNI_NETNS points)."""


class LabError(RuntimeError):
    """A lab operation failed; the message says which command and why."""


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv``, capture output; LabError with stderr if it fails and ``check``."""
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              env=None if env is None else dict(env), check=False)
    except FileNotFoundError as e:
        raise LabError(f"{argv[0]}: not installed ({e.strerror})") from e
    if check and proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise LabError(f"`{' '.join(argv[:6])}...` failed (exit {proc.returncode}): "
                       f"{' | '.join(msg[-3:]) or 'no output'}")
    return proc


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so that it runs inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


def ip_batch(netns: str | None, commands: Iterable[str]) -> None:
    """Run many ``ip`` commands in one process (``ip [-n NS] -batch -``)."""
    lines = [c for c in commands if c]
    if not lines:
        return
    argv = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    run(argv, input="\n".join(lines) + "\n")


def bridge_batch(netns: str, commands: Iterable[str]) -> None:
    """Run many ``bridge`` commands in ``netns`` in one process."""
    lines = [c for c in commands if c]
    if lines:
        run(["bridge", "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n")


def ip_json(netns: str, *args: str) -> list[dict[str, Any]]:
    """``ip -j -n NS ARGS`` parsed."""
    out = run(["ip", "-j", "-n", netns, *args]).stdout.strip()
    data = json.loads(out) if out else []
    return data if isinstance(data, list) else []


def add_netns(names: Iterable[str]) -> None:
    """Create named namespaces (as a container runtime does: a bind mount in /var/run/netns)."""
    ip_batch(None, [f"netns add {n}" for n in names])


def delete_netns(name: str) -> None:
    """Delete a named namespace; no error if it is already gone."""
    if (NETNS_DIR / name).exists():
        run(["ip", "netns", "delete", name], check=False)


def list_netns(prefix: str) -> list[str]:
    """Named namespaces whose name starts with ``prefix``."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def netns_exists(name: str) -> bool:
    """True if the named namespace exists."""
    return (NETNS_DIR / name).exists()


def netns_pids(name: str) -> list[int]:
    """PIDs of processes living in namespace ``name`` (``ip netns pids``)."""
    if not netns_exists(name):
        return []
    out = run(["ip", "netns", "pids", name], check=False).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def sysctl(netns: str, values: Mapping[str, str]) -> None:
    """Set sysctls inside ``netns`` (one process for all of them)."""
    if values:
        run(in_netns(netns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())]))


def process_start(pid: int) -> float | None:
    """Unix time ``pid`` started, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().split("\n")
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def runs_ours(pid: int, marker: bytes) -> bool:
    """Whether ``pid`` is alive (a child of ours that exited is reaped) and its command line
    holds ``marker``: a guard against pid reuse before a process of ours is signalled."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def kill_pids(pids: Iterable[int], *, since: float = 0.0, grace: float = 1.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, every pid that started at or after
    ``since`` (a guard against killing a recycled pid that is not ours)."""
    own = os.getpid()
    targets = {p for p in pids if p > 1 and p != own
               and (st := process_start(p)) is not None and st >= since - 1.0}
    for p in targets:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while targets and time.monotonic() < deadline:
        targets = {p for p in targets if _alive(p)}
        if targets:
            time.sleep(0.05)
    for p in targets:
        _signal(p, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
