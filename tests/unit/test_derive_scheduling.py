"""The scheduling deriver (derivers.scheduling): appointments, blocks, dispatch, schedule entries.

Each case: the reference state before the transaction (entries, assignees, requests of earlier
transactions), the transaction's folded changes, and the exact drafts — event type, subject,
discriminator and the whole payload. The state the deriver sees is the earlier state with the
transaction's own changes applied, as the watcher applies them before deriving; every draft
becomes an envelope, so a payload the catalog rejects fails the case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from catalog import build_envelope
from derivers import default_derivers
from derivers.base import Change
from derivers.scheduling import (
    APPOINTMENT_REQUESTS,
    ENTRY_ASSIGNEES,
    SCHEDULE_ENTRIES,
    SchedulingDeriver,
)
from derivers.testing import FakeChange, FakeState, FakeTimers, make_tx
from tests.unit.derive_cases import COMMIT, NOW, STAFF, STAFF2, STAFF3, TENANT, TICKET, dele, ins, u, upd

E1, E2 = u(200), u(201)
REQ = u(210)
REQ_TICKET = u(211)
CONTACT = u(30)
START, END = "2026-01-05T09:00:00.000Z", "2026-01-05T10:00:00.000Z"
START2, END2 = "2026-01-06T13:00:00.000Z", "2026-01-06T14:30:00.000Z"
CREATED = "2026-01-02T03:04:05.600Z"

Row = dict[str, Any]


def entry(entry_id: str = E1, **values: Any) -> Row:
    row: Row = {
        "tenant": TENANT,
        "entry_id": entry_id,
        "title": "On-site visit",
        "work_item_id": TICKET,
        "scheduled_start": START,
        "scheduled_end": END,
        "status": "scheduled",
        "notes": None,
        "recurrence_pattern": None,
        "work_item_type": "ticket",
        "created_at": CREATED,
        "updated_at": CREATED,
        "original_entry_id": None,
        "is_recurring": False,
        "is_private": False,
    }
    row.update(values)
    return row


def block(entry_id: str = E1, **values: Any) -> Row:
    return entry(entry_id, **{"work_item_id": None, "work_item_type": "ad_hoc", "is_private": True, **values})


def assignee(user: str, entry_id: str = E1) -> Row:
    return {
        "tenant": TENANT,
        "entry_id": entry_id,
        "user_id": user,
        "created_at": CREATED,
        "updated_at": CREATED,
    }


def request(**values: Any) -> Row:
    row: Row = {
        "appointment_request_id": REQ,
        "tenant": TENANT,
        "client_id": None,
        "contact_id": CONTACT,
        "service_id": u(212),
        "requested_date": "2026-01-05",
        "requested_time": "09:00:00",
        "requested_duration": 60,
        "preferred_assigned_user_id": STAFF,
        "status": "pending",
        "description": None,
        "ticket_id": REQ_TICKET,
        "is_authenticated": True,
        "requester_name": None,
        "requester_email": None,
        "requester_phone": None,
        "company_name": None,
        "schedule_entry_id": None,
        "approved_by_user_id": None,
        "approved_at": None,
        "declined_reason": None,
        "created_at": CREATED,
        "updated_at": CREATED,
        "requester_timezone": "UTC",
        "online_meeting_provider": None,
        "online_meeting_url": None,
        "online_meeting_id": None,
    }
    row.update(values)
    return row


def series(
    entry_id: str = E1, *, exceptions: list[str] | None = None, endDate: str | None = None, **values: Any
) -> Row:
    pattern: dict[str, Any] = {"frequency": "daily", "interval": 1}
    if exceptions is not None:
        pattern["exceptions"] = exceptions
    if endDate is not None:
        pattern["endDate"] = endDate
    return entry(entry_id, is_recurring=True, recurrence_pattern=pattern, **values)


OVERNIGHT: dict[str, Any] = {
    "scheduled_start": "2026-01-05T23:00:00.000Z",
    "scheduled_end": "2026-01-06T01:00:00.000Z",
}
BLOCKISH: dict[str, Any] = {"work_item_id": None, "work_item_type": "ad_hoc", "is_private": True}

PORTAL_ENTRY = {
    "work_item_type": "appointment_request",
    "work_item_id": REQ,
    "title": "[Pending Request] Repair",
}

_KEYS = {
    SCHEDULE_ENTRIES: ("tenant", "entry_id"),
    ENTRY_ASSIGNEES: ("tenant", "entry_id", "user_id"),
    APPOINTMENT_REQUESTS: ("tenant", "appointment_request_id"),
}


def _table_of(row: Mapping[str, Any]) -> str:
    if "appointment_request_id" in row:
        return APPOINTMENT_REQUESTS
    return SCHEDULE_ENTRIES if "work_item_type" in row else ENTRY_ASSIGNEES


def state_after(earlier: Sequence[Row], changes: Sequence[Change]) -> FakeState:
    """The earlier rows, then the transaction's changes applied (as the watcher does before derive)."""
    state = FakeState()
    for row in earlier:
        table = _table_of(row)
        state.put(table, tuple(row[c] for c in _KEYS[table]), row)
    for change in changes:
        if change.table not in _KEYS:
            continue
        rows = state.rows.setdefault(change.table, {})
        if change.before is not None:
            rows.pop(tuple(change.before[c] for c in _KEYS[change.table]), None)
        if change.after is not None:
            rows[tuple(change.after[c] for c in _KEYS[change.table])] = change.after
    return state


Draft = tuple[str, str, str | None, Mapping[str, Any]]


def derive(
    earlier: Sequence[Row], changes: Sequence[FakeChange], messages: Sequence[tuple[str, bytes]] = ()
) -> list[Draft]:
    tx = make_tx(changes, commit_time=COMMIT, messages=messages)
    derived = SchedulingDeriver().derive(tx, state_after(earlier, tx.changes), FakeTimers())
    keys = []
    for d in derived:
        assert d.table == tx.changes[d.position].table
        envelope = build_envelope(
            d.draft, slot="t", lsn=tx.end_lsn, xid=tx.xid, commit_time=tx.commit_time, table=d.table
        )
        keys.append(envelope.idempotency_key)
    assert len(set(keys)) == len(keys), f"duplicate idempotency keys: {keys}"
    assert [d.position for d in derived] == sorted(d.position for d in derived)
    out: list[Draft] = []
    for d in derived:
        payload = dict(d.draft.payload)
        assert payload.pop("tenantId") == TENANT
        assert payload.pop("occurredAt") == NOW
        out.append((d.draft.event_type, d.draft.subject_id, d.draft.discriminator, payload))
    return out


def context(user: str | None = None, contact: str | None = None) -> list[tuple[str, bytes]]:
    body = {"actorUserId": user} if user else {"actorContactId": contact}
    return [("cdc.context", json.dumps(body).encode())]


SE, SA, AR = SCHEDULE_ENTRIES, ENTRY_ASSIGNEES, APPOINTMENT_REQUESTS
USER = {"actorType": "USER", "actorUserId": STAFF3}


def dispatched(technician: str, entry_id: str = E1, ticket: str | None = TICKET, **extra: Any) -> Draft:
    payload = {"appointmentId": entry_id, "technicianUserId": technician, "dispatchedAt": NOW, **extra}
    if ticket:
        payload["ticketId"] = ticket
    return ("TECHNICIAN_DISPATCHED", entry_id, technician, payload)


def assigned(
    new: str, previous: str | None = None, entry_id: str = E1, ticket: str = TICKET, **extra: Any
) -> Draft:
    payload: dict[str, Any] = {"appointmentId": entry_id, "ticketId": ticket, **extra}
    if previous:
        payload.update(previousAssigneeId=previous, previousAssigneeType="user")
    payload.update(newAssigneeId=new, newAssigneeType="user", assignedAt=NOW)
    return ("APPOINTMENT_ASSIGNED", entry_id, None, payload)


APPT = {"appointmentId": E1, "ticketId": TICKET}

CASES = [
    # --- creation and assignees -----------------------------------------------------------------
    pytest.param(
        [],
        [ins(SE, entry()), ins(SA, assignee(STAFF)), ins(SA, assignee(STAFF2))],
        (),
        [
            (
                "APPOINTMENT_CREATED",
                E1,
                None,
                {**APPT, "startAt": START, "endAt": END, "timezone": "UTC", "createdAt": CREATED},
            ),
            dispatched(STAFF),
            dispatched(STAFF2),
        ],
        id="created-with-two-assignees",
    ),
    pytest.param(
        [],
        [ins(SE, entry()), ins(SA, assignee(STAFF))],
        context(STAFF3),
        [
            (
                "SCHEDULE_ENTRY_CREATED",
                E1,
                None,
                {
                    **USER,
                    "entryId": E1,
                    "userId": STAFF3,
                    "changes": {
                        "after": {
                            "id": E1,
                            "title": "On-site visit",
                            "scheduledStart": START,
                            "scheduledEnd": END,
                            "status": "scheduled",
                            "workItemId": TICKET,
                            "workItemType": "ticket",
                            "isRecurring": False,
                            "recurrencePattern": None,
                            "assignedUserIds": [STAFF],
                            "isPrivate": False,
                        },
                        "assignedUserIds": [STAFF],
                    },
                },
            ),
            (
                "APPOINTMENT_CREATED",
                E1,
                None,
                {
                    **USER,
                    **APPT,
                    "startAt": START,
                    "endAt": END,
                    "timezone": "UTC",
                    "assigneeId": STAFF,
                    "assigneeType": "user",
                    "createdByUserId": STAFF3,
                    "createdAt": CREATED,
                },
            ),
            assigned(STAFF, **USER),
            dispatched(STAFF, dispatchedByUserId=STAFF3, **USER),
        ],
        id="created-with-one-assignee-and-a-declared-actor",
    ),
    pytest.param(
        [entry()],
        [ins(SA, assignee(STAFF))],
        (),
        [assigned(STAFF), dispatched(STAFF)],
        id="assignee-arrives-in-a-later-transaction",
    ),
    pytest.param(
        [entry(), assignee(STAFF)],
        [dele(SA, assignee(STAFF)), ins(SA, assignee(STAFF2))],
        (),
        [assigned(STAFF2, previous=STAFF), dispatched(STAFF2)],
        id="reassigned-by-delete-and-insert",
    ),
    pytest.param(
        [entry(), assignee(STAFF)],
        [upd(SA, assignee(STAFF), assignee(STAFF))],
        (),
        [],
        id="same-assignee-deleted-and-reinserted-is-no-change",
    ),
    pytest.param(
        [entry(), entry(E2), assignee(STAFF)],
        [upd(SA, assignee(STAFF), assignee(STAFF, E2))],
        (),
        [assigned(STAFF, entry_id=E2), dispatched(STAFF, entry_id=E2)],
        id="assignee-row-moved-to-another-entry",
    ),
    pytest.param(
        [entry(), assignee(STAFF), assignee(STAFF2)],
        [dele(SA, assignee(STAFF))],
        (),
        [assigned(STAFF2)],
        id="two-assignees-down-to-one",
    ),
    pytest.param(
        [entry(), assignee(STAFF)],
        [ins(SA, assignee(STAFF2))],
        (),
        [dispatched(STAFF2)],
        id="second-assignee-dispatched-not-assigned",
    ),
    pytest.param(
        [entry(work_item_type="project_task")],
        [
            ins(SA, assignee(STAFF)),
            upd(
                SE,
                entry(work_item_type="project_task"),
                entry(work_item_type="project_task", status="completed"),
            ),
        ],
        (),
        [],
        id="not-an-appointment",
    ),
    # --- updates of an appointment --------------------------------------------------------------
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, entry(), entry(scheduled_start=START2, scheduled_end=END2))],
        (),
        [
            (
                "APPOINTMENT_RESCHEDULED",
                E1,
                None,
                {
                    **APPT,
                    "previousStartAt": START,
                    "previousEndAt": END,
                    "newStartAt": START2,
                    "newEndAt": END2,
                    "timezone": "UTC",
                    "rescheduledAt": NOW,
                },
            )
        ],
        id="rescheduled",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, entry(), entry(status=" Cancelled "))],
        context(contact=CONTACT),
        [
            (
                "APPOINTMENT_CANCELED",
                E1,
                None,
                {"actorType": "CONTACT", "actorContactId": CONTACT, **APPT, "canceledAt": NOW},
            )
        ],
        id="canceled-by-status-contact-actor-no-schedule-entry-event",
    ),
    pytest.param(
        [assignee(STAFF), assignee(STAFF2)],
        [upd(SE, entry(status="arrived"), entry(status="Done"))],
        (),
        [
            ("APPOINTMENT_COMPLETED", E1, None, {**APPT, "completedAt": NOW}),
            ("TECHNICIAN_CHECKED_OUT", E1, STAFF, {**APPT, "technicianUserId": STAFF, "checkedOutAt": NOW}),
            ("TECHNICIAN_CHECKED_OUT", E1, STAFF2, {**APPT, "technicianUserId": STAFF2, "checkedOutAt": NOW}),
        ],
        id="completed-checks-every-technician-out",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, entry(), entry(status="no show"))],
        (),
        [("APPOINTMENT_NO_SHOW", E1, None, {**APPT, "markedAt": NOW, "party": "customer"})],
        id="no-show",
    ),
    pytest.param(
        [assignee(STAFF2), assignee(STAFF)],
        [upd(SE, entry(), entry(status="en-route"))],
        (),
        [
            ("TECHNICIAN_EN_ROUTE", E1, STAFF, {**APPT, "technicianUserId": STAFF, "startedAt": NOW}),
            ("TECHNICIAN_EN_ROUTE", E1, STAFF2, {**APPT, "technicianUserId": STAFF2, "startedAt": NOW}),
        ],
        id="en-route-per-technician-in-user-order",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, entry(status="en_route"), entry(status="On Site"))],
        (),
        [("TECHNICIAN_ARRIVED", E1, STAFF, {**APPT, "technicianUserId": STAFF, "arrivedAt": NOW})],
        id="arrived",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, entry(status="checked_out"), entry(status="completed"))],
        (),
        [("APPOINTMENT_COMPLETED", E1, None, {**APPT, "completedAt": NOW})],
        id="completed-after-checked-out-does-not-check-out-again",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, entry(status="scheduled"), entry(status=" Scheduled", title="Visit"))],
        (),
        [],
        id="status-text-equal-after-trim-and-case",
    ),
    # --- deletion ---------------------------------------------------------------------------------
    pytest.param(
        [],
        [dele(SA, assignee(STAFF)), dele(SE, entry())],
        (),
        [("APPOINTMENT_CANCELED", E1, None, {**APPT, "canceledAt": NOW, "reason": "Deleted"})],
        id="deleted",
    ),
    pytest.param(
        [],
        [dele(SE, entry(is_recurring=True, recurrence_pattern={"frequency": "weekly", "interval": 1}))],
        context(STAFF3),
        [
            (
                "SCHEDULE_ENTRY_DELETED",
                E1,
                None,
                {
                    **USER,
                    "entryId": E1,
                    "userId": STAFF3,
                    "changes": {
                        "before": {
                            "id": E1,
                            "title": "On-site visit",
                            "scheduledStart": START,
                            "scheduledEnd": END,
                            "status": "scheduled",
                            "workItemId": TICKET,
                            "workItemType": "ticket",
                            "isRecurring": True,
                            "recurrencePattern": {"frequency": "weekly", "interval": 1},
                            "assignedUserIds": [],
                            "isPrivate": False,
                        }
                    },
                },
            ),
            (
                "APPOINTMENT_CANCELED",
                E1,
                None,
                {**USER, **APPT, "canceledAt": NOW, "reason": "Deleted (all occurrences)"},
            ),
        ],
        id="recurring-series-deleted",
    ),
    pytest.param(
        [],
        [dele(SE, entry(status="canceled"))],
        (),
        [],
        id="deleting-a-canceled-appointment-cancels-nothing-more",
    ),
    # --- the client portal and the MSP's answer ----------------------------------------------------
    pytest.param(
        [],
        [ins(AR, request())],
        (),
        [],
        id="request-created-no-request-event",
    ),
    pytest.param(
        [request()],
        [ins(SE, entry(**PORTAL_ENTRY)), ins(SA, assignee(STAFF))],
        (),
        [
            (
                "APPOINTMENT_CREATED",
                E1,
                None,
                {
                    "appointmentId": E1,
                    "ticketId": REQ_TICKET,
                    "startAt": START,
                    "endAt": END,
                    "timezone": "UTC",
                    "assigneeId": STAFF,
                    "assigneeType": "user",
                    "createdAt": CREATED,
                },
            ),
            assigned(STAFF, ticket=REQ_TICKET),
        ],
        id="portal-entry-of-a-pending-request-not-dispatched",
    ),
    pytest.param(
        [request(schedule_entry_id=E1), entry(**PORTAL_ENTRY), assignee(STAFF)],
        [
            upd(
                AR,
                request(schedule_entry_id=E1),
                request(schedule_entry_id=E1, status="approved", approved_by_user_id=STAFF2),
            )
        ],
        (),
        [
            dispatched(
                STAFF, ticket=REQ_TICKET, actorType="USER", actorUserId=STAFF2, dispatchedByUserId=STAFF2
            )
        ],
        id="approval-dispatches-the-technicians-by-the-approver",
    ),
    pytest.param(
        [request(schedule_entry_id=E1), entry(**PORTAL_ENTRY), assignee(STAFF)],
        [
            dele(SA, assignee(STAFF)),
            ins(SA, assignee(STAFF2)),
            upd(AR, request(schedule_entry_id=E1), request(schedule_entry_id=E1, status="approved")),
        ],
        (),
        [assigned(STAFF2, previous=STAFF, ticket=REQ_TICKET), dispatched(STAFF2, ticket=REQ_TICKET)],
        id="approval-with-another-technician-dispatches-once",
    ),
    pytest.param(
        [request(schedule_entry_id=E1)],
        [
            dele(SA, assignee(STAFF)),
            dele(SE, entry(**PORTAL_ENTRY)),
            upd(
                AR,
                request(schedule_entry_id=E1),
                request(status="cancelled", declined_reason="Cancelled by client"),
            ),
        ],
        (),
        [
            (
                "APPOINTMENT_CANCELED",
                E1,
                None,
                {
                    "appointmentId": E1,
                    "ticketId": REQ_TICKET,
                    "canceledAt": NOW,
                    "reason": "Cancelled by client",
                },
            )
        ],
        id="portal-cancel-reason-from-the-request",
    ),
    # --- blocks -------------------------------------------------------------------------------------
    pytest.param(
        [],
        [ins(SE, block(title="Dentist")), ins(SA, assignee(STAFF))],
        (),
        [
            (
                "SCHEDULE_BLOCK_CREATED",
                E1,
                None,
                {
                    "scheduleBlockId": E1,
                    "ownerId": STAFF,
                    "ownerType": "user",
                    "startAt": START,
                    "endAt": END,
                    "timezone": "UTC",
                    "createdAt": CREATED,
                    "reason": "Dentist",
                },
            )
        ],
        id="block-created",
    ),
    pytest.param(
        [block(title=" busy ", notes="Lunch")],
        [ins(SA, assignee(STAFF))],
        (),
        [
            (
                "SCHEDULE_BLOCK_CREATED",
                E1,
                None,
                {
                    "scheduleBlockId": E1,
                    "ownerId": STAFF,
                    "ownerType": "user",
                    "startAt": START,
                    "endAt": END,
                    "timezone": "UTC",
                    "reason": "Lunch",
                },
            )
        ],
        id="block-by-its-owner-arriving-later-reason-from-notes",
    ),
    pytest.param(
        [],
        [ins(SE, block(scheduled_start=None, scheduled_end=None)), ins(SA, assignee(STAFF))],
        (),
        [],
        id="block-without-times-cannot-be-reported",
    ),
    pytest.param(
        [block(scheduled_start=None, scheduled_end=None), assignee(STAFF)],
        [upd(SE, block(scheduled_start=None, scheduled_end=None), block(notes="Lunch", title="busy"))],
        (),
        [
            (
                "SCHEDULE_BLOCK_CREATED",
                E1,
                None,
                {
                    "scheduleBlockId": E1,
                    "ownerId": STAFF,
                    "ownerType": "user",
                    "startAt": START,
                    "endAt": END,
                    "timezone": "UTC",
                    "reason": "Lunch",
                },
            )
        ],
        id="block-without-times-given-its-times-is-created",
    ),
    pytest.param(
        [],
        [dele(SA, assignee(STAFF)), dele(SE, block(scheduled_start=None, scheduled_end=None))],
        (),
        [],
        id="block-that-never-had-times-deleted-is-no-block-deleted",
    ),
    pytest.param(
        [],
        [ins(SE, block()), ins(SA, assignee(STAFF)), ins(SA, assignee(STAFF2))],
        (),
        [],
        id="private-entry-with-two-assignees-is-no-block",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, block(), block(is_private=False))],
        (),
        [
            (
                "SCHEDULE_BLOCK_DELETED",
                E1,
                None,
                {"scheduleBlockId": E1, "deletedAt": NOW, "reason": "No longer private ad-hoc block"},
            )
        ],
        id="block-made-public",
    ),
    pytest.param(
        [block(), assignee(STAFF)],
        [ins(SA, assignee(STAFF2))],
        (),
        [
            (
                "SCHEDULE_BLOCK_DELETED",
                E1,
                None,
                {"scheduleBlockId": E1, "deletedAt": NOW, "reason": "No longer private ad-hoc block"},
            )
        ],
        id="block-given-a-second-assignee",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, block(), block(scheduled_start=START2, scheduled_end=END2))],
        (),
        [],
        id="block-moved-emits-nothing",
    ),
    pytest.param(
        [],
        [dele(SA, assignee(STAFF)), dele(SE, block())],
        (),
        [
            (
                "SCHEDULE_BLOCK_DELETED",
                E1,
                None,
                {"scheduleBlockId": E1, "deletedAt": NOW, "reason": "Deleted"},
            )
        ],
        id="block-deleted",
    ),
    # --- recurring series ---------------------------------------------------------------------------
    pytest.param(
        [assignee(STAFF)],
        [
            upd(
                SE,
                entry(is_recurring=True, recurrence_pattern={"frequency": "daily", "interval": 1}),
                entry(
                    is_recurring=True,
                    recurrence_pattern={"frequency": "daily", "interval": 1, "exceptions": ["2026-01-06"]},
                ),
            ),
            ins(SE, entry(E2, scheduled_start=START2, scheduled_end=END2)),
            ins(SA, assignee(STAFF, E2)),
        ],
        (),
        [
            (
                "APPOINTMENT_RESCHEDULED",
                E2,
                None,
                {
                    "appointmentId": E2,
                    "ticketId": TICKET,
                    "previousStartAt": "2026-01-06T09:00:00.000Z",  # the occurrence, not the master
                    "previousEndAt": "2026-01-06T10:00:00.000Z",
                    "newStartAt": START2,
                    "newEndAt": END2,
                    "timezone": "UTC",
                    "rescheduledAt": NOW,
                },
            )
        ],
        id="single-occurrence-moved",
    ),
    pytest.param(
        [assignee(STAFF)],
        [
            upd(SE, series(), series(exceptions=["2026-01-06T00:00:00.000Z"])),
            ins(
                SE,
                entry(
                    E2,
                    title="Bring the ladder",
                    scheduled_start="2026-01-06T09:00:00.000Z",
                    scheduled_end="2026-01-06T10:00:00.000Z",
                ),
            ),
            ins(SA, assignee(STAFF, E2)),
        ],
        (),
        [],
        id="single-occurrence-retitled-is-no-reschedule",
    ),
    pytest.param(
        [assignee(STAFF)],
        [
            upd(SE, series(), series(exceptions=["next tuesday"])),
            ins(SE, entry(E2, scheduled_start=START2, scheduled_end=END2)),
            ins(SA, assignee(STAFF, E2)),
        ],
        (),
        [
            (
                "APPOINTMENT_RESCHEDULED",
                E2,
                None,
                {
                    "appointmentId": E2,
                    "ticketId": TICKET,
                    "previousStartAt": START,
                    "previousEndAt": END,
                    "newStartAt": START2,
                    "newEndAt": END2,
                    "timezone": "UTC",
                    "rescheduledAt": NOW,
                },
            )
        ],
        id="unreadable-exception-falls-back-on-the-master",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, series(), series(exceptions=["2026-01-06"]))],
        (),
        [("APPOINTMENT_CANCELED", E1, None, {**APPT, "canceledAt": NOW, "reason": "Deleted"})],
        id="one-occurrence-deleted",
    ),
    pytest.param(
        [assignee(STAFF)],
        [
            upd(SE, series(**OVERNIGHT), series(exceptions=["9999-12-31"], **OVERNIGHT)),
            ins(SE, entry(E2, scheduled_start=START2, scheduled_end=END2)),
            ins(SA, assignee(STAFF, E2)),
        ],
        (),
        [
            (
                "APPOINTMENT_RESCHEDULED",
                E2,
                None,
                {
                    "appointmentId": E2,
                    "ticketId": TICKET,
                    "previousStartAt": OVERNIGHT["scheduled_start"],  # past the calendar: the master's
                    "previousEndAt": OVERNIGHT["scheduled_end"],
                    "newStartAt": START2,
                    "newEndAt": END2,
                    "timezone": "UTC",
                    "rescheduledAt": NOW,
                },
            )
        ],
        id="occurrence-on-the-last-day-of-the-calendar-falls-back-on-the-master",
    ),
    pytest.param(
        [assignee(STAFF)],
        [
            upd(SE, series(), series(exceptions=["2026-01-06"])),
            ins(SE, entry(E2, work_item_id=REQ_TICKET)),
        ],
        (),
        [
            ("APPOINTMENT_CANCELED", E1, None, {**APPT, "canceledAt": NOW, "reason": "Deleted"}),
            (
                "APPOINTMENT_CREATED",
                E2,
                None,
                {
                    "appointmentId": E2,
                    "ticketId": REQ_TICKET,
                    "startAt": START,
                    "endAt": END,
                    "timezone": "UTC",
                    "createdAt": CREATED,
                },
            ),
        ],
        id="occurrence-deleted-beside-an-unrelated-insert",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, series(), series(endDate="2026-01-20"))],
        (),
        [("APPOINTMENT_CANCELED", E1, None, {**APPT, "canceledAt": NOW, "reason": "Deleted"})],
        id="future-occurrences-deleted",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, series(endDate="2026-01-20"), series(endDate="2026-02-20"))],
        (),
        [],
        id="series-extended-deletes-nothing",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, series(**BLOCKISH), series(exceptions=["2026-01-06"], **BLOCKISH))],
        (),
        [],
        id="block-series-losing-an-occurrence-stays-a-block",
    ),
    pytest.param(
        [assignee(STAFF)],
        [
            upd(
                SE,
                entry(is_recurring=True, recurrence_pattern={"frequency": "daily", "interval": 1}),
                entry(
                    is_recurring=True,
                    recurrence_pattern={"frequency": "daily", "interval": 1, "endDate": "2026-01-09"},
                ),
            ),
            ins(
                SE,
                entry(E2, is_recurring=True, recurrence_pattern={"frequency": "daily", "interval": 1}),
            ),
            ins(SA, assignee(STAFF2, E2)),
        ],
        context(STAFF3),
        [
            (
                "SCHEDULE_ENTRY_UPDATED",
                E2,
                None,
                {
                    **USER,
                    "entryId": E2,
                    "userId": STAFF3,
                    "changes": {
                        "before": {
                            "id": E1,
                            "title": "On-site visit",
                            "scheduledStart": START,
                            "scheduledEnd": END,
                            "status": "scheduled",
                            "workItemId": TICKET,
                            "workItemType": "ticket",
                            "isRecurring": True,
                            "recurrencePattern": {"frequency": "daily", "interval": 1},
                            "assignedUserIds": [STAFF],
                            "isPrivate": False,
                        },
                        "after": {
                            "id": E2,
                            "title": "On-site visit",
                            "scheduledStart": START,
                            "scheduledEnd": END,
                            "status": "scheduled",
                            "workItemId": TICKET,
                            "workItemType": "ticket",
                            "isRecurring": True,
                            "recurrencePattern": {"frequency": "daily", "interval": 1},
                            "assignedUserIds": [STAFF2],
                            "isPrivate": False,
                        },
                        "updateType": "future",
                    },
                },
            ),
            assigned(STAFF2, previous=STAFF, entry_id=E2, **USER),
            dispatched(STAFF2, entry_id=E2, dispatchedByUserId=STAFF3, **USER),
        ],
        id="this-and-future-reassigned",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, entry(), entry(title="Renamed"))],
        context(STAFF3),
        [
            (
                "SCHEDULE_ENTRY_UPDATED",
                E1,
                None,
                {
                    **USER,
                    "entryId": E1,
                    "userId": STAFF3,
                    "changes": {
                        "before": {
                            "id": E1,
                            "title": "On-site visit",
                            "scheduledStart": START,
                            "scheduledEnd": END,
                            "status": "scheduled",
                            "workItemId": TICKET,
                            "workItemType": "ticket",
                            "isRecurring": False,
                            "recurrencePattern": None,
                            "assignedUserIds": [STAFF],
                            "isPrivate": False,
                        },
                        "after": {
                            "id": E1,
                            "title": "Renamed",
                            "scheduledStart": START,
                            "scheduledEnd": END,
                            "status": "scheduled",
                            "workItemId": TICKET,
                            "workItemType": "ticket",
                            "isRecurring": False,
                            "recurrencePattern": None,
                            "assignedUserIds": [STAFF],
                            "isPrivate": False,
                        },
                    },
                },
            )
        ],
        id="schedule-entry-updated-with-a-declared-user",
    ),
    pytest.param(
        [assignee(STAFF)],
        [upd(SE, entry(), entry(updated_at=NOW))],
        context(STAFF3),
        [],
        id="touched-only-no-schedule-entry-update",
    ),
]


@pytest.mark.parametrize(("earlier", "changes", "messages", "expected"), CASES)
def test_scheduling_rules(
    earlier: Sequence[Row],
    changes: Sequence[FakeChange],
    messages: Sequence[tuple[str, bytes]],
    expected: list[Draft],
) -> None:
    assert derive(earlier, changes, messages) == expected


def test_registered_with_its_tables_as_reference_state() -> None:
    (deriver,) = [d for d in default_derivers() if d.name == "scheduling"]
    assert deriver.state_tables == deriver.tables == {SE, SA, AR}
    declared = {t for columns in deriver.reads.values() for types in columns.values() for t in types}
    assert "APPOINTMENT_REQUEST_APPROVED" not in declared and "TECHNICIAN_DISPATCHED" in declared
