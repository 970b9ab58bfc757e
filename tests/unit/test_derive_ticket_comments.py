"""Comment events: MESSAGE_ADDED, INTERNAL_NOTE_ADDED, CUSTOMER_REPLIED, COMMENT_ADDED, and the
edits and deletes COMMENT_UPDATED / COMMENT_DELETED (derivers.ticket_comments).
"""

from __future__ import annotations

from typing import Any

import pytest

from derivers.testing import FakeChange
from tests.unit.derive_cases import (
    ABSENT,
    CHILD1,
    COMMENT1,
    COMMENT2,
    COMMENTS,
    CONTACT,
    CONTACT2,
    MASTER,
    MIRROR_COPY,
    MIRRORS,
    NO_ACTOR,
    NOW,
    PORTAL_USER,
    STAFF,
    STAFF2,
    TENANT,
    TICKET,
    TICKETS,
    USER_STAFF,
    USER_STAFF2,
    Expected,
    audit,
    base_state,
    check,
    comment_row,
    context,
    dele,
    ins,
    run,
    ticket_row,
    ticket_upd,
    u,
    upd,
)

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


# --- edits and deletes ---------------------------------------------------------------------------------

EDITED = {"note": "Hello again"}
SOFT_DELETED = {"note": "[deleted]", "deleted_at": NOW}
BY_STAFF2 = [context(STAFF2)]

CHANGE_CASES = [
    pytest.param(
        [upd(COMMENTS, comment_row(), comment_row(**EDITED))],
        BY_STAFF2,
        [
            (
                "TICKET_COMMENT_UPDATED",
                {
                    "ticketId": TICKET,
                    "userId": STAFF2,
                    "commentId": COMMENT1,
                    "oldComment": {"id": COMMENT1, "content": "Hello", "author": STAFF, "isInternal": False},
                    "newComment": {
                        "id": COMMENT1,
                        "content": "Hello again",
                        "author": STAFF,
                        "isInternal": False,
                    },
                    **USER_STAFF2,
                },
            )
        ],
        id="edited-by-the-context-actor",
    ),
    pytest.param(
        [audit(actor_user_id=STAFF), upd(COMMENTS, comment_row(), comment_row(**EDITED))],
        BY_STAFF2,
        [("TICKET_COMMENT_UPDATED", {"userId": STAFF, **USER_STAFF})],
        id="edited-audit-row-first",
    ),
    pytest.param(
        [upd(COMMENTS, comment_row(), comment_row(**EDITED))], (), [], id="edited-nobody-declared-no-userId"
    ),
    pytest.param(
        [upd(COMMENTS, comment_row(), comment_row(**EDITED))],
        [("cdc.context", b'{"actorContactId": "%s"}' % CONTACT.encode())],
        [],
        id="edited-by-a-contact-no-userId",
    ),
    pytest.param(
        [
            upd(
                COMMENTS,
                comment_row(user_id=None, contact_id=CONTACT),
                comment_row(user_id=None, contact_id=CONTACT, **EDITED),
            )
        ],
        BY_STAFF2,
        [
            (
                "TICKET_COMMENT_UPDATED",
                {"oldComment": {"id": COMMENT1, "content": "Hello", "author": CONTACT, "isInternal": False}},
            )
        ],
        id="edited-contact-comment",
    ),
    pytest.param(
        [upd(COMMENTS, comment_row(user_id=None), comment_row(user_id=None, **EDITED))],
        BY_STAFF2,
        [("TICKET_COMMENT_UPDATED", {"oldComment": ABSENT, "newComment": ABSENT, "userId": STAFF2})],
        id="edited-comment-without-author",
    ),
    pytest.param(
        [upd(COMMENTS, comment_row(), comment_row(markdown_content="**Hello**", updated_at=NOW))],
        BY_STAFF2,
        [],
        id="note-unchanged-no-edit",
    ),
    pytest.param(
        [
            upd(
                COMMENTS,
                comment_row(publish_state="scheduled"),
                comment_row(publish_state="scheduled", **EDITED),
            )
        ],
        BY_STAFF2,
        [],
        id="scheduled-comment-edited-not-shown-yet",
    ),
    pytest.param(
        [upd(COMMENTS, comment_row(), comment_row(**SOFT_DELETED))],
        BY_STAFF2,
        [
            (
                "TICKET_COMMENT_DELETED",
                {
                    "ticketId": TICKET,
                    "commentId": COMMENT1,
                    "userId": STAFF2,
                    "isInternal": False,
                    **USER_STAFF2,
                },
            )
        ],
        id="soft-deleted",
    ),
    pytest.param(
        [dele(COMMENTS, comment_row(is_internal=True))],
        (),
        [
            (
                "TICKET_COMMENT_DELETED",
                {"commentId": COMMENT1, "userId": ABSENT, "isInternal": True, **NO_ACTOR},
            )
        ],
        id="hard-deleted-nobody-declared",
    ),
    pytest.param(
        [dele(COMMENTS, comment_row(**SOFT_DELETED))], (), [], id="soft-deleted-then-removed-not-twice"
    ),
    pytest.param(
        [dele(COMMENTS, comment_row(publish_state="scheduled"))], (), [], id="scheduled-never-shown"
    ),
    pytest.param(
        [
            dele(COMMENTS, comment_row(COMMENT1)),
            dele(COMMENTS, comment_row(COMMENT2)),
            dele(TICKETS, ticket_row()),
        ],
        BY_STAFF2,
        [("TICKET_DELETED", {"ticketId": TICKET, "userId": STAFF2})],
        id="comments-go-with-their-ticket",
    ),
    pytest.param(
        [
            dele(COMMENTS, comment_row(COMMENT1)),
            dele(COMMENTS, comment_row(COMMENT2)),
            dele(TICKETS, ticket_row()),
        ],
        (),
        [
            ("TICKET_COMMENT_DELETED", {"commentId": COMMENT1}),
            ("TICKET_COMMENT_DELETED", {"commentId": COMMENT2}),
        ],
        id="ticket-deleted-without-a-user-is-not-reported-its-comments-are",
    ),
    pytest.param(
        [
            upd(COMMENTS, comment_row(), comment_row(**EDITED)),
            upd(COMMENTS, comment_row(MIRROR_COPY, CHILD1), comment_row(MIRROR_COPY, CHILD1, **EDITED)),
        ],
        BY_STAFF2,
        [("TICKET_COMMENT_UPDATED", {"commentId": COMMENT1})],
        id="mirror-copy-edit-is-not-news",
    ),
    pytest.param(
        [
            dele(MIRRORS, mirror_row(COMMENT1, CHILD1, MIRROR_COPY)),
            dele(COMMENTS, comment_row(MIRROR_COPY, CHILD1)),
            dele(COMMENTS, comment_row()),
        ],
        (),
        [("TICKET_COMMENT_DELETED", {"commentId": COMMENT1})],
        id="mirror-copy-delete-is-not-news",
    ),
    pytest.param(
        [
            upd(COMMENTS, comment_row(COMMENT1), comment_row(COMMENT1, **EDITED)),
            upd(COMMENTS, comment_row(COMMENT2), comment_row(COMMENT2, **SOFT_DELETED)),
        ],
        BY_STAFF2,
        [
            ("TICKET_COMMENT_UPDATED", {"commentId": COMMENT1}),
            ("TICKET_COMMENT_DELETED", {"commentId": COMMENT2}),
        ],
        id="two-comments-one-ticket",
    ),
]


@pytest.mark.parametrize(("changes", "messages", "expected"), CHANGE_CASES)
def test_comment_edits_and_deletes(
    changes: list[FakeChange], messages: list[tuple[str, bytes]], expected: Expected
) -> None:
    state = base_state().put(MIRRORS, (TENANT, COMMENT1, CHILD1), mirror_row(COMMENT1, CHILD1, MIRROR_COPY))
    if any(c.table == MIRRORS and c.op == "delete" for c in changes):
        state = base_state()  # the state is applied before derive: a deleted mirror row is gone
    result = run(changes, state=state, messages=messages)
    check(result, expected)
    for d in result.derived:
        if d.draft.event_type.startswith("TICKET_COMMENT_"):
            assert (d.draft.subject_id, d.draft.discriminator) == (TICKET, d.draft.payload["commentId"])


def test_comment_updated_payload_exactly() -> None:
    result = run([upd(COMMENTS, comment_row(), comment_row(**EDITED))], messages=BY_STAFF2)
    (env,) = result.envelopes
    assert env.payload_schema_ref == "payload.TicketCommentUpdated.v1"
    assert env.idempotency_key == f"TICKET_COMMENT_UPDATED:{TENANT}:{TICKET}:{COMMENT1}@0/16B3748"
    assert env.payload == {
        "tenantId": TENANT,
        "occurredAt": NOW,
        "actorType": "USER",
        "actorUserId": STAFF2,
        "ticketId": TICKET,
        "userId": STAFF2,
        "commentId": COMMENT1,
        "oldComment": {"id": COMMENT1, "content": "Hello", "author": STAFF, "isInternal": False},
        "newComment": {"id": COMMENT1, "content": "Hello again", "author": STAFF, "isInternal": False},
    }
