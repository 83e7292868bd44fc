"""ConnectionTracker: when is a conntrack connection final, and with which counters."""

from __future__ import annotations

import dataclasses

from podflow.model.conntrack import CtEntry, CtEventType, CtStatus, CtTuple
from podflow.pipeline.cttrack import Completed, ConnectionTracker
from podflow.sources import ctnetlink
from tests.unit.sources.test_ctnetlink import frames

NEW, UPD, DES, DUMP = (CtEventType.NEW, CtEventType.UPDATE, CtEventType.DESTROY,
                       CtEventType.DUMP)


def entry(ev: CtEventType, n: int = 1, t: float = 100.0, state: str | None = "ESTABLISHED",
          packets: int | None = None, start: int | None = None, stop: int | None = None,
          proto: int = 6) -> CtEntry:
    orig = CtTuple("10.0.0.1", "10.96.0.1", proto, 40000 + n, 80)
    reply = CtTuple("10.0.1.5", "10.0.0.1", proto, 8080, 40000 + n)
    counters = {} if packets is None else {
        "orig_packets": packets, "orig_bytes": packets * 100,
        "reply_packets": packets, "reply_bytes": packets * 200}
    return CtEntry(ev, orig, reply, CtStatus.DST_NAT, id=n, tcp_state=state,
                   start_ns=start, stop_ns=stop, received_at=t, **counters)


def finals(out: list[Completed]) -> list[CtEntry]:
    return [c.entry for c in out if c.final]


def test_new_update_destroy_merges_everything() -> None:
    tr = ConnectionTracker()
    assert tr.feed([entry(NEW, t=10.0, state="SYN_SENT")], "event") == []
    assert tr.feed([entry(UPD, t=11.0, state="FIN_WAIT")], "event") == []
    out = tr.feed([entry(DES, t=50.0, state=None, packets=5, start=10_000, stop=20_000)],
                  "event")
    [e] = finals(out)
    assert e.event is DES and e.tcp_state == "FIN_WAIT" and e.orig_packets == 5
    assert (e.start_ns, e.stop_ns, e.received_at) == (10_000, 20_000, 10.0)
    assert (tr.emitted, tr.missed_new, tr.missed_destroy) == (1, 0, 0)


def test_time_wait_is_final_at_next_dump_and_destroy_is_ignored() -> None:
    tr = ConnectionTracker()
    tr.handle([], "dump", 1.0)
    tr.feed([entry(NEW, t=10.0), entry(UPD, t=10.1, state="TIME_WAIT")], "event")
    assert tr.feed([], "event") == []
    out = tr.handle([entry(DUMP, t=12.0, state="TIME_WAIT", packets=4, start=9)], "dump", 12.5)
    [e] = finals(out)
    assert e.orig_packets == 4 and e.start_ns == 9 and e.received_at == 10.0
    assert tr.closed_early == 1
    # later dumps still list it (TIME_WAIT lasts 120 s), then DESTROY: nothing more
    assert tr.handle([entry(DUMP, t=17.0, state="TIME_WAIT", packets=4)], "dump", 17.5) == []
    assert tr.feed([entry(DES, t=130.0, state="TIME_WAIT", packets=4)], "event") == []
    assert tr.handle([], "dump", 131.0) == [] and len(tr) == 0 and tr.emitted == 1


def test_missed_destroy_reported_by_dump_but_not_for_fresh_entries() -> None:
    tr = ConnectionTracker()
    tr.handle([], "dump", 5.0)
    tr.feed([entry(NEW, 1, t=6.0)], "event")
    # dump 2: entry 1 absent but first seen after dump 1 ended? No: 6.0 > 5.0 -> not judged yet
    assert finals(tr.handle([entry(DUMP, 2, t=9.0, packets=1)], "dump", 10.0)) == []
    assert tr.missed_new == 1  # entry 2 appeared only in a dump
    out = tr.handle([entry(DUMP, 2, t=14.0, packets=2)], "dump", 15.0)
    [e] = finals(out)
    assert e.id == 1 and tr.missed_destroy == 1 and len(tr) == 1


def test_first_dump_is_not_missed_new_and_racing_dump_after_destroy() -> None:
    tr = ConnectionTracker()
    tr.handle([entry(DUMP, 1, t=1.0, packets=1)], "dump", 1.5)
    assert tr.missed_new == 0 and tr.tracked == 1
    assert len(finals(tr.feed([entry(DES, 1, t=2.0, packets=3)], "event"))) == 1
    # a dump taken before that DESTROY and delivered after it must not resurrect it
    assert tr.handle([entry(DUMP, 1, t=1.9, packets=2)], "dump", 2.5) == []
    assert tr.handle([], "dump", 7.5) == [] and len(tr) == 0 and tr.emitted == 1


def test_destroy_of_unknown_connection_is_final_and_counted() -> None:
    tr = ConnectionTracker()
    tr.handle([], "dump", 1.0)
    [e] = finals(tr.feed([entry(DES, 9, t=3.0, packets=2, start=1, stop=2)], "event"))
    assert e.id == 9 and tr.missed_new == 1


def test_active_snapshots_for_long_lived_and_flush() -> None:
    tr = ConnectionTracker(active_report_interval=60.0, first_report_after=5.0)
    tr.handle([entry(DUMP, 1, t=0.0, packets=1)], "dump", 0.5)
    assert tr.handle([entry(DUMP, 1, t=3.0, packets=1)], "dump", 3.5) == []
    out = tr.handle([entry(DUMP, 1, t=30.0, packets=2)], "dump", 30.5)  # open >= 5 s: first
    assert [(c.final, c.entry.orig_packets) for c in out] == [(False, 2)]
    assert tr.handle([entry(DUMP, 1, t=60.0, packets=3)], "dump", 60.5) == []
    out = tr.handle([entry(DUMP, 1, t=90.0, packets=4)], "dump", 90.5)  # 60 s after that
    assert [(c.final, c.entry.orig_packets) for c in out] == [(False, 4)]
    tr.feed([entry(NEW, 2, t=91.0)], "event")
    out = tr.flush(95.0)
    assert sorted((c.final, c.entry.id) for c in out) == [(False, 1), (False, 2)]
    assert len(tr) == 0


def test_bounded_table_evicts_oldest() -> None:
    tr = ConnectionTracker(max_entries=3)
    out = tr.feed([entry(NEW, n, t=float(n)) for n in range(5)], "event")
    assert tr.evicted == 2 and len(tr) == 3
    assert [c.entry.id for c in out] == [0, 1] and not any(c.final for c in out)


def test_udp_final_on_destroy_only() -> None:
    tr = ConnectionTracker()
    tr.feed([entry(NEW, 1, t=0.0, state=None, proto=17)], "event")
    early = tr.handle([entry(DUMP, 1, t=0.4, state=None, packets=1, proto=17)], "dump", 0.5)
    assert [c.final for c in early] == [False]   # answered: reported at once, not final
    assert tr.handle([entry(DUMP, 1, t=5.0, state=None, packets=1, proto=17)], "dump", 5.5) == []
    [e] = finals(tr.feed([entry(DES, 1, t=31.0, state=None, packets=1, proto=17)], "event"))
    assert e.orig.proto == 17


def test_unanswered_udp_waits_like_a_syn() -> None:
    tr = ConnectionTracker(first_report_after=5.0)
    quiet = dataclasses.replace(entry(DUMP, 2, t=0.4, state=None, packets=1, proto=17),
                                reply_packets=0, reply_bytes=0)
    assert tr.handle([quiet], "dump", 0.5) == []
    late = tr.handle([dataclasses.replace(quiet, received_at=5.0)], "dump", 5.5)
    assert [c.final for c in late] == [False]


def test_golden_recording_through_the_tracker() -> None:
    """Real events then the real dump: every connection is reported final exactly once."""
    tr = ConnectionTracker()
    tr.handle([], "dump", 0.0)
    events = [e for t, b in frames("events.bin") for e in ctnetlink.parse(b, t).entries]
    dump = [e for t, b in frames("dump.bin") for e in ctnetlink.parse(b, t, dump=True).entries]
    pre = [e for e in events if e.event is not DES]
    out = tr.feed(pre, "event") + tr.handle(dump, "dump", dump[0].received_at + 0.1)
    out += tr.feed([e for e in events if e.event is DES], "event")
    ids = sorted(e.id or 0 for e in finals(out))
    assert ids == sorted({e.id or 0 for e in events}) and len(ids) == 5
    by_id = {e.id: e for e in finals(out)}
    for d in dump:
        got = by_id[d.id]
        if d.tcp_state == "TIME_WAIT":  # closed at the dump, with the dump's counters
            assert got.event is DUMP and got.orig_packets == d.orig_packets
        else:
            assert got.event is DES and got.stop_ns is not None
        assert got.start_ns == d.start_ns
        assert dataclasses.replace(got, event=d.event).orig == d.orig


def test_a_tuple_used_again_after_time_wait_is_a_new_connection() -> None:
    """A SYN on a TIME_WAIT entry: the kernel destroys it and creates a new one (DESTROY,
    then NEW on the same tuple); the tombstone of the first must not swallow the second."""
    tr = ConnectionTracker()
    tr.handle([], "dump", 1.0)
    tr.feed([entry(NEW, t=10.0)], "event")
    [first] = finals(tr.handle([entry(DUMP, t=12.0, state="TIME_WAIT", packets=4, start=10)],
                               "dump", 12.5))
    assert tr.feed([entry(DES, t=13.0, state="TIME_WAIT", packets=4, start=10, stop=13)],
                   "event") == []
    tr.feed([entry(NEW, t=13.0, state="SYN_SENT")], "event")
    out = tr.handle([entry(DUMP, t=14.0, state="TIME_WAIT", packets=6, start=13)], "dump", 14.5)
    [second] = finals(out)
    assert (first.start_ns, second.start_ns, second.orig_packets) == (10, 13, 6)
    assert second.received_at == 13.0 and tr.reopened == 1 and tr.emitted == 2
    # the kernel gave the new entry the same id: it is another instance for the store, so
    # the two connections are never grouped as one, however close in time
    assert (first.id, first.reuse, second.id, second.reuse) == (1, 0, 1, 1)


def test_another_kernel_start_time_is_a_new_connection_even_without_events() -> None:
    tr = ConnectionTracker()
    tr.handle([entry(DUMP, t=1.0, state="TIME_WAIT", packets=4, start=1)], "dump", 1.5)
    assert tr.emitted == 1
    # the same entry again (still in TIME_WAIT) and a racing dump after its DESTROY: nothing
    assert tr.handle([entry(DUMP, t=3.0, state="TIME_WAIT", packets=4, start=1)], "dump",
                     3.5) == []
    # the tuple again, NEW and DESTROY lost in an overrun: the start time tells
    out = tr.handle([entry(DUMP, t=5.0, state="TIME_WAIT", packets=7, start=4)], "dump", 5.5)
    assert [(e.start_ns, e.orig_packets) for e in finals(out)] == [(4, 7)]
    assert tr.reopened == 1


def test_a_new_event_after_a_close_whose_destroy_was_lost() -> None:
    tr = ConnectionTracker()
    tr.handle([], "dump", 1.0)
    tr.feed([entry(NEW, t=10.0), entry(UPD, t=10.5, state="TIME_WAIT")], "event")
    out = tr.feed([entry(NEW, t=11.0, state="SYN_SENT")], "event")
    [old] = finals(out)
    assert old.received_at == 10.0 and tr.reopened == 1 and len(tr) == 1
    # an UPDATE of an open connection is not a new one, nor is a NEW while it is open
    tr.feed([entry(UPD, t=11.5, state="ESTABLISHED"), entry(NEW, t=11.6)], "event")
    assert tr.reopened == 1 and len(tr) == 1


def test_a_late_destroy_of_the_earlier_entry_does_not_end_the_new_one() -> None:
    """The kernel can deliver the old entry's DESTROY after the new one's NEW (a failed
    event delivery is retried later): it must neither end nor repeat anything."""
    tr = ConnectionTracker()
    tr.handle([], "dump", 1.0)
    tr.feed([entry(NEW, t=10.0)], "event")
    tr.handle([entry(DUMP, t=11.0, state="TIME_WAIT", packets=4, start=10)], "dump", 11.5)
    tr.feed([entry(NEW, t=12.0, state="SYN_SENT")], "event")
    tr.handle([entry(DUMP, t=12.5, state="ESTABLISHED", packets=2, start=12)], "dump", 12.6)
    late = tr.feed([entry(DES, t=13.0, state="TIME_WAIT", packets=4, start=10, stop=12)],
                   "event")
    assert late == [] and tr.stale == 1 and tr.emitted == 1
    [e] = finals(tr.feed([entry(DES, t=20.0, state="TIME_WAIT", packets=6, start=12,
                                stop=19)], "event"))
    assert (e.start_ns, e.orig_packets) == (12, 6) and tr.emitted == 2


def test_unreported_since_names_the_oldest_connection_not_reported_yet() -> None:
    """The agent claims no progress past a connection it tracks and has not reported: its
    other views would otherwise be drawn alone."""
    tr = ConnectionTracker(first_report_after=5.0)
    assert tr.unreported_since == float("inf")
    quiet = dataclasses.replace(entry(DUMP, 2, t=0.4, state=None, packets=1, proto=17),
                                reply_packets=0, reply_bytes=0)
    nocounters = entry(DUMP, 3, t=0.2, state=None, proto=17)   # made before accounting
    assert tr.handle([quiet, nocounters], "dump", 1.0) == []
    assert tr.unreported_since == 0.4          # reported at its end only: holds nothing
    later = [dataclasses.replace(quiet, received_at=5.5),
             dataclasses.replace(nocounters, received_at=5.5)]
    assert [c.entry.id for c in tr.handle(later, "dump", 6.0)] == [2]   # 5 s: reported
    assert tr.unreported_since == float("inf")


def test_an_event_the_dump_overtook_is_still_reported_early() -> None:
    """A NEW event read while a dump runs, then that dump's entry stamped with the earlier
    request time: the connection is reported at its first answered dump, and holds progress
    until then (it once waited for its 60 s active report or its DESTROY, and its other
    views were drawn alone meanwhile)."""
    tr = ConnectionTracker(first_report_after=5.0)
    tr.feed([entry(NEW, 1, t=10.2, state=None, proto=17)], "event")
    quiet = dataclasses.replace(entry(DUMP, 1, t=10.0, state=None, packets=1, proto=17),
                                reply_packets=0, reply_bytes=0)
    assert tr.handle([quiet], "dump", 10.5) == []
    assert tr.unreported_since == 10.0
    out = tr.handle([entry(DUMP, 1, t=11.0, state=None, packets=1, proto=17)], "dump", 11.5)
    assert [(c.final, c.entry.received_at) for c in out] == [(False, 10.0)]
    assert tr.unreported_since == float("inf")
    tcp = ConnectionTracker(first_report_after=5.0)
    tcp.feed([entry(NEW, 2, t=20.2)], "event")
    assert tcp.handle([entry(DUMP, 2, t=20.0, packets=1)], "dump", 20.5) == []
    assert tcp.unreported_since == 20.0
    assert [c.final for c in tcp.handle([entry(DUMP, 2, t=25.0, packets=3)], "dump",
                                        25.5)] == [False]


def test_a_late_destroy_before_the_new_entry_was_dumped_is_the_old_ones() -> None:
    """The old entry's DESTROY right after the new one's NEW, before any dump gave the new
    one a start time: it was merged into the new connection, which then reported the old
    one a second time (seen in the load run as a duplicate and as a backend's view drawn
    alone 40 s after its connection)."""
    tr = ConnectionTracker()
    tr.handle([], "dump", 1.0)
    tr.feed([entry(NEW, t=10.0)], "event")
    [old] = finals(tr.handle([entry(DUMP, t=11.0, state="TIME_WAIT", packets=4, start=10)],
                             "dump", 11.5))
    tr.feed([entry(NEW, t=52.0, state="SYN_SENT")], "event")
    late = tr.feed([entry(DES, t=52.1, state="TIME_WAIT", packets=4, start=10, stop=52)],
                   "event")
    assert late == [] and tr.stale == 1 and tr.emitted == 1
    out = tr.handle([entry(DUMP, t=52.5, state="TIME_WAIT", packets=5, start=52)], "dump",
                    52.6)
    [new] = finals(out)
    assert (new.start_ns, new.orig_packets, new.reuse) == (52, 5, 1)
    assert (old.start_ns, old.reuse) == (10, 0)
