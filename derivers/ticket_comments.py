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

Edits and deletes (the legacy bus events; :func:`comment_change_events`), about the ticket,
discriminated by the comment id like the additions:

* **TICKET_COMMENT_DELETED** — a visible comment (published, not soft-deleted) goes away: a hard
  DELETE, or the application's soft delete (``deleted_at`` NULL → value, the note replaced by
  ``[deleted]``, when the comment has replies). A soft-deleted comment deleted later is not
  deleted twice; a scheduled comment never shown is not reported; nor are the comments deleted
  in the transaction that deletes their ticket when TICKET_DELETED is reported (they go with it:
  it says so; without a declared user it is not, and each comment's deletion is), nor bundle
  mirror copies. ``userId`` is the declared actor's user (audit row of the ticket, else
  the ``cdc.context`` message) and is left out otherwise (optional in the schema).
* **TICKET_COMMENT_UPDATED** — the ``note`` of a visible comment changed (not the soft delete,
  not the scheduled → published step, not a mirror copy). Its schema requires ``userId``, the
  editing user, and no column says who edited (the author is not necessarily the editor): it is
  emitted only when the transaction declares a user actor (an audit row of the ticket, or the
  ``cdc.context`` message). ``oldComment`` / ``newComment`` are ``{id, content (the note),
  author (the comment's user id, else its contact id), isInternal}``, left out when the
  comment names no author.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .base import Change, Image
from .tables import AUDIT_LOGS, BUNDLE_MIRRORS, COMMENTS, TICKETS, USERS
from .toolkit import NO_ACTOR, Actor, contact_actor, fields, user_actor

if TYPE_CHECKING:
    from .tickets import TicketTx

COMMENT_EVENTS: Final = (
    "TICKET_MESSAGE_ADDED",
    "TICKET_INTERNAL_NOTE_ADDED",
    "TICKET_CUSTOMER_REPLIED",
    "TICKET_COMMENT_ADDED",
)
CHANGE_EVENTS: Final = ("TICKET_COMMENT_UPDATED", "TICKET_COMMENT_DELETED")
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
        ),
        CHANGE_EVENTS,
    ),
    (COMMENTS, ("note",), ("TICKET_COMMENT_UPDATED",)),
    (BUNDLE_MIRRORS, ("tenant", "child_comment_id"), CHANGE_EVENTS),
    (TICKETS, ("tenant", "ticket_id"), ("TICKET_COMMENT_DELETED",)),
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


# --- edits and deletes ---------------------------------------------------------------------------


def comment_change_events(ctx: TicketTx) -> None:
    """TICKET_COMMENT_UPDATED and TICKET_COMMENT_DELETED (see the module docstring)."""
    mirrors: set[tuple[str, str]] | None = None
    gone: set[tuple[str, str]] | None = None
    for change in ctx.comments:
        before, after = change.before, change.after
        if before is None or not _visible(before):
            continue
        if change.op == "delete":
            if gone is None:
                gone = {  # tickets deleted here whose TICKET_DELETED is reported
                    (row["tenant"], row["ticket_id"])
                    for c in ctx.tickets
                    if c.op == "delete"
                    and (row := c.before) is not None
                    and ctx.deleted_by(row["tenant"], row["ticket_id"]) is not None
                }
            if (before["tenant"], before["ticket_id"]) in gone:
                continue
            kind = "TICKET_COMMENT_DELETED"
        elif change.op == "update" and after is not None:
            if after.get("deleted_at") is not None:
                kind = "TICKET_COMMENT_DELETED"
            elif change.changed("note") and _visible(after):
                kind = "TICKET_COMMENT_UPDATED"
            else:
                continue
        else:
            continue
        tenant, comment_id = before["tenant"], before["comment_id"]
        if mirrors is None:
            mirrors = _mirror_copies(ctx)
        if (tenant, comment_id) in mirrors or _mirror_in_state(ctx, tenant, comment_id):
            continue
        if kind == "TICKET_COMMENT_DELETED":
            _comment_deleted(ctx, change, before)
        else:
            assert after is not None
            _comment_updated(ctx, change, before, after)


def _visible(row: Image) -> bool:
    return row.get("publish_state") == "published" and row.get("deleted_at") is None


def _mirror_copies(ctx: TicketTx) -> set[tuple[str, str]]:
    """Mirror copies this transaction wrote or removed (a removed mirror row is gone from the state)."""
    out: set[tuple[str, str]] = set()
    for change in ctx.mirrors:
        for row in (change.before, change.after):
            if row is not None:
                out.add((row["tenant"], row["child_comment_id"]))
    return out


def _comment_deleted(ctx: TicketTx, change: Change, row: Image) -> None:
    tenant, comment_id, ticket_id = row["tenant"], row["comment_id"], row["ticket_id"]
    actor = ctx.declared_actor(tenant, ticket_id) or NO_ACTOR
    ctx.emit(
        change,
        "TICKET_COMMENT_DELETED",
        tenant,
        ticket_id,
        actor,
        fields(
            ticketId=ticket_id,
            commentId=comment_id,
            userId=actor.get("actorUserId"),
            isInternal=row.get("is_internal") if isinstance(row.get("is_internal"), bool) else None,
        ),
        discriminator=comment_id,
    )


def _comment_updated(ctx: TicketTx, change: Change, before: Image, after: Image) -> None:
    tenant, comment_id, ticket_id = after["tenant"], after["comment_id"], after["ticket_id"]
    actor = ctx.declared_actor(tenant, ticket_id)
    user_id = actor.get("actorUserId") if actor else None
    if actor is None or user_id is None:
        return  # the schema requires the editing user, and no column says who edited
    ctx.emit(
        change,
        "TICKET_COMMENT_UPDATED",
        tenant,
        ticket_id,
        actor,
        fields(
            ticketId=ticket_id,
            userId=user_id,
            commentId=comment_id,  # an extra: which comment, without opening the versions
            oldComment=_version(before),
            newComment=_version(after),
        ),
        discriminator=comment_id,
    )


def _version(row: Image) -> dict[str, Any] | None:
    author = row.get("user_id") or row.get("contact_id")
    note = row.get("note")
    if author is None or not isinstance(note, str):
        return None
    return fields(
        id=row["comment_id"],
        content=note,
        author=author,
        isInternal=row.get("is_internal") if isinstance(row.get("is_internal"), bool) else None,
    )
