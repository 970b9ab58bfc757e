"""Ticket communication events from ``comments`` rows (SPEC §5.3): TICKET_MESSAGE_ADDED,
TICKET_INTERNAL_NOTE_ADDED, TICKET_CUSTOMER_REPLIED and the legacy TICKET_COMMENT_ADDED.

A comment counts when it becomes visible: inserted as ``published``, or a scheduled comment
updated to ``published``; never a soft-deleted one, and never a bundle mirror copy (its id is a
``ticket_bundle_mirrors.child_comment_id``, in the replicated state or written in the same
transaction). Every writer counts alike: MSP UI, client portal, inbound email, REST, jobs.

The author is the comment's internal user (``users.user_type = 'internal'``), else the contact
of its client user, else its client user, else its ``contact_id`` (inbound email without a
portal user). The channel is ``metadata.responseSource`` when the writer recorded it, else the
source of the transaction's audit row, else what the author implies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .base import Change, Image
from .tables import AUDIT_LOGS, BUNDLE_MIRRORS, COMMENTS, USERS
from .toolkit import NO_ACTOR, Actor, contact_actor, fields, user_actor

if TYPE_CHECKING:
    from .tickets import TicketTx

COMMENT_EVENTS: Final = (
    "TICKET_MESSAGE_ADDED",
    "TICKET_INTERNAL_NOTE_ADDED",
    "TICKET_CUSTOMER_REPLIED",
    "TICKET_COMMENT_ADDED",
)
_CHANNEL_EVENTS: Final = ("TICKET_MESSAGE_ADDED", "TICKET_CUSTOMER_REPLIED")

#: What these rules read (see ``derivers.base.Reads``); the actor is declared with the ticket rules.
READS: Final = (
    (
        COMMENTS,
        (
            "tenant",
            "comment_id",
            "ticket_id",
            "publish_state",
            "deleted_at",
            "is_internal",
            "user_id",
            "contact_id",
            "author_type",
            "created_at",
            "published_at",
        ),
        COMMENT_EVENTS,
    ),
    (COMMENTS, ("metadata",), _CHANNEL_EVENTS),
    (AUDIT_LOGS, ("source",), _CHANNEL_EVENTS),
    (BUNDLE_MIRRORS, ("tenant", "child_comment_id"), COMMENT_EVENTS),
    (USERS, ("tenant", "user_id", "user_type", "contact_id"), COMMENT_EVENTS),
)

_RESPONSE_SOURCE_CHANNEL: Final = {"inbound_email": "email", "client_portal": "portal"}
_AUDIT_SOURCE_CHANNEL: Final = {"api": "api", "inbound_email": "email", "client_portal": "portal"}


class Author(NamedTuple):
    type: str  # "user" | "contact" (the schemas' authorType)
    id: str
    client: bool  # a client-side author (portal user or contact)
    via_user: bool  # the comment names a users row (portal/UI) rather than only a contact


def comment_events(ctx: TicketTx) -> None:
    mirrored: set[tuple[str, str]] | None = None
    for change in ctx.comments:
        row = change.after
        if row is None or not _published_now(change, row) or row.get("deleted_at") is not None:
            continue
        tenant, comment_id, ticket_id = row["tenant"], row["comment_id"], row["ticket_id"]
        if mirrored is None:
            mirrored = _mirrors_written(ctx)
        if (tenant, comment_id) in mirrored or _mirror_in_state(ctx, tenant, comment_id):
            continue
        _comment(ctx, change, row, tenant, comment_id, ticket_id)


def _published_now(change: Change, row: Image) -> bool:
    if change.op == "insert":
        return row.get("publish_state") == "published"
    if change.op == "update" and change.changed("publish_state") and change.before is not None:
        return change.before.get("publish_state") == "scheduled" and row.get("publish_state") == "published"
    return False


def _mirrors_written(ctx: TicketTx) -> set[tuple[str, str]]:
    return {
        (row["tenant"], row["child_comment_id"])
        for change in ctx.mirrors
        if (row := change.after) is not None
    }


def _mirror_in_state(ctx: TicketTx, tenant: str, comment_id: str) -> bool:
    return any(
        row.get("tenant") == tenant for row in ctx.state.find(BUNDLE_MIRRORS, "child_comment_id", comment_id)
    )


def _comment(ctx: TicketTx, change: Change, row: Image, tenant: str, comment_id: str, ticket_id: str) -> None:
    internal = row.get("is_internal") is True
    visibility = "internal" if internal else "public"
    author = _author(ctx, tenant, row)
    if change.op == "insert":
        created_at = row.get("created_at") or ctx.occurred_at
    else:  # a scheduled comment reaches the ticket when it is published
        created_at = row.get("published_at") or ctx.occurred_at
    actor = ctx.declared_actor(tenant, ticket_id) or _author_actor(author)

    def emit(event_type: str, payload: dict[str, Any]) -> None:
        # Two comments on one ticket in one transaction: the comment id tells the events apart.
        ctx.emit(change, event_type, tenant, ticket_id, actor, payload, discriminator=comment_id)

    channel = _channel(ctx, tenant, ticket_id, row, author) if author is not None else None
    if author is not None and channel is not None:
        emit(
            "TICKET_MESSAGE_ADDED",
            {
                "ticketId": ticket_id,
                "messageId": comment_id,
                "visibility": visibility,
                "authorId": author.id,
                "authorType": author.type,
                "channel": channel,
                "createdAt": created_at,
            },
        )
    if internal:
        emit(
            "TICKET_INTERNAL_NOTE_ADDED",
            {"ticketId": ticket_id, "noteId": comment_id, "createdAt": created_at},
        )
    elif author is not None and author.type == "contact" and channel is not None:
        emit(
            "TICKET_CUSTOMER_REPLIED",
            {
                "ticketId": ticket_id,
                "messageId": comment_id,
                "contactId": author.id,
                "channel": channel,
                "receivedAt": created_at,
            },
        )
    emit(
        "TICKET_COMMENT_ADDED",
        fields(
            ticketId=ticket_id,
            commentId=comment_id,
            visibility=visibility,
            authorId=author.id if author is not None else None,
            authorType=author.type if author is not None else None,
            createdAt=created_at,
        ),
    )


def _author(ctx: TicketTx, tenant: str, row: Image) -> Author | None:
    user_id = row.get("user_id")
    if user_id is not None:
        user = _user(ctx, tenant, user_id)
        if user is not None:
            if user.get("user_type") == "internal":
                return Author("user", user_id, client=False, via_user=True)
            contact_id = user.get("contact_id") or row.get("contact_id")
        elif row.get("author_type") == "client":
            contact_id = row.get("contact_id")
        else:
            # Not replicated (should not happen): the row's author_type, 'internal' or its default.
            return Author("user", user_id, client=False, via_user=True)
        if contact_id is not None:
            return Author("contact", contact_id, client=True, via_user=True)
        return Author("user", user_id, client=True, via_user=True)
    contact_id = row.get("contact_id")
    if contact_id is not None:
        return Author("contact", contact_id, client=True, via_user=False)
    return None


def _user(ctx: TicketTx, tenant: str, user_id: str) -> Image | None:
    # By column rather than by key: users' primary key is (tenant, user_id, email).
    for user in ctx.state.find(USERS, "user_id", user_id):
        if user.get("tenant") == tenant:
            return user
    return None


def _channel(ctx: TicketTx, tenant: str, ticket_id: str, row: Image, author: Author) -> str:
    metadata = row.get("metadata")
    if isinstance(metadata, dict):
        channel = _RESPONSE_SOURCE_CHANNEL.get(str(metadata.get("responseSource")))
        if channel is not None:
            return channel
    audit = ctx.audit_row(tenant, ticket_id)
    if audit is not None:
        channel = _AUDIT_SOURCE_CHANNEL.get(str(audit.get("source")))
        if channel is not None:
            return channel
    if not author.client:
        return "ui"
    # Only inbound email writes a contact author without a portal user (SPEC §1.3).
    return "portal" if author.via_user else "email"


def _author_actor(author: Author | None) -> Actor:
    if author is None:
        return NO_ACTOR
    if author.type == "contact":
        return contact_actor(author.id)
    return user_actor(author.id)
