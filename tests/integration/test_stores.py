"""StateStore and TimerStore against a real Postgres: what a checkpoint's transaction writes is
what the next start loads, and nothing is written before that transaction commits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cdc.assembler import RowChange
from cdc.pgoutput import UNCHANGED_TOAST, Column, Relation
from cdc.schema import create_tables
from cdc.state import StateStore
from cdc.timers import ArmedBy, TimerStore
from cdc.values import Row, RowShape
from derivers.testing import FakeChange, make_tx

from .test_backfill import prepare

pytestmark = pytest.mark.integration

STATUSES = "public.statuses"
SHAPE = RowShape(
    Relation(
        1,
        "public",
        "statuses",
        "f",
        (
            Column(1, "tenant", 25, -1),
            Column(1, "status_id", 25, -1),
            Column(0, "name", 25, -1),
            Column(0, "meta", 3802, -1),
        ),
    ),
    ("tenant", "status_id"),
)
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def status(status_id: str, name: object, meta: object = b'{"closed": false}') -> Row:
    return Row(SHAPE, (b"t1", status_id.encode(), name, meta))  # type: ignore[arg-type]


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_dsn, autocommit=True) as c:
        create_tables(c, "cdc")
        yield c


def committed(store: StateStore | TimerStore, conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        store.flush(conn)
    store.committed()


# -- StateStore ---------------------------------------------------------------------------------


def state(slot: str = "s1") -> StateStore:
    return StateStore(slot, "cdc", {STATUSES: ("tenant", "status_id")})


def test_state_rows_written_at_the_checkpoint_are_what_a_restart_loads(conn: psycopg.Connection[Any]) -> None:
    store = state()
    store.apply(RowChange(STATUSES, "insert", None, status("open", b"Open")))
    store.apply(RowChange(STATUSES, "insert", None, status("gone", b"Gone")))
    committed(store, conn)
    store.apply(RowChange(STATUSES, "update", status("open", b"Open"), status("open", b"Opened")))
    store.apply(RowChange(STATUSES, "delete", status("gone", b"Gone"), None))
    store.apply(RowChange("public.tickets", "insert", None, status("x", b"not a reference table")))
    committed(store, conn)
    again = state()
    assert again.load(conn) == 1
    assert again.get(STATUSES, ("t1", "open")) == {
        "tenant": "t1",
        "status_id": "open",
        "name": "Opened",
        "meta": {"closed": False},
    }
    assert again.get(STATUSES, ("t1", "gone")) is None
    assert state("another slot").load(conn) == 0  # every row is the slot's own


def test_nothing_is_written_until_the_checkpoint_commits(conn: psycopg.Connection[Any]) -> None:
    store = state()
    store.apply(RowChange(STATUSES, "insert", None, status("open", b"Open")))
    with pytest.raises(RuntimeError), conn.transaction():
        store.flush(conn)
        raise RuntimeError("the sink failed")
    assert state().load(conn) == 0
    committed(store, conn)  # still pending: the next checkpoint writes it
    assert state().load(conn) == 1


def test_a_row_changed_again_while_its_checkpoint_is_in_flight_stays_pending(
    conn: psycopg.Connection[Any],
) -> None:
    # The committer writes what take_flush handed over while the watcher goes on (cdc.batch):
    # what changed after the take must reach the next checkpoint, what did not must not be
    # written twice.
    store = state()
    store.apply(RowChange(STATUSES, "insert", None, status("open", b"Open")))
    store.apply(RowChange(STATUSES, "insert", None, status("gone", b"Gone")))
    pending = store.take_flush()
    store.apply(RowChange(STATUSES, "update", status("open", b"Open"), status("open", b"Opened")))
    with conn.transaction():
        pending.write(conn)
    store.committed(pending)
    assert store._dirty == {(STATUSES, ("t1", "open")): store.get(STATUSES, ("t1", "open"))}
    assert state().load(conn) == 2
    assert state().get(STATUSES, ("t1", "open")) is None  # a fresh store: load() is needed
    again = state()
    again.load(conn)
    assert again.get(STATUSES, ("t1", "open"))["name"] == "Open"  # type: ignore[index]
    committed(store, conn)
    again.load(conn)
    assert again.get(STATUSES, ("t1", "open"))["name"] == "Opened"  # type: ignore[index]


def test_a_failed_checkpoint_leaves_what_it_took_pending(conn: psycopg.Connection[Any]) -> None:
    store = state()
    store.apply(RowChange(STATUSES, "insert", None, status("open", b"Open")))
    pending = store.take_flush()
    with pytest.raises(RuntimeError), conn.transaction():
        pending.write(conn)
        raise RuntimeError("the outbox failed")
    assert store._dirty  # never committed(pending): still pending
    committed(store, conn)
    assert state().load(conn) == 1


def test_a_key_change_moves_the_row_and_an_unknown_column_keeps_what_was_known(
    conn: psycopg.Connection[Any],
) -> None:
    store = state()
    store.apply(RowChange(STATUSES, "insert", None, status("a", b"Alpha", b'{"big": 1}')))
    store.apply(
        RowChange(
            STATUSES,
            "update",
            status("a", b"Alpha"),
            status("b", b"Beta", UNCHANGED_TOAST),
            unknown=("meta",),
        )
    )
    assert store.get(STATUSES, ("t1", "a")) is None
    b = store.get(STATUSES, ("t1", "b"))
    assert b is not None and b["name"] == "Beta"
    committed(store, conn)
    loaded = state()
    loaded.load(conn)
    assert set(loaded.rows[STATUSES]) == {("t1", "b")}


def test_find_follows_changes_and_a_truncate(conn: psycopg.Connection[Any]) -> None:
    store = state()
    store.apply(RowChange(STATUSES, "insert", None, status("a", b"Open")))
    assert [r["status_id"] for r in store.find(STATUSES, "name", "Open")] == ["a"]  # index built here
    store.apply(RowChange(STATUSES, "insert", None, status("b", b"Open")))
    store.apply(RowChange(STATUSES, "update", status("a", b"Open"), status("a", b"Closed")))
    assert [r["status_id"] for r in store.find(STATUSES, "name", "Open")] == ["b"]
    assert sorted(r["status_id"] for r in store.find(STATUSES, "meta", {"closed": False})) == ["a", "b"]
    store.apply(RowChange(STATUSES, "truncate", None, None))
    assert store.find(STATUSES, "name", "Closed") == []
    committed(store, conn)
    assert state().load(conn) == 0


# -- TimerStore ---------------------------------------------------------------------------------


def timers(slot: str = "s1") -> TimerStore:
    return TimerStore(slot, "cdc")


def arm(
    store: TimerStore, key: str, due: datetime, *, xid: int = 7, table: str = "public.tickets", **data: Any
) -> None:
    tx = make_tx(
        [FakeChange("public.ticket_audit_logs", "insert"), FakeChange(table, "update")],
        commit_time=AT,
        end_lsn=0x100 + xid,
        xid=xid,
    )
    store.bound("sla", tx).arm(
        key, tx.changes[1], tenant="t1", subject_id=key, stage="resolution", due_at=due, data=data or None
    )


def test_timers_and_the_change_that_armed_them_are_what_a_restart_loads(
    conn: psycopg.Connection[Any],
) -> None:
    store = timers()
    arm(store, "a", AT + timedelta(hours=1), policy="p")
    arm(store, "b", AT + timedelta(hours=2))
    arm(store, "c", AT + timedelta(hours=3))
    store.pause("b")
    committed(store, conn)
    store.settle("c")
    store.forget("a")
    committed(store, conn)
    loaded = timers()
    assert loaded.load(conn) == 2
    b, c = loaded.timers["b"], loaded.timers["c"]
    assert (b.state, c.state, b.deriver) == ("paused", "settled", "sla")
    assert loaded.armed_by["b"] == ArmedBy(0x107, 7, AT, "public.tickets")  # the arming change, not the first
    assert loaded.next_due() is None  # nothing armed: paused and settled timers do not count
    assert timers("another slot").load(conn) == 0


def test_arming_again_moves_a_timer_and_its_source_but_never_a_verdict(conn: psycopg.Connection[Any]) -> None:
    store = timers()
    arm(store, "a", AT + timedelta(hours=1), xid=1, policy="p")
    arm(store, "a", AT + timedelta(hours=1), xid=2)  # nothing moves: the first change stays the source
    assert store.armed_by["a"].xid == 1 and store.timers["a"].data == {"policy": "p"}
    arm(store, "a", AT + timedelta(hours=2), xid=3, policy="q")  # moved by a later change
    assert store.armed_by["a"].xid == 3 and store.timers["a"].due_at == AT + timedelta(hours=2)
    assert store.due(AT + timedelta(hours=1, minutes=30)) == []  # the old due time is stale
    (due,) = store.due(AT + timedelta(hours=3))
    store.mark_fired(due.key)
    arm(store, "a", AT + timedelta(hours=4), xid=4)  # one verdict per stage instance
    assert store.timers["a"].state == "fired" and store.armed_by["a"].xid == 3
    committed(store, conn)
    loaded = timers()
    loaded.load(conn)
    assert loaded.timers["a"].state == "fired" and loaded.due(AT + timedelta(days=1)) == []


def test_a_timer_changed_again_while_its_checkpoint_is_in_flight_stays_pending(
    conn: psycopg.Connection[Any],
) -> None:
    store = timers()
    arm(store, "a", AT + timedelta(hours=1))
    arm(store, "b", AT + timedelta(hours=2))
    arm(store, "c", AT + timedelta(hours=3))
    committed(store, conn)
    arm(store, "a", AT + timedelta(hours=4), xid=2)
    store.forget("c")
    pending = store.take_flush()
    store.pause("a")  # after the take: the next checkpoint's
    arm(store, "c", AT + timedelta(hours=5), xid=3)  # forgotten, then armed again
    with conn.transaction():
        pending.write(conn)
    store.committed(pending)
    assert store._dirty == {"a", "c"} and store._deleted == set()
    loaded = timers()
    loaded.load(conn)
    assert set(loaded.timers) == {"a", "b"} and loaded.timers["a"].state == "armed"
    committed(store, conn)
    loaded.load(conn)
    assert loaded.timers["a"].state == "paused" and loaded.timers["c"].due_at == AT + timedelta(hours=5)


def test_due_timers_come_earliest_first_and_a_truncate_forgets_its_tables(
    conn: psycopg.Connection[Any],
) -> None:
    store = timers()
    arm(store, "late", AT + timedelta(hours=2))
    arm(store, "early", AT + timedelta(hours=1))
    arm(store, "project", AT + timedelta(minutes=30), table="public.projects")
    assert store.next_due() == AT + timedelta(minutes=30)
    assert store.forget_table("public.projects") == 1
    committed(store, conn)
    loaded = timers()
    loaded.load(conn)
    assert [t.key for t in loaded.due(AT + timedelta(days=1))] == ["early", "late"]


def test_a_new_slots_bootstrapped_state_is_known_to_the_planner(db_dsn: str) -> None:
    """After `cdc setup`'s bootstrap the statistics know the slot's rows: estimated as none, the
    checkpoints' staged delete joined each of them against the whole staging table (seconds per
    checkpoint on a fresh slot, until autovacuum analyzed the table)."""
    prepare(db_dsn)  # both seeds, then setup with the bootstrap
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM cdc.state_rows WHERE slot_name = 'cdc_events'").fetchone()
        plan = conn.execute(
            "EXPLAIN (FORMAT JSON) SELECT * FROM cdc.state_rows WHERE slot_name = 'cdc_events'"
        ).fetchone()
    assert found is not None and plan is not None
    rows, estimated = int(found[0]), int(plan[0][0]["Plan"]["Plan Rows"])
    assert rows > 10 and estimated >= rows // 2, (rows, estimated)
