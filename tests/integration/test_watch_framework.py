"""The watch loop with a small deriver of the tests' own: state bootstrap, delivery,
checkpoint and resume, and the durable-timer watermark — against a real Postgres."""

from __future__ import annotations

import time

import psycopg
import pytest

from catalog.envelope import EventDraft
from cdc.provision import setup
from cdc.sinks.memory import MemorySink
from cdc.state import make_bootstrap_hook
from cdc.watch import Watcher, WatchOptions
from derivers.base import (
    Derived,
    StateView,
    Timer,
    TimerOps,
    TxView,
    canonical_time,
    declare_reads,
    parse_time,
)

from .conftest import run_sql

pytestmark = pytest.mark.integration

TABLES = ("public.tickets", "public.statuses")
T = "11111111-1111-4111-8111-111111111111"
OPEN = "66666666-6666-4666-8666-666666666661"
CLOSED = "66666666-6666-4666-8666-666666666662"


class StatusDeriver:
    """Status changes, plus a timer at ``due_date`` settled by a close (the SLA shape)."""

    name = "test-status"
    tables = frozenset({"public.tickets"})
    state_tables = frozenset({"public.statuses"})
    reads = declare_reads(
        (
            "public.tickets",
            ("tenant", "ticket_id", "due_date"),
            ("TICKET_STATUS_CHANGED", "TICKET_SLA_STAGE_BREACHED"),
        ),
        ("public.tickets", ("status_id",), ("TICKET_STATUS_CHANGED",)),
        ("public.statuses", ("tenant", "status_id", "is_closed"), ("TICKET_SLA_STAGE_BREACHED",)),
    )

    def derive(self, tx: TxView, state: StateView, timers: TimerOps) -> list[Derived]:
        out = []
        for c in tx.of("public.tickets"):
            row = c.after
            if row is None:
                continue
            key = f"due:{row['tenant']}:{row['ticket_id']}"
            if row["due_date"] is not None:
                timers.arm(
                    key,
                    c,
                    tenant=row["tenant"],
                    subject_id=row["ticket_id"],
                    stage="resolution",
                    due_at=parse_time(row["due_date"]),
                )
            if c.op == "update" and c.changed("status_id"):
                status = state.get("public.statuses", (row["tenant"], row["status_id"]))
                assert status is not None, "status must come from the replicated state"
                if status["is_closed"]:
                    timers.settle(key)
                payload = {
                    "tenantId": row["tenant"],
                    "occurredAt": tx.occurred_at,
                    "ticketId": row["ticket_id"],
                    "previousStatusId": c.before["status_id"],
                    "newStatusId": row["status_id"],
                }  # type: ignore[index]
                out.append(
                    Derived(
                        EventDraft("TICKET_STATUS_CHANGED", row["tenant"], row["ticket_id"], payload),
                        c.position,
                        c.table,
                    )
                )
        return out

    def fire(self, timer: Timer, state: StateView) -> list[EventDraft]:
        due = canonical_time(timer.due_at)
        payload = {
            "tenantId": timer.tenant,
            "occurredAt": due,
            "ticketId": timer.subject_id,
            "slaPolicyId": timer.tenant,
            "stage": timer.stage,
            "breachedAt": due,
            "targetAt": due,
            "overdueBySeconds": 0,
        }
        return [
            EventDraft(
                "TICKET_SLA_STAGE_BREACHED",
                timer.tenant,
                timer.subject_id,
                payload,
                timer_stage=timer.stage,
                due_at=timer.due_at,
            )
        ]


SEED = f"""
INSERT INTO tenants (tenant, client_name, email) VALUES ('{T}', 'Acme', 'a@a.test');
INSERT INTO clients (tenant, client_id, client_name) VALUES ('{T}', '22222222-2222-4222-8222-222222222222', 'C');
INSERT INTO statuses (tenant, status_id, name, status_type, order_number, is_closed) VALUES
  ('{T}', '{OPEN}', 'Open', 'ticket', 1, false), ('{T}', '{CLOSED}', 'Closed', 'ticket', 2, true);
"""


def new_ticket(dsn: str, number: str, due_sql: str = "NULL") -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"INSERT INTO tickets (tenant, ticket_number, status_id, client_id, due_date) VALUES "
            f"('{T}', '{number}', '{OPEN}', '22222222-2222-4222-8222-222222222222', {due_sql}) RETURNING ticket_id::text"
        ).fetchone()
        assert row is not None
        return str(row[0])


def set_status(dsn: str, ticket: str, status: str) -> None:
    run_sql(dsn, f"UPDATE tickets SET status_id = '{status}' WHERE ticket_id = '{ticket}'")


def watch_once(dsn: str, sink: MemorySink | None = None) -> MemorySink:
    sink = sink or MemorySink()
    Watcher(
        WatchOptions(dsn, once=True, heartbeat_interval=0.5, status_interval=1.0), sink, [StatusDeriver()]
    ).run()
    return sink


def seed_and_setup(dsn: str, deriver: StatusDeriver, tables: tuple[str, ...] = TABLES) -> str:
    """Seed data, then the slot with the reference state ``deriver`` reads bootstrapped."""
    run_sql(dsn, SEED)  # statuses exist before the slot: they must come from the snapshot
    setup(
        dsn,
        slot="cdc_events",
        publication="cdc_events",
        tables=tables,
        bootstrap=make_bootstrap_hook([deriver]),
    )
    return dsn


@pytest.fixture
def ready(db_dsn: str) -> str:
    return seed_and_setup(db_dsn, StatusDeriver())


def test_state_from_snapshot_delivery_checkpoint_and_resume(ready: str) -> None:
    ticket = new_ticket(ready, "T-1")
    set_status(ready, ticket, CLOSED)
    first = watch_once(ready)
    assert [e.event_type for e in first.envelopes] == ["TICKET_STATUS_CHANGED"]
    env = first.envelopes[0]
    assert env.payload["newStatusId"] == CLOSED and env.idempotency_key.startswith(
        f"TICKET_STATUS_CHANGED:{T}:{ticket}@"
    )
    assert env.source.table == "public.tickets" and not env.source.timer
    assert watch_once(ready).envelopes == []  # resumes after the checkpoint: nothing again
    set_status(ready, ticket, OPEN)
    again = watch_once(ready)
    assert [e.payload["newStatusId"] for e in again.envelopes] == [OPEN]


def test_timer_fires_once_after_due_time_passed_while_watcher_was_down(ready: str) -> None:
    ticket = new_ticket(ready, "T-2", "now() + interval '2 seconds'")
    assert watch_once(ready).envelopes == []  # armed, not due yet
    time.sleep(2.5)
    fired = watch_once(ready)
    assert [e.event_type for e in fired.envelopes] == ["TICKET_SLA_STAGE_BREACHED"]
    env = fired.envelopes[0]
    assert env.source.timer and env.payload["ticketId"] == ticket
    assert env.idempotency_key.startswith(f"TICKET_SLA_STAGE_BREACHED:{T}:{ticket}:resolution@")
    assert watch_once(ready).envelopes == []  # exactly once


def test_resolution_before_due_prevents_the_breach_even_across_a_stopped_watcher(ready: str) -> None:
    ticket = new_ticket(ready, "T-3", "now() + interval '2 seconds'")
    set_status(ready, ticket, CLOSED)  # resolved before the due time; nobody is watching
    time.sleep(2.5)
    events = watch_once(ready).envelopes
    assert [e.event_type for e in events] == ["TICKET_STATUS_CHANGED"]


def test_moving_the_due_time_moves_the_timer(ready: str) -> None:
    ticket = new_ticket(ready, "T-4", "now() + interval '1 second'")
    run_sql(ready, f"UPDATE tickets SET due_date = now() + interval '1 hour' WHERE ticket_id = '{ticket}'")
    time.sleep(1.5)
    assert watch_once(ready).envelopes == []
    with psycopg.connect(ready) as conn:
        row = conn.execute("SELECT due_at - now() > interval '50 minutes', state FROM cdc.timers").fetchone()
    assert row == (True, "armed")


class NoStateDeriver(StatusDeriver):
    """The same deriver before it needed the statuses table."""

    state_tables = frozenset()


def _bootstrapped_tables(dsn: str) -> list[str] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT bootstrapped_tables FROM cdc.slots WHERE slot_name = 'cdc_events'"
        ).fetchone()
        assert row is not None
        return None if row[0] is None else list(row[0])


def test_a_reference_table_added_after_setup_is_copied_at_start(
    db_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    seed_and_setup(db_dsn, NoStateDeriver())
    assert _bootstrapped_tables(db_dsn) == []
    ticket = new_ticket(db_dsn, "T-1")
    set_status(db_dsn, ticket, CLOSED)
    # StatusDeriver asserts that the status row comes from the replicated state.
    with caplog.at_level("WARNING", logger="cdc.watch"):
        sink = watch_once(db_dsn)
    assert [e.event_type for e in sink.envelopes] == ["TICKET_STATUS_CHANGED"]
    assert _bootstrapped_tables(db_dsn) == ["public.statuses"]
    assert any("public.statuses" in r.getMessage() and "2 rows" in r.getMessage() for r in caplog.records)
    # Recorded: the next start copies nothing, and the stream keeps the table current.
    run_sql(
        db_dsn,
        f"INSERT INTO statuses (tenant, status_id, name, status_type, order_number, is_closed) VALUES "
        f"('{T}', '66666666-6666-4666-8666-666666666663', 'Reopened', 'ticket', 3, false)",
    )
    set_status(db_dsn, ticket, "66666666-6666-4666-8666-666666666663")
    caplog.clear()
    with caplog.at_level("WARNING", logger="cdc.watch"):
        sink = watch_once(db_dsn)
    assert [e.payload["newStatusId"] for e in sink.envelopes] == ["66666666-6666-4666-8666-666666666663"]
    assert not [r for r in caplog.records if "was not in slot" in r.getMessage()]


def test_a_deriver_reading_an_unpublished_table_is_refused(db_dsn: str) -> None:
    from cdc.startup import ReferenceTableNotPublished

    seed_and_setup(db_dsn, NoStateDeriver(), tables=("public.tickets",))
    with pytest.raises(ReferenceTableNotPublished, match=r"public\.statuses"):
        watch_once(db_dsn)


def test_a_reference_table_nobody_kept_current_is_copied_afresh(ready: str) -> None:
    """A run whose derivers do not read a table stops keeping it: its rows are dropped and a
    later reader gets a new copy, never the rows as they were when the table was left."""
    ticket = new_ticket(ready, "T-1")
    watch_once(ready)
    assert _bootstrapped_tables(ready) == ["public.statuses"]
    Watcher(WatchOptions(ready, once=True, heartbeat_interval=0.5), MemorySink(), [NoStateDeriver()]).run()
    assert _bootstrapped_tables(ready) == []
    reopened = "66666666-6666-4666-8666-666666666663"
    run_sql(
        ready,
        f"INSERT INTO statuses (tenant, status_id, name, status_type, order_number, is_closed) VALUES "
        f"('{T}', '{reopened}', 'Reopened', 'ticket', 3, false)",
    )
    Watcher(WatchOptions(ready, once=True, heartbeat_interval=0.5), MemorySink(), [NoStateDeriver()]).run()
    set_status(ready, ticket, reopened)
    sink = watch_once(ready)  # StatusDeriver asserts the new status comes from the state
    assert [e.payload["newStatusId"] for e in sink.envelopes] == [reopened]
    assert _bootstrapped_tables(ready) == ["public.statuses"]
