"""The time-entry deriver (derivers.time_entries): TICKET_TIME_ENTRY_ADDED, and the entry's own
events — CREATED / UPDATED / DELETED and the approval transitions."""

from __future__ import annotations

import pytest

from derivers.testing import FakeChange, FakeTimers, make_tx
from derivers.tickets import TicketDeriver
from derivers.time_entries import APPROVAL_EVENTS, ENTRY_EVENTS, TimeEntryDeriver
from tests.unit.derive_cases import (
    ABSENT,
    AUDIT,
    COMMIT,
    ENTRY1,
    ENTRY2,
    LATER,
    NO_ACTOR,
    STAFF,
    STAFF2,
    STAFF3,
    TENANT,
    TICKET,
    TICKETS,
    TIME,
    USER_STAFF,
    USER_STAFF2,
    USER_STAFF3,
    Expected,
    audit,
    base_state,
    check,
    context,
    dele,
    entry_row,
    ins,
    only,
    run,
    ticket_row,
    upd,
)

# --- time entries --------------------------------------------------------------------------------------

TIME_CASES = [
    pytest.param(
        [ins(TIME, entry_row())],
        [
            (
                "TICKET_TIME_ENTRY_ADDED",
                {
                    "ticketId": TICKET,
                    "timeEntryId": ENTRY1,
                    "minutes": 90,
                    "billable": True,
                    "createdAt": "2026-01-02T02:30:11.000Z",
                    **USER_STAFF,
                },
            )
        ],
        id="finished-entry-inserted",
    ),
    pytest.param(
        [upd(TIME, entry_row(end_time=None), entry_row(user_id=STAFF2))],
        [("TICKET_TIME_ENTRY_ADDED", {"minutes": 90, **USER_STAFF2})],
        id="running-timer-stopped",
    ),
    pytest.param([ins(TIME, entry_row(end_time=None))], [], id="running-timer-started"),
    pytest.param([ins(TIME, entry_row(work_item_type="project_task"))], [], id="not-a-ticket"),
    pytest.param([ins(TIME, entry_row(work_item_id=None))], [], id="no-work-item"),
    pytest.param(
        [ins(TIME, entry_row(start_time="2026-01-02T01:00:10.000Z", end_time="2026-01-02T01:00:50.000Z"))],
        [],
        id="under-a-minute",
    ),
    pytest.param(
        [ins(TIME, entry_row(start_time="2026-01-02T01:00:50.000Z", end_time="2026-01-02T01:01:10.000Z"))],
        [("TICKET_TIME_ENTRY_ADDED", {"minutes": 1})],
        id="minutes-on-truncated-times",
    ),
    pytest.param(
        [ins(TIME, entry_row(start_time="2026-01-02T02:00:00.000Z", end_time="2026-01-02T01:00:00.000Z"))],
        [],
        id="end-before-start",
    ),
    pytest.param(
        [ins(TIME, entry_row(billable_duration=0))],
        [("TICKET_TIME_ENTRY_ADDED", {"billable": False})],
        id="non-billable",
    ),
    pytest.param(
        [ins(TIME, entry_row(billable_duration=None, created_at=None))],
        [("TICKET_TIME_ENTRY_ADDED", {"billable": False, "createdAt": ABSENT})],
        id="no-billable-duration-no-created_at",
    ),
    pytest.param(
        [upd(TIME, entry_row(), entry_row(end_time="2026-01-02T02:45:00.000Z"))],
        [],
        id="finished-entry-edited",
    ),
    pytest.param(
        [audit(actor_user_id=STAFF2), ins(TIME, entry_row(ENTRY1)), ins(TIME, entry_row(ENTRY2))],
        [
            ("TICKET_TIME_ENTRY_ADDED", {"timeEntryId": ENTRY1, **USER_STAFF2}),
            ("TICKET_TIME_ENTRY_ADDED", {"timeEntryId": ENTRY2}),
        ],
        id="two-entries-one-ticket",
    ),
    pytest.param([dele(TIME, entry_row())], [], id="entry-deleted"),
]


@pytest.mark.parametrize(("changes", "expected"), TIME_CASES)
def test_time_entries(changes: list[FakeChange], expected: Expected) -> None:
    # The same rows also yield the entry's own events (ENTRY_CASES below cover them exactly).
    result = only(run(changes), "TICKET_TIME_ENTRY_ADDED")
    check(result, expected)
    assert all(d.draft.discriminator == d.draft.payload["timeEntryId"] for d in result.derived)


# --- the deriver on its own ------------------------------------------------------------------------------


def test_time_entries_are_a_deriver_of_their_own() -> None:
    """Without the ticket deriver: the same draft, key parts and position, and no timers."""
    tx = make_tx(
        [ins(TICKETS, ticket_row()), audit(actor_user_id=STAFF2), ins(TIME, entry_row())], commit_time=COMMIT
    )
    timers = FakeTimers()
    created, derived = TimeEntryDeriver().derive(tx, base_state(), timers)
    assert created.draft.event_type == "TIME_ENTRY_CREATED" and created.position == 2
    draft = derived.draft
    assert (derived.position, derived.table) == (2, TIME)
    assert (draft.event_type, draft.tenant, draft.subject_id, draft.discriminator) == (
        "TICKET_TIME_ENTRY_ADDED",
        TENANT,
        TICKET,
        ENTRY1,
    )
    assert draft.payload["actorUserId"] == STAFF2  # the ticket's audit row of the transaction
    assert timers.timers == {}


def test_time_entry_reads_include_the_actor_rule() -> None:
    reads = TimeEntryDeriver.reads
    assert reads[AUDIT]["actor_type"] == {"TICKET_TIME_ENTRY_ADDED"}
    assert reads[TIME]["work_item_id"] == {"TICKET_TIME_ENTRY_ADDED", *ENTRY_EVENTS}
    assert reads[TIME]["approval_status"] == set(APPROVAL_EVENTS.values())
    assert TIME not in TicketDeriver.reads  # the ticket deriver no longer reads time entries


# --- the entry's own events ------------------------------------------------------------------------------

ENTRY = {
    "timeEntryId": ENTRY1,
    "userId": STAFF,
    "workItemId": TICKET,
    "workItemType": "TICKET",
    "workDate": "2026-01-02",
    "startTime": "2026-01-02T01:00:30.000Z",
    "endTime": "2026-01-02T02:30:10.000Z",
    "billableDuration": 90,
}
V1_ENTRY = {"timeEntryId": ENTRY1, "userId": STAFF, "workItemId": TICKET, "workItemType": "TICKET"}
RUNNING = {"end_time": None}
BY_STAFF3 = [context(STAFF3)]
TASK = "00000000-0000-4000-8000-000000000500"

ENTRY_CASES = [
    pytest.param(
        [ins(TIME, entry_row())],
        (),
        [("TIME_ENTRY_CREATED", {**ENTRY, **USER_STAFF}), ("TICKET_TIME_ENTRY_ADDED", {})],
        id="finished-entry-inserted",
    ),
    pytest.param(
        [ins(TIME, entry_row(created_by=None, work_item_type="ad_hoc", work_item_id=None))],
        (),
        [("TIME_ENTRY_CREATED", {"workItemType": "AD_HOC", "workItemId": ABSENT, **NO_ACTOR})],
        id="ad-hoc-entry-without-creator",
    ),
    pytest.param([ins(TIME, entry_row(**RUNNING))], (), [], id="running-session-started"),
    pytest.param(
        [upd(TIME, entry_row(**RUNNING), entry_row(**RUNNING, notes="still at it"))],
        (),
        [],
        id="running-session-edited",
    ),
    pytest.param([dele(TIME, entry_row(**RUNNING))], (), [], id="running-session-discarded"),
    pytest.param(
        [upd(TIME, entry_row(**RUNNING), entry_row(updated_by=STAFF2))],
        (),
        [("TIME_ENTRY_CREATED", {**ENTRY, **USER_STAFF2}), ("TICKET_TIME_ENTRY_ADDED", {})],
        id="running-session-stopped-is-the-creation",
    ),
    pytest.param(
        [upd(TIME, entry_row(**RUNNING), entry_row())],
        (),
        [("TIME_ENTRY_CREATED", {**ENTRY, **USER_STAFF}), ("TICKET_TIME_ENTRY_ADDED", {})],
        id="running-session-stopped-by-its-creator",
    ),
    pytest.param(
        [upd(TIME, entry_row(**RUNNING, created_by=None), entry_row(created_by=None))],
        (),
        [("TIME_ENTRY_CREATED", NO_ACTOR), ("TICKET_TIME_ENTRY_ADDED", USER_STAFF)],
        id="running-session-stopped-nobody-known",
    ),
    pytest.param(
        [upd(TIME, entry_row(), entry_row(notes="Replaced the toner", billable_duration=60))],
        (),
        [
            (
                "TIME_ENTRY_UPDATED",
                {
                    **ENTRY,
                    "billableDuration": 60,
                    "updatedFields": ["billableDuration", "notes"],
                    "changes": {
                        "billableDuration": {"previous": 90, "new": 60},
                        "notes": {"previous": None, "new": "Replaced the toner"},
                    },
                    **NO_ACTOR,  # updated_by did not change: it says nothing about who edited
                },
            )
        ],
        id="finished-entry-edited",
    ),
    pytest.param(
        [
            upd(
                TIME,
                entry_row(),
                entry_row(work_item_id=TASK, work_item_type="project_task", updated_by=STAFF2),
            )
        ],
        (),
        [
            (
                "TIME_ENTRY_UPDATED",
                {
                    "workItemId": TASK,
                    "workItemType": "PROJECT_TASK",
                    "updatedFields": ["workItemType", "workItemId"],
                    **USER_STAFF2,
                },
            )
        ],
        id="rebooked-to-a-task-by-updated_by",
    ),
    pytest.param(
        [upd(TIME, entry_row(), entry_row(updated_at=LATER, invoiced=True, time_sheet_id=TASK))],
        (),
        [],
        id="bookkeeping-only",
    ),
    pytest.param(
        [upd(TIME, entry_row(), entry_row(approval_status="SUBMITTED"))],
        (),
        [("TIME_ENTRY_SUBMITTED", {**V1_ENTRY, "workDate": ABSENT, **NO_ACTOR})],
        id="submitted",
    ),
    pytest.param(
        [upd(TIME, entry_row(approval_status="SUBMITTED"), entry_row(approval_status="APPROVED"))],
        BY_STAFF3,
        [("TIME_ENTRY_APPROVED", {**V1_ENTRY, **USER_STAFF3})],
        id="approved-by-the-context-actor",
    ),
    pytest.param(
        [upd(TIME, entry_row(approval_status="SUBMITTED"), entry_row(approval_status="CHANGES_REQUESTED"))],
        BY_STAFF3,
        [("TIME_ENTRY_CHANGES_REQUESTED", {**ENTRY, "requestedBy": STAFF3, "reason": ABSENT, **USER_STAFF3})],
        id="changes-requested",
    ),
    pytest.param(
        [upd(TIME, entry_row(approval_status="SUBMITTED"), entry_row(approval_status="CHANGES_REQUESTED"))],
        (),
        [("TIME_ENTRY_CHANGES_REQUESTED", {"requestedBy": ABSENT, **NO_ACTOR})],
        id="changes-requested-by-nobody-known",
    ),
    pytest.param(
        [upd(TIME, entry_row(approval_status="SUBMITTED"), entry_row(approval_status="REJECTED"))],
        (),
        [],
        id="rejected-has-no-catalog-type",
    ),
    pytest.param(
        [upd(TIME, entry_row(approval_status="CHANGES_REQUESTED"), entry_row(approval_status="DRAFT"))],
        (),
        [],
        id="back-to-draft",
    ),
    pytest.param(
        [
            upd(
                TIME,
                entry_row(work_item_type="ad_hoc", work_item_id=None),
                entry_row(work_item_type="ad_hoc", work_item_id=None, approval_status="SUBMITTED"),
            )
        ],
        (),
        [],
        id="submitted-ad-hoc-entry-cannot-satisfy-the-v1-schema",
    ),
    pytest.param(
        [
            upd(
                TIME,
                entry_row(work_item_type="project_task", work_item_id=TASK, approval_status="SUBMITTED"),
                entry_row(work_item_type="project_task", work_item_id=TASK, approval_status="APPROVED"),
            )
        ],
        (),
        [("TIME_ENTRY_APPROVED", {"workItemId": TASK, "workItemType": "PROJECT_TASK"})],
        id="project-task-entry-approved",
    ),
    pytest.param(
        [upd(TIME, entry_row(), entry_row(notes="typo fixed", approval_status="SUBMITTED"))],
        (),
        [("TIME_ENTRY_UPDATED", {"updatedFields": ["notes"]}), ("TIME_ENTRY_SUBMITTED", V1_ENTRY)],
        id="edited-and-submitted",
    ),
    pytest.param(
        [upd(TIME, entry_row(**RUNNING), entry_row(**RUNNING, approval_status="SUBMITTED"))],
        (),
        [],
        id="running-session-submitted",
    ),
    pytest.param(
        [ins(TIME, entry_row(approval_status="APPROVED"))],
        (),
        [("TIME_ENTRY_CREATED", {}), ("TICKET_TIME_ENTRY_ADDED", {})],
        id="imported-approved-is-no-transition",
    ),
    pytest.param(
        [dele(TIME, entry_row())], (), [("TIME_ENTRY_DELETED", {**ENTRY, **NO_ACTOR})], id="deleted"
    ),
    pytest.param(
        [dele(TIME, entry_row())],
        BY_STAFF3,
        [("TIME_ENTRY_DELETED", USER_STAFF3)],
        id="deleted-with-context-actor",
    ),
    pytest.param(
        [audit(actor_user_id=STAFF2), upd(TIME, entry_row(), entry_row(notes="n"))],
        (),
        [("TIME_ENTRY_UPDATED", NO_ACTOR)],
        id="ticket-audit-row-is-not-the-entry-actor",
    ),
    pytest.param(
        [
            ins(TIME, entry_row(ENTRY1)),
            ins(TIME, entry_row(ENTRY2, work_item_type="ad_hoc", work_item_id=None)),
        ],
        (),
        [
            ("TIME_ENTRY_CREATED", {"timeEntryId": ENTRY1}),
            ("TICKET_TIME_ENTRY_ADDED", {"timeEntryId": ENTRY1}),
            ("TIME_ENTRY_CREATED", {"timeEntryId": ENTRY2}),
        ],
        id="two-entries-in-row-order",
    ),
]


@pytest.mark.parametrize(("changes", "messages", "expected"), ENTRY_CASES)
def test_entry_events(
    changes: list[FakeChange], messages: list[tuple[str, bytes]], expected: Expected
) -> None:
    result = run(changes, messages=messages)
    check(result, expected)
    for d in result.derived:
        if d.draft.event_type != "TICKET_TIME_ENTRY_ADDED":  # about the entry, one per type and row
            assert (d.draft.subject_id, d.draft.discriminator) == (d.draft.payload["timeEntryId"], None)


def test_entry_created_payload_and_key_exactly() -> None:
    result = run([ins(TIME, entry_row())])
    created = result.envelopes[0]
    assert created.payload == {
        "tenantId": TENANT,
        "occurredAt": "2026-01-02T03:04:05.678Z",
        "actorType": "USER",
        "actorUserId": STAFF,
        **ENTRY,
    }
    assert created.idempotency_key == f"TIME_ENTRY_CREATED:{TENANT}:{ENTRY1}@0/16B3748"
    assert created.payload_schema_ref == "payload.TimeEntryCreated.v1"


def test_v1_approval_payload_exactly() -> None:
    result = run([upd(TIME, entry_row(), entry_row(approval_status="SUBMITTED"))], messages=BY_STAFF3)
    (submitted,) = result.envelopes
    assert submitted.payload == {
        "tenantId": TENANT,
        "occurredAt": "2026-01-02T03:04:05.678Z",
        "actorType": "USER",
        "actorUserId": STAFF3,
        **V1_ENTRY,
    }


# --- a finished entry restarted and stopped again ---------------------------------------------------

RESTOPPED = "2026-01-02T02:45:00.000Z"


def test_restarted_entry_stopped_again_is_an_update_not_a_second_entry() -> None:
    """Created (and added to its ticket) once; put back to running, nothing; stopped again, the
    entry's UPDATED against the entry as it was finished — no second CREATED or ADDED."""
    timers = FakeTimers()
    first = run([ins(TIME, entry_row())], timers=timers)
    assert first.types == ["TIME_ENTRY_CREATED", "TICKET_TIME_ENTRY_ADDED"]
    restarted = run([upd(TIME, entry_row(), entry_row(**RUNNING))], timers=timers)
    assert restarted.types == []
    (marker,) = timers.timers.values()
    assert (marker.key, marker.state, marker.subject_id) == (
        f"time_entry:{TENANT}:{ENTRY1}:restarted",
        "settled",
        ENTRY1,
    )
    stopped = run(
        [upd(TIME, entry_row(**RUNNING), entry_row(end_time=RESTOPPED, updated_by=STAFF2))], timers=timers
    )
    check(
        stopped,
        [
            (
                "TIME_ENTRY_UPDATED",
                {
                    **ENTRY,
                    "endTime": RESTOPPED,
                    "updatedFields": ["endTime"],
                    "changes": {"endTime": {"previous": ENTRY["endTime"], "new": RESTOPPED}},
                    **USER_STAFF2,
                },
            )
        ],
    )
    assert timers.timers == {}  # the stop ends the restart
    # stopped and restarted once more: the same again, against the entry as last stopped
    run([upd(TIME, entry_row(end_time=RESTOPPED), entry_row(**RUNNING))], timers=timers)
    again = run([upd(TIME, entry_row(**RUNNING), entry_row())], timers=timers)
    assert again.types == ["TIME_ENTRY_UPDATED"]
    assert again.envelopes[0].payload["changes"] == {
        "endTime": {"previous": RESTOPPED, "new": ENTRY["endTime"]}
    }


def test_restarted_entry_stopped_as_it_was_is_nothing_and_deleted_while_running_is_deleted() -> None:
    timers = FakeTimers()
    run([upd(TIME, entry_row(), entry_row(**RUNNING))], timers=timers)
    assert run([upd(TIME, entry_row(**RUNNING), entry_row())], timers=timers).types == []
    run([upd(TIME, entry_row(), entry_row(**RUNNING))], timers=timers)
    deleted = run([dele(TIME, entry_row(**RUNNING))], timers=timers)
    check(deleted, [("TIME_ENTRY_DELETED", {**ENTRY, "endTime": ABSENT, **NO_ACTOR})])
    assert timers.timers == {}
    # a session never finished before is still discarded silently
    assert run([dele(TIME, entry_row(**RUNNING))], timers=timers).types == []
