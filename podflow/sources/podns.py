"""Which namespaces on this machine are pods of this node, found fast and incrementally.

A pod's namespace belongs to the node when its veth/macvlan/ipvlan links lead to the node's
namespace (see :mod:`podflow.sources.nsdiscovery`); namespaces holding a bridge are switches
(like the lab's fabric), not pods. Deciding that means opening a netlink socket inside the
namespace (a forked helper), so :class:`PodNamespaceFinder` remembers each verdict by the
namespace's inode and only probes namespaces it has not seen, or saw before they were wired
(a runtime creates the namespace first and attaches the interface a moment later): those are
probed again after ``recheck`` seconds. Listing candidates is a directory read plus a stat
per process, so a finder can run every half second and catch a new pod's namespace before
its first connection.

Example::

    finder = PodNamespaceFinder("pf-shop-node1", name_prefix="pf-shop-")
    paths = finder.find()   # ['/var/run/netns/pf-shop-p-1a2b3c4d', ...]
"""

from __future__ import annotations

import socket
import time

from podflow.sources import nsdiscovery as nd
from podflow.sources.netns import open_socket


class PodNamespaceFinder:
    """See the module docstring."""

    def __init__(self, node_netns: str | None, name_prefix: str | None = None,
                 recheck: float = 2.0) -> None:
        """``node_netns``: the node's namespace (None: ours); ``name_prefix``: only named
        namespaces starting with it are candidates."""
        self.node_path = "/proc/self/ns/net" if node_netns is None else (
            node_netns if "/" in node_netns else f"/run/netns/{node_netns}")
        self.name_prefix = name_prefix
        self.recheck = recheck
        self.node_inode = nd.ns_inode(self.node_path)
        self._verdicts: dict[int, tuple[bool, float]] = {}
        self.probes = 0
        """Namespaces probed so far (forked helpers)."""

    def find(self) -> list[str]:
        """Paths of the pod namespaces of this node now."""
        now = time.monotonic()
        cands = nd.candidates(name_prefix=self.name_prefix)
        for gone in [i for i in self._verdicts if i not in cands]:
            del self._verdicts[gone]
        found = []
        with open(self.node_path, "rb") as nodef:
            for ino, cand in cands.items():
                if ino == self.node_inode:
                    continue
                verdict = self._verdicts.get(ino)
                if verdict is None or (not verdict[0] and now - verdict[1] >= self.recheck):
                    verdict = (self._probe(cand.path, nodef.fileno()), now)
                    self._verdicts[ino] = verdict
                if verdict[0]:
                    found.append(cand.path)
        return found

    def _probe(self, path: str, node_fd: int) -> bool:
        self.probes += 1
        try:
            route = open_socket(path, socket.AF_NETLINK, socket.SOCK_RAW, 0)
        except OSError:
            return False
        with route:
            route.settimeout(2.0)
            try:
                ok, _why = nd.probe(route, node_fd)
                route.send(nd.build_getlink(seq=3))
                links: list[nd.Link] = []
                done = False
                while not done:
                    got, done = nd.parse_links(route.recv(1 << 16))
                    links += got
            except OSError:
                return False
        return ok and not any(link.kind == "bridge" for link in links)
