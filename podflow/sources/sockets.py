"""The sockets source: TCP/UDP sockets of every namespace of the node, over inet_diag.

Every ``poll_interval`` seconds (default 1 s) the source dumps, over NETLINK_SOCK_DIAG
(:mod:`podflow.sources.sockdiag`), the TCP and UDP sockets (IPv4 and IPv6, with ``tcp_info``)
of the node's own namespace (host-network processes) and of every namespace that belongs to
the node (:mod:`podflow.sources.nsdiscovery`: a veth/macvlan/ipvlan link leads to the node).
One NETLINK_SOCK_DIAG socket per namespace is opened once by a forked helper
(:mod:`podflow.sources.netns`; the agent never calls ``setns``) and kept: a socket stays in
the namespace it was created in. Namespaces are re-discovered every few polls; vanished
ones are dropped (their connections end). Socket inodes are mapped to their owning process
by scanning ``/proc/PID/fd`` of the processes in that namespace, only when an unknown inode
appears (cached).

:class:`~podflow.pipeline.socktrack.SocketTracker` turns the polls into connections and
:func:`~podflow.pipeline.sockdecode.socket_to_flow` into Flows.

What a poll misses: a connection that opens and closes between two polls (most HTTP/1.0
requests, DNS over UDP without connect) is never seen, and a connection's start and end are
known only to within one interval. Conntrack (events, both NAT tuples, short-lived
connections) and packets (L7, refused and timed-out connections) complement it; sockets add
what only the endpoints know (the address the application used, RTT, retransmits, the
owning process) and work where the node's stack sees nothing (macvlan, eBPF datapaths).

Example::

    plugin = create(SourceOptions(node_name="node1", netns="pf-shop-node1"))
    threading.Thread(target=plugin.run, args=(sink, stop)).start()
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podflow.model.flow import Flow
from podflow.model.losses import Losses
from podflow.model.sockets import DiagSocket, NsPoll, PollCycle
from podflow.pipeline.context import DecodeContext, Report
from podflow.pipeline.sockdecode import socket_to_flow
from podflow.pipeline.socktrack import SockConn, SocketTracker, is_connection
from podflow.sources import nsdiscovery, sockdiag
from podflow.sources.netns import netns_path, open_socket, run_in_netns
from podflow.sources.registry import Sink, SourceOptions

log = logging.getLogger(__name__)
_DUMPS = ((socket.AF_INET, sockdiag.IPPROTO_TCP), (socket.AF_INET6, sockdiag.IPPROTO_TCP),
          (socket.AF_INET, sockdiag.IPPROTO_UDP), (socket.AF_INET6, sockdiag.IPPROTO_UDP))


@dataclass
class PollerStats:
    """Counters of the namespace poller (reported in the agent's health)."""

    namespaces: int = 0
    candidates: int = 0
    polls: int = 0
    poll_errors: int = 0
    open_errors: int = 0
    sockets: int = 0
    owner_scans: int = 0
    last_poll_ms: float = 0.0
    cycles_lost: int = 0
    evidence: dict[str, str] = field(default_factory=dict)


@dataclass
class _Space:
    cand: nsdiscovery.Candidate
    diag: socket.socket | None
    route: socket.socket | None
    member: bool
    is_node: bool = False

    def close(self) -> None:
        for s in (self.diag, self.route):
            if s is not None:
                s.close()


class NamespacePoller:
    """Finds the node's namespaces and dumps their sockets (I/O; see the module doc)."""

    def __init__(self, node_netns: str | None, proc: Path = Path("/proc"),
                 netns_dir: Path = nsdiscovery.NETNS_DIR,
                 name_prefix: str | None = None) -> None:
        """Open the node's namespace (``None``: the agent's own); ``name_prefix`` limits
        discovery to named namespaces starting with it."""
        self.node_netns, self.proc, self.netns_dir = node_netns, proc, netns_dir
        self.name_prefix = name_prefix
        path = netns_path(node_netns) if node_netns else "/proc/self/ns/net"
        self.node_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.node_inode = os.fstat(self.node_fd).st_ino
        self.spaces: dict[int, _Space] = {}
        self.stats = PollerStats()
        self.losses = Losses()
        """What the sock_diag and rtnetlink decoders skipped, by reason."""
        self._owners: dict[int, tuple[int, str]] = {}
        self._unresolved: set[int] = set()
        self._seq = 0

    def close(self) -> None:
        """Close every socket and the node's namespace descriptor."""
        for sp in self.spaces.values():
            sp.close()
        self.spaces.clear()
        with contextlib.suppress(OSError):
            os.close(self.node_fd)

    def _open(self, cand: nsdiscovery.Candidate) -> _Space:
        if cand.inode == self.node_inode:
            diag = open_socket(self.node_netns, socket.AF_NETLINK, socket.SOCK_RAW,
                               sockdiag.NETLINK_SOCK_DIAG)
            return _Space(cand, diag, None, True, is_node=True)

        def work() -> tuple[bytes, list[int]]:
            d = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, sockdiag.NETLINK_SOCK_DIAG)
            r = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            return b"", [d.detach(), r.detach()]

        _, fds = run_in_netns(cand.path, work)
        diag = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, sockdiag.NETLINK_SOCK_DIAG,
                             fileno=fds[0])
        route = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE,
                              fileno=fds[1])
        return _Space(cand, diag, route, False)

    def _check(self, sp: _Space) -> None:
        if sp.route is None or sp.member:
            return
        sp.member, why = nsdiscovery.probe(sp.route, self.node_fd, self.losses)
        if sp.member:
            self.stats.evidence[sp.cand.name] = why

    def discover(self) -> None:
        """Re-read the candidates; open new ones, re-check outsiders, drop vanished ones."""
        cands = nsdiscovery.candidates(self.proc, self.netns_dir, self.name_prefix)
        for inode in [i for i in self.spaces if i not in cands]:
            self.spaces.pop(inode).close()
            self._unresolved.clear()
        for inode, cand in cands.items():
            sp = self.spaces.get(inode)
            try:
                if sp is None:
                    sp = self.spaces[inode] = self._open(cand)
                    if sp.is_node:
                        self.stats.evidence[cand.name] = "the node's own namespace"
                else:
                    sp.cand.pids = cand.pids
                self._check(sp)
            except OSError as exc:  # it vanished meanwhile, or refuses us: try next time
                self.stats.open_errors += 1
                log.debug("namespace %s: %s", cand.name, exc)
        self._unresolved.clear()
        members = [sp for sp in self.spaces.values() if sp.member]
        self.stats.namespaces, self.stats.candidates = len(members), len(cands)

    def _dump(self, sp: _Space) -> list[DiagSocket]:
        assert sp.diag is not None
        out: list[DiagSocket] = []
        for family, proto in _DUMPS:
            self._seq += 1
            states = sockdiag.DEFAULT_STATES if proto == sockdiag.IPPROTO_TCP \
                else sockdiag.ALL_STATES
            out += sockdiag.dump(sp.diag, family, proto, states=states, seq=self._seq,
                                 losses=self.losses)
        return out

    def _scan_owners(self, pids: list[int], wanted: set[int]) -> None:
        self.stats.owner_scans += 1
        for pid in pids:
            fd_dir = self.proc / str(pid) / "fd"
            try:
                names = os.listdir(fd_dir)
                comm = (self.proc / str(pid) / "comm").read_text().strip()
            except OSError:
                continue
            for name in names:
                try:
                    link = os.readlink(fd_dir / name)
                except OSError:
                    continue
                if link.startswith("socket:["):
                    ino = int(link[8:-1])
                    if ino in wanted:
                        self._owners.setdefault(ino, (pid, comm))

    def poll(self, now: float | None = None) -> PollCycle:
        """Dump every member namespace once (owners looked up for new connections)."""
        t0 = time.time() if now is None else now
        start = time.perf_counter()
        polls: list[NsPoll] = []
        seen: set[int] = set()
        for inode, sp in list(self.spaces.items()):
            if not sp.member or sp.diag is None:
                continue
            try:
                socks = self._dump(sp)
            except OSError as exc:
                self.stats.poll_errors += 1
                log.debug("namespace %s: dump failed: %s", sp.cand.name, exc)
                polls.append(NsPoll(inode, sp.cand.name, ok=False, is_node=sp.is_node))
                continue
            conns = {s.inode for s in socks if s.inode and is_connection(s)}
            seen |= conns
            missing = conns - self._owners.keys() - self._unresolved
            if missing:
                self._scan_owners(sp.cand.pids, missing)
                self._unresolved |= missing - self._owners.keys()
            owners = tuple((i, *self._owners[i]) for i in conns if i in self._owners)
            polls.append(NsPoll(inode, sp.cand.name, tuple(socks), owners, True, sp.is_node))
            self.stats.sockets += len(socks)
        self._owners = {i: v for i, v in self._owners.items() if i in seen}
        self.stats.polls += 1
        self.stats.last_poll_ms = round((time.perf_counter() - start) * 1000, 3)
        return PollCycle(t0, tuple(polls))


class SocketsPlugin:
    """The registry plugin (see :mod:`podflow.sources.registry` and the module doc)."""

    name = "sockets"
    nat_aware = False
    synced_at = 0.0
    reported_through = 0.0

    def __init__(self, opts: SourceOptions) -> None:
        """Options: ``poll_interval``; extras ``sockets_rediscover_polls`` (default 5) and
        ``sockets_snapshot_interval`` (seconds, default 60)."""
        self.opts = opts
        self.interval = max(0.05, opts.poll_interval)
        self.rediscover = max(1, int(opts.extra.get("sockets_rediscover_polls", 5)))
        self.tracker = SocketTracker(float(opts.extra.get("sockets_snapshot_interval", 60.0)))
        self.poller: NamespacePoller | None = None
        self._ready = False

    @property
    def ready(self) -> bool:
        """True after the first complete poll."""
        return self._ready

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Discover and poll until ``stop``; one :class:`PollCycle` per batch."""
        self.poller = poller = NamespacePoller(
            self.opts.netns, name_prefix=self.opts.extra.get("netns_prefix"))
        n = 0
        try:
            while not stop.is_set():
                started = time.time()
                if n % self.rediscover == 0:
                    poller.discover()
                if not sink([poller.poll(started)], "poll"):
                    poller.stats.cycles_lost += 1
                self._ready = True
                n += 1
                stop.wait(max(0.0, self.interval - (time.time() - started)))
        finally:
            poller.close()

    def process(self, records: list[Any], kind: str, now: float) -> list[Report]:
        """Feed poll cycles to the tracker."""
        del kind, now
        out: list[Report] = []
        for cycle in records:
            out += self.tracker.feed(cycle)
        return out

    def flush(self, now: float) -> list[Report]:
        """Every open connection, non-final."""
        return self.tracker.flush(now)

    def decode(self, record: Any, ctx: DecodeContext, final: bool) -> Flow | None:
        """One socket connection as a Flow."""
        assert isinstance(record, SockConn)
        return socket_to_flow(record, ctx, final=final)

    def stats(self) -> dict[str, Any]:
        """Poller and tracker counters; what the decoders skipped as ``lost_<reason>``."""
        out: dict[str, Any] = asdict(self.poller.stats) if self.poller else {}
        if self.poller:
            out.update(self.poller.losses.as_stats())
        out.update({f"tracker_{k}": v for k, v in asdict(self.tracker.stats).items()})
        return out


def create(opts: SourceOptions) -> SocketsPlugin:
    """Registry factory."""
    return SocketsPlugin(opts)
