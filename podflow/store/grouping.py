"""Incremental grouping: which connection each new observation row belongs to.

The store applies :func:`podflow.store.correlate.group` at write time, one batch at a
time, so that reads never have to. Every stored row keeps its group key (``conn_key``), the
bridge that chose it (``bridge_time``, ``bridge_seq``: the ``(distance, time, seq)`` tie key of
``group_keys``, the row index being ``seq``) and its connection id (``conn_id``). A batch can
change the grouping only near itself, and this module works out how, exactly:

1. a new row's key is the chain label of its nearest bridge within :data:`SPLIT_GAP` sharing
   one of its keys (stored ones and the batch's own); a stored row sharing a key with a
   *new* bridge within ``SPLIT_GAP`` moves to that bridge's label if the bridge is nearer
   than the one it had (a row's best bridge can only improve: rows are never deleted), and a
   stored row whose bridge's chain a new bridge joined takes the chain's new label (the
   caller fetches whole chains: they are short, a hop per node the connection crossed);
2. the groups that can change are the old groups of moved rows and every stored group of a
   key in the same *segment* as a new or moved row of that key (a segment: rows of one key
   whose consecutive starts are at most ``SPLIT_GAP`` apart). A cut inside a segment can
   depend on everything before it in the segment (a second instance of a vantage cuts), so
   the whole segment is regrouped; segments are short (a connection, a few reused ports);
3. the rows of those groups plus the new rows are split again per key with
   :func:`~podflow.store.correlate.split` (sorted by ``(time, seq)``), which gives exactly
   the groups ``group()`` would give over the whole store: other groups lie in other
   segments, and the first cut of every segment is the same whatever follows.

A connection's id is the ``seq`` of one of its rows, so ids are unique without a counter: a
group keeps the old id that is still among its rows (of the old group contributing most rows
when groups merge), else takes its smallest ``seq``.

Example (a client socket, then the conntrack bridge that ties it to the server's key)::

    >>> client = Row(1, 100.0, "", "c")
    >>> assign([client], []).ids == {1: 1}
    True
    >>> stored = Row(1, 100.0, "", "c", conn_id=1, conn_key="c")
    >>> bridge = Row(2, 100.5, "s", "c")
    >>> a = assign([bridge], [stored])
    >>> sorted(a.ids.items()), stored.conn_key, a.gone
    ([(1, 1), (2, 1)], 'c', {1})
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from podflow.store.correlate import SPLIT_GAP, Tracked, chain_labels, split, vantages

BridgeKey = tuple[float, float, int]
"""``(distance, bridge time, bridge seq)``: the smallest wins (see correlate.group_keys)."""


@dataclass(slots=True, eq=False)
class Row:
    """The grouping columns of one observation row (new rows have no ``conn_id`` yet)."""

    seq: int
    time: float
    flow_id: str
    client_key: str
    conn_id: int | None = None
    conn_key: str | None = None
    bridge_time: float | None = None
    bridge_seq: int | None = None
    obs_node: str | None = None
    obs_source: str | None = None
    obs_instance: str | None = None

    def tracked(self) -> Tracked | None:
        """Vantages and instance for :func:`~podflow.store.correlate.split`."""
        if not self.obs_instance:
            return None
        return (vantages(self.obs_node or "", self.obs_source or "", self.flow_id,
                         self.client_key), self.obs_instance)

    def key_values(self) -> tuple[str, ...]:
        """The non-empty keys, without repetition."""
        return tuple(dict.fromkeys(k for k in (self.flow_id, self.client_key) if k))

    def is_bridge(self) -> bool:
        """Knows both keys and they differ (conntrack of a NATed connection)."""
        return bool(self.flow_id and self.client_key and self.flow_id != self.client_key)

    def bridge_key(self) -> BridgeKey | None:
        """The tie key of the bridge that chose this row's key, if one did."""
        if self.bridge_time is None or self.bridge_seq is None:
            return None
        return (abs(self.time - self.bridge_time), self.bridge_time, self.bridge_seq)


@dataclass
class Assignment:
    """What a batch changes: see :func:`assign`."""

    ids: dict[int, int] = field(default_factory=dict)
    """``seq -> conn_id`` of every new row and of every stored row of a changed group."""
    changed: list[Row] = field(default_factory=list)
    """Stored rows whose grouping columns changed (to update)."""
    gone: set[int] = field(default_factory=set)
    """Old ids of the changed groups (their merged rows are to be replaced)."""


def _bridges(rows: Iterable[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.is_bridge():
            out[r.flow_id].append(r)
            out[r.client_key].append(r)
    return out


def _best(r: Row, bridges: dict[str, list[Row]]) -> tuple[BridgeKey, Row] | None:
    best: tuple[BridgeKey, Row] | None = None
    for k in r.key_values():
        for b in bridges.get(k, ()):
            dt = abs(b.time - r.time)
            if dt <= SPLIT_GAP and (best is None or (dt, b.time, b.seq) < best[0]):
                best = ((dt, b.time, b.seq), b)
    return best


def labels(rows: Iterable[Row]) -> dict[int, str]:
    """``seq -> chain label`` of the bridges among ``rows``
    (:func:`~podflow.store.correlate.chain_labels`)."""
    bridges = [r for r in rows if r.is_bridge()]
    return {b.seq: lab for b, lab in zip(
        bridges, chain_labels([(b.time, b.flow_id, b.client_key) for b in bridges]),
        strict=True)}


def _take(r: Row, b: Row | None, label: dict[int, str]) -> None:
    if b is None:
        r.conn_key = r.flow_id or r.client_key or None
        r.bridge_time = r.bridge_seq = None
    else:
        r.conn_key = label[b.seq]
        r.bridge_time, r.bridge_seq = b.time, b.seq


def choose_keys(new: Sequence[Row], stored: Sequence[Row]) -> list[tuple[Row, str | None, int]]:
    """Step 1: set the key of new rows, move stored rows to nearer new bridges and to the
    new label of a chain a new bridge joined.

    ``stored`` must hold every stored row within ``2 * SPLIT_GAP`` of a new row that shares a
    key with it, the whole chain of every bridge among them (:func:`chain_keys` of it all is
    fetched) and the rows keyed by those chains. Returns the moved rows with their old key
    and id.
    """
    label = labels([*stored, *new])
    everything = _bridges([*stored, *new])
    for r in new:
        found = _best(r, everything)
        _take(r, found[1] if found else None, label)
    fresh = _bridges(new)
    moved = []
    for r in stored:
        found = _best(r, fresh) if fresh else None
        had = r.bridge_key()
        if found is not None and (had is None or found[0] < had):
            assert r.conn_id is not None
            moved.append((r, r.conn_key, r.conn_id))
            _take(r, found[1], label)
        elif r.bridge_seq in label and label[r.bridge_seq] != r.conn_key:
            assert r.conn_id is not None   # its bridge's chain took a new label
            moved.append((r, r.conn_key, r.conn_id))
            r.conn_key = label[r.bridge_seq]
    return moved


def chain_keys(rows: Iterable[Row]) -> set[str]:
    """Every key of the bridges among ``rows``: what fetching their chains searches."""
    return {k for r in rows if r.is_bridge() for k in (r.flow_id, r.client_key)}


def affected(new: Sequence[Row], moved: Sequence[tuple[Row, str | None, int]],
             stored: Sequence[Row]) -> set[int]:
    """Step 2: ids of the stored groups the batch changes (``stored`` as in step 3)."""
    out = {old_id for _, _, old_id in moved}
    changed: dict[str, list[float]] = defaultdict(list)
    for r in [*new, *(m[0] for m in moved)]:
        if r.conn_key is not None:
            changed[r.conn_key].append(r.time)
    for r, old_key, _ in moved:   # a row leaving may undo a cut after it in its old segment
        if old_key is not None:
            changed[old_key].append(r.time)
    by_key: dict[str, list[Row]] = defaultdict(list)
    for r in stored:
        if r.conn_key in changed:
            by_key[r.conn_key].append(r)
    for key, times in changed.items():
        items: list[tuple[float, Row | None]] = sorted(
            [(r.time, r) for r in by_key.get(key, ())] + [(t, None) for t in times],
            key=lambda x: x[0])
        segment: list[Row] = []
        hit, last = False, None
        for t, row in items:
            if last is not None and t - last > SPLIT_GAP:
                if hit:
                    out.update(x.conn_id for x in segment if x.conn_id is not None)
                segment, hit = [], False
            last = t
            if row is None:
                hit = True
            else:
                segment.append(row)
                hit = hit or row.conn_id in out
        if hit:
            out.update(x.conn_id for x in segment if x.conn_id is not None)
    return out


def regroup(rows: Iterable[Row]) -> list[list[Row]]:
    """Step 3: split rows per key (see :func:`~podflow.store.correlate.split`)."""
    by_key: dict[str, list[Row]] = defaultdict(list)
    groups: list[list[Row]] = []
    for r in rows:
        if r.conn_key is None:
            groups.append([r])
        else:
            by_key[r.conn_key].append(r)
    for members in by_key.values():
        members.sort(key=lambda r: (r.time, r.seq))
        groups += split(members, lambda r: r.time, Row.tracked)
    return groups


def pick_id(members: Sequence[Row]) -> int:
    """The id of a (new or changed) group: see the module doc."""
    seqs = {r.seq for r in members}
    counts: dict[int, int] = defaultdict(int)
    for r in members:
        if r.conn_id is not None and r.conn_id in seqs:
            counts[r.conn_id] += 1
    if counts:
        return min(counts, key=lambda c: (-counts[c], c))
    return min(seqs)


def assign(new: Sequence[Row], stored: Sequence[Row]) -> Assignment:
    """Group ``new`` rows with what is stored; ``stored`` as :func:`choose_keys` wants, plus
    every row of the groups :func:`affected` names (the caller fetches them in between by
    calling the steps itself; this shortcut is for callers that already hold them all).
    """
    moved = choose_keys(new, stored)
    return finish(new, moved, stored, affected(new, moved, stored))


def finish(new: Sequence[Row], moved: Sequence[tuple[Row, str | None, int]],
           stored: Sequence[Row], ids: set[int]) -> Assignment:
    """Steps 3 and 4: regroup the new rows with the stored rows of groups ``ids``."""
    before = {r.seq: (r.conn_id, r.conn_key, r.bridge_time, r.bridge_seq) for r in stored}
    for r, key, old_id in moved:
        before[r.seq] = (old_id, key, None, None)   # a moved row always counts as changed
    pool = [r for r in stored if r.conn_id in ids]
    out = Assignment(gone=set(ids))
    for members in regroup([*pool, *new]):
        cid = pick_id(members)
        for r in members:
            out.ids[r.seq] = cid
    for r in pool:
        r.conn_id = out.ids[r.seq]
        if before[r.seq] != (r.conn_id, r.conn_key, r.bridge_time, r.bridge_seq):
            out.changed.append(r)
    for r in new:
        r.conn_id = out.ids[r.seq]
    return out


def rechoose(rows: Sequence[Row], candidates: Sequence[Row]) -> list[tuple[Row, str | None]]:
    """Choose again the key of stored ``rows`` whose bridge was deleted (retention).

    ``candidates`` must hold every remaining row within ``SPLIT_GAP`` of one of ``rows``
    sharing a key with it. Returns each row whose key or bridge changed, with its old key
    (rows are updated in place, ``conn_id`` untouched).
    """
    bridges = _bridges(candidates)
    label = labels(candidates)
    out = []
    for r in rows:
        old = (r.conn_key, r.bridge_time, r.bridge_seq)
        found = _best(r, bridges)
        _take(r, found[1] if found else None, label)
        if (r.conn_key, r.bridge_time, r.bridge_seq) != old:
            out.append((r, old[0]))
    return out


def rebuild(rows: Sequence[Row], moved: Iterable[int] = ()) -> Assignment:
    """Regroup stored rows after others were deleted or moved to another key (retention).

    ``rows`` are every remaining row of the keys concerned (with their current key),
    ``moved`` the ``seq`` of rows whose key changed. A group that is exactly an old one
    keeps its id and is not reported; the others get :func:`pick_id` and their rows whose
    columns changed are in ``changed``, the old ids in ``gone``.
    """
    moved = set(moved)
    size: dict[int | None, int] = defaultdict(int)
    for r in rows:
        size[r.conn_id] += 1
    out = Assignment()
    for members in regroup(rows):
        old = {r.conn_id for r in members}
        whole = len(old) == 1 and None not in old and size[next(iter(old))] == len(members)
        if whole and not any(r.seq in moved for r in members):
            continue
        cid = pick_id(members)
        out.gone |= {c for c in old if c is not None}
        for r in members:
            out.ids[r.seq] = cid
            if r.conn_id != cid or r.seq in moved:
                r.conn_id = cid
                out.changed.append(r)
    return out
