"""CNI plugin invocation, the way a container runtime and Flannel's CNI plugin do it.

:func:`invoke` runs any reference plugin (``/usr/lib/cni``) inside a node netns with the
runtime's environment. For flannel (both backends) the lab writes per node what kube-flannel
deploys (``cni/net.d/10-flannel.conflist``, ``flannel/net-conf.json``) and what flanneld
writes (``run/flannel/subnet.env``); a pod is wired by running the real ``bridge`` plugin
(with ``host-local`` IPAM) with the delegate config Flannel's plugin would generate from them.

Example::

    write_node_files(node_dir, "10.244.0.0/16", "10.244.1.0/24")
    ip = cni_add(node_dir, "pf-shop-node2", container_id, "pf-shop-p-1a2b3c4d")
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from podflow.lab.netns import NETNS_DIR, LabError, in_netns, run

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


def subnet_env(network: str, node_cidr: str, mtu: int = FLANNEL_MTU) -> str:
    """``/run/flannel/subnet.env`` as flanneld writes it for a node's lease."""
    net = ipaddress.IPv4Network(node_cidr)
    return (f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={net.network_address + 1}/"
            f"{net.prefixlen}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n")


def net_conf(network: str, backend: str) -> dict[str, Any]:
    """kube-flannel's ``/etc/kube-flannel/net-conf.json`` (from its ConfigMap)."""
    return {"Network": network, "EnableNFTables": False, "Backend": {"Type": backend}}


def write_node_files(node_dir: Path, network: str, node_cidr: str,
                     backend: str = "vxlan") -> None:
    """Write a node's CNI config dir, flannel net-conf and subnet file under ``node_dir``.

    ``backend`` is ``vxlan`` (MTU 1450) or ``host-gw`` (no encapsulation: MTU 1500).
    """
    netd = node_dir / "cni" / "net.d"
    netd.mkdir(parents=True, exist_ok=True)
    (netd / "10-flannel.conflist").write_text(json.dumps(conflist(), indent=2) + "\n")
    conf_dir = node_dir / "flannel"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "net-conf.json").write_text(json.dumps(net_conf(network, backend), indent=2))
    run_dir = node_dir / "run" / "flannel"
    run_dir.mkdir(parents=True, exist_ok=True)
    mtu = FLANNEL_MTU if backend == "vxlan" else 1500
    (run_dir / "subnet.env").write_text(subnet_env(network, node_cidr, mtu))


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


def invoke(command: str, node_netns: str, cid: str, pod_netns: str,
           config: dict[str, Any]) -> str:
    """Run plugin ``config["type"]`` in ``node_netns`` for CNI ``command`` (ADD/DEL) on the
    sandbox ``pod_netns``; its stdout (the result JSON). LabError with the plugin's message."""
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
    return result_ip(invoke("ADD", node_netns, cid, pod_netns, config), pod_netns)


def result_ip(stdout: str, pod_netns: str) -> str:
    """The first IP of a CNI ADD result (``ips[0].address`` without its prefix length)."""
    result = json.loads(stdout)
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
    invoke("DEL", node_netns, cid, pod_netns, config)
    saved.unlink(missing_ok=True)
