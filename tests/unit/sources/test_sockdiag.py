"""inet_diag and rtnetlink parsing on golden recordings (tests/data/sockdiag/record.py)."""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import asdict
from pathlib import Path

import pytest

from podflow.model.losses import Losses
from podflow.sources import netlink, nsdiscovery, sockdiag

DATA = Path(__file__).parents[2] / "data" / "sockdiag"


@pytest.mark.parametrize("name,family,proto", [("tcp4", 2, 6), ("tcp6", 10, 6),
                                               ("udp4", 2, 17), ("udp6", 10, 17)])
def test_golden_dumps_decode_as_recorded(name: str, family: int, proto: int) -> None:
    got, done = sockdiag.parse((DATA / f"pod_{name}.bin").read_bytes(), proto)
    assert done
    assert [asdict(s) for s in got] == json.loads((DATA / f"pod_{name}.json").read_text())
    assert all(s.family == family for s in got)


def test_golden_values_match_ss() -> None:
    """The numbers ``ss -tin`` printed at recording time (pod_ss.txt)."""
    tcp4, _ = sockdiag.parse((DATA / "pod_tcp4.bin").read_bytes())
    lst, est = tcp4
    assert (lst.state_name, lst.local_port) == ("LISTEN", 9000)
    assert (est.state_name, est.local_ip, est.remote_ip) == ("ESTABLISHED", "10.78.0.2",
                                                             "10.78.0.1")
    assert est.tcp is not None and est.inode > 0 and est.cookie > 0
    assert (est.tcp.rtt_us, est.tcp.rttvar_us) == (22, 12)
    assert (est.tcp.bytes_acked, est.tcp.bytes_received) == (7000, 1234)
    assert (est.tcp.segs_out, est.tcp.segs_in) == (6, 4)
    tcp6, _ = sockdiag.parse((DATA / "pod_tcp6.bin").read_bytes())
    mapped = [s for s in tcp6 if s.remote_ip == "10.78.0.1"]   # ::ffff:10.78.0.1 -> IPv4
    assert len(mapped) == 1 and mapped[0].family == socket.AF_INET6
    assert {s.remote_ip for s in tcp6} == {"::", "10.78.0.1", "fd78::1"}
    udp4, _ = sockdiag.parse((DATA / "pod_udp4.bin").read_bytes(), 17)
    assert [(u.state, u.local_port, u.tcp) for u in udp4] == [(7, 5353, None)]


def test_request_layout_and_errors() -> None:
    req = sockdiag.build_request(socket.AF_INET6, 17, states=0x2, info=False, seq=9)
    length, mtype, flags, seq, _ = struct.unpack_from("=IHHII", req)
    assert (length, mtype, flags, seq) == (72, 20, 0x301, 9)
    assert struct.unpack_from("=BBBBI", req, 16) == (10, 17, 0, 0, 2)
    assert req[-8:] == b"\xff" * 8                    # INET_DIAG_NOCOOKIE
    err = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -22) + b"\0" * 16
    with pytest.raises(OSError, match="Invalid argument"):
        sockdiag.parse(err)
    assert sockdiag.parse(err[:10]) == ([], False)
    assert sockdiag.parse_tcp_info(b"\0" * 50) is None
    short = sockdiag.parse_tcp_info(b"\0" * 104)
    assert short is not None and short.bytes_acked is None


def test_golden_links_and_membership() -> None:
    links, done = nsdiscovery.parse_links((DATA / "pod_links.bin").read_bytes())
    assert done
    assert [asdict(x) for x in links] == json.loads((DATA / "pod_links.json").read_text())
    nsid = nsdiscovery.parse_nsid((DATA / "pod_nsid.bin").read_bytes())
    assert nsid == 0
    ok, why = nsdiscovery.belongs(links, nsid)
    assert ok and "veth eth0" in why
    assert not nsdiscovery.belongs(links, 3)[0]
    assert not nsdiscovery.belongs(links, None)[0]
    macv = [nsdiscovery.Link(5, "eth0", "macvlan", 1)]
    assert nsdiscovery.belongs(macv, 1)[0]
    assert not nsdiscovery.belongs([nsdiscovery.Link(5, "x", "vxlan", 1)], 1)[0]
    fabric = [nsdiscovery.Link(2, "n1", "veth", 0), nsdiscovery.Link(3, "n2", "veth", 1)]
    ok, why = nsdiscovery.belongs(fabric, 0)
    assert not ok and "shared plumbing" in why
    assert nsdiscovery.parse_nsid(b"") is None


def test_getnsid_request() -> None:
    req = nsdiscovery.build_getnsid(17, seq=4)
    assert struct.unpack_from("=IHHII", req) == (28, 90, 1, 4, 0)
    assert struct.unpack_from("=HHI", req, 20) == (8, 3, 17)


def test_candidates_from_a_fake_proc(tmp_path: Path) -> None:
    proc, netns = tmp_path / "proc", tmp_path / "netns"
    (proc / "12" / "ns").mkdir(parents=True)
    (proc / "self").mkdir()
    netns.mkdir()
    (netns / "pod-a").write_text("")
    (proc / "12" / "ns" / "net").symlink_to(netns / "pod-a")
    found = nsdiscovery.candidates(proc, netns)
    [cand] = found.values()
    assert (cand.name, cand.path, cand.pids) == ("pod-a", str(netns / "pod-a"), [12])


# -- hostile input: bounds checked at the cause, skips counted by reason -----------------------

NLH = struct.Struct("=IHHII")


def _nl(mtype: int, body: bytes, length: int | None = None) -> bytes:
    """One netlink message (padded); ``length`` overrides its length field."""
    n = NLH.size + len(body) if length is None else length
    return NLH.pack(n, mtype, 2, 1, 0) + body + bytes(-len(body) % 4)


def _diag(family: int = socket.AF_INET, attrs: bytes = b"", state: int = 1) -> bytes:
    """An inet_diag_msg for 10.0.0.1:40000 -> 10.0.0.2:80 with ``attrs`` after it."""
    src = socket.inet_aton("10.0.0.1").ljust(16, b"\0")
    dst = socket.inet_aton("10.0.0.2").ljust(16, b"\0")
    msg = struct.pack("=BBBB", family, state, 0, 0) + struct.pack(">HH", 40000, 80) + src + \
        dst + struct.pack("=IIIIIIII", 0, 7, 0, 0, 0, 0, 1000, 4242)
    assert len(msg) == 72
    return _nl(sockdiag.SOCK_DIAG_BY_FAMILY, msg + attrs)


def _nla(atype: int, value: bytes, length: int | None = None) -> bytes:
    n = 4 + len(value) if length is None else length
    return struct.pack("=HH", n, atype) + value + bytes(-len(value) % 4)


TCP_INFO = bytes(104) + struct.pack("=IIII", 0, 0, 0, 0) + struct.pack("=QQII", 5, 6, 7, 8)
DONE = _nl(netlink.NLMSG_DONE, b"\0\0\0\0")


def _parse(data: bytes, proto: int = 6) -> tuple[list[sockdiag.DiagSocket], bool, dict[str, int]]:
    """Decode as callers without a Losses do, then again counting."""
    plain = sockdiag.parse(data, proto)
    losses = Losses()
    socks, done = sockdiag.parse(data, proto, losses)
    assert plain == (socks, done)
    return socks, done, losses.by_reason()


def test_crafted_socket_decodes() -> None:
    socks, done, lost = _parse(_diag(attrs=_nla(sockdiag.INET_DIAG_INFO, TCP_INFO)) + DONE)
    assert done and lost == {} and len(socks) == 1
    s = socks[0]
    assert (s.local_ip, s.local_port, s.remote_ip, s.remote_port, s.inode) == (
        "10.0.0.1", 40000, "10.0.0.2", 80, 4242)
    assert s.tcp is not None and (s.tcp.bytes_acked, s.tcp.segs_in) == (5, 8)


@pytest.mark.parametrize("length", [16, 17, 19])
def test_error_message_without_its_errno(length: int) -> None:
    """Today: struct.error (the 4-byte errno is read past the end of the data)."""
    msg = NLH.pack(length, netlink.NLMSG_ERROR, 0, 1, 0) + bytes(length - 16)
    assert _parse(msg) == ([], True, {"short_error_message": 1})


@pytest.mark.parametrize("err", [-(2 ** 31), 5, -100000])
def test_error_codes_the_kernel_cannot_send_still_raise_oserror(err: int) -> None:
    """Today: OverflowError from os.strerror for INT_MIN."""
    msg = _nl(netlink.NLMSG_ERROR, struct.pack("=i", err) + bytes(16))
    with pytest.raises(OSError, match="invalid error code"):
        sockdiag.parse(msg)


def test_short_inet_diag_msg_is_counted_and_the_rest_decodes() -> None:
    short = _nl(sockdiag.SOCK_DIAG_BY_FAMILY, bytes(40))
    socks, done, lost = _parse(short + _diag() + DONE)
    assert done and len(socks) == 1 and lost == {"short_inet_diag_msg": 1}


def test_attribute_past_the_message_is_not_read_from_the_next_one() -> None:
    """Today the INFO attribute is sliced out of the following message (a false tcp_info)."""
    runaway = _nla(sockdiag.INET_DIAG_INFO, b"", length=4 + len(TCP_INFO))
    following = _diag(attrs=_nla(sockdiag.INET_DIAG_INFO, TCP_INFO))
    socks, done, lost = _parse(_diag(attrs=runaway) + following + DONE)
    assert done and len(socks) == 2 and lost == {"bad_attribute_length": 1}
    assert socks[0].tcp is None and socks[1].tcp is not None  # the socket itself is kept


@pytest.mark.parametrize("alen", [0, 1, 3])
def test_attribute_length_below_four_is_counted(alen: int) -> None:
    socks, _, lost = _parse(_diag(attrs=struct.pack("=HH", alen, 2) + bytes(8)) + DONE)
    assert len(socks) == 1 and lost == {"bad_attribute_length": 1}


def test_short_tcp_info_is_counted() -> None:
    socks, _, lost = _parse(_diag(attrs=_nla(sockdiag.INET_DIAG_INFO, bytes(60))) + DONE)
    assert socks[0].tcp is None and lost == {"short_tcp_info": 1}


def test_unknown_family_is_skipped() -> None:
    """Today any family but AF_INET is decoded as IPv6."""
    socks, _, lost = _parse(_diag(family=0) + _diag() + DONE)
    assert len(socks) == 1 and lost == {"bad_address_family": 1}


@pytest.mark.parametrize("tail,reason", [(NLH.pack(9999, 20, 0, 0, 0), "bad_nlmsg_len"),
                                         (NLH.pack(8, 20, 0, 0, 0), "bad_nlmsg_len"),
                                         (b"\1\2\3", "truncated_nlmsg_header")],
                         ids=["too_long", "too_short", "trailing"])
def test_bad_framing_is_counted(tail: bytes, reason: str) -> None:
    socks, done, lost = _parse(_diag() + tail)
    assert len(socks) == 1 and not done and lost == {reason: 1}


class _FakeDiag:
    """A NETLINK_SOCK_DIAG socket that answers every dump request with ``reply``."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.pending = 0

    def send(self, _data: bytes) -> None:
        self.pending += 1

    def recv(self, _size: int) -> bytes:
        self.pending -= 1
        return self.reply


def test_decoder_losses_reach_the_sockets_plugin_stats() -> None:
    from podflow.metrics.podflow_health import lost_events
    from podflow.sources import sockets
    from podflow.sources.registry import SourceOptions

    plugin = sockets.SocketsPlugin(SourceOptions(node_name="node1"))
    poller = plugin.poller = sockets.NamespacePoller(None)
    try:
        cand = nsdiscovery.Candidate(poller.node_inode, "/proc/self/ns/net", "node")
        diag = _FakeDiag(_nl(sockdiag.SOCK_DIAG_BY_FAMILY, bytes(8)) + _diag() + DONE)
        poller.spaces[cand.inode] = sockets._Space(cand, diag, None, True,  # type: ignore[arg-type]
                                                   is_node=True)
        cycle = poller.poll(10.0)
    finally:
        poller.spaces.clear()
        poller.close()
    assert len(cycle.namespaces[0].sockets) == 4  # one per dump (TCP/UDP, v4/v6)
    stats = plugin.stats()
    assert stats["lost_short_inet_diag_msg"] == 4
    assert ("sockets", "short_inet_diag_msg", 4.0) in lost_events({"source_stats":
                                                                   {"sockets": stats}})


# -- nsdiscovery: the rtnetlink replies read inside a candidate namespace ----------------------

IFINFO = struct.pack("=BxHiII", 0, 1, 7, 0, 0)


def _link_msg(*attrs: bytes) -> bytes:
    return _nl(nsdiscovery.RTM_NEWLINK, IFINFO + b"".join(attrs))


def _links(data: bytes) -> tuple[list[nsdiscovery.Link], bool, dict[str, int]]:
    """Decode as ``probe`` did before it counted, then again counting."""
    plain = nsdiscovery.parse_links(data)
    losses = Losses()
    links, done = nsdiscovery.parse_links(data, losses)
    assert plain == (links, done)
    return links, done, losses.by_reason()


def test_link_kind_that_is_not_utf8() -> None:
    """Today: UnicodeDecodeError."""
    info = _nla(nsdiscovery.IFLA_LINKINFO, _nla(nsdiscovery.IFLA_INFO_KIND, b"v\xffeth\0"))
    links, _, lost = _links(_link_msg(_nla(nsdiscovery.IFLA_IFNAME, b"eth0\0"), info))
    assert lost == {} and links[0].kind == "v\ufffdeth" and links[0].name == "eth0"


@pytest.mark.parametrize("value", [b"", b"\1", b"\1\0\0"], ids=["0", "1", "3"])
def test_short_link_netnsid(value: bytes) -> None:
    """Today: struct.error for 1-3 bytes."""
    links, _, lost = _links(_link_msg(_nla(nsdiscovery.IFLA_LINK_NETNSID, value)))
    assert links[0].link_netnsid is None and lost == {"short_attribute": 1}


def test_link_attribute_past_the_message_and_short_ifinfomsg() -> None:
    runaway = _link_msg(_nla(nsdiscovery.IFLA_IFNAME, b"eth0\0"),
                        _nla(nsdiscovery.IFLA_LINK_NETNSID, b"\0\0\0\0", length=400))
    short = _nl(nsdiscovery.RTM_NEWLINK, bytes(8))
    links, done, lost = _links(runaway + short + _nl(netlink.NLMSG_DONE, bytes(4)))
    assert done and [x.name for x in links] == ["eth0"] and links[0].link_netnsid is None
    assert lost == {"bad_attribute_length": 1, "short_ifinfomsg": 1}


@pytest.mark.parametrize("body,reason", [(b"\0\0\0\0" + _nla(nsdiscovery.NETNSA_NSID, b"\1\0"),
                                          "short_attribute"),
                                         (b"\0\0", "short_rtgenmsg")], ids=["nsid", "rtgenmsg"])
def test_short_nsid_answer(body: bytes, reason: str) -> None:
    """Today: struct.error for a 2-byte NETNSA_NSID."""
    assert nsdiscovery.parse_nsid(_nl(nsdiscovery.RTM_NEWNSID, body)) is None
    losses = Losses()
    assert nsdiscovery.parse_nsid(_nl(nsdiscovery.RTM_NEWNSID, body), losses) is None
    assert losses.by_reason() == {reason: 1}


class _FakeRoute:
    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies

    def send(self, _data: bytes) -> None:
        pass

    def recv(self, _size: int) -> bytes:
        return self.replies.pop(0)


def test_probe_counts_what_it_skips() -> None:
    veth = _link_msg(_nla(nsdiscovery.IFLA_IFNAME, b"eth0\0"),
                     _nla(nsdiscovery.IFLA_LINKINFO, _nla(nsdiscovery.IFLA_INFO_KIND, b"veth\0")),
                     _nla(nsdiscovery.IFLA_LINK_NETNSID, struct.pack("=i", 0)))
    route = _FakeRoute([veth + b"\0\0", _nl(netlink.NLMSG_DONE, bytes(4)),
                        _nl(nsdiscovery.RTM_NEWNSID, b"\0\0\0\0" + _nla(1, struct.pack("=i", 0)))])
    losses = Losses()
    ok, why = nsdiscovery.probe(route, 3, losses)  # type: ignore[arg-type]
    assert ok and "veth eth0" in why and losses.by_reason() == {"truncated_nlmsg_header": 1}
