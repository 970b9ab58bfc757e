"""Each application write shape (sql/sample/workload.sql) through a real Postgres and the
watch loop: exactly these events with these payload fields, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from .test_watch_tickets import drain, prepare, step

pytestmark = pytest.mark.integration

T = "11111111-1111-4111-8111-111111111111"
T1, T2, T4 = (f"99999999-9999-4999-8999-99999999999{n}" for n in (1, 2, 4))
DANA, LEE, KIM = (
    "33333333-3333-4333-8333-333333333333",
    "44444444-4444-4444-8444-444444444444",
    ("34343434-3434-4343-8343-343434343434"),
)
SAM_CONTACT = "56565656-5656-4565-8565-565656565656"
OPEN, WORKING, CLOSED = (f"66666666-6666-4666-8666-66666666666{n}" for n in (1, 2, 3))
MEDIUM, HIGH = "88888888-8888-4888-8888-888888888881", "88888888-8888-4888-8888-888888888882"
C = "cccccccc-cccc-4ccc-8ccc-ccccccccccc"
USER_DANA = {"actorType": "USER", "actorUserId": DANA}
USER_LEE = {"actorType": "USER", "actorUserId": LEE}
CONTACT = {"actorType": "CONTACT", "actorContactId": SAM_CONTACT}

# (step, [(event type, payload fields that must be present with these values), ...])
SCENARIO: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = [
    ("create_ticket", [
        ("TICKET_CREATED", {"ticketId": T1, "createdByUserId": DANA, **USER_DANA}),
        ("TICKET_SLA_STAGE_ENTERED", {"ticketId": T1, "stage": "resolution", "slaPolicyId": T}),
    ]),
    ("assign", [("TICKET_ASSIGNED", {"ticketId": T1, "newAssigneeId": LEE, "newAssigneeType": "user",
                                     "assignedByUserId": DANA, **USER_DANA})]),
    ("add_agent", [("TICKET_ADDITIONAL_AGENT_ASSIGNED", {"ticketId": T1, "primaryAgentId": LEE,
                                                         "additionalAgentId": DANA})]),
    # the ticket_resources delete/re-insert that the reassignment causes is not an agent assignment
    ("reassign_with_resource_churn", [("TICKET_ASSIGNED", {"ticketId": T1, "previousAssigneeId": LEE,
                                                           "newAssigneeId": KIM})]),
    # a REST writer: only status_id, no audit row -> transition events, and no actor fields
    ("rest_status_only", [
        ("TICKET_STATUS_CHANGED", {"ticketId": T1, "previousStatusId": OPEN, "newStatusId": WORKING}),
        ("TICKET_UPDATED", {"ticketId": T1, "updatedFields": ["status_id"]}),
    ]),
    ("staff_reply", [
        ("TICKET_MESSAGE_ADDED", {"messageId": C + "3", "visibility": "public", "authorId": LEE,
                                  "authorType": "user", "channel": "ui", **USER_LEE}),
        ("TICKET_COMMENT_ADDED", {"commentId": C + "3"}),
        ("TICKET_RESPONSE_STATE_CHANGED", {"previousResponseState": None, "newResponseState": "awaiting_client"}),
    ]),
    ("email_reply", [
        ("TICKET_MESSAGE_ADDED", {"messageId": C + "4", "authorType": "contact", "authorId": SAM_CONTACT,
                                  "channel": "email", **CONTACT}),
        ("TICKET_CUSTOMER_REPLIED", {"messageId": C + "4", "contactId": SAM_CONTACT, "channel": "email"}),
        ("TICKET_COMMENT_ADDED", {"commentId": C + "4"}),
    ]),
    ("customer_reply", [
        ("TICKET_MESSAGE_ADDED", {"messageId": C + "2", "authorType": "contact", "channel": "portal", **CONTACT}),
        ("TICKET_CUSTOMER_REPLIED", {"messageId": C + "2", "contactId": SAM_CONTACT, "channel": "portal"}),
        ("TICKET_COMMENT_ADDED", {"commentId": C + "2"}),
        ("TICKET_RESPONSE_STATE_CHANGED", {"previousResponseState": "awaiting_client",
                                           "newResponseState": "awaiting_internal"}),
    ]),
    ("internal_note", [
        ("TICKET_MESSAGE_ADDED", {"messageId": C + "1", "visibility": "internal", "channel": "ui", **USER_LEE}),
        ("TICKET_INTERNAL_NOTE_ADDED", {"noteId": C + "1"}),
        ("TICKET_COMMENT_ADDED", {"commentId": C + "1"}),
    ]),
    ("bundle", [("TICKET_CREATED", {"ticketId": T2})]),
    ("bundle_sync_mode", [("TICKET_MERGED", {"sourceTicketId": T2, "targetTicketId": T1,
                                             "reason": "bundle:sync_updates"})]),
    # the copy on the child ticket (recorded in ticket_bundle_mirrors) is not a message
    ("mirrored_comment", [
        ("TICKET_MESSAGE_ADDED", {"ticketId": T1, "messageId": C + "5"}),
        ("TICKET_COMMENT_ADDED", {"ticketId": T1, "commentId": C + "5"}),
    ]),
    # the sync_updates child gets the master's priority: no events for the child
    ("sync_propagation", [
        ("TICKET_PRIORITY_CHANGED", {"ticketId": T1, "previousPriorityId": MEDIUM, "newPriorityId": HIGH}),
        ("TICKET_UPDATED", {"ticketId": T1, "updatedFields": ["priority_id"]}),
    ]),
    ("third_ticket", [("TICKET_CREATED", {"ticketId": T4})]),
    ("bundle_add_child", [("TICKET_MERGED", {"sourceTicketId": T4, "targetTicketId": T1,
                                             "reason": "bundle:added_children"})]),
    ("bundle_promote", [("TICKET_MERGED", {"sourceTicketId": T1, "targetTicketId": T2,
                                           "reason": "bundle:promote_master"})]),
    ("bundle_remove_child", [("TICKET_SPLIT", {"originalTicketId": T2, "newTicketIds": [T4],
                                               "reason": "bundle:remove_child"})]),
    ("bundle_unbundle", [("TICKET_SPLIT", {"originalTicketId": T2, "newTicketIds": [T1],
                                           "reason": "bundle:unbundle_master"})]),
    ("timer_start", []),  # a running session is not a time entry yet
    # a stopped session becomes an entry: the time-entry family's event, then the ticket's
    ("timer_stop", [
        ("TIME_ENTRY_CREATED", {"workItemId": T1, "workItemType": "TICKET"}),
        ("TICKET_TIME_ENTRY_ADDED", {"ticketId": T1, "minutes": 90, "billable": False}),
    ]),
    ("time_entry", [
        ("TIME_ENTRY_CREATED", {"workItemId": T1, "workItemType": "TICKET"}),
        ("TICKET_TIME_ENTRY_ADDED", {"ticketId": T1, "minutes": 45, "billable": True}),
    ]),
    ("scheduled_comment", []),  # nothing until it is published
    ("scheduled_comment_published", [
        ("TICKET_MESSAGE_ADDED", {"messageId": C + "7", "visibility": "public"}),
        ("TICKET_COMMENT_ADDED", {"commentId": C + "7"}),
    ]),
    # the application's close: main update, then is_closed, closed_at/closed_by, response_state
    ("close", [
        ("TICKET_STATUS_CHANGED", {"previousStatusId": WORKING, "newStatusId": CLOSED, **USER_LEE}),
        ("TICKET_CLOSED", {"ticketId": T1, "closedByUserId": LEE, **USER_LEE}),
        ("TICKET_RESPONSE_STATE_CHANGED", {"previousResponseState": "awaiting_internal", "newResponseState": None}),
        ("TICKET_SLA_STAGE_MET", {"ticketId": T1, "stage": "resolution", "slaPolicyId": T}),
    ]),
    ("reopen", [
        ("TICKET_STATUS_CHANGED", {"previousStatusId": CLOSED, "newStatusId": OPEN}),
        ("TICKET_REOPENED", {"previousStatusId": CLOSED, "newStatusId": OPEN}),
        ("TICKET_UPDATED", {"ticketId": T1}),
    ]),
]  # fmt: skip


def test_each_application_write_shape_yields_exactly_its_events(db_dsn: str) -> None:
    prepare(db_dsn, "cdc_events")
    seen_keys: set[str] = set()
    for name, expected in SCENARIO:
        step(db_dsn, name)
        got = drain(db_dsn)
        assert [e.event_type for e in got] == [t for t, _ in expected], name
        for env, (etype, fields) in zip(got, expected, strict=True):
            for k, v in fields.items():
                assert env.payload.get(k) == v, f"{name}: {etype}.{k}"
            assert env.payload["tenantId"] == T
            assert env.timestamp == env.payload["occurredAt"]
            assert env.idempotency_key not in seen_keys
            seen_keys.add(env.idempotency_key)
            if name == "rest_status_only":
                # no audit row and no actor column written by this transaction: no guess
                assert "actorType" not in env.payload and "actorUserId" not in env.payload
