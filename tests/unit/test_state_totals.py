"""A total the state keeps current (``derivers.base.StateTotal``) equals the same sum computed
from the rows, however the rows of its join change: the capacity deriver's hours booked per
(tenant, UTC day, user) over schedule entries × their assignee rows, kept by the real
``cdc.state.StateStore`` through random transactions of inserts, moves, re-assignments and
deletes (in either order of an entry and its assignee rows, orphan assignee rows included), and
checked after each one against ``derivers.base.scan_total`` over the same rows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from cdc.assembler import Assembler
from cdc.pgoutput import Begin, Column, Commit, Delete, Insert, Relation, TupleData, Update
from cdc.state import StateStore
from derivers.base import Image, StateTotal, StateView, scan_total
from derivers.capacity import ASSIGNEES, BOOKED, SCHEDULE_ENTRIES
from derivers.testing import FakeState

UUID, TIMESTAMPTZ = 2950, 1184
ENTRY_REL = Relation(
    16500,
    "public",
    "schedule_entries",
    "f",
    tuple(
        Column(1, name, oid, -1)
        for name, oid in (
            ("tenant", UUID),
            ("entry_id", UUID),
            ("scheduled_start", TIMESTAMPTZ),
            ("scheduled_end", TIMESTAMPTZ),
        )
    ),
)
ASSIGNEE_REL = Relation(
    16501,
    "public",
    "schedule_entry_assignees",
    "f",
    tuple(Column(1, name, UUID, -1) for name in ("tenant", "entry_id", "user_id")),
)
KEYS = {SCHEDULE_ENTRIES: ("tenant", "entry_id"), ASSIGNEES: ("tenant", "entry_id", "user_id")}
TENANTS = ("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002")
USERS = tuple(f"00000000-0000-4000-8000-0000000003{i:02d}" for i in range(4))
DAY0 = datetime(2026, 1, 5, tzinfo=UTC)
FIRST_DAY = (DAY0 - datetime(1970, 1, 1, tzinfo=UTC)).days  # as the totals count days


def _uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def _time(at: datetime | None) -> bytes | None:
    return None if at is None else at.strftime("%Y-%m-%d %H:%M:%S+00").encode()


def _interval(rng: random.Random) -> tuple[bytes | None, bytes | None]:
    shape = rng.random()
    if shape < 0.1:
        return None, None  # an ad-hoc entry without times books nothing
    start = DAY0 + timedelta(minutes=30 * rng.randrange(0, 4 * 48))
    if shape < 0.15:
        return _time(start), _time(start - timedelta(hours=1))  # end before start: nothing
    if shape < 0.2:
        return _time(start), _time(start + timedelta(days=40))  # longer than a month: nothing
    return _time(start), _time(start + timedelta(minutes=30 * rng.randrange(1, 40)))  # midnight too


def test_booked_hours_stay_equal_to_the_sum_over_the_rows() -> None:
    rng = random.Random(20261206)
    store = StateStore("totals", "cdc", KEYS)
    entries: dict[tuple[str, str], tuple[bytes, bytes, bytes | None, bytes | None]] = {}
    assignees: set[tuple[bytes, bytes, bytes]] = set()
    for tx_no in range(200):
        assembler = Assembler(KEYS)
        assembler.feed(ENTRY_REL)
        assembler.feed(ASSIGNEE_REL)
        assembler.feed(Begin(0x100 + tx_no, 0, tx_no))
        feed = assembler.feed
        for _ in range(rng.randrange(1, 6)):
            op = rng.random()
            if op < 0.3 or not entries:
                tenant = rng.choice(TENANTS).encode()
                entry = (tenant, _uuid(rng.randrange(1, 40)).encode(), *_interval(rng))
                old = entries.get((entry[0].decode(), entry[1].decode()))
                if old is None:
                    feed(Insert(ENTRY_REL.oid, TupleData(entry)))
                else:
                    feed(Update(ENTRY_REL.oid, "O", TupleData(old), TupleData(entry)))
                entries[(entry[0].decode(), entry[1].decode())] = entry
            elif op < 0.65:
                tenant_s, entry_s = rng.choice(sorted(entries))
                row = (tenant_s.encode(), entry_s.encode(), rng.choice(USERS).encode())
                if row in assignees:
                    feed(Delete(ASSIGNEE_REL.oid, "O", TupleData(row)))
                    assignees.discard(row)
                else:
                    feed(Insert(ASSIGNEE_REL.oid, TupleData(row)))
                    assignees.add(row)
            elif op < 0.85:
                key = rng.choice(sorted(entries))
                old = entries[key]
                new = (old[0], old[1], *_interval(rng))
                feed(Update(ENTRY_REL.oid, "O", TupleData(old), TupleData(new)))
                entries[key] = new
            else:  # an entry goes; its assignee rows go before or after it, or stay (orphans)
                key = rng.choice(sorted(entries))
                mine = [a for a in sorted(assignees) if (a[0].decode(), a[1].decode()) == key]
                keep = rng.random() < 0.2
                first = rng.random() < 0.5
                if first and not keep:
                    for a in mine:
                        feed(Delete(ASSIGNEE_REL.oid, "O", TupleData(a)))
                feed(Delete(ENTRY_REL.oid, "O", TupleData(entries.pop(key))))
                if not first and not keep:
                    for a in mine:
                        feed(Delete(ASSIGNEE_REL.oid, "O", TupleData(a)))
                if not keep:
                    assignees.difference_update(mine)
        tx = feed(Commit(0, 0x100 + tx_no, 0x128 + tx_no, 0))
        assert tx is not None
        store.apply_all(tx.changes)
        if tx_no % 4:
            continue  # checked every fourth transaction (the scan reads every entry per key)
        oracle = FakeState({table: dict(rows) for table, rows in store.rows.items()})
        entry_rows = list(oracle.rows.get(SCHEDULE_ENTRIES, {}).values())
        for tenant in TENANTS:
            for day in range(FIRST_DAY, FIRST_DAY + 6):
                for user in USERS:
                    key = (tenant, day, user)
                    expected = scan_total(oracle, BOOKED, key, entry_rows)
                    assert store.total(BOOKED, key) == expected, (tx_no, key)


def test_a_total_over_a_table_named_twice_counts_each_row_once() -> None:
    table = "public.things"
    twice = StateTotal((table, table), "things by kind", lambda view, t, row: [(row["kind"], 1)])
    store = StateStore("totals", "cdc", {table: ("id",)})
    assert store.total(twice, "a") == 0  # built, then kept current by each put
    store._put(table, ("1",), {"id": "1", "kind": "a"})
    store._put(table, ("2",), {"id": "2", "kind": "a"})
    store._put(table, ("1",), {"id": "1", "kind": "b"})
    assert (store.total(twice, "a"), store.total(twice, "b")) == (1, 1)


def test_a_total_first_read_inside_a_put_counts_the_rows_once() -> None:
    """A total whose contributions read another, not yet built, total of the same table: the
    inner one is built from the rows as they are at that moment, and the put then updates it
    for what it did not see — whether it was first read for the new row (an insert) or for the
    old one (an update, which it must see leave)."""
    table = "public.things"
    inner = StateTotal((table,), "things by kind", lambda view, t, row: [(row["kind"], 1)])
    reads_inner = {"on": True}

    def outer_contributions(view: StateView, t: str, row: Image) -> list[tuple[str, int]]:
        if reads_inner["on"]:
            view.total(inner, row["kind"])
        return [("all", 1)]

    outer = StateTotal((table,), "things", outer_contributions)
    store = StateStore("totals", "cdc", {table: ("id",)})
    assert store.total(outer, "all") == 0
    store._put(table, ("1",), {"id": "1", "kind": "a"})  # inner first read for the new row
    store._put(table, ("2",), {"id": "2", "kind": "a"})
    assert (store.total(outer, "all"), store.total(inner, "a")) == (2, 2)

    store = StateStore("totals", "cdc", {table: ("id",)})
    reads_inner["on"] = False
    assert store.total(outer, "all") == 0
    store._put(table, ("1",), {"id": "1", "kind": "a"})
    reads_inner["on"] = True
    store._put(table, ("1",), {"id": "1", "kind": "b"})  # inner first read for the old row
    assert (store.total(outer, "all"), store.total(inner, "a"), store.total(inner, "b")) == (1, 0, 1)
