"""The ticket deriver's rules, table by table (derivers.tickets and its family modules).

Each case is a folded transaction (before/after images and the rest of the transaction) and the
drafts it must yield: event types in order and the payload fields that matter. Rows are full images in the canonical JSON forms the framework hands derivers (uuid text,
``…Z`` millisecond timestamps, parsed jsonb), so the rules see what they see in production.
Every draft a test derives is turned into an envelope with :func:`catalog.build_envelope`, so a
payload the catalog would reject fails the test, and no two events of a transaction may share an
idempotency key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from catalog import build_envelope
from catalog.envelope import Envelope
from derivers.base import Derived, TxView
from derivers.testing import FakeChange, FakeState, FakeTimers, make_tx
from derivers.tickets import TicketDeriver


def u(n: int) -> str:
    """A readable uuid: ``u(7)`` → ``00000000-0000-4000-8000-000000000007``."""
    return f"00000000-0000-4000-8000-{n:012d}"


TENANT = u(1)
TICKET = u(10)
MASTER = u(11)
CHILD1, CHILD2, CHILD3 = u(12), u(13), u(14)
STAFF = u(20)  # internal user
STAFF2 = u(21)
STAFF3 = u(22)
PORTAL_USER = u(23)  # client user linked to CONTACT
CONTACT = u(30)
CONTACT2 = u(31)
TEAM_A, TEAM_B = u(40), u(41)
OPEN, OPEN2, CLOSED_STATUS = u(50), u(51), u(52)
P1, P2 = u(60), u(61)
BOARD_A, BOARD_B = u(70), u(71)
CLIENT = u(80)
POLICY = u(90)
COMMENT1, COMMENT2 = u(100), u(101)
MIRROR_COPY = u(102)
ENTRY1, ENTRY2 = u(110), u(111)
RES1, RES2, RES3 = u(120), u(121), u(122)

COMMIT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
NOW = "2026-01-02T03:04:05.678Z"
EARLIER = "2026-01-02T01:00:00.000Z"
LATER = "2026-01-02T09:00:00.000Z"

ABSENT = object()
"""An expected payload value meaning: the key must not be there."""

ACTOR_KEYS = ("actorType", "actorUserId", "actorContactId")
NO_ACTOR = dict.fromkeys(ACTOR_KEYS, ABSENT)

TICKETS = "public.tickets"
COMMENTS = "public.comments"
RESOURCES = "public.ticket_resources"
SETTINGS = "public.ticket_bundle_settings"
MIRRORS = "public.ticket_bundle_mirrors"
AUDIT = "public.ticket_audit_logs"
TIME = "public.time_entries"


def ticket_row(ticket_id: str = TICKET, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "ticket_id": ticket_id,
        "ticket_number": "T-1",
        "title": "Printer on fire",
        "url": None,
        "contact_name_id": None,
        "status_id": OPEN,
        "category_id": None,
        "subcategory_id": None,
        "priority_id": P1,
        "severity_id": None,
        "urgency_id": None,
        "impact_id": None,
        "entered_by": STAFF,
        "updated_by": None,
        "assigned_to": None,
        "closed_by": None,
        "entered_at": EARLIER,
        "updated_at": EARLIER,
        "closed_at": None,
        "is_closed": False,
        "attributes": None,
        "due_date": None,
        "location_id": None,
        "email_metadata": None,
        "itil_impact": None,
        "itil_urgency": None,
        "itil_priority_level": None,
        "escalated": False,
        "escalation_level": None,
        "escalated_at": None,
        "escalated_by": None,
        "board_id": BOARD_A,
        "client_id": CLIENT,
        "response_state": None,
        "master_ticket_id": None,
        "source": "web_app",
        "ticket_origin": "internal",
        "sla_policy_id": None,
        "sla_started_at": None,
        "sla_response_due_at": None,
        "sla_response_at": None,
        "sla_response_met": None,
        "sla_resolution_due_at": None,
        "sla_resolution_at": None,
        "sla_resolution_met": None,
        "sla_paused_at": None,
        "sla_total_pause_minutes": 0,
        "assigned_team_id": None,
        "billing_profile_id": None,
    }
    row.update(values)
    return row


def comment_row(comment_id: str = COMMENT1, ticket_id: str = TICKET, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "comment_id": comment_id,
        "ticket_id": ticket_id,
        "user_id": STAFF,
        "note": "Hello",
        "is_internal": False,
        "is_resolution": False,
        "created_at": "2026-01-02T03:04:05.000Z",
        "updated_at": "2026-01-02T03:04:05.000Z",
        "author_type": "internal",
        "markdown_content": None,
        "metadata": None,
        "is_system_generated": False,
        "contact_id": None,
        "thread_id": u(900),
        "parent_comment_id": None,
        "deleted_at": None,
        "publish_state": "published",
        "scheduled_publish_at": None,
        "published_at": None,
    }
    row.update(values)
    return row


def resource_row(
    assignment_id: str, agent: str, primary: str = STAFF, ticket_id: str = TICKET
) -> dict[str, Any]:
    return {
        "tenant": TENANT,
        "assignment_id": assignment_id,
        "ticket_id": ticket_id,
        "assigned_to": primary,
        "additional_user_id": agent,
        "role": None,
        "assigned_at": "2026-01-02T03:04:05.100Z",
    }


def audit_row(ticket_id: str = TICKET, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "audit_id": u(800),
        "ticket_id": ticket_id,
        "event_type": "TICKET_UPDATED",
        "entity_type": "ticket",
        "entity_id": ticket_id,
        "actor_type": "user",
        "actor_user_id": STAFF,
        "actor_contact_id": None,
        "actor_display_name": None,
        "source": "ui",
        "occurred_at": NOW,
        "changes": {},
        "details": {},
        "created_at": NOW,
    }
    row.update(values)
    return row


def entry_row(entry_id: str = ENTRY1, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "entry_id": entry_id,
        "user_id": STAFF,
        "start_time": "2026-01-02T01:00:30.000Z",
        "end_time": "2026-01-02T02:30:10.000Z",
        "notes": None,
        "work_item_id": TICKET,
        "billable_duration": 90,
        "work_item_type": "ticket",
        "approval_status": "DRAFT",
        "created_at": "2026-01-02T02:30:11.000Z",
        "updated_at": "2026-01-02T02:30:11.000Z",
        "work_date": "2026-01-02",
        "work_timezone": "UTC",
        "created_by": STAFF,
        "updated_by": STAFF,
    }
    row.update(values)
    return row


def ins(table: str, after: Mapping[str, Any]) -> FakeChange:
    return FakeChange(table, "insert", None, after)


def upd(table: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> FakeChange:
    return FakeChange(table, "update", before, after)


def dele(table: str, before: Mapping[str, Any]) -> FakeChange:
    return FakeChange(table, "delete", before, None)


def ticket_upd(before: Mapping[str, Any], after: Mapping[str, Any], ticket_id: str = TICKET) -> FakeChange:
    """A folded tickets UPDATE: the base row with ``before`` / ``after`` overrides."""
    return upd(TICKETS, ticket_row(ticket_id, **before), ticket_row(ticket_id, **after))


def base_state() -> FakeState:
    state = FakeState()
    for status, closed in ((OPEN, False), (OPEN2, False), (CLOSED_STATUS, True)):
        state.put(
            "public.statuses", (TENANT, status), {"tenant": TENANT, "status_id": status, "is_closed": closed}
        )
    for user, kind, contact in (
        (STAFF, "internal", None),
        (STAFF2, "internal", None),
        (STAFF3, "internal", None),
        (PORTAL_USER, "client", CONTACT),
    ):
        email = f"{user[-2:]}@example.test"
        state.put(
            "public.users",
            (TENANT, user, email),  # the table's primary key is (tenant, user_id, email)
            {"tenant": TENANT, "user_id": user, "email": email, "user_type": kind, "contact_id": contact},
        )
    return state


@dataclass
class Run:
    tx: TxView
    derived: list[Derived]
    envelopes: list[Envelope]
    timers: FakeTimers
    state: FakeState = field(default_factory=FakeState)

    @property
    def types(self) -> list[str]:
        return [d.draft.event_type for d in self.derived]


def run(
    changes: Sequence[FakeChange],
    state: FakeState | None = None,
    timers: FakeTimers | None = None,
    commit_time: datetime = COMMIT,
) -> Run:
    tx = make_tx(changes, commit_time=commit_time)
    state = state if state is not None else base_state()
    timers = timers if timers is not None else FakeTimers()
    derived = TicketDeriver().derive(tx, state, timers)
    envelopes = [
        build_envelope(
            d.draft, slot="t", lsn=tx.end_lsn, xid=tx.xid, commit_time=tx.commit_time, table=d.table
        )
        for d in derived
    ]
    keys = [e.idempotency_key for e in envelopes]
    assert len(set(keys)) == len(keys), f"duplicate idempotency keys: {keys}"
    positions = [d.position for d in derived]
    assert positions == sorted(positions), "drafts must come in position order"
    for d in derived:
        assert d.table == tx.changes[d.position].table
    return Run(tx, derived, envelopes, timers, state)


Expected = Sequence[tuple[str, Mapping[str, Any]]]


def check(result: Run, expected: Expected) -> None:
    """Event types in order, and for each the listed payload fields (ABSENT: key not sent)."""
    assert result.types == [event_type for event_type, _ in expected]
    for envelope, (event_type, wanted) in zip(result.envelopes, expected, strict=True):
        payload = envelope.payload
        assert payload["tenantId"] == TENANT
        for key, value in wanted.items():
            if value is ABSENT:
                assert key not in payload, f"{event_type}.{key} should be absent"
            else:
                assert payload.get(key, ABSENT) == value, f"{event_type}.{key}: {payload.get(key, ABSENT)!r}"


USER_STAFF = {"actorType": "USER", "actorUserId": STAFF, "actorContactId": ABSENT}
USER_STAFF2 = {"actorType": "USER", "actorUserId": STAFF2, "actorContactId": ABSENT}


def audit(**values: Any) -> FakeChange:
    return ins(AUDIT, audit_row(**values))


# --- ticket updates: transitions and the one lifecycle event ---------------------------------------

CLOSE_TIME = "2026-01-02T03:04:05.500Z"

UPDATE_CASES = [
    pytest.param(
        {"status_id": OPEN},
        {"status_id": OPEN2},
        [],
        [
            (
                "TICKET_STATUS_CHANGED",
                {
                    "ticketId": TICKET,
                    "previousStatusId": OPEN,
                    "newStatusId": OPEN2,
                    "changedAt": NOW,
                    **NO_ACTOR,
                },
            ),
            (
                "TICKET_UPDATED",
                {
                    "updatedFields": ["status_id"],
                    "changes": {"status_id": {"previous": OPEN, "new": OPEN2}},
                    "updatedByUserId": ABSENT,
                    **NO_ACTOR,
                },
            ),
        ],
        id="rest-style-status-only-no-audit-no-actor",
    ),
    pytest.param(
        {"status_id": OPEN, "response_state": "awaiting_client", "assigned_to": STAFF},
        {
            "status_id": CLOSED_STATUS,
            "is_closed": True,
            "closed_at": CLOSE_TIME,
            "closed_by": STAFF2,
            "response_state": None,
            "assigned_to": STAFF,
        },
        [audit(actor_user_id=STAFF2, event_type="TICKET_STATUS_CHANGED")],
        [
            ("TICKET_STATUS_CHANGED", {"newStatusId": CLOSED_STATUS, **USER_STAFF2}),
            (
                "TICKET_CLOSED",
                {
                    "closedByUserId": STAFF2,
                    "closedAt": CLOSE_TIME,
                    "updatedFields": ["status_id"],
                    **USER_STAFF2,
                },
            ),
            (
                "TICKET_RESPONSE_STATE_CHANGED",
                {
                    "previousResponseState": "awaiting_client",
                    "newResponseState": None,
                    "trigger": "close",
                    **USER_STAFF2,
                },
            ),
        ],
        id="app-close-main-update-plus-is_closed-closed_at-response_state-folded",
    ),
    pytest.param(
        {"status_id": OPEN},
        {"status_id": CLOSED_STATUS},
        [],
        [
            ("TICKET_STATUS_CHANGED", {"newStatusId": CLOSED_STATUS}),
            ("TICKET_CLOSED", {"closedAt": NOW, "closedByUserId": ABSENT, **NO_ACTOR}),
        ],
        id="rest-style-close-writing-only-status",
    ),
    pytest.param(
        {"is_closed": False},
        {"is_closed": True},
        [],
        [("TICKET_CLOSED", {"closedAt": NOW, "updatedFields": ABSENT, "changes": ABSENT})],
        id="close-by-is_closed-flag-only",
    ),
    pytest.param(
        {"status_id": OPEN},
        {"status_id": CLOSED_STATUS, "is_closed": True, "closed_at": CLOSE_TIME},
        [audit(actor_type="system", actor_user_id=None, source="system")],
        [
            ("TICKET_STATUS_CHANGED", {"actorType": "SYSTEM", "actorUserId": ABSENT}),
            ("TICKET_CLOSED", {"actorType": "SYSTEM", "closedByUserId": ABSENT, "closedAt": CLOSE_TIME}),
        ],
        id="auto-close-job-system-actor",
    ),
    pytest.param(
        {"status_id": OPEN},
        {"status_id": CLOSED_STATUS, "is_closed": True, "closed_by": STAFF2},
        [],
        [
            ("TICKET_STATUS_CHANGED", USER_STAFF2),
            ("TICKET_CLOSED", {"closedByUserId": STAFF2, **USER_STAFF2}),
        ],
        id="close-actor-from-closed_by-written-in-tx",
    ),
    pytest.param(
        {"status_id": CLOSED_STATUS, "is_closed": True, "closed_at": EARLIER, "closed_by": STAFF},
        {"status_id": OPEN, "is_closed": False, "closed_at": None, "closed_by": None},
        [],
        [
            ("TICKET_STATUS_CHANGED", {"previousStatusId": CLOSED_STATUS, "newStatusId": OPEN}),
            ("TICKET_REOPENED", {"previousStatusId": CLOSED_STATUS, "newStatusId": OPEN, "reopenedAt": NOW}),
            ("TICKET_UPDATED", {"updatedFields": ["status_id"]}),
        ],
        id="reopen",
    ),
    pytest.param(
        {"status_id": u(59), "is_closed": True},
        {"status_id": OPEN, "is_closed": False},
        [],
        [
            ("TICKET_STATUS_CHANGED", {"previousStatusId": u(59)}),
            ("TICKET_REOPENED", {"previousStatusId": u(59), "newStatusId": OPEN}),
            ("TICKET_UPDATED", {}),
        ],
        id="reopen-by-flag-when-old-status-unknown",
    ),
    pytest.param(
        {"priority_id": P1},
        {"priority_id": P2},
        [],
        [
            ("TICKET_PRIORITY_CHANGED", {"previousPriorityId": P1, "newPriorityId": P2, "changedAt": NOW}),
            ("TICKET_UPDATED", {"updatedFields": ["priority_id"]}),
        ],
        id="priority",
    ),
    pytest.param(
        {"priority_id": None},
        {"priority_id": P2},
        [],
        [("TICKET_UPDATED", {"updatedFields": ["priority_id"]})],
        id="priority-null-to-value-is-only-an-update",
    ),
    pytest.param(
        {"priority_id": P1},
        {"priority_id": None},
        [],
        [("TICKET_UPDATED", {"updatedFields": ["priority_id"]})],
        id="priority-value-to-null-is-only-an-update",
    ),
    pytest.param(
        {"assigned_to": STAFF},
        {"assigned_to": None},
        [],
        [
            (
                "TICKET_UNASSIGNED",
                {"previousAssigneeId": STAFF, "previousAssigneeType": "user", "unassignedAt": NOW},
            ),
            ("TICKET_UPDATED", {"updatedFields": ["assigned_to"]}),
        ],
        id="unassign",
    ),
    pytest.param(
        {"assigned_to": STAFF},
        {"assigned_to": STAFF2},
        [audit(actor_user_id=STAFF3)],
        [
            (
                "TICKET_ASSIGNED",
                {
                    "previousAssigneeId": STAFF,
                    "previousAssigneeType": "user",
                    "newAssigneeId": STAFF2,
                    "newAssigneeType": "user",
                    "assignedToUserId": STAFF2,
                    "assignedByUserId": STAFF3,
                    "assignedAt": NOW,
                    "updatedFields": ["assigned_to"],
                },
            ),
        ],
        id="reassign",
    ),
    pytest.param(
        {"assigned_to": None},
        {"assigned_to": STAFF2},
        [],
        [
            (
                "TICKET_ASSIGNED",
                {"previousAssigneeId": ABSENT, "previousAssigneeType": ABSENT, "newAssigneeId": STAFF2},
            )
        ],
        id="assign-first-user",
    ),
    pytest.param(
        {"assigned_to": STAFF, "status_id": OPEN},
        {"assigned_to": STAFF2, "status_id": CLOSED_STATUS},
        [],
        [
            ("TICKET_STATUS_CHANGED", {}),
            ("TICKET_CLOSED", {"updatedFields": ["status_id", "assigned_to"]}),
        ],
        id="close-wins-over-assignment",
    ),
    pytest.param(
        {"status_id": OPEN, "board_id": BOARD_A},
        {"status_id": OPEN2, "board_id": BOARD_B},
        [],
        [
            ("TICKET_STATUS_CHANGED", {}),
            ("TICKET_QUEUE_CHANGED", {"previousBoardId": BOARD_A, "newBoardId": BOARD_B, "changedAt": NOW}),
            ("TICKET_UPDATED", {"updatedFields": ["status_id", "board_id"]}),
        ],
        id="board-move",
    ),
    pytest.param(
        {"escalated": False},
        {"escalated": True, "escalation_level": 1, "escalated_at": CLOSE_TIME, "escalated_by": STAFF3},
        [],
        [
            ("TICKET_ESCALATED", {"fromQueueId": BOARD_A, "toQueueId": BOARD_A, "escalatedAt": CLOSE_TIME}),
            (
                "TICKET_UPDATED",
                {"updatedFields": ["escalated", "escalation_level", "escalated_at", "escalated_by"]},
            ),
        ],
        id="escalation-by-sla-service",
    ),
    pytest.param(
        {"escalated": None},
        {"escalated": True},
        [],
        [("TICKET_ESCALATED", {"escalatedAt": NOW}), ("TICKET_UPDATED", {})],
        id="escalated-null-to-true",
    ),
    pytest.param(
        {"assigned_team_id": None},
        {"assigned_team_id": TEAM_A},
        [],
        [
            (
                "TICKET_ASSIGNED",
                {"newAssigneeId": TEAM_A, "newAssigneeType": "team", "assignedToUserId": ABSENT},
            )
        ],
        id="team-assignment",
    ),
    pytest.param(
        {"assigned_to": STAFF, "assigned_team_id": TEAM_A},
        {"assigned_to": STAFF2, "assigned_team_id": TEAM_B},
        [],
        [
            ("TICKET_ASSIGNED", {"newAssigneeId": STAFF2, "newAssigneeType": "user"}),
            (
                "TICKET_ASSIGNED",
                {
                    "previousAssigneeId": TEAM_A,
                    "previousAssigneeType": "team",
                    "newAssigneeId": TEAM_B,
                    "newAssigneeType": "team",
                },
            ),
        ],
        id="user-and-team-assignment-in-one-tx",
    ),
    pytest.param(
        {"assigned_team_id": TEAM_A},
        {"assigned_team_id": None},
        [],
        [
            ("TICKET_UNASSIGNED", {"previousAssigneeId": TEAM_A, "previousAssigneeType": "team"}),
            ("TICKET_UPDATED", {}),
        ],
        id="team-unassignment",
    ),
    pytest.param(
        {"updated_at": EARLIER, "updated_by": None},
        {"updated_at": NOW, "updated_by": STAFF},
        [],
        [],
        id="bookkeeping-only-updated_at-updated_by",
    ),
    pytest.param(
        {"sla_policy_id": None, "sla_total_pause_minutes": 0},
        {"sla_total_pause_minutes": 5},
        [],
        [],
        id="bookkeeping-only-sla-columns",
    ),
    pytest.param(
        {"response_state": None},
        {"response_state": "awaiting_internal"},
        [],
        [
            (
                "TICKET_RESPONSE_STATE_CHANGED",
                {"previousResponseState": None, "newResponseState": "awaiting_internal", "trigger": "manual"},
            )
        ],
        id="response-state-manual",
    ),
    pytest.param(
        {"title": "a", "updated_by": STAFF},
        {"title": "b", "updated_by": STAFF3},
        [],
        [
            (
                "TICKET_UPDATED",
                {
                    "updatedByUserId": STAFF3,
                    "actorType": "USER",
                    "actorUserId": STAFF3,
                    "changes": {"title": {"previous": "a", "new": "b"}},
                },
            )
        ],
        id="updated_by-written-in-tx-is-the-actor",
    ),
    pytest.param(
        {"title": "a", "updated_by": STAFF3},
        {"title": "b", "updated_by": STAFF3},
        [],
        [("TICKET_UPDATED", {"updatedByUserId": ABSENT, **NO_ACTOR})],
        id="stale-updated_by-is-not-an-actor",
    ),
    pytest.param(
        {"status_id": OPEN},
        {"status_id": None},
        [],
        [("TICKET_UPDATED", {"updatedFields": ["status_id"]})],
        id="status-to-null-no-status-changed",
    ),
    pytest.param(
        {
            "status_id": CLOSED_STATUS,
            "is_closed": True,
            "priority_id": P1,
            "assigned_to": STAFF,
            "board_id": BOARD_A,
            "escalated": False,
        },
        {
            "status_id": OPEN,
            "is_closed": False,
            "priority_id": P2,
            "assigned_to": None,
            "board_id": BOARD_B,
            "escalated": True,
            "response_state": "awaiting_internal",
        },
        [],
        [
            ("TICKET_STATUS_CHANGED", {}),
            ("TICKET_PRIORITY_CHANGED", {}),
            ("TICKET_UNASSIGNED", {}),
            ("TICKET_QUEUE_CHANGED", {}),
            ("TICKET_REOPENED", {}),
            ("TICKET_ESCALATED", {"fromQueueId": BOARD_A, "toQueueId": BOARD_B}),
            ("TICKET_UPDATED", {}),
            ("TICKET_RESPONSE_STATE_CHANGED", {"trigger": "manual"}),
        ],
        id="every-transition-in-the-declared-order",
    ),
]


@pytest.mark.parametrize(("before", "after", "others", "expected"), UPDATE_CASES)
def test_ticket_update(
    before: dict[str, Any], after: dict[str, Any], others: list[FakeChange], expected: Expected
) -> None:
    check(run([*others, ticket_upd(before, after)]), expected)


def test_ticket_update_drafts_are_about_the_ticket() -> None:
    result = run(
        [
            ticket_upd(
                {"assigned_to": STAFF, "assigned_team_id": None},
                {"assigned_to": None, "assigned_team_id": TEAM_A},
            )
        ]
    )
    assert result.types == ["TICKET_UNASSIGNED", "TICKET_ASSIGNED"]
    assert {d.draft.subject_id for d in result.derived} == {TICKET}
    assert [d.draft.discriminator for d in result.derived] == [None, "team"]


# --- the actor rule ----------------------------------------------------------------------------------

ACTOR_CASES = [
    pytest.param([audit(actor_type="user", actor_user_id=STAFF2)], USER_STAFF2, id="audit-user"),
    pytest.param(
        [audit(actor_type="contact", actor_user_id=None, actor_contact_id=CONTACT)],
        {"actorType": "CONTACT", "actorContactId": CONTACT, "actorUserId": ABSENT},
        id="audit-contact",
    ),
    pytest.param(
        [audit(actor_type="system", actor_user_id=None)],
        {"actorType": "SYSTEM", "actorUserId": ABSENT},
        id="audit-system",
    ),
    pytest.param(
        [audit(actor_type="workflow", actor_user_id=None)],
        {"actorType": "SYSTEM", "actorUserId": ABSENT},
        id="audit-workflow",
    ),
    pytest.param([audit(actor_type="api", actor_user_id=STAFF2)], USER_STAFF2, id="audit-api-with-user"),
    pytest.param(
        [audit(actor_type="api", actor_user_id=None)],
        {"actorType": "SYSTEM", "actorUserId": ABSENT},
        id="audit-api-without-user",
    ),
    pytest.param(
        [audit(actor_type="email_sender", actor_user_id=None, actor_contact_id=CONTACT)],
        {"actorType": "CONTACT", "actorContactId": CONTACT},
        id="audit-email-sender-contact",
    ),
    pytest.param(
        [audit(actor_type="email_sender", actor_user_id=STAFF2, actor_contact_id=None)],
        USER_STAFF2,
        id="audit-email-sender-matched-user",
    ),
    pytest.param(
        [audit(actor_type="user", actor_user_id=None)],
        {"actorType": "USER", "actorUserId": STAFF3},
        id="audit-user-without-id-falls-back-to-row",
    ),
    pytest.param(
        [audit(actor_type="robot")],
        {"actorType": "USER", "actorUserId": STAFF3},
        id="audit-unknown-type-falls-back",
    ),
    pytest.param(
        [audit(ticket_id=MASTER, actor_user_id=STAFF2)],
        {"actorType": "USER", "actorUserId": STAFF3},
        id="audit-of-another-ticket-is-ignored",
    ),
    pytest.param(
        [upd(AUDIT, audit_row(actor_user_id=STAFF), audit_row(actor_user_id=STAFF2))],
        {"actorType": "USER", "actorUserId": STAFF3},
        id="audit-row-updated-not-inserted-is-ignored",
    ),
    pytest.param(
        [audit(actor_type="system", actor_user_id=None), audit(actor_user_id=STAFF2)],
        {"actorType": "SYSTEM"},
        id="first-audit-row-wins",
    ),
]


@pytest.mark.parametrize(("others", "actor"), ACTOR_CASES)
def test_actor_rule(others: list[FakeChange], actor: dict[str, Any]) -> None:
    # updated_by written in the transaction is the fallback when no audit row names an actor.
    change = ticket_upd({"title": "a", "updated_by": None}, {"title": "b", "updated_by": STAFF3})
    check(run([*others, change]), [("TICKET_UPDATED", actor)])


# --- ticket creation ---------------------------------------------------------------------------------

CREATE_CASES = [
    pytest.param(
        {},
        [],
        [
            (
                "TICKET_CREATED",
                {
                    "ticketId": TICKET,
                    "createdByUserId": STAFF,
                    "createdAt": EARLIER,
                    "board_id": BOARD_A,
                    "priority_id": P1,
                    "client_id": CLIENT,
                    "source": "web_app",
                    **USER_STAFF,
                },
            )
        ],
        id="plain",
    ),
    pytest.param(
        {"assigned_to": STAFF2},
        [],
        [
            ("TICKET_CREATED", {}),
            (
                "TICKET_ASSIGNED",
                {
                    "newAssigneeId": STAFF2,
                    "newAssigneeType": "user",
                    "assignedToUserId": STAFF2,
                    "assignedByUserId": STAFF,
                    "previousAssigneeId": ABSENT,
                    "assignedAt": NOW,
                },
            ),
        ],
        id="with-assignee",
    ),
    pytest.param(
        {"assigned_team_id": TEAM_A},
        [],
        [("TICKET_CREATED", {}), ("TICKET_ASSIGNED", {"newAssigneeId": TEAM_A, "newAssigneeType": "team"})],
        id="with-team",
    ),
    pytest.param(
        {"entered_by": None, "source": "email", "priority_id": None},
        [
            audit(
                actor_type="email_sender",
                actor_user_id=None,
                actor_contact_id=CONTACT,
                source="inbound_email",
            )
        ],
        [
            (
                "TICKET_CREATED",
                {
                    "createdByUserId": ABSENT,
                    "priority_id": ABSENT,
                    "source": "email",
                    "actorType": "CONTACT",
                    "actorContactId": CONTACT,
                },
            )
        ],
        id="inbound-email-no-creator",
    ),
    pytest.param(
        {"master_ticket_id": MASTER},
        [],
        [
            ("TICKET_CREATED", {}),
            (
                "TICKET_MERGED",
                {"sourceTicketId": TICKET, "targetTicketId": MASTER, "reason": "bundle:added_children"},
            ),
        ],
        id="created-inside-a-bundle",
    ),
]


@pytest.mark.parametrize(("values", "others", "expected"), CREATE_CASES)
def test_ticket_created(values: dict[str, Any], others: list[FakeChange], expected: Expected) -> None:
    check(run([*others, ins(TICKETS, ticket_row(**values))]), expected)


def test_ticket_deleted_emits_nothing_and_forgets_its_timers() -> None:
    timers = FakeTimers()
    for key in (
        f"sla:{TENANT}:{TICKET}:response",
        f"sla:{TENANT}:{TICKET}:itil",
        f"sla:{TENANT}:{MASTER}:itil",
    ):
        timers.arm(key, tenant=TENANT, subject_id=TICKET, stage="resolution", due_at=COMMIT)
    result = run([dele(TICKETS, ticket_row())], timers=timers)
    assert result.types == []
    assert list(timers.timers) == [f"sla:{TENANT}:{MASTER}:itil"]


# --- sync_updates propagation ------------------------------------------------------------------------


def _sync_tx(child_after: dict[str, Any]) -> list[FakeChange]:
    close = {"status_id": CLOSED_STATUS, "is_closed": True, "closed_at": CLOSE_TIME, "closed_by": STAFF}
    return [
        audit(ticket_id=MASTER),
        ticket_upd({"status_id": OPEN}, close, MASTER),
        upd(
            TICKETS,
            ticket_row(CHILD1, master_ticket_id=MASTER),
            ticket_row(CHILD1, master_ticket_id=MASTER, updated_by=STAFF, updated_at=NOW, **child_after),
        ),
    ]


def _settings(mode: str) -> FakeState:
    row = {"tenant": TENANT, "master_ticket_id": MASTER, "mode": mode, "reopen_on_child_reply": False}
    return base_state().put(SETTINGS, (TENANT, MASTER), row)


@pytest.mark.parametrize(
    ("mode", "child_after", "child_events"),
    [
        pytest.param(
            "sync_updates",
            {"status_id": CLOSED_STATUS, "is_closed": True, "closed_at": CLOSE_TIME, "closed_by": STAFF},
            [],
            id="sync-updates-child-suppressed",
        ),
        pytest.param(
            "link_only",
            {"status_id": CLOSED_STATUS, "is_closed": True, "closed_at": CLOSE_TIME, "closed_by": STAFF},
            ["TICKET_STATUS_CHANGED", "TICKET_CLOSED"],
            id="link-only-child-is-its-own-update",
        ),
        pytest.param(
            "sync_updates",
            {"status_id": OPEN2},
            ["TICKET_STATUS_CHANGED", "TICKET_UPDATED"],
            id="child-took-other-values",
        ),
    ],
)
def test_sync_updates_propagation(mode: str, child_after: dict[str, Any], child_events: list[str]) -> None:
    result = run(_sync_tx(child_after), state=_settings(mode))
    master = [d.draft.event_type for d in result.derived if d.draft.subject_id == MASTER]
    child = [d.draft.event_type for d in result.derived if d.draft.subject_id == CHILD1]
    assert master == ["TICKET_STATUS_CHANGED", "TICKET_CLOSED"]
    assert child == child_events


def test_sync_updates_child_still_settles_its_sla() -> None:
    timers = FakeTimers()
    key = f"sla:{TENANT}:{CHILD1}:itil"
    timers.arm(
        key,
        tenant=TENANT,
        subject_id=CHILD1,
        stage="resolution",
        due_at=datetime(2026, 1, 3, tzinfo=UTC),
        data={"slaPolicyId": TENANT},
    )
    changes = _sync_tx(
        {"status_id": CLOSED_STATUS, "is_closed": True, "closed_at": CLOSE_TIME, "closed_by": STAFF}
    )
    result = run(changes, state=_settings("sync_updates"), timers=timers)
    child = [d.draft.event_type for d in result.derived if d.draft.subject_id == CHILD1]
    assert child == ["TICKET_SLA_STAGE_MET"]
    assert timers.timers[key].state == "settled"


# --- TICKET_ADDITIONAL_AGENT_ASSIGNED ------------------------------------------------------------------

AGENT = u(24)

RESOURCE_CASES = [
    pytest.param(
        [audit(actor_user_id=STAFF2), ins(RESOURCES, resource_row(RES1, STAFF3))],
        [
            (
                "TICKET_ADDITIONAL_AGENT_ASSIGNED",
                {
                    "ticketId": TICKET,
                    "primaryAgentId": STAFF,
                    "additionalAgentId": STAFF3,
                    "assignedByUserId": STAFF2,
                    "assignedAt": "2026-01-02T03:04:05.100Z",
                    **USER_STAFF2,
                },
            )
        ],
        id="agent-added",
    ),
    pytest.param(
        [
            ticket_upd({"assigned_to": STAFF}, {"assigned_to": STAFF2}),
            dele(RESOURCES, resource_row(RES1, STAFF3, primary=STAFF)),
            ins(RESOURCES, resource_row(RES2, STAFF3, primary=STAFF2)),
        ],
        [("TICKET_ASSIGNED", {"newAssigneeId": STAFF2})],
        id="reassignment-churn-is-not-news",
    ),
    pytest.param(
        [
            ticket_upd({"assigned_to": STAFF}, {"assigned_to": STAFF2}),
            dele(RESOURCES, resource_row(RES1, STAFF3, primary=STAFF)),
            ins(RESOURCES, resource_row(RES2, STAFF3, primary=STAFF2)),
            ins(RESOURCES, resource_row(RES3, AGENT, primary=STAFF2)),
        ],
        [
            ("TICKET_ASSIGNED", {"newAssigneeId": STAFF2}),
            ("TICKET_ADDITIONAL_AGENT_ASSIGNED", {"primaryAgentId": STAFF2, "additionalAgentId": AGENT}),
        ],
        id="reassignment-plus-a-new-agent",
    ),
    pytest.param(
        [ins(RESOURCES, resource_row(RES1, STAFF3)), ins(RESOURCES, resource_row(RES2, AGENT))],
        [
            ("TICKET_ADDITIONAL_AGENT_ASSIGNED", {"additionalAgentId": STAFF3, **NO_ACTOR}),
            ("TICKET_ADDITIONAL_AGENT_ASSIGNED", {"additionalAgentId": AGENT}),
        ],
        id="two-agents-one-tx",
    ),
    pytest.param(
        [ins(RESOURCES, {**resource_row(RES1, STAFF3), "additional_user_id": None})],
        [],
        id="row-without-additional-user",
    ),
    pytest.param([dele(RESOURCES, resource_row(RES1, STAFF3))], [], id="agent-removed"),
]


@pytest.mark.parametrize(("changes", "expected"), RESOURCE_CASES)
def test_additional_agent(changes: list[FakeChange], expected: Expected) -> None:
    check(run(changes), expected)


# --- bundles -------------------------------------------------------------------------------------------


def settings_row(master: str, mode: str = "sync_updates") -> dict[str, Any]:
    return {"tenant": TENANT, "master_ticket_id": master, "mode": mode, "reopen_on_child_reply": False}


def attach(child: str, master: str | None, old: str | None = None) -> FakeChange:
    return upd(
        TICKETS,
        ticket_row(child, master_ticket_id=old, updated_by=None),
        ticket_row(child, master_ticket_id=master, updated_by=STAFF, updated_at=NOW),
    )


BUNDLE_CASES = [
    pytest.param(
        [ins(SETTINGS, settings_row(MASTER)), attach(CHILD1, MASTER), attach(CHILD2, MASTER)],
        [
            (
                "TICKET_MERGED",
                {
                    "sourceTicketId": CHILD1,
                    "targetTicketId": MASTER,
                    "mergedAt": NOW,
                    "reason": "bundle:sync_updates",
                    **USER_STAFF,
                },
            ),
            ("TICKET_MERGED", {"sourceTicketId": CHILD2, "reason": "bundle:sync_updates"}),
        ],
        [CHILD1, CHILD2],
        id="create-bundle-sync-updates",
    ),
    pytest.param(
        [attach(CHILD1, MASTER), ins(SETTINGS, settings_row(MASTER, "link_only"))],
        [("TICKET_MERGED", {"reason": "bundle:link_only"})],
        [CHILD1],
        id="create-bundle-link-only",
    ),
    pytest.param(
        [attach(CHILD3, MASTER)],
        [("TICKET_MERGED", {"sourceTicketId": CHILD3, "reason": "bundle:added_children"})],
        [CHILD3],
        id="add-children",
    ),
    pytest.param(
        [
            dele(SETTINGS, settings_row(MASTER)),
            ins(SETTINGS, settings_row(CHILD1)),
            attach(CHILD1, None, old=MASTER),
            attach(MASTER, CHILD1),
            attach(CHILD2, CHILD1, old=MASTER),
        ],
        [
            (
                "TICKET_MERGED",
                {"sourceTicketId": MASTER, "targetTicketId": CHILD1, "reason": "bundle:promote_master"},
            )
        ],
        [MASTER],
        id="promote-master",
    ),
    pytest.param(
        [attach(CHILD1, None, old=MASTER)],
        [
            (
                "TICKET_SPLIT",
                {
                    "originalTicketId": MASTER,
                    "newTicketIds": [CHILD1],
                    "splitAt": NOW,
                    "reason": "bundle:remove_child",
                },
            )
        ],
        [MASTER],
        id="remove-child",
    ),
    pytest.param(
        [
            attach(CHILD1, None, old=MASTER),
            attach(CHILD2, None, old=MASTER),
            dele(SETTINGS, settings_row(MASTER)),
        ],
        [("TICKET_SPLIT", {"newTicketIds": [CHILD1, CHILD2], "reason": "bundle:unbundle_master"})],
        [MASTER],
        id="unbundle",
    ),
    pytest.param(
        [attach(CHILD1, None, old=MASTER), dele(SETTINGS, settings_row(MASTER))],
        [("TICKET_SPLIT", {"newTicketIds": [CHILD1], "reason": "bundle:unbundle_master"})],
        [MASTER],
        id="remove-last-child-reads-as-unbundle",
    ),
    pytest.param(
        [
            attach(CHILD1, None, old=MASTER),
            dele(SETTINGS, settings_row(MASTER)),
            ticket_upd(
                {"master_ticket_id": MASTER, "title": "a"}, {"master_ticket_id": MASTER, "title": "b"}, CHILD2
            ),
        ],
        [
            ("TICKET_SPLIT", {"newTicketIds": [CHILD1], "reason": "bundle:remove_child"}),
            ("TICKET_UPDATED", {}),
        ],
        [MASTER, CHILD2],
        id="settings-deleted-but-a-child-still-points",
    ),
]


@pytest.mark.parametrize(("changes", "expected", "subjects"), BUNDLE_CASES)
def test_bundles(changes: list[FakeChange], expected: Expected, subjects: list[str]) -> None:
    result = run(changes)
    check(result, expected)
    assert [d.draft.subject_id for d in result.derived] == subjects


# --- comments ------------------------------------------------------------------------------------------

CREATED = "2026-01-02T03:04:05.000Z"
PUBLISHED = "2026-01-02T03:04:05.600Z"
PORTAL = {"responseSource": "client_portal"}
EMAIL = {"responseSource": "inbound_email", "email": {"provider": "google"}}


def mirror_row(source: str, child_ticket: str, child_comment: str) -> dict[str, Any]:
    return {
        "tenant": TENANT,
        "source_comment_id": source,
        "child_ticket_id": child_ticket,
        "child_comment_id": child_comment,
        "created_at": NOW,
    }


COMMENT_CASES = [
    pytest.param(
        [ins(COMMENTS, comment_row(is_internal=True))],
        [
            (
                "TICKET_MESSAGE_ADDED",
                {
                    "ticketId": TICKET,
                    "messageId": COMMENT1,
                    "visibility": "internal",
                    "authorId": STAFF,
                    "authorType": "user",
                    "channel": "ui",
                    "createdAt": CREATED,
                    **USER_STAFF,
                },
            ),
            ("TICKET_INTERNAL_NOTE_ADDED", {"noteId": COMMENT1, "createdAt": CREATED, **USER_STAFF}),
            (
                "TICKET_COMMENT_ADDED",
                {"commentId": COMMENT1, "visibility": "internal", "authorId": STAFF, "authorType": "user"},
            ),
        ],
        id="internal-note",
    ),
    pytest.param(
        [ins(COMMENTS, comment_row())],
        [
            ("TICKET_MESSAGE_ADDED", {"visibility": "public", "channel": "ui", "authorType": "user"}),
            ("TICKET_COMMENT_ADDED", {"visibility": "public"}),
        ],
        id="staff-reply",
    ),
    pytest.param(
        [ins(COMMENTS, comment_row(user_id=PORTAL_USER, author_type="client", metadata=PORTAL))],
        [
            (
                "TICKET_MESSAGE_ADDED",
                {
                    "authorId": CONTACT,
                    "authorType": "contact",
                    "channel": "portal",
                    "actorType": "CONTACT",
                    "actorContactId": CONTACT,
                    "actorUserId": ABSENT,
                },
            ),
            (
                "TICKET_CUSTOMER_REPLIED",
                {"messageId": COMMENT1, "contactId": CONTACT, "channel": "portal", "receivedAt": CREATED},
            ),
            ("TICKET_COMMENT_ADDED", {"authorId": CONTACT, "authorType": "contact"}),
        ],
        id="portal-reply",
    ),
    pytest.param(
        [ins(COMMENTS, comment_row(user_id=PORTAL_USER, author_type="client"))],
        [
            ("TICKET_MESSAGE_ADDED", {"channel": "portal", "authorType": "contact"}),
            ("TICKET_CUSTOMER_REPLIED", {"channel": "portal"}),
            ("TICKET_COMMENT_ADDED", {}),
        ],
        id="portal-reply-without-response-source",
    ),
    pytest.param(
        [
            audit(
                event_type="TICKET_CUSTOMER_REPLIED",
                actor_type="email_sender",
                actor_user_id=None,
                actor_contact_id=CONTACT2,
                source="inbound_email",
            ),
            ins(
                COMMENTS, comment_row(user_id=None, contact_id=CONTACT2, author_type="client", metadata=EMAIL)
            ),
        ],
        [
            (
                "TICKET_MESSAGE_ADDED",
                {
                    "authorId": CONTACT2,
                    "authorType": "contact",
                    "channel": "email",
                    "actorContactId": CONTACT2,
                },
            ),
            ("TICKET_CUSTOMER_REPLIED", {"contactId": CONTACT2, "channel": "email"}),
            ("TICKET_COMMENT_ADDED", {"authorId": CONTACT2}),
        ],
        id="inbound-email-reply",
    ),
    pytest.param(
        [ins(COMMENTS, comment_row(user_id=None, contact_id=CONTACT2, author_type="client"))],
        [
            ("TICKET_MESSAGE_ADDED", {"channel": "email", "actorType": "CONTACT"}),
            ("TICKET_CUSTOMER_REPLIED", {"channel": "email"}),
            ("TICKET_COMMENT_ADDED", {}),
        ],
        id="contact-without-user-is-email",
    ),
    pytest.param(
        [audit(actor_type="api", source="api"), ins(COMMENTS, comment_row())],
        [("TICKET_MESSAGE_ADDED", {"channel": "api", **USER_STAFF}), ("TICKET_COMMENT_ADDED", {})],
        id="rest-api-comment",
    ),
    pytest.param(
        [
            ins(COMMENTS, comment_row(COMMENT1, MASTER)),
            ins(COMMENTS, comment_row(MIRROR_COPY, CHILD1)),
            ins(MIRRORS, mirror_row(COMMENT1, CHILD1, MIRROR_COPY)),
        ],
        [("TICKET_MESSAGE_ADDED", {"ticketId": MASTER}), ("TICKET_COMMENT_ADDED", {"ticketId": MASTER})],
        id="bundle-mirror-copy-in-same-tx",
    ),
    pytest.param(
        [ins(COMMENTS, comment_row(COMMENT1, TICKET, publish_state="scheduled"))],
        [],
        id="scheduled-comment-waits",
    ),
    pytest.param(
        [
            upd(
                COMMENTS,
                comment_row(publish_state="scheduled"),
                comment_row(publish_state="published", published_at=PUBLISHED),
            )
        ],
        [
            ("TICKET_MESSAGE_ADDED", {"createdAt": PUBLISHED}),
            ("TICKET_COMMENT_ADDED", {"createdAt": PUBLISHED}),
        ],
        id="scheduled-comment-published",
    ),
    pytest.param(
        [upd(COMMENTS, comment_row(publish_state="scheduled"), comment_row(publish_state="canceled"))],
        [],
        id="scheduled-comment-canceled",
    ),
    pytest.param([upd(COMMENTS, comment_row(note="a"), comment_row(note="b"))], [], id="comment-edited"),
    pytest.param([ins(COMMENTS, comment_row(deleted_at=NOW))], [], id="deleted-comment"),
    pytest.param(
        [ins(COMMENTS, comment_row(user_id=None, is_internal=True, author_type="unknown"))],
        [
            ("TICKET_INTERNAL_NOTE_ADDED", {"noteId": COMMENT1, **NO_ACTOR}),
            ("TICKET_COMMENT_ADDED", {"authorId": ABSENT, "authorType": ABSENT}),
        ],
        id="no-author-internal",
    ),
    pytest.param(
        [ins(COMMENTS, comment_row(user_id=None, author_type="unknown"))],
        [("TICKET_COMMENT_ADDED", {"authorId": ABSENT})],
        id="no-author-public",
    ),
    pytest.param(
        [ins(COMMENTS, comment_row(user_id=u(29), author_type="client", contact_id=CONTACT2))],
        [
            ("TICKET_MESSAGE_ADDED", {"authorId": CONTACT2, "channel": "portal"}),
            ("TICKET_CUSTOMER_REPLIED", {}),
            ("TICKET_COMMENT_ADDED", {}),
        ],
        id="client-user-missing-from-state-uses-author_type",
    ),
    pytest.param(
        [ins(COMMENTS, comment_row(COMMENT1)), ins(COMMENTS, comment_row(COMMENT2, is_internal=True))],
        [
            ("TICKET_MESSAGE_ADDED", {"messageId": COMMENT1}),
            ("TICKET_COMMENT_ADDED", {"commentId": COMMENT1}),
            ("TICKET_MESSAGE_ADDED", {"messageId": COMMENT2}),
            ("TICKET_INTERNAL_NOTE_ADDED", {"noteId": COMMENT2}),
            ("TICKET_COMMENT_ADDED", {"commentId": COMMENT2}),
        ],
        id="two-comments-one-ticket-one-tx",
    ),
    pytest.param(
        [
            ins(COMMENTS, comment_row(user_id=PORTAL_USER, author_type="client", metadata=PORTAL)),
            ticket_upd({"response_state": "awaiting_client"}, {"response_state": "awaiting_internal"}),
        ],
        [
            ("TICKET_MESSAGE_ADDED", {}),
            ("TICKET_CUSTOMER_REPLIED", {}),
            ("TICKET_COMMENT_ADDED", {}),
            (
                "TICKET_RESPONSE_STATE_CHANGED",
                {"trigger": "comment", "newResponseState": "awaiting_internal"},
            ),
        ],
        id="reply-flips-response-state",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), COMMENT_CASES)
def test_comments(changes: list[FakeChange], expected: Expected) -> None:
    result = run(changes)
    check(result, expected)
    comment_events = [d for d in result.derived if d.table == COMMENTS]
    assert all(
        d.draft.discriminator
        == d.draft.payload.get("commentId", d.draft.payload.get("messageId", d.draft.payload.get("noteId")))
        for d in comment_events
    )


def test_mirror_copy_known_from_state() -> None:
    state = base_state().put(MIRRORS, (TENANT, COMMENT1, CHILD1), mirror_row(COMMENT1, CHILD1, MIRROR_COPY))
    other_tenant = u(2)
    state.put(
        MIRRORS,
        (other_tenant, COMMENT1, CHILD1),
        {**mirror_row(COMMENT1, CHILD1, COMMENT2), "tenant": other_tenant},
    )
    result = run(
        [ins(COMMENTS, comment_row(MIRROR_COPY, CHILD1)), ins(COMMENTS, comment_row(COMMENT2))], state=state
    )
    assert result.types == ["TICKET_MESSAGE_ADDED", "TICKET_COMMENT_ADDED"]
    assert result.envelopes[0].payload["messageId"] == COMMENT2


def test_comment_author_is_looked_up_in_the_comment_tenant() -> None:
    other = u(2)
    state = base_state().put(
        "public.users",
        (other, u(29), "x@example.test"),
        {
            "tenant": other,
            "user_id": u(29),
            "email": "x@example.test",
            "user_type": "client",
            "contact_id": CONTACT,
        },
    )
    # Not this tenant's user: the row's own author_type decides (internal → a user author in the UI).
    result = run([ins(COMMENTS, comment_row(user_id=u(29)))], state=state)
    check(
        result,
        [
            ("TICKET_MESSAGE_ADDED", {"authorId": u(29), "authorType": "user", "channel": "ui"}),
            ("TICKET_COMMENT_ADDED", {}),
        ],
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
    result = run(changes)
    check(result, expected)
    assert all(d.draft.discriminator == d.draft.payload["timeEntryId"] for d in result.derived)


# --- SLA: policy model -----------------------------------------------------------------------------------

RESPONSE_DUE = "2026-01-02T04:00:00.000Z"
RESOLUTION_DUE = "2026-01-02T11:00:00.000Z"
MOVED_DUE = "2026-01-02T12:30:00.000Z"
RESPONSE_KEY = f"sla:{TENANT}:{TICKET}:response"
RESOLUTION_KEY = f"sla:{TENANT}:{TICKET}:resolution"
ITIL_KEY = f"sla:{TENANT}:{TICKET}:itil"

POLICY_SLA = {
    "sla_policy_id": POLICY,
    "sla_started_at": EARLIER,
    "sla_response_due_at": RESPONSE_DUE,
    "sla_resolution_due_at": RESOLUTION_DUE,
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def armed(*keys: str, due: str | None = None, state: str = "armed") -> FakeTimers:
    timers = FakeTimers()
    for key in keys:
        stage = key.rsplit(":", 1)[1]
        stage = "resolution" if stage == "itil" else stage
        default = RESPONSE_DUE if stage == "response" else RESOLUTION_DUE
        timers.arm(
            key,
            tenant=TENANT,
            subject_id=TICKET,
            stage=stage,
            due_at=at(due or default),
            data={"slaPolicyId": TENANT if key.endswith("itil") else POLICY},
        )
        if state == "fired":
            timers.mark_fired(key)
        elif state == "paused":
            timers.pause(key)
    return timers


def timer_view(timers: FakeTimers) -> dict[str, tuple[str, str]]:
    return {k: (t.state, t.due_at.isoformat()) for k, t in timers.timers.items()}


def test_policy_ticket_created_enters_both_stages() -> None:
    result = run([ins(TICKETS, ticket_row(**POLICY_SLA))])
    check(
        result,
        [
            ("TICKET_CREATED", {}),
            (
                "TICKET_SLA_STAGE_ENTERED",
                {
                    "slaPolicyId": POLICY,
                    "stage": "response",
                    "enteredAt": EARLIER,
                    "targetAt": RESPONSE_DUE,
                    **USER_STAFF,
                },
            ),
            ("TICKET_SLA_STAGE_ENTERED", {"stage": "resolution", "targetAt": RESOLUTION_DUE}),
        ],
    )
    assert result.timers.timers[RESPONSE_KEY].due_at == at(RESPONSE_DUE)
    assert result.timers.timers[RESOLUTION_KEY].data == {"slaPolicyId": POLICY}
    assert {t.state for t in result.timers.timers.values()} == {"armed"}
    assert [d.draft.discriminator for d in result.derived] == [None, "response", "resolution"]


def test_policy_ticket_created_paused_and_already_responded() -> None:
    values: dict[str, Any] = {
        **POLICY_SLA,
        "sla_paused_at": EARLIER,
        "sla_response_at": EARLIER,
        "sla_response_met": True,
    }
    result = run([ins(TICKETS, ticket_row(**values))])
    assert result.types == [
        "TICKET_CREATED",
        "TICKET_SLA_STAGE_ENTERED",
        "TICKET_SLA_STAGE_MET",
        "TICKET_SLA_STAGE_ENTERED",
    ]
    assert result.envelopes[2].payload["metAt"] == EARLIER
    assert result.timers.timers[RESPONSE_KEY].state == "settled"
    assert result.timers.timers[RESOLUTION_KEY].state == "paused"


SLA_POLICY_CASES = [
    pytest.param(
        {"sla_policy_id": None},
        POLICY_SLA,
        FakeTimers(),
        [
            ("TICKET_SLA_STAGE_ENTERED", {"stage": "response", "enteredAt": EARLIER}),
            ("TICKET_SLA_STAGE_ENTERED", {"stage": "resolution"}),
        ],
        {RESPONSE_KEY: ("armed", RESPONSE_DUE), RESOLUTION_KEY: ("armed", RESOLUTION_DUE)},
        id="sla-started-arms-both",
    ),
    pytest.param(
        {**POLICY_SLA, "sla_started_at": None, "sla_resolution_due_at": None},
        {**POLICY_SLA, "sla_started_at": None},
        armed(RESPONSE_KEY),
        [("TICKET_SLA_STAGE_ENTERED", {"stage": "resolution", "enteredAt": NOW})],
        {RESPONSE_KEY: ("armed", RESPONSE_DUE), RESOLUTION_KEY: ("armed", RESOLUTION_DUE)},
        id="due-appears-entered-at-commit-time",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_resolution_due_at": MOVED_DUE},
        armed(RESPONSE_KEY, RESOLUTION_KEY),
        [],
        {RESPONSE_KEY: ("armed", RESPONSE_DUE), RESOLUTION_KEY: ("armed", MOVED_DUE)},
        id="due-moves",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_paused_at": NOW},
        armed(RESPONSE_KEY, RESOLUTION_KEY),
        [],
        {RESPONSE_KEY: ("paused", RESPONSE_DUE), RESOLUTION_KEY: ("paused", RESOLUTION_DUE)},
        id="pause",
    ),
    pytest.param(
        {**POLICY_SLA, "sla_paused_at": EARLIER},
        {**POLICY_SLA, "sla_resolution_due_at": MOVED_DUE, "sla_total_pause_minutes": 90},
        armed(RESPONSE_KEY, RESOLUTION_KEY, state="paused"),
        [],
        {RESPONSE_KEY: ("armed", RESPONSE_DUE), RESOLUTION_KEY: ("armed", MOVED_DUE)},
        id="resume-with-shifted-due",
    ),
    pytest.param(
        {**POLICY_SLA, "sla_paused_at": EARLIER, "sla_response_at": EARLIER, "sla_response_met": True},
        {**POLICY_SLA, "sla_response_at": EARLIER, "sla_response_met": True},
        armed(RESOLUTION_KEY, state="paused"),
        [],
        {RESOLUTION_KEY: ("armed", RESOLUTION_DUE)},
        id="resume-leaves-a-completed-stage-alone",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_response_at": CLOSE_TIME, "sla_response_met": True},
        armed(RESPONSE_KEY, RESOLUTION_KEY),
        [
            (
                "TICKET_SLA_STAGE_MET",
                {"stage": "response", "metAt": CLOSE_TIME, "targetAt": RESPONSE_DUE, "slaPolicyId": POLICY},
            )
        ],
        {RESPONSE_KEY: ("settled", RESPONSE_DUE), RESOLUTION_KEY: ("armed", RESOLUTION_DUE)},
        id="first-response-met",
    ),
    pytest.param(
        {**POLICY_SLA, "sla_paused_at": EARLIER},
        {**POLICY_SLA, "sla_paused_at": EARLIER, "sla_resolution_met": True},
        armed(RESOLUTION_KEY, state="paused"),
        [("TICKET_SLA_STAGE_MET", {"stage": "resolution", "metAt": NOW})],
        {RESOLUTION_KEY: ("settled", RESOLUTION_DUE)},
        id="met-flag-while-paused",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_response_at": LATER, "sla_response_met": False},
        armed(RESPONSE_KEY, state="fired"),
        [],
        {RESPONSE_KEY: ("fired", RESPONSE_DUE)},
        id="no-met-after-breach-fired",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_response_at": CLOSE_TIME},
        FakeTimers(),
        [("TICKET_SLA_STAGE_MET", {"stage": "response"})],
        {},
        id="no-timer-met-on-time",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_response_at": LATER},
        FakeTimers(),
        [],
        {},
        id="no-timer-late-gets-no-verdict",
    ),
    pytest.param(
        POLICY_SLA,
        {**POLICY_SLA, "sla_policy_id": None, "sla_response_due_at": None, "sla_resolution_due_at": None},
        armed(RESPONSE_KEY, RESOLUTION_KEY),
        [],
        {},
        id="policy-removed",
    ),
    pytest.param(
        {"itil_priority_level": 3},
        {**POLICY_SLA, "itil_priority_level": 3},
        armed(ITIL_KEY),
        [
            ("TICKET_SLA_STAGE_ENTERED", {"stage": "response"}),
            ("TICKET_SLA_STAGE_ENTERED", {"stage": "resolution"}),
        ],
        {RESPONSE_KEY: ("armed", RESPONSE_DUE), RESOLUTION_KEY: ("armed", RESOLUTION_DUE)},
        id="policy-replaces-itil-fallback",
    ),
]


@pytest.mark.parametrize(("before", "after", "timers", "expected", "timers_after"), SLA_POLICY_CASES)
def test_sla_policy_model(
    before: dict[str, Any],
    after: dict[str, Any],
    timers: FakeTimers,
    expected: Expected,
    timers_after: dict[str, tuple[str, str]],
) -> None:
    timers = FakeTimers(dict(timers.timers))  # parametrize shares the instance between runs
    result = run([ticket_upd(before, after)], timers=timers)
    check(result, expected)
    assert timer_view(timers) == {k: (s, at(d).isoformat()) for k, (s, d) in timers_after.items()}


# --- SLA: ITIL fallback ------------------------------------------------------------------------------

ITIL_TARGET = "2026-01-02T05:00:00.000Z"  # EARLIER (01:00) + 4 h for level 2


def test_itil_ticket_created_enters_resolution() -> None:
    result = run([ins(TICKETS, ticket_row(itil_priority_level=2))])
    check(
        result,
        [
            ("TICKET_CREATED", {}),
            (
                "TICKET_SLA_STAGE_ENTERED",
                {"slaPolicyId": TENANT, "stage": "resolution", "enteredAt": EARLIER, "targetAt": ITIL_TARGET},
            ),
        ],
    )
    assert timer_view(result.timers) == {ITIL_KEY: ("armed", at(ITIL_TARGET).isoformat())}
    assert result.timers.timers[ITIL_KEY].data == {"slaPolicyId": TENANT}


@pytest.mark.parametrize(
    ("level", "target"),
    [
        (1, "2026-01-02T02:00:00.000Z"),
        (3, "2026-01-03T01:00:00.000Z"),
        (4, "2026-01-05T01:00:00.000Z"),
        (5, "2026-01-09T01:00:00.000Z"),
        (9, "2026-01-03T01:00:00.000Z"),
    ],
)
def test_itil_targets(level: int, target: str) -> None:
    result = run([ins(TICKETS, ticket_row(itil_priority_level=level))])
    assert result.envelopes[1].payload["targetAt"] == target


def test_itil_ticket_created_closed_or_without_level_has_no_stage() -> None:
    assert run([ins(TICKETS, ticket_row(itil_priority_level=2, is_closed=True))]).types == ["TICKET_CREATED"]
    assert run([ins(TICKETS, ticket_row(itil_priority_level=None))]).types == ["TICKET_CREATED"]
    assert run([ins(TICKETS, ticket_row(itil_priority_level=2, entered_at=None))]).types == ["TICKET_CREATED"]


CLOSE = {"status_id": CLOSED_STATUS, "is_closed": True, "closed_at": CLOSE_TIME}

SLA_ITIL_CASES = [
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": 1, "itil_urgency": 1, "priority_id": P2},
        armed(ITIL_KEY, due=ITIL_TARGET),
        ["TICKET_PRIORITY_CHANGED", "TICKET_UPDATED"],
        {ITIL_KEY: ("armed", "2026-01-02T02:00:00.000Z")},
        id="level-change-moves-the-timer",
    ),
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": 1},
        FakeTimers(),
        ["TICKET_UPDATED"],
        {},
        id="level-change-without-timer-arms-nothing",
    ),
    pytest.param(
        {"itil_priority_level": None},
        {"itil_priority_level": 2},
        FakeTimers(),
        ["TICKET_UPDATED", "TICKET_SLA_STAGE_ENTERED"],
        {ITIL_KEY: ("armed", ITIL_TARGET)},
        id="level-first-set-enters",
    ),
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": None},
        armed(ITIL_KEY, due=ITIL_TARGET),
        ["TICKET_UPDATED"],
        {},
        id="level-cleared-forgets",
    ),
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": 2, **CLOSE},
        armed(ITIL_KEY, due=ITIL_TARGET),
        ["TICKET_STATUS_CHANGED", "TICKET_CLOSED", "TICKET_SLA_STAGE_MET"],
        {ITIL_KEY: ("settled", ITIL_TARGET)},
        id="close-before-due-is-met",
    ),
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": 2, **CLOSE},
        armed(ITIL_KEY, due=ITIL_TARGET, state="fired"),
        ["TICKET_STATUS_CHANGED", "TICKET_CLOSED"],
        {ITIL_KEY: ("fired", ITIL_TARGET)},
        id="close-after-breach-fired-no-met",
    ),
    pytest.param(
        {"itil_priority_level": 2},
        {"itil_priority_level": 2, **CLOSE},
        FakeTimers(),
        ["TICKET_STATUS_CHANGED", "TICKET_CLOSED", "TICKET_SLA_STAGE_MET"],
        {},
        id="close-without-timer-on-time-by-entered_at",
    ),
    pytest.param(
        {"itil_priority_level": 1, "entered_at": "2026-01-01T00:00:00.000Z"},
        {"itil_priority_level": 1, "entered_at": "2026-01-01T00:00:00.000Z", **CLOSE},
        FakeTimers(),
        ["TICKET_STATUS_CHANGED", "TICKET_CLOSED"],
        {},
        id="close-without-timer-late-no-verdict",
    ),
    pytest.param(
        {"itil_priority_level": 2, "status_id": CLOSED_STATUS, "is_closed": True},
        {"itil_priority_level": 2, "status_id": OPEN},
        FakeTimers(),
        ["TICKET_STATUS_CHANGED", "TICKET_REOPENED", "TICKET_UPDATED"],
        {},
        id="reopen-starts-no-new-stage",
    ),
]


@pytest.mark.parametrize(("before", "after", "timers", "types", "timers_after"), SLA_ITIL_CASES)
def test_sla_itil_model(
    before: dict[str, Any],
    after: dict[str, Any],
    timers: FakeTimers,
    types: list[str],
    timers_after: dict[str, tuple[str, str]],
) -> None:
    timers = FakeTimers(dict(timers.timers))
    result = run([ticket_upd(before, after)], timers=timers)
    assert result.types == types
    assert timer_view(timers) == {k: (s, at(d).isoformat()) for k, (s, d) in timers_after.items()}
    for envelope in result.envelopes:
        if envelope.event_type == "TICKET_SLA_STAGE_MET":
            assert envelope.payload["metAt"] == CLOSE_TIME
            assert envelope.payload["slaPolicyId"] == TENANT
            assert envelope.payload["targetAt"] == ITIL_TARGET


# --- SLA: timers fired by the framework ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "stage", "policy"),
    [
        (RESPONSE_KEY, "response", POLICY),
        (RESOLUTION_KEY, "resolution", POLICY),
        (ITIL_KEY, "resolution", TENANT),
    ],
)
def test_fire_breaches_at_the_due_time(key: str, stage: str, policy: str) -> None:
    timers = armed(key, due=RESPONSE_DUE)
    timer = timers.timers[key]
    drafts = TicketDeriver().fire(timer, base_state())
    assert len(drafts) == 1
    draft = drafts[0]
    env = build_envelope(
        draft, slot="t", lsn=0x16B3748, xid=1000, commit_time=COMMIT, table=TICKETS, timer=True
    )
    assert env.event_type == "TICKET_SLA_STAGE_BREACHED"
    assert env.idempotency_key == f"TICKET_SLA_STAGE_BREACHED:{TENANT}:{TICKET}:{stage}@{RESPONSE_DUE}"
    assert env.timestamp == RESPONSE_DUE
    assert env.payload == {
        "tenantId": TENANT,
        "occurredAt": RESPONSE_DUE,
        "ticketId": TICKET,
        "slaPolicyId": policy,
        "stage": stage,
        "breachedAt": RESPONSE_DUE,
        "targetAt": RESPONSE_DUE,
        "overdueBySeconds": 0,
    }
    assert (draft.timer_stage, draft.due_at) == (stage, at(RESPONSE_DUE))


def test_fire_without_policy_in_timer_data_emits_nothing() -> None:
    timers = FakeTimers()
    timers.arm(RESPONSE_KEY, tenant=TENANT, subject_id=TICKET, stage="response", due_at=at(RESPONSE_DUE))
    assert TicketDeriver().fire(timers.timers[RESPONSE_KEY], base_state()) == []


def test_itil_lifecycle_breach_then_close_gives_one_verdict() -> None:
    """Created → the framework fires the due timer → a later close finds it fired: BREACHED only."""
    deriver = TicketDeriver()
    timers = FakeTimers()
    created = run([ins(TICKETS, ticket_row(itil_priority_level=1))], timers=timers)
    assert created.types == ["TICKET_CREATED", "TICKET_SLA_STAGE_ENTERED"]
    timer = timers.timers[ITIL_KEY]
    breached = deriver.fire(timer, base_state())
    timers.mark_fired(ITIL_KEY)
    assert [d.event_type for d in breached] == ["TICKET_SLA_STAGE_BREACHED"]
    closed = run(
        [ticket_upd({"itil_priority_level": 1}, {"itil_priority_level": 1, **CLOSE})],
        timers=timers,
        commit_time=datetime(2026, 1, 2, 8, tzinfo=UTC),
    )
    assert closed.types == ["TICKET_STATUS_CHANGED", "TICKET_CLOSED"]


def test_policy_lifecycle_move_pause_resume_met() -> None:
    timers = FakeTimers()
    run([ins(TICKETS, ticket_row(**POLICY_SLA))], timers=timers)
    run([ticket_upd(POLICY_SLA, {**POLICY_SLA, "sla_paused_at": NOW})], timers=timers)
    assert {t.state for t in timers.timers.values()} == {"paused"}
    resumed = {**POLICY_SLA, "sla_resolution_due_at": MOVED_DUE}
    run([ticket_upd({**POLICY_SLA, "sla_paused_at": NOW}, resumed)], timers=timers)
    assert timer_view(timers)[RESOLUTION_KEY] == ("armed", at(MOVED_DUE).isoformat())
    met = run(
        [ticket_upd(resumed, {**resumed, "sla_resolution_at": LATER, "sla_resolution_met": True})],
        timers=timers,
    )
    check(met, [("TICKET_SLA_STAGE_MET", {"stage": "resolution", "metAt": LATER, "targetAt": MOVED_DUE})])
    assert timers.timers[RESOLUTION_KEY].state == "settled"
    again = run([ticket_upd(resumed, {**resumed, "sla_resolution_due_at": RESOLUTION_DUE})], timers=timers)
    assert again.types == []
    assert timers.timers[RESOLUTION_KEY].state == "settled"


# --- the deriver as the framework sees it ------------------------------------------------------------


def test_deriver_declares_its_tables() -> None:
    deriver = TicketDeriver()
    assert deriver.name == "tickets"
    assert deriver.tables == {TICKETS, COMMENTS, RESOURCES, SETTINGS, MIRRORS, AUDIT, TIME}
    assert deriver.state_tables == {"public.statuses", "public.users", SETTINGS, MIRRORS}


def test_unrelated_tables_are_ignored() -> None:
    assert run([ins("public.projects", {"tenant": TENANT, "project_id": u(5)})]).types == []


def test_events_follow_row_positions() -> None:
    result = run(
        [
            ins(TIME, entry_row()),
            ticket_upd({"priority_id": P1}, {"priority_id": P2}),
            ins(COMMENTS, comment_row()),
        ]
    )
    assert result.types == [
        "TICKET_TIME_ENTRY_ADDED",
        "TICKET_PRIORITY_CHANGED",
        "TICKET_UPDATED",
        "TICKET_MESSAGE_ADDED",
        "TICKET_COMMENT_ADDED",
    ]
    assert [d.position for d in result.derived] == [0, 1, 1, 2, 2]
