"""Ticket events from application-shaped writes, through a real Postgres and the watch loop."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import orjson
import psycopg
import pytest

from catalog.envelope import Envelope
from cdc import faults, queries
from cdc.sinks.memory import MemorySink
from cdc.watch import Watcher, WatchOptions
from derivers import default_derivers
from derivers.base import canonical_time

from .conftest import in_one_transaction, run_sql, setup_with_state

pytestmark = pytest.mark.integration

T = "11111111-1111-4111-8111-111111111111"
T1 = "99999999-9999-4999-8999-999999999991"
T3 = "99999999-9999-4999-8999-999999999993"
OPEN = "66666666-6666-4666-8666-666666666661"
CLOSED = "66666666-6666-4666-8666-666666666663"
POLICY = "abababab-abab-4bab-8bab-abababababab"

WORKLOAD = (
    "create_ticket", "assign", "add_agent", "status_in_progress", "priority_high", "internal_note",
    "customer_reply", "time_entry", "bundle", "bundle_attach", "close", "reopen",
)  # fmt: skip


def step(dsn: str, name: str) -> None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(queries.raw("sample/workload", name))


def prepare(dsn: str, *slots: str) -> None:
    run_sql(dsn, queries.raw("sample/workload", "seed"))
    for slot in slots:
        setup_with_state(dsn, slot=slot)


def drain(dsn: str, slot: str = "cdc_events", **kw: Any) -> list[Envelope]:
    sink = MemorySink()
    opts = WatchOptions(dsn, slot=slot, once=True, heartbeat_interval=0.5, status_interval=1.0, **kw)
    Watcher(opts, sink, default_derivers()).run()
    return sink.envelopes


def by_key(envs: list[Envelope]) -> dict[str, bytes]:
    return {e.idempotency_key: _without_slot(e) for e in envs}


def _without_slot(e: Envelope) -> bytes:
    d = e.to_dict()
    d["source"] = {k: v for k, v in d["source"].items() if k != "slot"}
    return orjson.dumps(d, option=orjson.OPT_SORT_KEYS)


def test_restart_mid_workload_delivers_the_same_events(db_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare(db_dsn, "straight", "bumpy")
    for name in WORKLOAD:
        step(db_dsn, name)
    straight = drain(db_dsn, "straight")
    assert len(straight) > 20

    class Crash(Exception):
        pass

    crashes = {"n": 0}

    def crash_after_second_sink_write(point: str) -> None:
        if point == "watch.after_sink":
            crashes["n"] += 1
            if crashes["n"] == 2:
                raise Crash

    delivered: list[Envelope] = []
    monkeypatch.setattr(faults, "reached", crash_after_second_sink_write)
    sink = MemorySink()
    with pytest.raises(Crash):
        Watcher(
            WatchOptions(db_dsn, slot="bumpy", once=True, batch_max_transactions=3), sink, default_derivers()
        ).run()
    delivered += sink.envelopes
    monkeypatch.setattr(faults, "reached", lambda point: None)
    delivered += drain(db_dsn, "bumpy", batch_max_transactions=3)
    assert len(delivered) > len(straight)  # the crashed batch came again (at-least-once sink) ...
    assert by_key(delivered) == by_key(straight)  # ... with the same keys, ids and bytes


def _types(envs: list[Envelope], ticket: str) -> list[str]:
    return [e.event_type for e in envs if e.payload.get("ticketId") == ticket]


def sla_ticket(dsn: str, due_sql: str) -> None:
    run_sql(
        dsn,
        queries.raw("sample/workload", "sla_ticket").replace("now() + interval '2 seconds'", due_sql),
    )


def close_t3(dsn: str) -> None:
    run_sql(
        dsn,
        f"UPDATE tickets SET status_id = '{CLOSED}', is_closed = true, closed_at = now(), "
        f"sla_resolution_at = now(), sla_resolution_met = true WHERE ticket_id = '{T3}'",
    )


def test_sla_threshold_then_breach_fire_once_when_due_passes_with_the_ticket_open(db_dsn: str) -> None:
    prepare(db_dsn, "cdc_events")
    sla_ticket(db_dsn, "now() + interval '2 seconds'")
    first = drain(db_dsn)
    assert _types(first, T3) == ["TICKET_CREATED", "TICKET_SLA_STAGE_ENTERED"]
    entered = first[1]
    time.sleep(2.5)
    second = drain(db_dsn)
    assert [e.event_type for e in second] == ["TICKET_SLA_THRESHOLD_REACHED", "TICKET_SLA_STAGE_BREACHED"]
    threshold, breach = second
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute(
            "SELECT sla_started_at, sla_resolution_due_at FROM tickets WHERE ticket_id = %s", (T3,)
        ).fetchone()
    assert row is not None
    started, due = row
    # 75 % of the stage's time (the default share), in whole milliseconds
    at = canonical_time(
        due - timedelta(milliseconds=round((due - started) / timedelta(milliseconds=1) * 0.25))
    )
    assert threshold.idempotency_key == f"TICKET_SLA_THRESHOLD_REACHED:{T}:{T3}:resolution@{at}"
    assert threshold.timestamp == at < canonical_time(due)
    assert threshold.payload == {
        "tenantId": T,
        "occurredAt": at,
        "ticketId": T3,
        "phase": "resolution",
        "thresholdPercent": 75,
        "slaPolicyId": POLICY,
        "targetAt": canonical_time(due),
    }
    # the source is the change that armed it: the ticket's insert, as for the breach
    for fired in (threshold, breach):
        assert fired.source.timer and fired.source.table == "public.tickets"
        assert (fired.source.lsn, fired.source.xid) == (entered.source.lsn, entered.source.xid)
    assert breach.payload["stage"] == "resolution"
    assert breach.payload["slaPolicyId"] == POLICY
    assert breach.timestamp == breach.payload["targetAt"] == canonical_time(due)  # occurredAt = the due time
    close_t3(db_dsn)
    assert _types(drain(db_dsn), T3) == [
        "TICKET_STATUS_CHANGED",
        "TICKET_CLOSED",
    ]  # one verdict, no second threshold
    assert drain(db_dsn) == []


def test_no_breach_when_resolved_before_due_even_with_the_watcher_stopped(db_dsn: str) -> None:
    prepare(db_dsn, "cdc_events")
    sla_ticket(db_dsn, "now() + interval '2 seconds'")
    close_t3(db_dsn)  # resolved before the due time, nobody watching
    time.sleep(2.5)
    types = _types(drain(db_dsn), T3)
    assert "TICKET_SLA_STAGE_BREACHED" not in types
    assert "TICKET_SLA_STAGE_MET" in types


def test_breach_fires_after_restart_when_the_watcher_was_down_at_the_due_time(db_dsn: str) -> None:
    prepare(db_dsn, "cdc_events")
    sla_ticket(db_dsn, "now() + interval '2 seconds'")
    assert "TICKET_SLA_STAGE_ENTERED" in _types(drain(db_dsn), T3)  # armed, then the watcher stops
    time.sleep(2.5)
    close_t3(db_dsn)  # a resolution committed after the due time
    after = _types(drain(db_dsn), T3)
    # on catch-up the timer fires before the later resolution is derived: BREACHED, no MET
    assert "TICKET_SLA_STAGE_BREACHED" in after and "TICKET_SLA_STAGE_MET" not in after
    assert after.index("TICKET_SLA_STAGE_BREACHED") < after.index("TICKET_CLOSED")


def test_moving_the_due_time_moves_the_timer(db_dsn: str) -> None:
    prepare(db_dsn, "cdc_events")
    sla_ticket(db_dsn, "now() + interval '1 second'")
    run_sql(
        db_dsn,
        f"UPDATE tickets SET sla_resolution_due_at = now() + interval '3 seconds' WHERE ticket_id = '{T3}'",
    )
    time.sleep(1.5)
    assert "TICKET_SLA_STAGE_BREACHED" not in _types(drain(db_dsn), T3)  # the old due time passed
    time.sleep(2.0)
    fired = [e for e in drain(db_dsn) if e.event_type == "TICKET_SLA_STAGE_BREACHED"]
    assert len(fired) == 1
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT sla_resolution_due_at FROM tickets WHERE ticket_id = %s", (T3,)).fetchone()
    assert row is not None
    assert fired[0].payload["targetAt"] == canonical_time(row[0])


def test_paused_sla_does_not_breach(db_dsn: str) -> None:
    prepare(db_dsn, "cdc_events")
    sla_ticket(db_dsn, "now() + interval '2 seconds'")
    run_sql(db_dsn, f"UPDATE tickets SET sla_paused_at = now() WHERE ticket_id = '{T3}'")
    time.sleep(2.5)
    assert "TICKET_SLA_STAGE_BREACHED" not in _types(drain(db_dsn), T3)


def test_breach_fires_in_a_running_watcher_from_its_heartbeat(db_dsn: str) -> None:
    """No restart in between: the timer armed by a live transaction fires from the heartbeat."""
    import threading

    from cdc.tail import StopFlag

    prepare(db_dsn, "cdc_events")
    sink = MemorySink()
    stop = StopFlag()
    watcher = Watcher(
        WatchOptions(db_dsn, heartbeat_interval=0.3, status_interval=1.0, batch_max_delay=0.05),
        sink,
        default_derivers(),
    )
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        sla_ticket(db_dsn, "now() + interval '1 second'")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "TICKET_SLA_STAGE_BREACHED" not in _types(sink.envelopes, T3):
            time.sleep(0.1)
    finally:
        stop.stopped = True
        thread.join(30)
    assert _types(sink.envelopes, T3) == [
        "TICKET_CREATED",
        "TICKET_SLA_STAGE_ENTERED",
        "TICKET_SLA_THRESHOLD_REACHED",
        "TICKET_SLA_STAGE_BREACHED",
    ]


def test_a_recreated_slot_starts_fresh_instead_of_at_the_old_checkpoint(db_dsn: str) -> None:
    prepare(db_dsn, "cdc_events")
    step(db_dsn, "create_ticket")
    assert drain(db_dsn)  # the checkpoint moves past the ticket's creation
    run_sql(db_dsn, "SELECT pg_drop_replication_slot('cdc_events')")  # lost, e.g. in a failover
    # the store outlived a server whose WAL went further (a lagging standby was promoted)
    run_sql(db_dsn, "UPDATE cdc.checkpoints SET lsn = 'FF/0' WHERE slot_name = 'cdc_events'")
    report = setup_with_state(db_dsn)
    assert any("discard the old checkpoint" in line for line in report.changes)
    step(db_dsn, "assign")
    assert [e.event_type for e in drain(db_dsn)] == ["TICKET_ASSIGNED"]


def test_a_breach_names_the_change_that_armed_it_not_the_first_of_its_transaction(db_dsn: str) -> None:
    """The transaction's FIRST change is an audit row; its ticket update then starts an SLA
    stage. The breach's source is that ticket change (DESIGN §4), with ``"timer": true``."""
    prepare(db_dsn, "cdc_events")
    step(db_dsn, "create_ticket")
    policy = "abababab-abab-4bab-8bab-abababababab"
    in_one_transaction(
        db_dsn,
        "INSERT INTO ticket_audit_logs (tenant, ticket_id, event_type, entity_type, actor_type, actor_user_id, "
        f"source, occurred_at) VALUES ('{T}', '{T1}', 'TICKET_UPDATED', 'ticket', 'user', "
        "'33333333-3333-4333-8333-333333333333', 'ui', now())",
        # already overdue: the watcher's own heartbeat right after it moves the watermark past it
        f"UPDATE tickets SET sla_policy_id = '{policy}', sla_started_at = now(), "
        f"sla_resolution_due_at = now() - interval '1 minute' WHERE ticket_id = '{T1}'",
    )
    envs = drain(db_dsn)
    # due before it started: a stage without time has no threshold (derivers.ticket_sla)
    assert _types(envs, T1)[-2:] == ["TICKET_SLA_STAGE_ENTERED", "TICKET_SLA_STAGE_BREACHED"]
    entered, breach = (e for e in envs if e.payload.get("slaPolicyId") == policy)
    assert breach.source.table == "public.tickets"
    assert breach.source.timer and not entered.source.timer
    armed = entered.source  # the change-driven event of the same change: its transaction's source
    assert (breach.source.lsn, breach.source.xid, breach.source.commit_time) == (
        armed.lsn,
        armed.xid,
        armed.commit_time,
    )


# --- comment edits and deletes, ticket deletion --------------------------------------------------------

T5 = "99999999-9999-4999-8999-999999999995"
C1, C2, C5 = (f"cccccccc-cccc-4ccc-8ccc-ccccccccccc{n}" for n in (1, 2, 9))
DANA = "33333333-3333-4333-8333-333333333333"
LEE = "44444444-4444-4444-8444-444444444444"


def acts(user_id: str) -> str:
    """The application's opt-in: who acts in this transaction (one line in its transaction)."""
    return f"SELECT pg_logical_emit_message(true, 'cdc.context', '{{\"actorUserId\": \"{user_id}\"}}')"


def comment_sql(comment_id: str, set_sql: str) -> str:
    return f"UPDATE comments SET {set_sql}, updated_at = now() WHERE tenant = '{T}' AND comment_id = '{comment_id}'"


def audit_sql(event_type: str, user_id: str) -> str:
    return (
        "INSERT INTO ticket_audit_logs (tenant, ticket_id, event_type, entity_type, actor_type, actor_user_id, "
        f"source, occurred_at) VALUES ('{T}', '{T1}', '{event_type}', 'comment', 'user', '{user_id}', 'ui', now())"
    )


T5_WITH_COMMENT = (
    "INSERT INTO tickets (tenant, ticket_id, ticket_number, title, status_id, board_id, client_id, entered_by, "
    f"entered_at) VALUES ('{T}', '{T5}', 'T-1005', 'Duplicate of T-1001', '{OPEN}', "
    f"'70707070-7070-4707-8707-707070707070', '22222222-2222-4222-8222-222222222222', '{DANA}', now())",
    "INSERT INTO comment_threads (tenant, thread_id, ticket_id, root_comment_id, is_internal) "
    f"VALUES ('{T}', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa9', '{T5}', '{C5}', false)",
    "INSERT INTO comments (tenant, comment_id, ticket_id, user_id, note, is_internal, is_resolution, author_type, "
    f"thread_id) VALUES ('{T}', '{C5}', '{T5}', '{DANA}', 'Same printer.', false, false, 'internal', "
    "'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa9')",
)
# deleteTicket: its comments and threads, then the ticket
DELETE_T5 = (
    f"DELETE FROM comments WHERE tenant = '{T}' AND ticket_id = '{T5}'",
    f"DELETE FROM comment_threads WHERE tenant = '{T}' AND ticket_id = '{T5}'",
    f"DELETE FROM tickets WHERE tenant = '{T}' AND ticket_id = '{T5}'",
)


def test_comment_edits_and_deletes_and_ticket_deletion(db_dsn: str) -> None:
    prepare(db_dsn, "cdc_events")
    for name in ("create_ticket", "internal_note", "customer_reply"):
        step(db_dsn, name)
    in_one_transaction(db_dsn, *T5_WITH_COMMENT)
    drain(db_dsn)  # their creation events: other tests cover them
    in_one_transaction(
        db_dsn,
        comment_sql(C1, "note = 'Extinguisher applied twice.'"),
        audit_sql("TICKET_COMMENT_UPDATED", LEE),
    )
    in_one_transaction(db_dsn, comment_sql(C2, "note = 'It is smoking again.'"))  # nobody says who: no event
    in_one_transaction(
        db_dsn, acts(DANA), comment_sql(C1, "note = '[deleted]', deleted_at = now()")
    )  # has replies
    in_one_transaction(db_dsn, f"DELETE FROM comments WHERE tenant = '{T}' AND comment_id = '{C2}'")
    in_one_transaction(
        db_dsn, *DELETE_T5
    )  # nobody says who deleted it: no TICKET_DELETED (userId is required), so its comment's deletion
    in_one_transaction(db_dsn, *T5_WITH_COMMENT)
    in_one_transaction(db_dsn, acts(DANA), *DELETE_T5)
    got = drain(db_dsn)

    def body(env: Envelope) -> dict[str, Any]:
        assert env.timestamp == env.payload["occurredAt"] == env.source.commit_time
        assert env.payload["tenantId"] == T
        return {k: v for k, v in env.payload.items() if k not in ("tenantId", "occurredAt")}

    assert [(e.event_type, e.payload["ticketId"]) for e in got] == [
        ("TICKET_COMMENT_UPDATED", T1),
        ("TICKET_COMMENT_DELETED", T1),
        ("TICKET_COMMENT_DELETED", T1),
        ("TICKET_COMMENT_DELETED", T5),  # deleted with T5, whose deletion nobody reported
        # T5 again: created, then deleted with its comment (no COMMENT_DELETED for it)
        ("TICKET_CREATED", T5),
        ("TICKET_MESSAGE_ADDED", T5),
        ("TICKET_COMMENT_ADDED", T5),
        ("TICKET_DELETED", T5),
    ]
    edited, soft_deleted, hard_deleted, with_ticket, deleted = got[0], got[1], got[2], got[3], got[7]
    assert body(edited) == {
        "actorType": "USER",
        "actorUserId": LEE,  # the ticket's audit row of the transaction
        "ticketId": T1,
        "userId": LEE,
        "commentId": C1,
        "oldComment": {"id": C1, "content": "Extinguisher applied.", "author": LEE, "isInternal": True},
        "newComment": {"id": C1, "content": "Extinguisher applied twice.", "author": LEE, "isInternal": True},
    }
    assert edited.idempotency_key == f"TICKET_COMMENT_UPDATED:{T}:{T1}:{C1}@{edited.source.lsn}"
    assert body(soft_deleted) == {
        "actorType": "USER",
        "actorUserId": DANA,
        "ticketId": T1,
        "commentId": C1,
        "userId": DANA,
        "isInternal": True,
    }
    assert body(hard_deleted) == {"ticketId": T1, "commentId": C2, "isInternal": False}  # no actor known
    assert hard_deleted.idempotency_key == f"TICKET_COMMENT_DELETED:{T}:{T1}:{C2}@{hard_deleted.source.lsn}"
    assert body(with_ticket) == {"ticketId": T5, "commentId": C5, "isInternal": False}
    assert body(deleted) == {
        "actorType": "USER",
        "actorUserId": DANA,
        "ticketId": T5,
        "userId": DANA,
        "ticketNumber": "T-1005",
        "title": "Duplicate of T-1001",
    }
    assert deleted.idempotency_key == f"TICKET_DELETED:{T}:{T5}@{deleted.source.lsn}"
    assert deleted.source.table == "public.tickets"
    assert drain(db_dsn) == []
