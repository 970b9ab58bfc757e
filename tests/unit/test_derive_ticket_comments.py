"""Comment events: MESSAGE_ADDED, INTERNAL_NOTE_ADDED, CUSTOMER_REPLIED, COMMENT_ADDED
(derivers.ticket_comments).
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
    TENANT,
    TICKET,
    USER_STAFF,
    Expected,
    audit,
    base_state,
    check,
    comment_row,
    ins,
    run,
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
