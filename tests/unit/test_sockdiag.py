"""inet_diag and rtnetlink parsing on golden recordings (tests/data/sockdiag/record.py)."""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import asdict
from pathlib import Path

import pytest

from podflow.sources import nsdiscovery, sockdiag

DATA = Path(__file__).parents[1] / "data" / "sockdiag"


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
