"""Socket polls -> connections appearing, snapshotted and ending."""

from __future__ import annotations

from podflow.model.sockets import DiagSocket, NsPoll, PollCycle, TcpStats
from podflow.pipeline.socktrack import SocketTracker, listen_set

LISTEN = DiagSocket(2, 6, 10, "0.0.0.0", 80, "0.0.0.0", 0, 10, 0, 1)
SERVER = DiagSocket(2, 6, 1, "10.0.0.2", 80, "10.0.0.1", 5000, 11, 0, 2,
                    TcpStats(1, 100, 10, 0, 0, 10, 20, 1, 2))
CLIENT = DiagSocket(2, 6, 1, "10.0.0.2", 41000, "10.96.0.3", 9000, 12, 0, 3)
UDP = DiagSocket(2, 17, 1, "10.0.0.2", 5000, "10.96.0.10", 53, 13, 0, 4)
UDP_BOUND = DiagSocket(2, 17, 7, "0.0.0.0", 53, "0.0.0.0", 0, 14, 0, 5)


def cyc(t: float, *socks: DiagSocket, ok: bool = True, ns: int = 7) -> PollCycle:
    return PollCycle(t, (NsPoll(ns, "pod-a", socks, ((11, 99, "nginx"),), ok),))


def test_sides_owners_and_end_on_disappearance() -> None:
    t = SocketTracker(udp_linger=0)
    [udp] = t.feed(cyc(1.0, LISTEN, SERVER, CLIENT, UDP, UDP_BOUND))
    assert not udp.final and udp.record.remote_port == 53     # UDP: said at once
    assert t.stats.appeared == 3 and t.stats.open == 3
    reports = t.feed(cyc(2.0, LISTEN, UDP_BOUND))
    got = {r.record.remote_port: (r.record.side, r.final) for r in reports}
    assert got == {5000: ("server", True), 9000: ("client", True), 53: ("client", True)}
    server = next(r.record for r in reports if r.record.side == "server")
    assert (server.pid, server.comm, server.first_seen, server.last_seen) == (99, "nginx", 1.0,
                                                                             1.0)
    assert server.tcp is not None and server.tcp.rtt_us == 100
    assert listen_set((LISTEN, UDP_BOUND, UDP)) == {(6, 80), (17, 53)}


def test_time_wait_ends_and_listeners_are_not_connections() -> None:
    t = SocketTracker()
    t.feed(cyc(1.0, LISTEN, SERVER))
    tw = DiagSocket(2, 6, 6, "10.0.0.2", 80, "10.0.0.1", 5000, 0, 0, 2)
    [r] = t.feed(cyc(2.0, LISTEN, tw))
    assert r.final and r.record.last_seen == 1.0
    syn = DiagSocket(2, 6, 2, "10.0.0.2", 41001, "10.0.0.9", 80, 20, 0, 9)
    assert t.feed(cyc(3.0, LISTEN, syn)) == [] and t.stats.open == 0


def test_snapshots_failed_polls_vanished_namespaces_and_flush() -> None:
    t = SocketTracker(snapshot_interval=60)
    t.feed(cyc(0.0, CLIENT))
    assert t.feed(cyc(30.0, CLIENT)) == []
    [snap] = t.feed(cyc(61.0, CLIENT))
    assert not snap.final and snap.record.last_seen == 61.0 and snap.record.first_seen == 0.0
    assert t.feed(cyc(62.0, ok=False)) == []       # a failed dump keeps its connections
    assert t.stats.open == 1
    [gone] = t.feed(PollCycle(63.0, ()))             # the namespace vanished
    assert gone.final and t.stats.ended == 1
    t.feed(cyc(70.0, SERVER, ns=8))
    [left] = t.flush(71.0)
    assert not left.final and t.stats.open == 0


def test_closing_states_count_and_owner_learned_later() -> None:
    t = SocketTracker()
    fin = DiagSocket(2, 6, 8, "10.0.0.2", 41000, "10.0.0.1", 80, 30, 0, 7)   # CLOSE_WAIT
    t.feed(PollCycle(1.0, (NsPoll(7, "pod-a", (fin,)),)))
    t.feed(PollCycle(2.0, (NsPoll(7, "pod-a", (fin,), ((30, 5, "app"),)),)))
    [r] = t.flush(3.0)
    assert (r.record.state, r.record.pid, r.record.side) == ("CLOSE_WAIT", 5, "client")


def test_a_udp_5_tuple_used_again_within_the_linger_is_one_flow() -> None:
    """Two UDP sockets on one 5-tuple (a client given the same port again, the conntrack
    entry still alive): one flow, final once no socket had it for the linger."""
    t = SocketTracker(udp_linger=30)
    again = DiagSocket(2, 17, 1, "10.0.0.2", 5000, "10.96.0.10", 53, 23, 0, 14)
    [first] = t.feed(cyc(1.0, UDP))
    assert not first.final and t.feed(cyc(2.0)) == []
    assert t.feed(cyc(12.0, again)) == [] and t.stats.appeared == 1
    assert t.feed(cyc(13.0)) == [] and t.feed(cyc(42.0)) == []   # 29 s after: waits
    [r] = t.feed(cyc(43.0))
    assert r.final and (r.record.first_seen, r.record.last_seen, r.record.cookie) == (
        1.0, 12.0, 4)
    assert len(t.feed(cyc(44.0, again))) == 1 and t.stats.appeared == 2   # a new flow
    t.feed(cyc(45.0))
    [left] = t.flush(46.0)          # stopping: the gone one is over
    assert left.final and t.stats.open == 0
