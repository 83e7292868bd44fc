"""A picture of one node's datapath: links, addresses, routes and CNI configuration.

:class:`NodeSnapshot` is what CNI detection (:mod:`podflow.cni.detect`) looks at. It is a
plain frozen value with a JSON form, so that golden snapshots of real nodes live in
``tests/data/nodes/`` and detection is tested without root. :func:`read_node_snapshot` is the
only I/O here: it reads the kernel over rtnetlink with pyroute2 (``IPRoute(netns=...)`` opens
its socket in the namespace from a helper; the calling process never changes namespace) and
the CNI files from disk.

Example::

    >>> snap = NodeSnapshot(links=(LinkInfo(name="flannel.1", kind="vxlan", vxlan_id=1,
    ...                                     vxlan_port=8472, addresses=("10.244.0.0/32",)),))
    >>> snap.link("flannel.1").vxlan_port
    8472
    >>> NodeSnapshot.from_json(snap.to_json()) == snap
    True
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RTNH_F_ONLINK = 4
"""``RTNH_F_ONLINK`` from linux/rtnetlink.h: the gateway is on-link even without a subnet."""
RTPROT_BIRD = 12
"""``rtm_protocol`` of routes BIRD installs (``proto bird``)."""
RTN_BLACKHOLE = 6
"""``rtm_type`` of a blackhole route."""
SNAPSHOT_VERSION = 1
"""Version of the JSON form."""


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """One network interface of the node."""

    name: str
    """Interface name, e.g. ``flannel.1``."""
    kind: str | None = None
    """``IFLA_INFO_KIND``: veth, bridge, vxlan, ... (None for plain devices such as lo)."""
    index: int = 0
    """Interface index."""
    mac: str | None = None
    """Link-layer address."""
    mtu: int | None = None
    """MTU."""
    master: str | None = None
    """Name of the bridge/bond this link is enslaved to."""
    state: str | None = None
    """Operational state (``UP``, ``DOWN``, ``UNKNOWN``)."""
    addresses: tuple[str, ...] = ()
    """Addresses in CIDR form, e.g. ``10.244.0.1/24`` (link-local IPv6 left out)."""
    vxlan_id: int | None = None
    """VXLAN network identifier (VNI), for vxlan links."""
    vxlan_port: int | None = None
    """VXLAN UDP destination port, for vxlan links."""
    vxlan_local: str | None = None
    """VXLAN local (underlay) address, for vxlan links."""


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One route of the main table."""

    dst: str
    """Destination in CIDR form (``0.0.0.0/0`` for the default route)."""
    dev: str | None = None
    """Output interface name."""
    gateway: str | None = None
    """Next hop, if any."""
    onlink: bool = False
    """The ``onlink`` flag (flannel's routes to other nodes' VTEPs carry it)."""
    prefsrc: str | None = None
    """Preferred source address."""
    scope: int = 0
    """Route scope (0 universe, 253 link, 254 host)."""
    protocol: int = 0
    """``rtm_protocol``: 2 kernel, 3 boot, 4 static, 12 bird, 80 Calico's felix (0: unknown,
    in snapshots recorded before the field existed)."""
    type: int = 1
    """``rtm_type``: 1 unicast, 6 blackhole (Calico's block routes)."""


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """Everything CNI detection looks at on one node."""

    links: tuple[LinkInfo, ...] = ()
    """Interfaces, in index order."""
    routes: tuple[RouteInfo, ...] = ()
    """Routes of the main table (IPv4 and global IPv6)."""
    cni_conf: dict[str, Any] = field(default_factory=dict)
    """CNI configuration files (``/etc/cni/net.d``): file name -> parsed JSON."""
    subnet_env: dict[str, str] = field(default_factory=dict)
    """Flannel's ``subnet.env`` as key -> value (empty when absent)."""
    netns: str | None = None
    """Network namespace the snapshot was read from (None: the agent's own)."""

    def link(self, name: str) -> LinkInfo | None:
        """The link called ``name``, or None."""
        return next((x for x in self.links if x.name == name), None)

    def links_of_kind(self, kind: str) -> list[LinkInfo]:
        """All links whose ``kind`` is ``kind`` (e.g. ``"vxlan"``)."""
        return [x for x in self.links if x.kind == kind]

    def conf_plugins(self) -> list[tuple[str, dict[str, Any]]]:
        """(file name, plugin config) of every plugin of every CNI config file."""
        out: list[tuple[str, dict[str, Any]]] = []
        for name, conf in sorted(self.cni_conf.items()):
            plugins = conf.get("plugins") if isinstance(conf, dict) else None
            for p in plugins if isinstance(plugins, list) else [conf]:
                if isinstance(p, dict):
                    out.append((name, p))
        return out

    def underlay_address(self) -> str | None:
        """The node's own address on the device of its default route (its InternalIP)."""
        dev = next((r.dev for r in self.routes if r.dst == "0.0.0.0/0" and r.dev), None)
        link = self.link(dev) if dev else None
        v4 = [a.split("/")[0] for a in (link.addresses if link else ()) if ":" not in a]
        return v4[0] if v4 else None

    def to_json(self) -> str:
        """Serialise to indented JSON (stable key order)."""
        doc = {"version": SNAPSHOT_VERSION, **asdict(self)}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> NodeSnapshot:
        """Read the form written by :meth:`to_json`.

        Raises:
            ValueError: malformed JSON or an unsupported version.
        """
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"not a node snapshot of version {SNAPSHOT_VERSION}")
        links = tuple(
            LinkInfo(**{**ln, "addresses": tuple(ln.get("addresses", ()))})
            for ln in doc.get("links", ())
        )
        routes = tuple(RouteInfo(**r) for r in doc.get("routes", ()))
        return cls(links=links, routes=routes, cni_conf=dict(doc.get("cni_conf", {})),
                   subnet_env=dict(doc.get("subnet_env", {})), netns=doc.get("netns"))


def parse_subnet_env(text: str) -> dict[str, str]:
    """Parse flannel's ``subnet.env`` (``KEY=value`` lines).

    Example::

        >>> parse_subnet_env("FLANNEL_NETWORK=10.244.0.0/16\\nFLANNEL_MTU=1450\\n")
        {'FLANNEL_NETWORK': '10.244.0.0/16', 'FLANNEL_MTU': '1450'}
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip('"')
    return out


def read_cni_conf_dir(path: Path) -> dict[str, Any]:
    """Parse every ``*.conf``/``*.conflist``/``*.json`` in ``path``; unreadable files are logged."""
    out: dict[str, Any] = {}
    if not path.is_dir():
        return out
    for f in sorted(path.iterdir()):
        if f.suffix not in (".conf", ".conflist", ".json"):
            continue
        try:
            out[f.name] = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            log.warning("CNI config %s unreadable, ignored: %s", f, exc)
    return out


def _links_and_routes(netns: str | None) -> tuple[tuple[LinkInfo, ...], tuple[RouteInfo, ...]]:
    from pyroute2 import IPRoute  # imported here: the rest of the module needs no pyroute2

    # flags=0: pyroute2 would otherwise create a namespace that does not exist (O_CREAT)
    with IPRoute(netns=netns, flags=0) if netns else IPRoute() as ipr:
        raw_links = list(ipr.get_links())
        raw_addrs = list(ipr.get_addr())
        raw_routes = list(ipr.get_routes(table=254))
    names = {int(x["index"]): str(x.get_attr("IFLA_IFNAME")) for x in raw_links}
    addrs: dict[int, list[str]] = {}
    for a in raw_addrs:
        ip = a.get_attr("IFA_ADDRESS")
        if ip is None or str(ip).startswith("fe80:"):
            continue
        addrs.setdefault(int(a["index"]), []).append(f"{ip}/{a['prefixlen']}")
    links = []
    for x in raw_links:
        info = x.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        vx = data if kind == "vxlan" and data is not None else None
        master = x.get_attr("IFLA_MASTER")
        links.append(LinkInfo(
            name=names[int(x["index"])], kind=kind, index=int(x["index"]),
            mac=x.get_attr("IFLA_ADDRESS"), mtu=x.get_attr("IFLA_MTU"),
            master=names.get(int(master)) if master is not None else None,
            state=x.get_attr("IFLA_OPERSTATE"),
            addresses=tuple(addrs.get(int(x["index"]), ())),
            vxlan_id=vx.get_attr("IFLA_VXLAN_ID") if vx is not None else None,
            vxlan_port=vx.get_attr("IFLA_VXLAN_PORT") if vx is not None else None,
            vxlan_local=vx.get_attr("IFLA_VXLAN_LOCAL") if vx is not None else None,
        ))
    routes = []
    for r in raw_routes:
        dst = r.get_attr("RTA_DST")
        if dst is not None and str(dst).startswith("fe80:"):
            continue
        if dst is None:
            dst = "0.0.0.0" if r["family"] == 2 else "::"
        oif = r.get_attr("RTA_OIF")
        routes.append(RouteInfo(
            dst=f"{dst}/{r['dst_len']}", dev=names.get(int(oif)) if oif is not None else None,
            gateway=r.get_attr("RTA_GATEWAY"), onlink=bool(r["flags"] & RTNH_F_ONLINK),
            prefsrc=r.get_attr("RTA_PREFSRC"), scope=int(r["scope"]),
            protocol=int(r["proto"]), type=int(r["type"]),
        ))
    return tuple(links), tuple(routes)


def read_node_snapshot(netns: str | None, cni_conf_dir: Path,
                       subnet_env: Path | None = None) -> NodeSnapshot:
    """Read a node's datapath picture (I/O: rtnetlink in ``netns`` plus the CNI files).

    Args:
        netns: named network namespace of the node, or None for the agent's own.
        cni_conf_dir: the node's CNI configuration directory (``/etc/cni/net.d``).
        subnet_env: flannel's ``subnet.env`` (``/run/flannel/subnet.env``), if any.

    Example::

        snap = read_node_snapshot("pf-lab-shop-node1", Path("/etc/cni/net.d"),
                                  Path("/run/flannel/subnet.env"))
    """
    links, routes = _links_and_routes(netns)
    env: dict[str, str] = {}
    if subnet_env is not None:
        try:
            env = parse_subnet_env(subnet_env.read_text())
        except OSError as exc:
            log.info("no flannel subnet.env at %s: %s", subnet_env, exc)
    return NodeSnapshot(links=links, routes=routes, cni_conf=read_cni_conf_dir(cni_conf_dir),
                        subnet_env=env, netns=netns)
