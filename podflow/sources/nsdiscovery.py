"""Which network namespaces belong to this node, decided from the kernel alone.

Candidates are every namespace the kernel shows us: the names under ``/var/run/netns`` and
the ``/proc/PID/ns/net`` of every process, deduplicated by the namespace's inode. A
candidate belongs to the node whose namespace is N when it *is* N, or when one of its links
has its other end in N: a ``veth`` whose peer lives in N (a bridged or routed pod), or a
``macvlan``/``ipvlan`` whose parent lives in N (a pod on the underlay). rtnetlink says where
a link's other end lives with ``IFLA_LINK_NETNSID`` (``ip -d link`` shows it as
``link-netnsid``), an id that is local to the candidate; ``RTM_GETNSID`` asked in the
candidate with a descriptor of N says which id N has there. On a real node every namespace
passes; in a lab where several emulated nodes share one kernel, only that node's pods do.

Parsing and the decision are pure (:func:`parse_links`, :func:`parse_nsid`, :func:`belongs`)
and never raise: every length is checked before it is read (the framing is
:mod:`podflow.sources.netlink`'s), and what is skipped is counted;
:func:`candidates` reads /proc and /var/run/netns; :func:`probe` talks to a route socket that
:mod:`podflow.sources.netns` opened inside the candidate (the agent never moves).

Example::

    >>> belongs([Link(2, "eth0", "veth", 0)], node_nsid=0)
    (True, 'veth eth0: other end in the node namespace (nsid 0)')
    >>> belongs([Link(2, "eth0", "veth", 1)], node_nsid=0)[0]
    False
    >>> belongs([Link(2, "n1", "veth", 0), Link(3, "n2", "veth", 1)], node_nsid=0)[0]
    False
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from podflow.model.losses import DecodeError, Losses
from podflow.sources import netlink

NETNS_DIR = Path("/var/run/netns")
RTM_NEWLINK, RTM_GETLINK, RTM_NEWNSID, RTM_GETNSID = 16, 18, 88, 90
IFLA_IFNAME, IFLA_LINKINFO, IFLA_INFO_KIND, IFLA_LINK_NETNSID = 3, 18, 1, 37
NETNSA_NSID, NETNSA_FD = 1, 3
PEER_KINDS = ("veth", "macvlan", "ipvlan", "macvtap", "ipvtap")
"""Link kinds whose other end (peer or parent) may live in another namespace."""

_IFINFO = struct.Struct("=BxHiII")
_S32 = struct.Struct("=i")


@dataclass(frozen=True, slots=True)
class Link:
    """One network device of a candidate namespace, as far as membership needs."""

    index: int
    """ifindex."""
    name: str
    """Device name."""
    kind: str | None
    """IFLA_INFO_KIND (``veth``, ``macvlan`` ...), None for devices without one."""
    link_netnsid: int | None
    """IFLA_LINK_NETNSID: the id, local to this namespace, of where the other end lives."""


@dataclass
class Candidate:
    """A namespace the kernel shows, by inode, with how to open it and who runs in it."""

    inode: int
    """The namespace's inode (its identity)."""
    path: str
    """A path that names it (``/run/netns/NAME`` preferred, else ``/proc/PID/ns/net``)."""
    name: str
    """``NAME`` from /var/run/netns, else ``pid:PID``."""
    pids: list[int] = field(default_factory=list)
    """Processes running in it (for inode -> owner lookups)."""


def _attrs(data: bytes, off: int, end: int, losses: Losses) -> dict[int, bytes]:
    """Attributes in ``data[off:end]`` by type, walked as :mod:`.netlink` does, except that
    the first of a repeated type wins here (as this module always did; the kernel sends each
    once). A bad length ends the walk, counted; what came before is kept."""
    out: dict[int, bytes] = {}
    try:
        for atype, start, end_ in netlink.attributes(data, off, end):
            out.setdefault(atype, data[start:end_])
    except DecodeError as exc:
        losses.count(exc.reason)
    return out


def _messages(data: bytes, losses: Losses) -> list[tuple[int, bytes]]:
    """(type, body) of every netlink message in ``data``; bad framing ends it, counted.
    The whole buffer is walked first, so its framing is counted even when the caller stops
    at ``NLMSG_DONE``."""
    return [(mtype, data[start:end]) for mtype, _f, start, end in netlink.messages(data, losses)]


def _s32(raw: bytes | None, losses: Losses) -> int | None:
    """A native-endian s32 attribute value (None when absent or too short, counted)."""
    if raw is None:
        return None
    if len(raw) < 4:
        losses.count("short_attribute")
        return None
    return int(_S32.unpack_from(raw)[0])


def _text(raw: bytes) -> str:
    """A NUL-terminated attribute string (bytes that are not UTF-8 replaced)."""
    return raw.split(b"\0")[0].decode(errors="replace")


def build_getlink(seq: int = 1) -> bytes:
    """An RTM_GETLINK dump request (every device of the namespace)."""
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return netlink.nlmsg(RTM_GETLINK, netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP, seq, body)


def build_getnsid(fd: int, seq: int = 1) -> bytes:
    """An RTM_GETNSID request: which id has the namespace open as ``fd`` here?"""
    body = struct.pack("=B3x", socket.AF_UNSPEC) + netlink.nla(NETNSA_FD, struct.pack("=I", fd))
    return netlink.nlmsg(RTM_GETNSID, netlink.NLM_F_REQUEST, seq, body)


def _link(body: bytes, losses: Losses) -> Link:
    """One device from the body of an RTM_NEWLINK message (at least an ifinfomsg long)."""
    _fam, _type, index, _flags, _change = _IFINFO.unpack_from(body)
    attrs = _attrs(body, _IFINFO.size, len(body), losses)
    info = attrs.get(IFLA_LINKINFO)
    kind_raw = _attrs(info, 0, len(info), losses).get(IFLA_INFO_KIND) if info else None
    return Link(index, _text(attrs.get(IFLA_IFNAME, b"")), _text(kind_raw) if kind_raw else None,
                _s32(attrs.get(IFLA_LINK_NETNSID), losses))


def parse_links(data: bytes, losses: Losses | None = None) -> tuple[list[Link], bool]:
    """Links in received RTM_NEWLINK messages, and whether the dump is done.

    Never raises; what it skips is counted in ``losses`` by reason (``bad_nlmsg_len``,
    ``truncated_nlmsg_header``, ``short_ifinfomsg``, ``bad_attribute_length``,
    ``short_attribute``).
    """
    lost = losses if losses is not None else Losses()
    links: list[Link] = []
    for mtype, body in _messages(data, lost):
        if mtype in (netlink.NLMSG_DONE, netlink.NLMSG_ERROR):
            return links, True
        if mtype != RTM_NEWLINK:
            continue
        if len(body) < _IFINFO.size:
            lost.count("short_ifinfomsg")
            continue
        links.append(_link(body, lost))
    return links, False


def parse_nsid(data: bytes, losses: Losses | None = None) -> int | None:
    """The id in an RTM_NEWNSID reply (None when not assigned, on error or unreadable).

    Never raises; what it skips is counted in ``losses`` (as :func:`parse_links` does,
    and ``short_rtgenmsg``).
    """
    lost = losses if losses is not None else Losses()
    for mtype, body in _messages(data, lost):
        if mtype == RTM_NEWNSID:
            if len(body) < 4:
                lost.count("short_rtgenmsg")
                return None
            nsid = _s32(_attrs(body, 4, len(body), lost).get(NETNSA_NSID), lost)
            return nsid if nsid is not None and nsid >= 0 else None
    return None


def belongs(links: list[Link], node_nsid: int | None) -> tuple[bool, str]:
    """Whether a namespace with ``links`` belongs to the node that has id ``node_nsid`` in it,
    with the evidence (the first link whose other end lives in the node's namespace)."""
    if node_nsid is None:
        return False, "the node namespace has no id here: no link leads to it"
    peers = [x for x in links if x.kind in PEER_KINDS and x.link_netnsid is not None]
    elsewhere = [x for x in peers if x.link_netnsid != node_nsid]
    if elsewhere:
        x = elsewhere[0]
        return False, (f"{x.kind} {x.name} leads to another namespace (nsid {x.link_netnsid}): "
                       "shared plumbing, not a pod of this node")
    for link in peers:
        return True, (f"{link.kind} {link.name}: other end in the node namespace "
                      f"(nsid {node_nsid})")
    return False, "no veth/macvlan/ipvlan link leads to the node namespace"


def probe(route: socket.socket, node_fd: int, losses: Losses | None = None
          ) -> tuple[bool, str]:
    """Ask a route socket opened inside a candidate whether it belongs to the node whose
    namespace is open as ``node_fd`` in this process (see the module doc); what the replies'
    decoding skips is counted in ``losses``."""
    route.send(build_getlink())
    links: list[Link] = []
    while True:
        got, done = parse_links(route.recv(1 << 16), losses)
        links += got
        if done:
            break
    route.send(build_getnsid(node_fd, seq=2))
    return belongs(links, parse_nsid(route.recv(1 << 16), losses))


def ns_inode(path: str) -> int | None:
    """The inode of the namespace ``path`` names (None if it is gone)."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def candidates(proc: Path = Path("/proc"), netns_dir: Path = NETNS_DIR,
               name_prefix: str | None = None) -> dict[int, Candidate]:
    """Every network namespace visible from here, by inode (see the module doc).

    With ``name_prefix`` only named namespaces whose name starts with it are candidates
    (processes are still scanned, to attach their pids): an agent on a shared machine, such
    as a lab's, then never opens a socket in anybody else's namespace.
    """
    found: dict[int, Candidate] = {}
    if netns_dir.is_dir():
        for entry in sorted(netns_dir.iterdir()):
            if name_prefix is not None and not entry.name.startswith(name_prefix):
                continue
            ino = ns_inode(str(entry))
            if ino is not None and ino not in found:
                found[ino] = Candidate(ino, str(entry), entry.name)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        path = f"{entry}/ns/net"
        ino = ns_inode(path)
        if ino is None:
            continue
        cand = found.get(ino)
        if cand is None:
            if name_prefix is not None:
                continue
            cand = found[ino] = Candidate(ino, path, f"pid:{entry.name}")
        cand.pids.append(int(entry.name))
    return found
