"""The packet source: AF_PACKET capture with a kernel BPF filter, plus NFLOG drops.

Modes (``SourceOptions.extra``, all optional):

* bypass (default): capture in the node's namespace. ``interfaces: "auto"`` (default) is one
  socket bound to no interface, which sees every device of the namespace, pod veths added
  later included (``lo`` is skipped); a list (``["cni0", "flannel.1", "eth0"]``) opens one
  socket per device. VXLAN on the underlay is decoded (inner headers).
* sidecar (``sidecar: true``): capture on ``sidecar_interface`` (default ``eth0``) inside
  every pod namespace of this node, for datapaths the host never sees (macvlan/ipvlan).
  Namespaces come from :mod:`podflow.sources.nsdiscovery` (a link whose other end is in
  the node's namespace), rescanned every ``rescan_interval`` s (default 0.5; only new
  namespaces are probed, see :mod:`podflow.sources.podns`); namespaces holding a bridge
  (a switch, like the lab's fabric, not a pod) are skipped, and ``sidecar_netns`` (a list
  of names/paths) replaces discovery.

Other keys: ``nflog_group`` (int: also read drops logged to that NFLOG group, see
:mod:`podflow.sources.nflog`), ``syn_timeout``/``dns_timeout`` (s), ``snaplen`` (bytes kept
per packet, default 4096), ``pcap`` (a path: also write every captured packet there),
``http_query`` (bool, default false: keep the query string and fragment of HTTP request
paths, ``--source-option http_query=true``; by default ``/login?token=s3cret`` is stored as
``/login``, since query strings often carry tokens).

Hostile packets: any pod can send the node any bytes that pass the filter (an inner IPv4
header with IHL 0 in a VXLAN datagram, an ICMP error quoting a truncated header, a DNS name
whose pointers loop, a request line of binary). Every decoder checks its bounds; a packet or
payload it cannot read is counted by reason in :attr:`PacketsPlugin.losses` (``stats()``
keys ``lost_<reason>``, served as ``podflow_lost_events_total{source="packets"}``) and
skipped, and nothing a packet holds makes :meth:`PacketsPlugin.process` raise.

Each socket is created inside its namespace by a forked helper (:mod:`podflow.sources.netns`),
gets a drop-all filter, is bound, drained, then gets the real filter
(:data:`podflow.sources.bpf.agent_expression`), so nothing unfiltered is ever read. Kernel
timestamps come with each packet (``SO_TIMESTAMPNS``), the original length with
``PACKET_AUXDATA``; kernel drops (``PACKET_STATISTICS``) are summed in :meth:`stats`.

Example::

    plugin = create(SourceOptions("node1", netns="pf-shop-node1",
                                  extra={"nflog_group": 5}))
"""

from __future__ import annotations

import ctypes
import fnmatch
import logging
import os
import selectors
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from podflow.model.flow import Flow
from podflow.model.losses import Losses
from podflow.pcap import PcapWriter, open_writer
from podflow.pipeline.context import DecodeContext, Report
from podflow.pipeline.pktdecode import packet_flow_to_flow
from podflow.pipeline.pktparse import parse, parse_ip
from podflow.pipeline.pkttrack import PacketFlow, PacketTracker, TrackerConfig
from podflow.sources import bpf, nflog
from podflow.sources.netns import open_socket
from podflow.sources.podns import PodNamespaceFinder
from podflow.sources.registry import Sink, SourceOptions

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SOL_PACKET, PACKET_AUXDATA, PACKET_STATISTICS = 263, 8, 6
SO_TIMESTAMPNS, SO_RCVBUFFORCE = 35, 33
PACKET_OUTGOING = 4
_AUX = struct.Struct("=IIIHHHH")
_TS = struct.Struct("=qq")
_BATCH, _BATCH_SECONDS = 512, 0.05
_libc = ctypes.CDLL(None, use_errno=True)

Raw = tuple[float, str, bytes]
"""A captured packet: (timestamp, where: ``netns/ifname``, frame bytes)."""


def open_packet_socket(netns: str | None, ifname: str | None, program: bpf.Program,
                       rcvbuf: int = 8 << 20) -> socket.socket:
    """An AF_PACKET socket in ``netns`` on ``ifname`` (None: every device), filtered.

    The drop-all filter goes on before bind and the real one after draining, so no packet
    that ``program`` would reject is ever queued to user space.
    """
    sock = open_socket(netns, socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        bpf.attach(sock, bpf.DROP_ALL)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if ifname is None:
            _bind_any(sock)
        else:
            sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
        while True:
            try:
                sock.recv(65536)
            except BlockingIOError:
                break
        bpf.attach(sock, program)
        packet_stats(sock)  # reset the counters
        return sock
    except BaseException:
        sock.close()
        raise


def _bind_any(sock: socket.socket) -> None:
    """Bind to ifindex 0 (every device): Python's ``bind`` insists on a device name, so the
    raw ``sockaddr_ll`` goes through libc."""
    addr = struct.pack("=HHiHBB8s", socket.AF_PACKET, socket.htons(ETH_P_ALL), 0, 0, 0, 0,
                       bytes(8))
    if _libc.bind(sock.fileno(), addr, len(addr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind(AF_PACKET, any device): {os.strerror(err)}")


def packet_stats(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) since the last call (``PACKET_STATISTICS`` resets on read)."""
    raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    packets, drops = struct.unpack("=II", raw)
    return packets, drops


_BRIDGE_REFRESH = 5.0
"""Seconds between re-reads of the node's bridge devices (bypass mode)."""


def read_packets(sock: socket.socket, where: str, out: list[Raw], limit: int,
                 skip_lo: bool = False, skip: frozenset[str] = frozenset()) -> int:
    """Read up to ``limit`` waiting packets into ``out``; how many were read.

    Packets on interfaces named in ``skip`` are dropped (see :func:`bridge_names`).
    """
    n = 0
    while n < limit:
        try:
            data, anc, _flags, addr = sock.recvmsg(65536, 256)
        except BlockingIOError:
            break
        ifname = addr[0]
        if ifname == "lo" and (skip_lo or addr[2] == PACKET_OUTGOING):
            continue  # loopback shows each packet twice (sent, received): keep one
        if ifname in skip:
            continue
        ts = 0.0
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TS.unpack_from(cdata)
                ts = sec + nsec / 1e9
        out.append((ts or time.time(), f"{where}/{ifname}", data))
        n += 1
    return n


class PacketsPlugin:
    """See the module docstring."""

    name = "packets"
    nat_aware = False
    synced_at = 0.0
    reported_through = 0.0

    def __init__(self, opts: SourceOptions) -> None:
        """Read the options (nothing is opened until :meth:`run`)."""
        x = opts.extra
        self.opts = opts
        self.interfaces: str | list[str] = x.get("interfaces", "auto")
        self.sidecar = flag(x.get("sidecar", False), "sidecar")
        self.sidecar_interface = str(x.get("sidecar_interface", "eth0"))
        self.sidecar_netns: list[str] | None = x.get("sidecar_netns")
        self.sidecar_exclude: list[str] = list(x.get("sidecar_exclude", []))
        self.rescan_interval = float(x.get("rescan_interval", 0.5))
        self._pod_finder: PodNamespaceFinder | None = None
        self._skip_ifaces: frozenset[str] = frozenset()
        self._bridges_at = 0.0
        self.nflog_group: int | None = x.get("nflog_group")
        self.snaplen = int(x.get("snaplen", 4096))
        self.http_query = flag(x.get("http_query", False), "http_query")
        self.losses = Losses()
        """Packets and payloads skipped as undecodable, by reason (see the module doc)."""
        self.tracker = PacketTracker(TrackerConfig(
            syn_timeout=float(x.get("syn_timeout", 5.0)),
            dns_timeout=float(x.get("dns_timeout", 5.0)),
            http_query=self.http_query), self.losses)
        self.pcap_path = Path(x["pcap"]) if x.get("pcap") else None
        self._pcap: PcapWriter | None = None
        self._ready = threading.Event()
        self._socks: dict[str, socket.socket] = {}
        self._counts = {"captured": 0, "kernel_seen": 0, "kernel_drops": 0, "nflog": 0,
                        "open_errors": 0, "socket_errors": 0}
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """True once every socket is open, filtered and bound."""
        return self._ready.is_set()

    # -- I/O -----------------------------------------------------------------------------
    def _finder(self) -> PodNamespaceFinder:
        if self._pod_finder is None:
            self._pod_finder = PodNamespaceFinder(self.opts.netns,
                                                  self.opts.extra.get("netns_prefix"))
        return self._pod_finder

    def _targets(self) -> list[tuple[str | None, str | None]]:
        if not self.sidecar:
            if self.interfaces == "auto":
                return [(self.opts.netns, None)]
            return [(self.opts.netns, i) for i in self.interfaces]
        names = self.sidecar_netns if self.sidecar_netns is not None else \
            self._finder().find()
        return [(n, self.sidecar_interface) for n in names
                if not any(fnmatch.fnmatch(n, pat) for pat in self.sidecar_exclude)]

    def _open_new(self, sel: selectors.BaseSelector, program: bpf.Program) -> None:
        for netns, ifname in self._targets():
            where = f"{netns or '-'}/{ifname or '*'}"
            if where in self._socks:
                continue
            try:
                sock = open_packet_socket(netns, ifname, program)
            except OSError as exc:
                self._counts["open_errors"] += 1
                log.warning("packets: cannot capture on %s: %s", where, exc)
                continue
            self._socks[where] = sock
            sel.register(sock, selectors.EVENT_READ, (netns or "-", ifname is None, where))

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Capture until ``stop``; hands ``pkt`` and ``nflog`` batches and 1-s ``tick`` s."""
        program = bpf.compile_filter(bpf.agent_expression(), self.snaplen)
        if not self.sidecar and self.interfaces == "auto":
            self._skip_ifaces = bridge_names(self.opts.netns)
        sel = selectors.DefaultSelector()
        if self.pcap_path is not None and self._pcap is None:
            self._pcap = open_writer(self.pcap_path, self.snaplen)
        try:
            self._open_new(sel, program)
            if self.nflog_group is not None:
                nl = nflog.open_nflog(self.opts.netns, int(self.nflog_group))
                self._socks["nflog"] = nl
                sel.register(nl, selectors.EVENT_READ, None)
            self._ready.set()
            self._loop(sel, sink, stop, program)
        finally:
            self._ready.set()
            self._collect_kernel_stats()
            for s in self._socks.values():
                s.close()
            sel.close()
            if self._pcap is not None:
                self._pcap.out.close()
                self._pcap = None

    def _loop(self, sel: selectors.BaseSelector, sink: Sink, stop: threading.Event,
              program: bpf.Program) -> None:
        batch: list[Raw] = []
        drops: list[tuple[float, str, bytes]] = []
        last_send = next_tick = next_scan = time.time()
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data is None:
                    for m in nflog.parse_messages(_recv_all(sock), losses=self.losses):
                        drops.append((m.ts, m.prefix, m.payload))
                else:
                    try:
                        read_packets(sock, key.data[0], batch, _BATCH, skip_lo=key.data[1],
                                     skip=self._skip_ifaces)
                    except OSError as exc:
                        # the device or its namespace went away (a pod was deleted: ENETDOWN,
                        # ENODEV, ENXIO): drop this socket only; a rescan finds the new pod
                        self._counts["socket_errors"] += 1
                        log.info("packets: stop capturing on %s: %s", key.data[2], exc)
                        sel.unregister(sock)
                        sock.close()
                        self._socks.pop(key.data[2], None)
            now = time.time()
            if batch and (len(batch) >= _BATCH or now - last_send >= _BATCH_SECONDS):
                self._send(sink, batch)
                batch, last_send = [], now
            if drops:
                self._counts["nflog"] += len(drops)
                sink(drops, "nflog")
                drops = []
            if now >= next_tick:
                sink([], "tick")
                next_tick = now + 1.0
            if now >= next_scan:
                if self.sidecar and self.sidecar_netns is None:
                    self._open_new(sel, program)
                elif (not self.sidecar and self.interfaces == "auto"
                      and now - self._bridges_at >= _BRIDGE_REFRESH):
                    self._skip_ifaces = bridge_names(self.opts.netns)
                    self._bridges_at = now
                next_scan = now + self.rescan_interval
        if batch:
            self._send(sink, batch)

    def _send(self, sink: Sink, batch: list[Raw]) -> None:
        """Hand a batch of captured packets on (and write them to the pcap file, if any)."""
        self._counts["captured"] += len(batch)
        if self._pcap is not None:
            for ts, _where, data in batch:
                self._pcap.write(ts, data)
        sink(batch, "pkt")

    def _collect_kernel_stats(self) -> None:
        for where, s in list(self._socks.items()):
            if where == "nflog":
                continue
            try:
                seen, dropped = packet_stats(s)
            except OSError:
                continue
            with self._lock:
                self._counts["kernel_seen"] += seen
                self._counts["kernel_drops"] += dropped

    # -- processing ----------------------------------------------------------------------
    def process(self, records: list[Any], kind: str, now: float) -> list[Report]:
        """Parse and track a batch; report finished (and long-open) connections.

        Never raises for what a packet holds: undecodable ones are counted in
        :attr:`losses` and skipped.
        """
        t, losses = self.tracker, self.losses
        if kind == "pkt":
            for ts, _where, data in records:
                t.feed(parse(data, ts, losses))
        elif kind == "nflog":
            for ts, prefix, payload in records:
                p = parse_ip(payload, ts, losses)
                if p is not None:
                    t.drop(p, prefix or "dropped (NFLOG)")
        t.expire(now)
        return [Report(f, final) for f, final in t.take_reports()]

    def flush(self, now: float) -> list[Report]:
        """Every open connection, non-final."""
        self.tracker.expire(now)
        return [Report(f, final) for f, final in self.tracker.flush()]

    def decode(self, record: Any, ctx: DecodeContext, final: bool) -> Flow | None:
        """One tracked connection as a Flow."""
        assert isinstance(record, PacketFlow)
        return packet_flow_to_flow(record, ctx, final)

    def stats(self) -> dict[str, Any]:
        """Capture, kernel-drop and tracker counters, and the losses (``lost_<reason>``)."""
        self._collect_kernel_stats()
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
        out["sockets"] = len(self._socks)
        out.update({f"tracker_{k}": v for k, v in vars(self.tracker.stats).items()})
        out.update(self.losses.as_stats())
        return out


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunks.append(sock.recv(1 << 16))
        except BlockingIOError:
            return b"".join(chunks)
        except OSError as exc:  # ENOBUFS: the kernel dropped log messages
            log.warning("nflog: %s", exc)
            return b"".join(chunks)


def bridge_names(netns: str | None) -> frozenset[str]:
    """Names of the bridge devices in ``netns`` (empty if they cannot be read).

    Bypass capture on every device skips bridges: a bridge's own tap sees packets between
    two netfilter hooks when br_netfilter is on (a reply already un-SNATed but not yet
    un-DNATed: a tuple that exists nowhere on the wire), and the ports of the bridge (the pod
    veths) see the same packets with consistent addresses anyway.
    """
    from podflow.sources import nsdiscovery as nd

    path = "/proc/self/ns/net" if netns is None else (
        netns if "/" in netns else f"/run/netns/{netns}")
    try:
        route = open_socket(path, socket.AF_NETLINK, socket.SOCK_RAW, 0)
    except OSError:
        return frozenset()
    links: list[nd.Link] = []
    with route:
        route.settimeout(2.0)
        try:
            route.send(nd.build_getlink(seq=7))
            done = False
            while not done:
                got, done = nd.parse_links(route.recv(1 << 16))
                links += got
        except OSError:
            return frozenset()
    return frozenset(link.name for link in links if link.kind == "bridge")


def flag(value: Any, name: str) -> bool:
    """A boolean source option: ``true``/``false`` as JSON gives them, or as text
    (``true``/``1``/``yes``/``on`` and their opposites); ValueError naming ``name`` else.

    >>> flag(True, "x"), flag("yes", "x"), flag("0", "x")
    (True, True, False)
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def create(opts: SourceOptions) -> PacketsPlugin:
    """Registry factory."""
    return PacketsPlugin(opts)
