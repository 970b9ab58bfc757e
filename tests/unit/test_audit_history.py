"""The audit-log mapping (cdc.audit_history): application-shaped ``ticket_audit_logs`` rows, as the
application's ``writeTicketActivity`` callers write them, to ticket event drafts and envelopes.

Each case is one row and the exact drafts it yields (event type, discriminator, payload). The
rows follow the application: a curated ``changes`` diff with labels on updates, the client
portal's ``{old, previous, new}``, comment rows keyed by the comment id in ``entity_id``.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from catalog.envelope import EventValidationError, event_id
from catalog.registry import REGISTRY
from cdc.audit_history import audit_envelope
from derivers.audit_history import (
    EDIT_FIELDS,
    LIMITATIONS,
    NOT_RECONSTRUCTIBLE,
    RECONSTRUCTED,
    YIELDS,
    audit_drafts,
    gaps,
)

TENANT = "11111111-1111-4111-8111-111111111111"
TICKET = "99999999-9999-4999-8999-999999999991"
AUDIT = "a0000000-0000-4000-8000-000000000001"
DANA = "33333333-3333-4333-8333-333333333333"
LEE = "44444444-4444-4444-8444-444444444444"
SAM_CONTACT = "56565656-5656-4565-8565-565656565656"
SAM_USER = "55555555-5555-4555-8555-555555555555"
OPEN, WORKING, CLOSED = (f"66666666-6666-4666-8666-66666666666{n}" for n in (1, 2, 3))
P_MEDIUM, P_HIGH = "88888888-8888-4888-8888-888888888881", "88888888-8888-4888-8888-888888888882"
BOARD_A, BOARD_B = "70707070-7070-4707-8707-707070707070", "71717171-7171-4717-8717-717171717171"
TEAM = "7e7e7e7e-7e7e-47e7-87e7-7e7e7e7e7e7e"
CLIENT = "22222222-2222-4222-8222-222222222222"
COMMENT = "cccccccc-cccc-4ccc-8ccc-ccccccccccc1"
WHEN = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
AT = "2026-03-01T10:00:00.123Z"
DISC = f"audit-{AUDIT}"


def row(event_type: str, entity_type: str = "ticket", **kw: Any) -> dict[str, Any]:
    """An audit row as the ``audit_rows`` query returns it: a user acting in the MSP UI by default."""
    out: dict[str, Any] = {
        "tenant": TENANT,
        "audit_id": AUDIT,
        "ticket_id": TICKET,
        "event_type": event_type,
        "entity_type": entity_type,
        "entity_id": TICKET if entity_type == "ticket" else COMMENT,
        "actor_type": "user",
        "actor_user_id": DANA,
        "actor_contact_id": None,
        "source": "ui",
        "occurred_at": WHEN,
        "changes": {},
        "details": {},
    }
    out.update(kw)
    return out


def change(old: Any, new: Any, labels: bool = False) -> dict[str, Any]:
    entry = {"old": old, "new": new}
    if labels:  # the application resolves names for ids; the mapping ignores them
        entry |= {"oldLabel": "Old name", "newLabel": "New name"}
    return entry


def base(actor: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "tenantId": TENANT,
        "occurredAt": AT,
        **({"actorType": "USER", "actorUserId": DANA} if actor is None else actor),
    }


SYSTEM = {"actorType": "SYSTEM"}
CONTACT_ACTOR = {"actorType": "CONTACT", "actorContactId": SAM_CONTACT}
STATUS_DIFF = {"updatedFields": ["status_id"], "changes": {"status_id": {"previous": OPEN, "new": WORKING}}}

Expected = list[tuple[str, str, dict[str, Any]]]

CASES: list[tuple[str, dict[str, Any], Expected]] = [
    (
        "status change in the UI",
        row("TICKET_STATUS_CHANGED", changes={"status_id": change(OPEN, WORKING, labels=True)}),
        [
            (
                "TICKET_STATUS_CHANGED",
                DISC,
                base()
                | {"ticketId": TICKET, "previousStatusId": OPEN, "newStatusId": WORKING, "changedAt": AT},
            ),
            ("TICKET_UPDATED", DISC, base() | {"ticketId": TICKET, "updatedByUserId": DANA, **STATUS_DIFF}),
        ],
    ),
    (
        "close with closed_by, closed_at and the response state cleared",
        row(
            "TICKET_CLOSED",
            changes={
                "status_id": change(WORKING, CLOSED, labels=True),
                "closed_at": change(None, "2026-03-01T10:00:00.120Z"),
                "closed_by": change(None, LEE),
                "response_state": change("awaiting_client", None),
            },
        ),
        [
            (
                "TICKET_STATUS_CHANGED",
                DISC,
                base()
                | {"ticketId": TICKET, "previousStatusId": WORKING, "newStatusId": CLOSED, "changedAt": AT},
            ),
            (
                "TICKET_CLOSED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "closedByUserId": LEE,
                    "closedAt": "2026-03-01T10:00:00.120Z",
                    "updatedFields": ["status_id"],
                    "changes": {"status_id": {"previous": WORKING, "new": CLOSED}},
                },
            ),
            (
                "TICKET_RESPONSE_STATE_CHANGED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "previousResponseState": "awaiting_client",
                    "newResponseState": None,
                    "trigger": "close",
                },
            ),
        ],
    ),
    (
        "auto-close by the system: no closer, closedAt = occurred_at",
        row(
            "TICKET_CLOSED",
            actor_type="system",
            actor_user_id=None,
            source="system",
            changes={"status_id": change(WORKING, CLOSED)},
        ),
        [
            (
                "TICKET_STATUS_CHANGED",
                DISC,
                base(SYSTEM)
                | {"ticketId": TICKET, "previousStatusId": WORKING, "newStatusId": CLOSED, "changedAt": AT},
            ),
            (
                "TICKET_CLOSED",
                DISC,
                base(SYSTEM)
                | {
                    "ticketId": TICKET,
                    "closedAt": AT,
                    "updatedFields": ["status_id"],
                    "changes": {"status_id": {"previous": WORKING, "new": CLOSED}},
                },
            ),
        ],
    ),
    (
        "client-portal reopen ({old, previous, new})",
        row(
            "TICKET_REOPENED",
            source="client_portal",
            actor_user_id=SAM_USER,
            changes={"status_id": {"old": CLOSED, "previous": CLOSED, "new": OPEN}},
        ),
        [
            (
                "TICKET_STATUS_CHANGED",
                DISC,
                base({"actorType": "USER", "actorUserId": SAM_USER})
                | {"ticketId": TICKET, "previousStatusId": CLOSED, "newStatusId": OPEN, "changedAt": AT},
            ),
            (
                "TICKET_REOPENED",
                DISC,
                base({"actorType": "USER", "actorUserId": SAM_USER})
                | {"ticketId": TICKET, "previousStatusId": CLOSED, "newStatusId": OPEN, "reopenedAt": AT},
            ),
            (
                "TICKET_UPDATED",
                DISC,
                base({"actorType": "USER", "actorUserId": SAM_USER})
                | {
                    "ticketId": TICKET,
                    "updatedByUserId": SAM_USER,
                    "updatedFields": ["status_id"],
                    "changes": {"status_id": {"previous": CLOSED, "new": OPEN}},
                },
            ),
        ],
    ),
    (
        "bundle master reopened by a child's reply (system actor naming the user)",
        row(
            "TICKET_BUNDLE_REOPENED",
            actor_type="system",
            source="system",
            changes={"status_id": change(CLOSED, OPEN), "closed_at": change(None, None)},
            details={"reopen_trigger": "child_reply", "child_ticket_id": TICKET},
        ),
        [
            (
                "TICKET_STATUS_CHANGED",
                DISC,
                base(SYSTEM)
                | {"ticketId": TICKET, "previousStatusId": CLOSED, "newStatusId": OPEN, "changedAt": AT},
            ),
            (
                "TICKET_REOPENED",
                DISC,
                base(SYSTEM)
                | {"ticketId": TICKET, "previousStatusId": CLOSED, "newStatusId": OPEN, "reopenedAt": AT},
            ),
            (
                "TICKET_UPDATED",
                DISC,
                base(SYSTEM)
                | {
                    "ticketId": TICKET,
                    "updatedFields": ["status_id"],
                    "changes": {"status_id": {"previous": CLOSED, "new": OPEN}},
                },
            ),
        ],
    ),
    (
        "reassignment",
        row("TICKET_ASSIGNED", changes={"assigned_to": change(DANA, LEE, labels=True)}),
        [
            (
                "TICKET_ASSIGNED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "assignedToUserId": LEE,
                    "assignedByUserId": DANA,
                    "previousAssigneeId": DANA,
                    "previousAssigneeType": "user",
                    "newAssigneeId": LEE,
                    "newAssigneeType": "user",
                    "assignedAt": AT,
                    "updatedFields": ["assigned_to"],
                    "changes": {"assigned_to": {"previous": DANA, "new": LEE}},
                },
            )
        ],
    ),
    (
        "unassignment through the REST API (actor api)",
        row("TICKET_UNASSIGNED", actor_type="api", source="api", changes={"assigned_to": change(LEE, None)}),
        [
            (
                "TICKET_UNASSIGNED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "previousAssigneeId": LEE,
                    "previousAssigneeType": "user",
                    "unassignedAt": AT,
                },
            ),
            (
                "TICKET_UPDATED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "updatedByUserId": DANA,
                    "updatedFields": ["assigned_to"],
                    "changes": {"assigned_to": {"previous": LEE, "new": None}},
                },
            ),
        ],
    ),
    (
        "one update of several fields: title, priority, board, team (the team assignment wins)",
        row(
            "TICKET_UPDATED",
            changes={
                "assigned_team_id": change(None, TEAM),
                "board_id": change(BOARD_A, BOARD_B),
                "priority_id": change(P_MEDIUM, P_HIGH),
                "title": change("Printer", "Printer on fire"),
            },
        ),
        [
            (
                "TICKET_PRIORITY_CHANGED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "previousPriorityId": P_MEDIUM,
                    "newPriorityId": P_HIGH,
                    "changedAt": AT,
                },
            ),
            (
                "TICKET_QUEUE_CHANGED",
                DISC,
                base()
                | {"ticketId": TICKET, "previousBoardId": BOARD_A, "newBoardId": BOARD_B, "changedAt": AT},
            ),
            (
                "TICKET_ASSIGNED",
                f"{DISC}:team",
                base()
                | {
                    "ticketId": TICKET,
                    "assignedByUserId": DANA,
                    "newAssigneeId": TEAM,
                    "newAssigneeType": "team",
                    "assignedAt": AT,
                    "updatedFields": ["title", "priority_id", "board_id", "assigned_team_id"],
                    "changes": {
                        "title": {"previous": "Printer", "new": "Printer on fire"},
                        "priority_id": {"previous": P_MEDIUM, "new": P_HIGH},
                        "board_id": {"previous": BOARD_A, "new": BOARD_B},
                        "assigned_team_id": {"previous": None, "new": TEAM},
                    },
                },
            ),
        ],
    ),
    (
        "explicit response-state edit",
        row("TICKET_RESPONSE_STATE_CHANGED", changes={"response_state": change(None, "awaiting_internal")}),
        [
            (
                "TICKET_RESPONSE_STATE_CHANGED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "previousResponseState": None,
                    "newResponseState": "awaiting_internal",
                    "trigger": "manual",
                },
            )
        ],
    ),
    (
        "ticket created in the UI with an assignee",
        row(
            "TICKET_CREATED",
            details={
                "title": "Printer on fire",
                "board_id": BOARD_A,
                "status_id": OPEN,
                "priority_id": P_MEDIUM,
                "assigned_to": LEE,
                "client_id": CLIENT,
                "ticket_origin": "internal",
            },
        ),
        [
            (
                "TICKET_CREATED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "createdByUserId": DANA,
                    "createdAt": AT,
                    "board_id": BOARD_A,
                    "priority_id": P_MEDIUM,
                    "client_id": CLIENT,
                },
            ),
            (
                "TICKET_ASSIGNED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "assignedToUserId": LEE,
                    "assignedByUserId": DANA,
                    "newAssigneeId": LEE,
                    "newAssigneeType": "user",
                    "assignedAt": AT,
                },
            ),
        ],
    ),
    (
        "ticket created from an inbound e-mail by a known contact",
        row(
            "TICKET_CREATED",
            actor_type="email_sender",
            actor_contact_id=SAM_CONTACT,
            source="inbound_email",
            details={
                "title": "Help",
                "board_id": BOARD_A,
                "assigned_to": None,
                "email": {"provider": "imap"},
            },
        ),
        [
            (
                "TICKET_CREATED",
                DISC,
                base(CONTACT_ACTOR) | {"ticketId": TICKET, "createdAt": AT, "board_id": BOARD_A},
            )
        ],
    ),
    (
        "internal note",
        row("TICKET_INTERNAL_NOTE_ADDED", "comment", details={"is_internal": True, "is_resolution": False}),
        [
            (
                "TICKET_MESSAGE_ADDED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "messageId": COMMENT,
                    "visibility": "internal",
                    "authorId": DANA,
                    "authorType": "user",
                    "channel": "ui",
                    "createdAt": AT,
                },
            ),
            (
                "TICKET_INTERNAL_NOTE_ADDED",
                DISC,
                base() | {"ticketId": TICKET, "noteId": COMMENT, "createdAt": AT},
            ),
            (
                "TICKET_COMMENT_ADDED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "commentId": COMMENT,
                    "visibility": "internal",
                    "authorId": DANA,
                    "authorType": "user",
                    "createdAt": AT,
                },
            ),
        ],
    ),
    (
        "public staff reply",
        row("TICKET_MESSAGE_ADDED", "comment", details={"is_internal": False}),
        [
            (
                "TICKET_MESSAGE_ADDED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "messageId": COMMENT,
                    "visibility": "public",
                    "authorId": DANA,
                    "authorType": "user",
                    "channel": "ui",
                    "createdAt": AT,
                },
            ),
            (
                "TICKET_COMMENT_ADDED",
                DISC,
                base()
                | {
                    "ticketId": TICKET,
                    "commentId": COMMENT,
                    "visibility": "public",
                    "authorId": DANA,
                    "authorType": "user",
                    "createdAt": AT,
                },
            ),
        ],
    ),
    (
        "customer reply by e-mail",
        row(
            "TICKET_CUSTOMER_REPLIED",
            "comment",
            actor_type="email_sender",
            actor_user_id=None,
            actor_contact_id=SAM_CONTACT,
            source="inbound_email",
            details={"author_type": "client", "email": {"messageId": "<m1@globex.test>"}},
        ),
        [
            (
                "TICKET_MESSAGE_ADDED",
                DISC,
                base(CONTACT_ACTOR)
                | {
                    "ticketId": TICKET,
                    "messageId": COMMENT,
                    "visibility": "public",
                    "authorId": SAM_CONTACT,
                    "authorType": "contact",
                    "channel": "email",
                    "createdAt": AT,
                },
            ),
            (
                "TICKET_CUSTOMER_REPLIED",
                DISC,
                base(CONTACT_ACTOR)
                | {
                    "ticketId": TICKET,
                    "messageId": COMMENT,
                    "contactId": SAM_CONTACT,
                    "channel": "email",
                    "receivedAt": AT,
                },
            ),
            (
                "TICKET_COMMENT_ADDED",
                DISC,
                base(CONTACT_ACTOR)
                | {
                    "ticketId": TICKET,
                    "commentId": COMMENT,
                    "visibility": "public",
                    "authorId": SAM_CONTACT,
                    "authorType": "contact",
                    "createdAt": AT,
                },
            ),
        ],
    ),
    (
        "customer reply by a portal user the row names by user id only",
        row(
            "TICKET_CUSTOMER_REPLIED",
            "comment",
            actor_user_id=SAM_USER,
            source="client_portal",
            details={"is_internal": False, "author_type": "client", "response_source": "client_portal"},
        ),
        [
            (
                "TICKET_COMMENT_ADDED",
                DISC,
                base({"actorType": "USER", "actorUserId": SAM_USER})
                | {"ticketId": TICKET, "commentId": COMMENT, "visibility": "public", "createdAt": AT},
            )
        ],
    ),
    (
        "comment scheduled for later: nothing visible yet",
        row(
            "TICKET_MESSAGE_ADDED",
            "comment",
            details={"is_internal": False, "scheduled_publish_at": "2026-03-02T09:00:00.000Z"},
        ),
        [],
    ),
    (
        "scheduled comment published by the job",
        row(
            "TICKET_COMMENT_PUBLISHED",
            "comment",
            actor_type="system",
            actor_user_id=None,
            source="system",
            details={"published_at": AT, "scheduled_publish": True},
        ),
        [
            (
                "TICKET_COMMENT_ADDED",
                DISC,
                base(SYSTEM) | {"ticketId": TICKET, "commentId": COMMENT, "createdAt": AT},
            )
        ],
    ),
    (
        "comment edited",
        row(
            "TICKET_COMMENT_UPDATED",
            "comment",
            details={"is_internal": False, "was_internal": False, "edited": True},
        ),
        [
            (
                "TICKET_COMMENT_UPDATED",
                DISC,
                base() | {"ticketId": TICKET, "userId": DANA, "commentId": COMMENT},
            )
        ],
    ),
    ("document attached: no catalog event", row("TICKET_DOCUMENT_ATTACHED", "document"), []),
    ("an assignment row without changes (nothing to read)", row("TICKET_ASSIGNED"), []),
]


def case(prefix: str) -> dict[str, Any]:
    """The row of the case whose name starts with ``prefix``."""
    return next(r for n, r, _ in CASES if n.startswith(prefix))


def drafted(audit_row: dict[str, Any]) -> Expected:
    return [(d.event_type, d.discriminator or "", dict(d.payload)) for d in audit_drafts(audit_row)]


@pytest.mark.parametrize(("audit_row", "expected"), [pytest.param(r, e, id=n) for n, r, e in CASES])
def test_an_audit_row_yields_the_events_it_records(audit_row: dict[str, Any], expected: Expected) -> None:
    assert drafted(audit_row) == expected


@pytest.mark.parametrize(("audit_row", "expected"), [pytest.param(r, e, id=n) for n, r, e in CASES])
def test_every_draft_is_a_valid_event_the_row_type_declares(
    audit_row: dict[str, Any], expected: Expected
) -> None:
    for draft in audit_drafts(audit_row):
        assert draft.event_type in YIELDS[audit_row["event_type"]]
        env = audit_envelope(draft, audit_row, "cdc_events")
        assert env.payload == dict(draft.payload)


def test_skipped_events_are_counted_with_their_reason() -> None:
    skipped: Counter[tuple[str, str]] = Counter()
    audit_drafts(case("customer reply by a portal user"), skipped)
    audit_drafts(row("TICKET_ASSIGNED"), skipped)
    audit_drafts(row("TICKET_REOPENED", changes={"title": change("a", "b")}), skipped)
    audit_drafts(row("TICKET_COMMENT_UPDATED", "comment", actor_type="system", actor_user_id=None), skipped)
    assert skipped == {
        ("TICKET_MESSAGE_ADDED", "a TICKET_CUSTOMER_REPLIED row names no author"): 1,
        ("TICKET_CUSTOMER_REPLIED", "the row names no contact"): 1,
        ("TICKET_ASSIGNED", "the row's changes record no field change an event reports"): 1,
        ("TICKET_REOPENED", "the reopen row records no status change"): 1,
        ("TICKET_COMMENT_UPDATED", "the row names no editing user (the schema requires userId)"): 1,
    }


def test_the_envelope_key_names_the_audit_row_and_never_a_commit() -> None:
    audit_row = case("status change in the UI")
    first = [audit_envelope(d, audit_row, "cdc_events") for d in audit_drafts(audit_row)]
    again = [audit_envelope(d, audit_row, "cdc_events") for d in audit_drafts(dict(audit_row))]
    assert [e.to_json_bytes() for e in first] == [e.to_json_bytes() for e in again]
    env = first[0]
    assert env.idempotency_key == f"TICKET_STATUS_CHANGED:{TENANT}:{TICKET}:audit-{AUDIT}@0/0"
    assert env.id == event_id(env.idempotency_key)
    assert env.timestamp == AT
    assert env.source.to_dict() == {
        "slot": "cdc_events",
        "lsn": "0/0",
        "xid": 0,
        "commitTime": AT,
        "table": "public.ticket_audit_logs",
    }
    several = case("one update of several fields")
    keys = [audit_envelope(d, several, "cdc_events").idempotency_key for d in audit_drafts(several)]
    assert keys[-1] == f"TICKET_ASSIGNED:{TENANT}:{TICKET}:audit-{AUDIT}:team@0/0"  # a team: keyed apart


def test_occurred_at_as_text_is_the_same_instant() -> None:
    as_text = row("TICKET_STATUS_CHANGED", occurred_at="2026-03-01T11:00:00.123456+01:00")
    as_text["changes"] = {"status_id": change(OPEN, WORKING)}
    assert drafted(as_text) == CASES[0][2]


def test_a_value_its_model_rejects_fails_validation() -> None:
    for bad, paths in (
        (row("TICKET_STATUS_CHANGED", changes={"status_id": change(OPEN, "")}), ("newStatusId",)),
        (
            row("TICKET_ASSIGNED", changes={"assigned_to": change(None, "not-a-uuid")}),
            ("assignedToUserId", "newAssigneeId"),
        ),
    ):
        draft = audit_drafts(bad)[0]
        with pytest.raises(EventValidationError) as info:
            audit_envelope(draft, bad, "cdc_events")
        assert info.value.paths == paths


def test_edit_fields_are_the_live_tracked_columns_the_application_records() -> None:
    """The live deriver's order; closed_at / closed_by / response_state have events of their own."""
    assert EDIT_FIELDS == (
        "title",
        "url",
        "contact_name_id",
        "status_id",
        "category_id",
        "subcategory_id",
        "priority_id",
        "assigned_to",
        "due_date",
        "board_id",
        "client_id",
        "assigned_team_id",
    )


def test_every_ticket_event_is_either_reconstructed_or_explained() -> None:
    tickets = {t for t in REGISTRY if t.startswith("TICKET_")}
    assert RECONSTRUCTED.isdisjoint(NOT_RECONSTRUCTIBLE)
    assert RECONSTRUCTED | set(NOT_RECONSTRUCTIBLE) == tickets
    assert set(LIMITATIONS) <= RECONSTRUCTED


def test_gaps_name_what_a_request_cannot_get() -> None:
    assert gaps(["TICKET_ESCALATED", "PROJECT_CREATED", "TICKET_STATUS_CHANGED", "TICKET_CLOSED"]) == [
        ("PROJECT_CREATED", "not a ticket event: the application's audit log records tickets only"),
        ("TICKET_ESCALATED", NOT_RECONSTRUCTIBLE["TICKET_ESCALATED"]),
        ("TICKET_CLOSED", LIMITATIONS["TICKET_CLOSED"]),
    ]
    assert len(gaps()) == len(NOT_RECONSTRUCTIBLE) + len(LIMITATIONS)
