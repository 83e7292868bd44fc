"""CNI plugin invocation, the way a container runtime and Flannel's CNI plugin do it.

Per node the lab writes what kube-flannel deploys (``cni/net.d/10-flannel.conflist``) and
what flanneld writes (``run/flannel/subnet.env``); a pod is wired by running the real
``bridge`` plugin (with ``host-local`` IPAM) inside the node netns with the delegate config
Flannel's plugin would generate from those two files.

Example::

    write_node_files(node_dir, "10.244.0.0/16", "10.244.1.0/24")
    ip = cni_add(node_dir, "pf-shop-node2", container_id, "pf-shop-p-1a2b3c4d", ...)
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from podflow.lab.netns import (
    NETNS_DIR,
    LabError,
    add_netns,
    delete_netns,
    in_netns,
    ip_batch,
    kill_pids,
    netns_exists,
    netns_pids,
    run,
)

CNI_BIN = Path("/usr/lib/cni")
"""Debian's containernetworking-plugins."""
CNI_VERSION = "0.3.1"
"""The cniVersion kube-flannel's conflist declares."""
NETWORK_NAME = "cbr0"
"""kube-flannel's network name."""
FLANNEL_MTU = 1450
"""VXLAN overhead taken off a 1500-byte underlay."""


def conflist() -> dict[str, Any]:
    """The CNI config list kube-flannel installs as ``/etc/cni/net.d/10-flannel.conflist``."""
    return {
        "name": NETWORK_NAME,
        "cniVersion": CNI_VERSION,
        "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def subnet_env(network: str, node_cidr: str) -> str:
    """``/run/flannel/subnet.env`` as flanneld writes it for a node's lease."""
    net = ipaddress.IPv4Network(node_cidr)
    return (f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={net.network_address + 1}/"
            f"{net.prefixlen}\nFLANNEL_MTU={FLANNEL_MTU}\nFLANNEL_IPMASQ=true\n")


def write_node_files(node_dir: Path, network: str, node_cidr: str) -> None:
    """Write a node's CNI config dir and flannel subnet file under ``node_dir``."""
    netd = node_dir / "cni" / "net.d"
    netd.mkdir(parents=True, exist_ok=True)
    (netd / "10-flannel.conflist").write_text(json.dumps(conflist(), indent=2) + "\n")
    run_dir = node_dir / "run" / "flannel"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "subnet.env").write_text(subnet_env(network, node_cidr))


def read_subnet_env(node_dir: Path) -> dict[str, str]:
    """Parse the node's ``subnet.env`` (what Flannel's CNI plugin reads)."""
    text = (node_dir / "run" / "flannel" / "subnet.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def delegate_config(node_dir: Path) -> dict[str, Any]:
    """The bridge config Flannel's CNI plugin delegates to, built from the node's files.

    Like flannel: bridge ``cni0``, isGateway, ipMasq = not FLANNEL_IPMASQ (flanneld does the
    masquerade), MTU from subnet.env, host-local IPAM over the node's subnet with a route to
    the cluster network; plus a ``dataDir`` inside the lab so nothing lands in /var/lib/cni.
    """
    env = read_subnet_env(node_dir)
    delegate = dict(conflist()["plugins"][0]["delegate"])
    subnet = ipaddress.IPv4Interface(env["FLANNEL_SUBNET"]).network
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": True,
        **delegate,
        "ipMasq": env.get("FLANNEL_IPMASQ") != "true",
        "mtu": int(env["FLANNEL_MTU"]),
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": str(subnet)}]],
            "routes": [{"dst": env["FLANNEL_NETWORK"]}],
            "dataDir": str((node_dir / "cni" / "networks").resolve()),
        },
    }


def container_id(pod_uid: str) -> str:
    """A 64-hex container id for a pod's sandbox, derived from its UID."""
    return hashlib.sha256(pod_uid.encode()).hexdigest()


def _invoke(command: str, node_dir: Path, node_netns: str, cid: str,
            pod_netns: str, config: dict[str, Any]) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": str(NETNS_DIR / pod_netns),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(CNI_BIN),
    }
    argv = in_netns(node_netns, [str(CNI_BIN / config["type"])])
    proc = run(argv, input=json.dumps(config), env=env, check=False)
    if proc.returncode != 0:
        try:
            err = json.loads(proc.stdout)
            detail = f"{err.get('msg')} {err.get('details', '')}".strip()
        except (ValueError, AttributeError):
            detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"CNI {command} of {pod_netns} in {node_netns} failed: {detail}")
    return proc.stdout


def cni_add(node_dir: Path, node_netns: str, cid: str, pod_netns: str) -> str:
    """CNI ADD: wire ``pod_netns`` to the node's cni0; returns the pod IP.

    Flannel's plugin keeps the delegate config it used under ``cni/flannel/<id>`` so that DEL
    can replay it; so do we.
    """
    config = delegate_config(node_dir)
    saved = node_dir / "cni" / "flannel"
    saved.mkdir(parents=True, exist_ok=True)
    (saved / cid).write_text(json.dumps(config))
    result = json.loads(_invoke("ADD", node_dir, node_netns, cid, pod_netns, config))
    ips = result.get("ips") or []
    if not ips:
        raise LabError(f"CNI ADD of {pod_netns} returned no IP: {result}")
    return str(ipaddress.IPv4Interface(ips[0]["address"]).ip)


def cni_del(node_dir: Path, node_netns: str, cid: str, pod_netns: str) -> None:
    """CNI DEL: release the IP and remove the host veth (the netns may already be gone)."""
    saved = node_dir / "cni" / "flannel" / cid
    try:
        config = json.loads(saved.read_text())
    except (OSError, ValueError):
        try:
            config = delegate_config(node_dir)
        except (OSError, KeyError):
            return
    _invoke("DEL", node_dir, node_netns, cid, pod_netns, config)
    saved.unlink(missing_ok=True)


def create_sandbox(node_dir: Path, node_netns: str, pod_netns: str, pod_uid: str) -> str:
    """Make a pod's sandbox as a runtime does (new netns, lo up) and CNI ADD it; its IP."""
    add_netns([pod_netns])
    ip_batch(pod_netns, ["link set lo up"])
    return cni_add(node_dir, node_netns, container_id(pod_uid), pod_netns)


def remove_sandbox(node_dir: Path, node_netns: str, pod_netns: str, pod_uid: str) -> None:
    """Kill what runs in a pod's netns, CNI DEL it (if its node still exists), delete it."""
    kill_pids(netns_pids(pod_netns))
    if netns_exists(node_netns):
        with contextlib.suppress(LabError):
            cni_del(node_dir, node_netns, container_id(pod_uid), pod_netns)
    delete_netns(pod_netns)
