"""The time-entry family through a real Postgres and the watch loop: a timer session's life from
start to approval, SQL shaped like the application's writes (derivers.time_entries)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import in_one_transaction
from .test_watch_tickets import drain, prepare, step

pytestmark = pytest.mark.integration

T = "11111111-1111-4111-8111-111111111111"
T1 = "99999999-9999-4999-8999-999999999991"
DANA, LEE = "33333333-3333-4333-8333-333333333333", "44444444-4444-4444-8444-444444444444"
E1, E2 = "eeeeeeee-eeee-4eee-8eee-eeeeeeeeee11", "eeeeeeee-eeee-4eee-8eee-eeeeeeeeee12"
SHEET = "dddddddd-dddd-4ddd-8ddd-dddddddddd01"
DANA_ACTS = f"SELECT pg_logical_emit_message(true, 'cdc.context', '{{\"actorUserId\": \"{DANA}\"}}')"


def entries(set_sql: str, where: str = f"time_sheet_id = '{SHEET}'") -> str:
    return f"UPDATE time_entries SET {set_sql}, updated_at = now() WHERE tenant = '{T}' AND {where}"


def e1(set_sql: str) -> str:
    return entries(set_sql, f"entry_id = '{E1}'")


# Lee's timer on the ticket, from start to approval; an ad-hoc entry beside it; Dana approves.
WORKLOAD: list[tuple[str, ...]] = [
    (  # the time-tracking session starts: not an entry yet
        "INSERT INTO time_entries (tenant, entry_id, user_id, start_time, work_item_id, work_item_type, "
        "billable_duration, time_sheet_id, created_at, updated_at, work_date, work_timezone, created_by, "
        f"updated_by) VALUES ('{T}', '{E1}', '{LEE}', '2026-03-02T09:00:00Z', '{T1}', 'ticket', 0, '{SHEET}', "
        f"now(), now(), '2026-03-02', 'UTC', '{LEE}', '{LEE}')",
    ),
    (e1("notes = 'Looking at the fuser'"),),  # a running session's notes: nothing
    (e1(f"end_time = '2026-03-02T10:30:00Z', billable_duration = 90, updated_by = '{LEE}'"),),  # stopped
    (  # a finished ad-hoc entry from the time sheet
        "INSERT INTO time_entries (tenant, entry_id, user_id, start_time, end_time, work_item_type, "
        "billable_duration, time_sheet_id, created_at, updated_at, work_date, work_timezone, created_by, "
        f"updated_by) VALUES ('{T}', '{E2}', '{LEE}', '2026-03-02T11:00:00Z', '2026-03-02T11:30:00Z', "
        f"'ad_hoc', 0, '{SHEET}', now(), now(), '2026-03-02', 'UTC', '{LEE}', '{LEE}')",
    ),
    (e1(f"notes = 'Replaced the fuser', billable_duration = 60, updated_by = '{DANA}'"),),  # edited
    (entries("approval_status = 'SUBMITTED'"),),  # the sheet is submitted
    (DANA_ACTS, entries("approval_status = 'CHANGES_REQUESTED'")),
    (entries("approval_status = 'SUBMITTED'"),),
    (DANA_ACTS, entries("approval_status = 'APPROVED'")),
    (DANA_ACTS, f"DELETE FROM time_entries WHERE tenant = '{T}' AND entry_id = '{E2}'"),
    (e1("end_time = NULL"),),  # the approved entry's session restarted: nothing yet
    (e1(f"end_time = '2026-03-02T10:45:00Z', updated_by = '{LEE}'"),),  # stopped again: an edit of it
    (  # a discarded running session: nothing
        "INSERT INTO time_entries (tenant, user_id, start_time, work_item_id, work_item_type, work_date, "
        f"work_timezone) VALUES ('{T}', '{LEE}', now(), '{T1}', 'ticket', '2026-03-02', 'UTC')",
        f"DELETE FROM time_entries WHERE tenant = '{T}' AND end_time IS NULL",
    ),
]

ENTRY1 = {
    "timeEntryId": E1,
    "userId": LEE,
    "workItemId": T1,
    "workItemType": "TICKET",
    "workDate": "2026-03-02",
    "startTime": "2026-03-02T09:00:00.000Z",
    "endTime": "2026-03-02T10:30:00.000Z",
}
ENTRY2 = {
    "timeEntryId": E2,
    "userId": LEE,
    "workItemType": "AD_HOC",
    "workDate": "2026-03-02",
    "startTime": "2026-03-02T11:00:00.000Z",
    "endTime": "2026-03-02T11:30:00.000Z",
    "billableDuration": 0,
}
V1 = {"timeEntryId": E1, "userId": LEE, "workItemId": T1, "workItemType": "TICKET"}
USER_LEE = {"actorType": "USER", "actorUserId": LEE}
USER_DANA = {"actorType": "USER", "actorUserId": DANA}
EDITED = {**ENTRY1, "billableDuration": 60}

# (event type, subject, exact payload without tenantId / occurredAt), in delivery order
EXPECTED: list[tuple[str, str, dict[str, Any]]] = [
    ("TIME_ENTRY_CREATED", E1, {**ENTRY1, "billableDuration": 90, **USER_LEE}),
    ("TICKET_TIME_ENTRY_ADDED", T1, {"ticketId": T1, "timeEntryId": E1, "minutes": 90, "billable": True,
                                     "createdAt": "<created_at>", **USER_LEE}),
    ("TIME_ENTRY_CREATED", E2, {**ENTRY2, **USER_LEE}),
    ("TIME_ENTRY_UPDATED", E1, {
        **EDITED,
        "updatedFields": ["billableDuration", "notes"],
        "changes": {"billableDuration": {"previous": 90, "new": 60},
                    "notes": {"previous": "Looking at the fuser", "new": "Replaced the fuser"}},
        **USER_DANA,
    }),
    ("TIME_ENTRY_SUBMITTED", E1, V1),  # the ad-hoc entry cannot satisfy the v1 schema
    ("TIME_ENTRY_CHANGES_REQUESTED", E1, {**EDITED, "requestedBy": DANA, **USER_DANA}),
    ("TIME_ENTRY_CHANGES_REQUESTED", E2, {**ENTRY2, "requestedBy": DANA, **USER_DANA}),
    ("TIME_ENTRY_SUBMITTED", E1, V1),
    ("TIME_ENTRY_APPROVED", E1, {**V1, **USER_DANA}),
    ("TIME_ENTRY_DELETED", E2, {**ENTRY2, **USER_DANA}),
    # restarted and stopped again: the same entry edited, not a second one (no second ADDED)
    ("TIME_ENTRY_UPDATED", E1, {
        **EDITED,
        "endTime": "2026-03-02T10:45:00.000Z",
        "updatedFields": ["endTime"],
        "changes": {"endTime": {"previous": "2026-03-02T10:30:00.000Z", "new": "2026-03-02T10:45:00.000Z"}},
        **USER_LEE,
    }),
]  # fmt: skip


def test_a_timer_session_from_start_to_approval(db_dsn: str) -> None:
    prepare(db_dsn, "cdc_events")
    step(db_dsn, "create_ticket")
    assert [e.event_type for e in drain(db_dsn)] == ["TICKET_CREATED", "TICKET_SLA_STAGE_ENTERED"]
    for statements in WORKLOAD:
        in_one_transaction(db_dsn, *statements)
    got = drain(db_dsn)
    assert [(e.event_type, _subject(e.idempotency_key)) for e in got] == [
        (event_type, subject) for event_type, subject, _ in EXPECTED
    ]
    created_at = got[0].payload["occurredAt"]  # the stop's commit; created_at is the start's now()
    lsns = [e.source.lsn for e in got]
    for env, (event_type, subject, payload) in zip(got, EXPECTED, strict=True):
        body = {k: v for k, v in env.payload.items() if k not in ("tenantId", "occurredAt")}
        if "createdAt" in payload:
            assert body["createdAt"] <= created_at
            payload = {**payload, "createdAt": body["createdAt"]}
        assert body == payload, event_type
        assert env.payload["tenantId"] == T
        assert env.timestamp == env.payload["occurredAt"] == env.source.commit_time
        assert env.source.table == "public.time_entries" and not env.source.timer
        part = f"{subject}:{E1}" if event_type == "TICKET_TIME_ENTRY_ADDED" else subject  # + the entry
        assert env.idempotency_key == f"{event_type}:{T}:{part}@{env.source.lsn}"
    # one transaction per step: the two events of a step share it, the steps are in order
    assert lsns == sorted(lsns, key=lambda lsn: int(lsn.split("/")[0], 16) << 32 | int(lsn.split("/")[1], 16))
    assert drain(db_dsn) == []


def _subject(key: str) -> str:
    """The subject id of a change-driven key ``TYPE:tenant:subject[:discriminator]@lsn``."""
    return key.split("@")[0].split(":")[2]
