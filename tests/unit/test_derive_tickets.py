"""The ticket deriver's rules on ``tickets`` and ``ticket_resources`` rows (derivers.tickets):
update transitions and the one lifecycle event, the actor rule, creation, ``sync_updates``
propagation, TICKET_ADDITIONAL_AGENT_ASSIGNED. Builders and :func:`run`: tests/unit/derive_cases.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from derivers.testing import FakeChange, FakeState, FakeTimers
from tests.unit.derive_cases import (
    ABSENT,
    ARMING,
    AUDIT,
    BOARD_A,
    BOARD_B,
    CHILD1,
    CLIENT,
    CLOSE_TIME,
    CLOSED_STATUS,
    COMMIT,
    CONTACT,
    EARLIER,
    MASTER,
    NO_ACTOR,
    NOW,
    OPEN,
    OPEN2,
    P1,
    P2,
    RES1,
    RES2,
    RES3,
    RESOURCES,
    SETTINGS,
    STAFF,
    STAFF2,
    STAFF3,
    TEAM_A,
    TEAM_B,
    TENANT,
    TICKET,
    TICKETS,
    USER_STAFF,
    USER_STAFF2,
    Expected,
    audit,
    audit_row,
    base_state,
    check,
    context,
    dele,
    ins,
    resource_row,
    run,
    ticket_row,
    ticket_upd,
    u,
    upd,
)

# --- ticket updates: transitions and the one lifecycle event ---------------------------------------

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


DELETE_CASES = [
    pytest.param(
        [context(STAFF2)],
        [
            (
                "TICKET_DELETED",
                {
                    "ticketId": TICKET,
                    "userId": STAFF2,
                    "ticketNumber": "T-1",
                    "title": "Printer on fire",
                    **USER_STAFF2,
                },
            )
        ],
        id="deleted-by-the-context-actor",
    ),
    pytest.param([], [], id="nobody-declared-no-userId"),
    pytest.param(
        [("cdc.context", b'{"actorContactId": "%s"}' % CONTACT.encode())], [], id="a-contact-is-no-userId"
    ),
]


@pytest.mark.parametrize(("messages", "expected"), DELETE_CASES)
def test_ticket_deleted(messages: list[tuple[str, bytes]], expected: Expected) -> None:
    result = run([dele(TICKETS, ticket_row())], messages=messages)
    check(result, expected)
    for env in result.envelopes:
        assert env.idempotency_key == f"TICKET_DELETED:{TENANT}:{TICKET}@0/16B3748"
        assert env.payload_schema_ref == "payload.TicketDeleted.v1"


def test_ticket_deleted_emits_nothing_and_forgets_its_timers() -> None:
    timers = FakeTimers()
    for key in (
        f"sla:{TENANT}:{TICKET}:response",
        f"sla:{TENANT}:{TICKET}:itil",
        f"sla:{TENANT}:{MASTER}:itil",
    ):
        timers.arm(key, ARMING, tenant=TENANT, subject_id=TICKET, stage="resolution", due_at=COMMIT)
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
        ARMING,
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
