"""Scheduling events from application-shaped writes, through a real Postgres and the watch loop:
an appointment's life and its dispatch walk, the client portal's three-transaction request with
approval, decline and cancel, and a private block. Every delivered event is listed: exact types,
subjects and payloads, nothing else."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from catalog.envelope import Envelope
from cdc import queries
from cdc.sinks.memory import MemorySink
from cdc.watch import Watcher, WatchOptions
from derivers import default_derivers

from .conftest import run_sql, setup_with_state

pytestmark = pytest.mark.integration

T = "11111111-1111-4111-8111-111111111111"
DANA = "33333333-3333-4333-8333-333333333333"
LEE = "44444444-4444-4444-8444-444444444444"
KIM = "34343434-3434-4343-8343-343434343434"
CONTACT = "56565656-5656-4565-8565-565656565656"
TICKET = "99999999-9999-4999-8999-999999999991"
REQ_TICKET = "99999999-9999-4999-8999-999999999992"
A1, A2, A3 = (f"a0000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
P1, P2, P3 = (f"b0000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
R1, R2, R3 = (f"c0000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
BLOCK, BLOCK2, BLOCK3 = (f"d0000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
S1, S2, A4 = (f"f0000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
SERVICE = "e0000000-0000-4000-8000-000000000001"

START, END = "2026-03-02T09:00:00.000Z", "2026-03-02T10:00:00.000Z"
START2, END2 = "2026-03-03T14:00:00.000Z", "2026-03-03T15:30:00.000Z"
CREATED = "2026-03-01T08:00:00.000Z"
AT = "<commit time>"  # a payload value equal to its transaction's commit time


def tx(dsn: str, *statements: str, actor: str | None = None) -> None:
    """One application transaction; ``actor`` adds the ``cdc.context`` opt-in message."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        if actor is not None:
            conn.execute(
                "SELECT pg_logical_emit_message(true, 'cdc.context', %s)", (f'{{"actorUserId": "{actor}"}}',)
            )
        for s in statements:
            conn.execute(s)


def insert_entry(
    entry_id: str,
    work_item_type: str,
    work_item_id: str | None,
    *,
    private: bool = False,
    start: str | None = START,
    end: str | None = END,
) -> str:
    item = f"'{work_item_id}'" if work_item_id else "NULL"
    times = ", ".join(f"'{t}'" if t else "NULL" for t in (start, end))
    return (
        "INSERT INTO schedule_entries (tenant, entry_id, title, work_item_id, scheduled_start, scheduled_end, "
        "status, work_item_type, is_private, created_at, updated_at) VALUES "
        f"('{T}', '{entry_id}', 'Visit', {item}, {times}, 'scheduled', '{work_item_type}', "
        f"{str(private).lower()}, '{CREATED}', '{CREATED}')"
    )


OVERNIGHT_START, OVERNIGHT_END = "2026-03-02T23:00:00.000Z", "2026-03-03T01:00:00.000Z"


def series_sql(entry_id: str) -> str:
    """A daily series (its master row) from 23:00 to 01:00 on a ticket."""
    return (
        "INSERT INTO schedule_entries (tenant, entry_id, title, work_item_id, scheduled_start, scheduled_end, "
        "status, work_item_type, is_recurring, recurrence_pattern, created_at, updated_at) VALUES "
        f"('{T}', '{entry_id}', 'Visit', '{TICKET}', '{OVERNIGHT_START}', '{OVERNIGHT_END}', 'scheduled', "
        f"'ticket', true, '{{\"frequency\": \"daily\"}}', '{CREATED}', '{CREATED}')"
    )


def add(entry_id: str, *users: str) -> str:
    rows = ", ".join(f"('{T}', '{entry_id}', '{u}')" for u in users)
    return f"INSERT INTO schedule_entry_assignees (tenant, entry_id, user_id) VALUES {rows}"


def remove(entry_id: str, *users: str) -> str:
    listed = ", ".join(f"'{u}'" for u in users)
    return f"DELETE FROM schedule_entry_assignees WHERE tenant = '{T}' AND entry_id = '{entry_id}' AND user_id IN ({listed})"


def update(entry_id: str, assignments: str) -> str:
    return f"UPDATE schedule_entries SET {assignments}, updated_at = now() WHERE tenant = '{T}' AND entry_id = '{entry_id}'"


def delete(entry_id: str) -> str:
    return f"DELETE FROM schedule_entries WHERE tenant = '{T}' AND entry_id = '{entry_id}'"


def prepare(dsn: str) -> None:
    run_sql(dsn, queries.raw("sample/workload", "seed"))
    setup_with_state(dsn)


def drain(dsn: str) -> list[Envelope]:
    sink = MemorySink()
    Watcher(
        WatchOptions(dsn, slot="cdc_events", once=True, heartbeat_interval=0.5, status_interval=1.0),
        sink,
        default_derivers(),
    ).run()
    return sink.envelopes


def events(envs: list[Envelope]) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, key subject[:discriminator], payload without tenant and occurredAt), commit-time
    values as AT; every payload's tenant and occurredAt, and the key's type, tenant and LSN, are
    checked here."""
    out = []
    for e in envs:
        payload = dict(e.payload)
        assert payload.pop("tenantId") == T
        assert payload.pop("occurredAt") == e.source.commit_time == e.timestamp
        head, lsn = e.idempotency_key.split("@")
        assert lsn == e.source.lsn
        event_type, tenant, subject = head.split(":", 2)  # subject, then ":discriminator" if any
        assert (event_type, tenant) == (e.event_type, T)
        out.append(
            (e.event_type, subject, {k: AT if v == e.source.commit_time else v for k, v in payload.items()})
        )
    return out


def dispatched(
    entry_id: str, technician: str, ticket: str = TICKET, **extra: Any
) -> tuple[str, str, dict[str, Any]]:
    return (
        "TECHNICIAN_DISPATCHED",
        f"{entry_id}:{technician}",
        {
            "appointmentId": entry_id,
            "ticketId": ticket,
            "technicianUserId": technician,
            "dispatchedAt": AT,
            **extra,
        },
    )


def walk(event_type: str, at_field: str, entry_id: str, technician: str) -> tuple[str, str, dict[str, Any]]:
    return (
        event_type,
        f"{entry_id}:{technician}",
        {"appointmentId": entry_id, "ticketId": TICKET, "technicianUserId": technician, at_field: AT},
    )


def test_an_appointments_life_and_its_dispatch_walk(db_dsn: str) -> None:
    prepare(db_dsn)
    # created with two technicians (the MSP calendar: entry, then its assignee rows)
    tx(db_dsn, insert_entry(A1, "ticket", TICKET), add(A1, DANA, LEE))
    tx(db_dsn, update(A1, f"scheduled_start = '{START2}', scheduled_end = '{END2}'"))
    # reassigned to one technician, then to another (the app deletes and re-inserts the rows)
    tx(db_dsn, remove(A1, DANA, LEE), add(A1, KIM))
    tx(db_dsn, remove(A1, KIM), add(A1, LEE), actor=DANA)
    tx(db_dsn, remove(A1, LEE), add(A1, LEE))  # churn: the same technician again
    tx(db_dsn, update(A1, "status = 'en_route'"))
    tx(db_dsn, update(A1, "status = 'arrived'"))
    tx(db_dsn, update(A1, "status = 'checked_out'"))
    tx(db_dsn, update(A1, "status = 'completed'"))
    # a second appointment: the customer did not show
    tx(db_dsn, insert_entry(A2, "ticket", TICKET), add(A2, KIM))
    tx(db_dsn, update(A2, "status = 'No Show'"))
    # a third: cancelled, later deleted (canceled once)
    tx(db_dsn, insert_entry(A3, "ticket", TICKET))
    tx(db_dsn, update(A3, "status = 'cancelled'"))
    tx(db_dsn, delete(A3))
    # the second deleted while still open
    tx(db_dsn, remove(A2, KIM), delete(A2))
    # a daily series running past midnight; one occurrence moved, on the calendar's last day
    # (no occurrence time can be computed: the master's), then one occurrence deleted in a
    # transaction that also books an unrelated appointment
    tx(db_dsn, series_sql(S1), add(S1, DANA))
    tx(
        db_dsn,
        update(S1, """recurrence_pattern = '{"frequency": "daily", "exceptions": ["9999-12-31"]}'"""),
        insert_entry(S2, "ticket", TICKET, start=START2, end=END2),
        add(S2, DANA),
    )
    tx(
        db_dsn,
        update(
            S1,
            """recurrence_pattern = '{"frequency": "daily", "exceptions": ["9999-12-31", "2026-03-05"]}'""",
        ),
        insert_entry(A4, "ticket", REQ_TICKET),
    )
    # an assignee row moved to another entry by UPDATE
    tx(
        db_dsn,
        f"UPDATE schedule_entry_assignees SET entry_id = '{A4}' WHERE tenant = '{T}' AND entry_id = '{S2}'",
    )

    def base(entry_id: str) -> dict[str, Any]:
        return {"appointmentId": entry_id, "ticketId": TICKET}

    created = {"startAt": START, "endAt": END, "timezone": "UTC", "createdAt": CREATED}
    dana = {"actorType": "USER", "actorUserId": DANA}
    snapshot = {
        "id": A1,
        "title": "Visit",
        "scheduledStart": START2,
        "scheduledEnd": END2,
        "status": "scheduled",
        "workItemId": TICKET,
        "workItemType": "ticket",
        "isRecurring": False,
        "recurrencePattern": None,
        "isPrivate": False,
    }
    assert events(drain(db_dsn)) == [
        ("APPOINTMENT_CREATED", A1, {**base(A1), **created}),
        dispatched(A1, DANA),
        dispatched(A1, LEE),
        (
            "APPOINTMENT_RESCHEDULED",
            A1,
            {
                **base(A1),
                "previousStartAt": START,
                "previousEndAt": END,
                "newStartAt": START2,
                "newEndAt": END2,
                "timezone": "UTC",
                "rescheduledAt": AT,
            },
        ),
        (
            "APPOINTMENT_ASSIGNED",
            A1,
            {**base(A1), "newAssigneeId": KIM, "newAssigneeType": "user", "assignedAt": AT},
        ),
        dispatched(A1, KIM),
        (
            "SCHEDULE_ENTRY_UPDATED",
            A1,
            {
                **dana,
                "entryId": A1,
                "userId": DANA,
                "changes": {
                    "before": {**snapshot, "assignedUserIds": [KIM]},
                    "after": {**snapshot, "assignedUserIds": [LEE]},
                },
            },
        ),
        (
            "APPOINTMENT_ASSIGNED",
            A1,
            {
                **dana,
                **base(A1),
                "previousAssigneeId": KIM,
                "previousAssigneeType": "user",
                "newAssigneeId": LEE,
                "newAssigneeType": "user",
                "assignedAt": AT,
            },
        ),
        dispatched(A1, LEE, dispatchedByUserId=DANA, **dana),
        walk("TECHNICIAN_EN_ROUTE", "startedAt", A1, LEE),
        walk("TECHNICIAN_ARRIVED", "arrivedAt", A1, LEE),
        walk("TECHNICIAN_CHECKED_OUT", "checkedOutAt", A1, LEE),
        ("APPOINTMENT_COMPLETED", A1, {**base(A1), "completedAt": AT}),
        (
            "APPOINTMENT_CREATED",
            A2,
            {**base(A2), **created, "assigneeId": KIM, "assigneeType": "user"},
        ),
        (
            "APPOINTMENT_ASSIGNED",
            A2,
            {**base(A2), "newAssigneeId": KIM, "newAssigneeType": "user", "assignedAt": AT},
        ),
        dispatched(A2, KIM),
        ("APPOINTMENT_NO_SHOW", A2, {**base(A2), "markedAt": AT, "party": "customer"}),
        ("APPOINTMENT_CREATED", A3, {**base(A3), **created}),
        ("APPOINTMENT_CANCELED", A3, {**base(A3), "canceledAt": AT}),
        ("APPOINTMENT_CANCELED", A2, {**base(A2), "canceledAt": AT, "reason": "Deleted"}),
        (
            "APPOINTMENT_CREATED",
            S1,
            {
                **base(S1),
                **created,
                "startAt": OVERNIGHT_START,
                "endAt": OVERNIGHT_END,
                "assigneeId": DANA,
                "assigneeType": "user",
            },
        ),
        (
            "APPOINTMENT_ASSIGNED",
            S1,
            {**base(S1), "newAssigneeId": DANA, "newAssigneeType": "user", "assignedAt": AT},
        ),
        dispatched(S1, DANA),
        (
            "APPOINTMENT_RESCHEDULED",
            S2,
            {
                **base(S2),
                "previousStartAt": OVERNIGHT_START,
                "previousEndAt": OVERNIGHT_END,
                "newStartAt": START2,
                "newEndAt": END2,
                "timezone": "UTC",
                "rescheduledAt": AT,
            },
        ),
        ("APPOINTMENT_CANCELED", S1, {**base(S1), "canceledAt": AT, "reason": "Deleted"}),
        ("APPOINTMENT_CREATED", A4, {"appointmentId": A4, "ticketId": REQ_TICKET, **created}),
        (
            "APPOINTMENT_ASSIGNED",
            A4,
            {
                "appointmentId": A4,
                "ticketId": REQ_TICKET,
                "newAssigneeId": DANA,
                "newAssigneeType": "user",
                "assignedAt": AT,
            },
        ),
        dispatched(A4, DANA, ticket=REQ_TICKET),
    ]
    assert drain(db_dsn) == []


def request_sql(request_id: str, preferred: str) -> str:
    return (
        "INSERT INTO appointment_requests (appointment_request_id, tenant, contact_id, service_id, requested_date, "
        "requested_time, requested_duration, preferred_assigned_user_id, status, ticket_id, is_authenticated, "
        "requester_timezone) VALUES "
        f"('{request_id}', '{T}', '{CONTACT}', '{SERVICE}', '2026-03-02', '09:00', 60, '{preferred}', 'pending', "
        f"'{REQ_TICKET}', true, 'UTC')"
    )


def portal_request(dsn: str, request_id: str, entry_id: str, technician: str) -> None:
    """The client portal's three transactions: request; entry with its technician; the link."""
    tx(dsn, request_sql(request_id, technician))
    tx(dsn, insert_entry(entry_id, "appointment_request", request_id), add(entry_id, technician))
    tx(
        dsn,
        f"UPDATE appointment_requests SET schedule_entry_id = '{entry_id}', updated_at = now() "
        f"WHERE tenant = '{T}' AND appointment_request_id = '{request_id}'",
    )


def answer(request_id: str, assignments: str) -> str:
    return (
        f"UPDATE appointment_requests SET {assignments}, updated_at = now() "
        f"WHERE tenant = '{T}' AND appointment_request_id = '{request_id}'"
    )


def test_portal_requests_answered_and_a_private_block(db_dsn: str) -> None:
    prepare(db_dsn)
    portal_request(db_dsn, R1, P1, DANA)
    tx(db_dsn, answer(R1, f"status = 'approved', approved_by_user_id = '{LEE}', approved_at = now()"))
    portal_request(db_dsn, R2, P2, LEE)
    tx(
        db_dsn,
        remove(P2, LEE),
        delete(P2),
        answer(R2, "status = 'declined', declined_reason = 'Fully booked', schedule_entry_id = NULL"),
    )
    portal_request(db_dsn, R3, P3, KIM)
    tx(
        db_dsn,
        remove(P3, KIM),
        delete(P3),
        answer(R3, "status = 'cancelled', declined_reason = 'Cancelled by client', schedule_entry_id = NULL"),
    )
    # a private ad-hoc block: created, made public (no longer a block), deleted (nothing more)
    tx(db_dsn, insert_entry(BLOCK, "ad_hoc", None, private=True), add(BLOCK, KIM))
    tx(db_dsn, update(BLOCK, "is_private = false"))
    tx(db_dsn, remove(BLOCK, KIM), delete(BLOCK))
    # blocks without times: one given its times (a block from then on), one deleted without them
    tx(db_dsn, insert_entry(BLOCK2, "ad_hoc", None, private=True, start=None, end=None), add(BLOCK2, KIM))
    tx(db_dsn, update(BLOCK2, f"scheduled_start = '{START2}', scheduled_end = '{END2}'"))
    tx(db_dsn, remove(BLOCK2, KIM), delete(BLOCK2))
    tx(db_dsn, insert_entry(BLOCK3, "ad_hoc", None, private=True, start=None, end=None), add(BLOCK3, KIM))
    tx(db_dsn, remove(BLOCK3, KIM), delete(BLOCK3))

    def portal_created(entry_id: str, technician: str) -> list[tuple[str, str, dict[str, Any]]]:
        base = {"appointmentId": entry_id, "ticketId": REQ_TICKET}
        return [
            (
                "APPOINTMENT_CREATED",
                entry_id,
                {
                    **base,
                    "startAt": START,
                    "endAt": END,
                    "timezone": "UTC",
                    "assigneeId": technician,
                    "assigneeType": "user",
                    "createdAt": CREATED,
                },
            ),
            (
                "APPOINTMENT_ASSIGNED",
                entry_id,
                {**base, "newAssigneeId": technician, "newAssigneeType": "user", "assignedAt": AT},
            ),
        ]

    def canceled(entry_id: str, reason: str) -> tuple[str, str, dict[str, Any]]:
        return (
            "APPOINTMENT_CANCELED",
            entry_id,
            {"appointmentId": entry_id, "ticketId": REQ_TICKET, "canceledAt": AT, "reason": reason},
        )

    assert events(drain(db_dsn)) == [
        *portal_created(P1, DANA),
        # on approval, not while pending; by the approver the request row records
        dispatched(P1, DANA, ticket=REQ_TICKET, dispatchedByUserId=LEE, actorType="USER", actorUserId=LEE),
        *portal_created(P2, LEE),
        canceled(P2, "Fully booked"),
        *portal_created(P3, KIM),
        canceled(P3, "Cancelled by client"),
        (
            "SCHEDULE_BLOCK_CREATED",
            BLOCK,
            {
                "scheduleBlockId": BLOCK,
                "ownerId": KIM,
                "ownerType": "user",
                "startAt": START,
                "endAt": END,
                "timezone": "UTC",
                "createdAt": CREATED,
                "reason": "Visit",
            },
        ),
        (
            "SCHEDULE_BLOCK_DELETED",
            BLOCK,
            {"scheduleBlockId": BLOCK, "deletedAt": AT, "reason": "No longer private ad-hoc block"},
        ),
        (
            "SCHEDULE_BLOCK_CREATED",
            BLOCK2,
            {
                "scheduleBlockId": BLOCK2,
                "ownerId": KIM,
                "ownerType": "user",
                "startAt": START2,
                "endAt": END2,
                "timezone": "UTC",
                "reason": "Visit",
            },
        ),
        ("SCHEDULE_BLOCK_DELETED", BLOCK2, {"scheduleBlockId": BLOCK2, "deletedAt": AT, "reason": "Deleted"}),
    ]
    assert drain(db_dsn) == []
