"""History from before the watcher existed: the application's ``ticket_audit_logs`` rows mapped to
the drafts of the ticket events they record (``cdc backfill --from-audit-log`` reads the rows and
builds the envelopes: :mod:`cdc.audit_history`). Pure, like every deriver: rows in, drafts out.

The application writes one ``ticket_audit_logs`` row per ticket action, in the action's own
transaction (``writeTicketActivity`` in the alga-psa repository, ``shared/lib/ticketActivity``):
who acted (``actor_type`` user|contact|system|api|email_sender|workflow, ``actor_user_id``,
``actor_contact_id``), from where (``source`` ui|api|client_portal|inbound_email|workflow|system),
when (``occurred_at``), and — for ticket updates — ``changes``, the *curated* diff of the fields
the caller sent: ``{field: {old, new, oldLabel?, newLabel?}}`` over title, url, status_id,
priority_id, assigned_to, assigned_team_id, board_id, category_id, subcategory_id, client_id,
contact_name_id, due_date, response_state, closed_at, closed_by. Its ``event_type`` is the
application's one most specific name for the row (a close, a reopen, else the one changed field's
event when exactly one changed, else TICKET_UPDATED); ``changes`` says everything that changed, so
the update events are read from ``changes``, and only close and reopen — which need
``statuses.is_closed``, not in the row — from ``event_type``.

Mapping (audit ``event_type`` → our events, in the live deriver's order within a row):

===============================================  =================================================
audit row                                        events and the fields they take
===============================================  =================================================
TICKET_CREATED (entity ticket)                   TICKET_CREATED {createdByUserId = the acting user,
                                                 createdAt = occurred_at, legacy extras board_id,
                                                 priority_id, client_id from ``details``};
                                                 TICKET_ASSIGNED when ``details.assigned_to`` is set
TICKET_UPDATED, _STATUS_CHANGED, _CLOSED,        from ``changes``: STATUS_CHANGED (status_id old and
_REOPENED, _PRIORITY_CHANGED, _ASSIGNED,         new set), PRIORITY_CHANGED (likewise), UNASSIGNED
_UNASSIGNED, _BOARD_MOVED,                       (assigned_to / assigned_team_id set → null),
_RESPONSE_STATE_CHANGED, _BUNDLE_REOPENED        QUEUE_CHANGED (board_id), REOPENED (a _REOPENED or
(entity ticket)                                  _BUNDLE_REOPENED row with status old and new);
                                                 then one of CLOSED (a _CLOSED row: closedByUserId =
                                                 closed_by's new value else the acting user, closedAt
                                                 = closed_at's new value else occurred_at), ASSIGNED
                                                 (assigned_to / assigned_team_id → a value), UPDATED
                                                 (an edited field); then RESPONSE_STATE_CHANGED
                                                 (response_state; trigger ``close`` on a close row,
                                                 else ``manual``). updatedFields / changes: the edited
                                                 fields among the live deriver's tracked columns, as
                                                 ``{previous, new}``
TICKET_INTERNAL_NOTE_ADDED (entity comment)      MESSAGE_ADDED (internal; author = the acting user),
                                                 INTERNAL_NOTE_ADDED {noteId = entity_id},
                                                 COMMENT_ADDED
TICKET_MESSAGE_ADDED (entity comment)            MESSAGE_ADDED (public; author = the acting user),
                                                 COMMENT_ADDED
TICKET_CUSTOMER_REPLIED (entity comment)         with ``actor_contact_id``: MESSAGE_ADDED (public;
                                                 author = the contact), CUSTOMER_REPLIED {contactId,
                                                 receivedAt = occurred_at}; COMMENT_ADDED always
TICKET_COMMENT_ADDED, TICKET_COMMENT_PUBLISHED   COMMENT_ADDED {commentId = entity_id, visibility
(entity comment)                                 from ``details.is_internal`` when recorded};
                                                 INTERNAL_NOTE_ADDED when that says internal
TICKET_COMMENT_UPDATED (entity comment)          TICKET_COMMENT_UPDATED {userId = the acting user,
                                                 commentId} (no versions: the row keeps no bodies)
===============================================  =================================================

The channel of MESSAGE_ADDED / CUSTOMER_REPLIED is the row's ``source`` (ui → ui, api → api,
client_portal → portal, inbound_email → email). A comment row whose ``details`` carry a
``scheduled_publish_at`` records a comment scheduled for later: nothing is visible yet, and the
TICKET_COMMENT_PUBLISHED row records its publication. The actor fields follow the live actor rule
for an audit row (``derivers.toolkit.audit_row_actor``, the one definition); ``occurredAt`` and the envelope ``timestamp`` are the row's
``occurred_at`` in canonical form. Nothing is looked up elsewhere: a value the row does not carry
is left out where the schema allows, and the event is not emitted where it requires it (counted
in :class:`AuditStats` ``skipped`` with the reason). :data:`NOT_RECONSTRUCTIBLE` names the ticket
event types no audit row yields and why; :data:`LIMITATIONS` what the ones it yields lack.

**Keys.** ``<EVENT_TYPE>:<tenant>:<ticket>:audit-<audit_id>@0/0`` (``…:audit-<audit_id>:team@0/0``
for a team assignee), with ``source {slot, lsn "0/0", xid 0, commitTime = occurred_at, table
"public.ticket_audit_logs"}``: the uniform key shape, with a discriminator naming the audit row.
The audit row's primary key makes the key byte-stable on every re-run (so the envelope id, a
UUIDv5 of the key, is too, and a re-run into the same outbox adds nothing), and no live key can
equal it: a live key ends in a commit's end LSN, never 0/0 (Postgres's invalid LSN), and no live
discriminator starts with ``audit-``. The price: an audit row from a time the watcher was already
running describes a change the live run delivered under its own key; run the audit history up to
the watcher's start (``--until``) to avoid saying it twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, Final

from catalog.envelope import EventDraft
from catalog.errors import FormError
from catalog.forms import format_timestamp, parse_timestamp

from .tables import AUDIT_LOGS
from .tickets import ASSIGNEE_COLUMNS, TICKET_EDITS, TRACKED_COLUMNS
from .toolkit import Actor, audit_row_actor, canonical_uuid, fields

#: The application table the rows come from (the source ``table`` of the events).
AUDIT_TABLE: Final = AUDIT_LOGS
#: The discriminator of an audit row's events: ``audit-<audit_id>``.
DISCRIMINATOR_PREFIX: Final = "audit-"

# --- what the audit rows yield ---------------------------------------------------------------------

# The events of a ticket update row, in the live deriver's order.
_UPDATE_EVENTS: Final = (
    "TICKET_STATUS_CHANGED",
    "TICKET_PRIORITY_CHANGED",
    "TICKET_UNASSIGNED",
    "TICKET_QUEUE_CHANGED",
    "TICKET_REOPENED",
    "TICKET_CLOSED",
    "TICKET_ASSIGNED",
    "TICKET_UPDATED",
    "TICKET_RESPONSE_STATE_CHANGED",
)
_UPDATE_ROWS: Final = (
    "TICKET_UPDATED",
    "TICKET_STATUS_CHANGED",
    "TICKET_CLOSED",
    "TICKET_REOPENED",
    "TICKET_PRIORITY_CHANGED",
    "TICKET_ASSIGNED",
    "TICKET_UNASSIGNED",
    "TICKET_BOARD_MOVED",
    "TICKET_RESPONSE_STATE_CHANGED",
    "TICKET_BUNDLE_REOPENED",
)
_REOPEN_ROWS: Final = frozenset({"TICKET_REOPENED", "TICKET_BUNDLE_REOPENED"})
_COMMENT_ADDED_ROWS: Final = frozenset(
    {
        "TICKET_INTERNAL_NOTE_ADDED",
        "TICKET_MESSAGE_ADDED",
        "TICKET_CUSTOMER_REPLIED",
        "TICKET_COMMENT_ADDED",
        "TICKET_COMMENT_PUBLISHED",
    }
)

#: Audit ``event_type`` → the events a row of that type records: those it yields when it carries
#: what they need, else counts as skipped (the read's filter when only some event types are wanted).
YIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "TICKET_CREATED": ("TICKET_CREATED", "TICKET_ASSIGNED"),
    **{audit_type: _UPDATE_EVENTS for audit_type in _UPDATE_ROWS},
    "TICKET_INTERNAL_NOTE_ADDED": (
        "TICKET_MESSAGE_ADDED",
        "TICKET_INTERNAL_NOTE_ADDED",
        "TICKET_COMMENT_ADDED",
    ),
    "TICKET_MESSAGE_ADDED": ("TICKET_MESSAGE_ADDED", "TICKET_COMMENT_ADDED"),
    "TICKET_CUSTOMER_REPLIED": ("TICKET_MESSAGE_ADDED", "TICKET_CUSTOMER_REPLIED", "TICKET_COMMENT_ADDED"),
    "TICKET_COMMENT_ADDED": ("TICKET_MESSAGE_ADDED", "TICKET_INTERNAL_NOTE_ADDED", "TICKET_COMMENT_ADDED"),
    "TICKET_COMMENT_PUBLISHED": ("TICKET_MESSAGE_ADDED", "TICKET_COMMENT_ADDED"),
    "TICKET_COMMENT_UPDATED": ("TICKET_COMMENT_UPDATED",),
}

#: Every event type the audit history can yield.
RECONSTRUCTED: Final = frozenset(t for types in YIELDS.values() for t in types)

#: Ticket event types no audit row yields, and why (the CLI prints this table).
NOT_RECONSTRUCTIBLE: Final[Mapping[str, str]] = {
    "TICKET_ESCALATED": "the application writes no audit row for an escalation, and `escalated` is not "
    "among the fields an update row's changes record",
    "TICKET_MERGED": "bundling tickets writes no audit row",
    "TICKET_SPLIT": "removing tickets from a bundle writes no audit row",
    "TICKET_TAGS_CHANGED": "tag changes write no ticket audit row",
    "TICKET_TIME_ENTRY_ADDED": "time entries write no ticket audit row",
    "TICKET_ADDITIONAL_AGENT_ASSIGNED": "adding an additional agent writes no audit row",
    "TICKET_SLA_STAGE_ENTERED": "needs the ticket's itil_priority_level and entered_at, which no audit row holds",
    "TICKET_SLA_STAGE_MET": "needs the ticket's itil_priority_level and entered_at, which no audit row holds",
    "TICKET_SLA_STAGE_BREACHED": "needs the ticket's itil_priority_level and entered_at, which no audit "
    "row holds",
    "TICKET_SLA_THRESHOLD_REACHED": "fired by a timer, not recorded by any audit row",
    "TICKET_COMMENT_DELETED": "deleting a comment writes no audit row",
    "TICKET_DELETED": "a ticket's audit rows are deleted with the ticket",
    "TICKET_AUTO_CLOSE_WARNING": "the TICKET_AUTO_CLOSE_WARNING_SENT row lacks the required ticketNumber and title",
    "TICKET_APPROVAL_REQUESTED": "the application has no approval feature: nothing is recorded",
    "TICKET_APPROVAL_GRANTED": "the application has no approval feature: nothing is recorded",
    "TICKET_APPROVAL_REJECTED": "the application has no approval feature: nothing is recorded",
}

#: What the event types the audit history yields cannot say (the CLI prints this table too).
LIMITATIONS: Final[Mapping[str, str]] = {
    "TICKET_CLOSED": "only from rows the application classified as a close (UI, client portal, "
    "auto-close); a REST API update that closes a ticket yields STATUS_CHANGED / UPDATED only",
    "TICKET_REOPENED": "only from rows the application classified as a reopen (UI, client portal, "
    "inbound-email and bundle reopens); not a REST API update that reopens",
    "TICKET_UPDATED": "updatedFields / changes hold only the curated fields the caller sent (title, url, "
    "status, priority, assignee, team, board, category, subcategory, client, contact, due date)",
    "TICKET_ASSIGNED": "a team assigned at creation is not recorded; updatedFields / changes as TICKET_UPDATED",
    "TICKET_CREATED": "createdAt is the audit row's occurred_at; the legacy extra `source` is not recorded",
    "TICKET_MESSAGE_ADDED": "needs the author: not for published scheduled comments, staff replies by "
    "e-mail, or customer replies that name no contact",
    "TICKET_CUSTOMER_REPLIED": "only when the row names the contact (inbound e-mail, portal contacts); "
    "not for a portal user the row names by user id",
    "TICKET_COMMENT_UPDATED": "only when a user acted; without oldComment / newComment (no bodies are kept)",
    "TICKET_COMMENT_ADDED": "comments from the client-portal page and the REST API write no audit row",
}

#: The ticket fields the application's audit rows record in ``changes`` (its curated diff).
AUDITED_FIELDS: Final = frozenset(
    {
        "title",
        "url",
        "status_id",
        "priority_id",
        "assigned_to",
        "assigned_team_id",
        "board_id",
        "category_id",
        "subcategory_id",
        "client_id",
        "contact_name_id",
        "due_date",
        "response_state",
        "closed_at",
        "closed_by",
    }
)
#: Those the live deriver treats as edits (its TRACKED_COLUMNS, in that order).
EDIT_FIELDS: Final = tuple(c for c in TRACKED_COLUMNS if c in AUDITED_FIELDS)
_SOURCE_CHANNEL: Final = {"ui": "ui", "api": "api", "client_portal": "portal", "inbound_email": "email"}


def gaps(event_types: Collection[str] | None = None) -> list[tuple[str, str]]:
    """(event type, why) for each of ``event_types`` (all ticket events of
    :data:`NOT_RECONSTRUCTIBLE` when None) that the audit history cannot reconstruct, then
    those it reconstructs only in part (:data:`LIMITATIONS`): what the CLI prints."""
    if event_types is None:
        missing = sorted(NOT_RECONSTRUCTIBLE.items())
        partial = sorted(LIMITATIONS.items())
        return missing + partial
    out: list[tuple[str, str]] = []
    for event_type in sorted(set(event_types)):
        if event_type in NOT_RECONSTRUCTIBLE:
            out.append((event_type, NOT_RECONSTRUCTIBLE[event_type]))
        elif event_type not in RECONSTRUCTED:
            out.append((event_type, "not a ticket event: the application's audit log records tickets only"))
    out += [(t, LIMITATIONS[t]) for t in sorted(set(event_types)) if t in LIMITATIONS]
    return out


# --- one audit row → drafts ---------------------------------------------------------------------------

#: (event type, reason) → rows that record the event but lack what its schema requires.
Skipped = Counter[tuple[str, str]]


def _occurred(row: Mapping[str, Any]) -> datetime:
    """The row's ``occurred_at``: an aware datetime (as psycopg reads it) or its text."""
    value = row["occurred_at"]
    if isinstance(value, datetime):
        return value
    return parse_timestamp(value)


def _timestamp(value: object) -> str | None:
    """A recorded time in canonical form; None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return format_timestamp(parse_timestamp(value))
    except FormError:
        return None


class _Row:
    """One audit row as the mapping reads it, and the drafts it yields."""

    __slots__ = (
        "actor",
        "audit_type",
        "base",
        "details",
        "discriminator",
        "drafts",
        "row",
        "tenant",
        "ticket",
    )

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.row = row
        self.audit_type: str = row["event_type"]
        self.tenant: str = row["tenant"]
        self.ticket: str = row["ticket_id"]
        self.discriminator = f"{DISCRIMINATOR_PREFIX}{row['audit_id']}"
        self.actor: Actor = audit_row_actor(row) or {}
        self.base: dict[str, Any] = {
            "tenantId": self.tenant,
            "occurredAt": format_timestamp(_occurred(row)),
            **self.actor,
        }
        details = row.get("details")
        self.details: Mapping[str, Any] = details if isinstance(details, Mapping) else {}
        self.drafts: list[EventDraft] = []

    @property
    def now(self) -> str:
        at: str = self.base["occurredAt"]
        return at

    @property
    def acting_user(self) -> str | None:
        return self.actor.get("actorUserId")

    def add(self, event_type: str, payload: Mapping[str, Any], team: bool = False) -> None:
        discriminator = f"{self.discriminator}:team" if team else self.discriminator
        self.drafts.append(
            EventDraft(event_type, self.tenant, self.ticket, {**self.base, **payload}, discriminator)
        )


def audit_drafts(row: Mapping[str, Any], skipped: Skipped | None = None) -> list[EventDraft]:
    """The drafts of the ticket events one audit row records, in the live deriver's order (see the
    module docstring). ``row`` has the columns of the ``audit_rows`` query (ids as text,
    ``occurred_at`` an aware datetime or canonical text, ``changes`` / ``details`` parsed);
    each event the row records but cannot supply is counted in ``skipped`` with the reason."""
    skipped = skipped if skipped is not None else Counter()
    r = _Row(row)
    kind, entity = r.audit_type, row.get("entity_type")
    if kind == "TICKET_CREATED" and entity == "ticket":
        _created(r)
    elif kind in _UPDATE_ROWS and entity == "ticket":
        _updated(r, skipped)
    elif kind in _COMMENT_ADDED_ROWS and entity == "comment":
        _comment_added(r, skipped)
    elif kind == "TICKET_COMMENT_UPDATED" and entity == "comment":
        _comment_updated(r, skipped)
    elif kind in YIELDS:
        skipped[(kind, f"an audit row of entity type {entity!r} is not one the application writes")] += 1
    return r.drafts


def _created(r: _Row) -> None:
    details = r.details
    text = {k: v for k in ("board_id", "priority_id", "client_id") if isinstance(v := details.get(k), str)}
    r.add(
        "TICKET_CREATED",
        fields(ticketId=r.ticket, createdByUserId=r.acting_user, createdAt=r.now, **text),
    )
    assignee = canonical_uuid(details.get("assigned_to"))
    if assignee is not None:
        r.add(
            "TICKET_ASSIGNED",
            fields(
                ticketId=r.ticket,
                assignedToUserId=assignee,
                assignedByUserId=r.acting_user,
                newAssigneeId=assignee,
                newAssigneeType="user",
                assignedAt=r.now,
            ),
        )


def _diff(changes: object) -> dict[str, tuple[Any, Any]]:
    """``changes`` as field → (old, new), only the well-formed entries whose values differ."""
    out: dict[str, tuple[Any, Any]] = {}
    if not isinstance(changes, Mapping):
        return out
    for name, entry in changes.items():
        if isinstance(entry, Mapping) and "old" in entry and "new" in entry and entry["old"] != entry["new"]:
            out[name] = (entry["old"], entry["new"])
    return out


def _updated(r: _Row, skipped: Skipped) -> None:
    diff = _diff(r.row.get("changes"))
    now, ticket = r.now, r.ticket
    closing = r.audit_type == "TICKET_CLOSED"

    old_status, new_status = diff.get("status_id", (None, None))
    if old_status is not None and new_status is not None:
        r.add(
            "TICKET_STATUS_CHANGED",
            {"ticketId": ticket, "previousStatusId": old_status, "newStatusId": new_status, "changedAt": now},
        )
    old_priority, new_priority = diff.get("priority_id", (None, None))
    if old_priority is not None and new_priority is not None:
        r.add(
            "TICKET_PRIORITY_CHANGED",
            {
                "ticketId": ticket,
                "previousPriorityId": old_priority,
                "newPriorityId": new_priority,
                "changedAt": now,
            },
        )
    for name, kind in ASSIGNEE_COLUMNS:
        previous, new = diff.get(name, (None, None))
        if previous is not None and new is None:
            r.add(
                "TICKET_UNASSIGNED",
                {
                    "ticketId": ticket,
                    "previousAssigneeId": previous,
                    "previousAssigneeType": kind,
                    "unassignedAt": now,
                },
                team=kind == "team",
            )
    if "board_id" in diff:
        previous, new = diff["board_id"]
        r.add(
            "TICKET_QUEUE_CHANGED",
            fields(ticketId=ticket, previousBoardId=previous, newBoardId=new, changedAt=now),
        )
    if r.audit_type in _REOPEN_ROWS:
        if old_status is not None and new_status is not None:
            r.add(
                "TICKET_REOPENED",
                {
                    "ticketId": ticket,
                    "previousStatusId": old_status,
                    "newStatusId": new_status,
                    "reopenedAt": now,
                },
            )
        else:
            skipped[("TICKET_REOPENED", "the reopen row records no status change")] += 1

    edited = TICKET_EDITS.edited(frozenset(diff).intersection(EDIT_FIELDS))
    common = TICKET_EDITS.payload(edited, {n: diff[n][0] for n in edited}, {n: diff[n][1] for n in edited})
    _lifecycle(r, diff, closing, common)
    if "response_state" in diff:
        previous, new = diff["response_state"]
        r.add(
            "TICKET_RESPONSE_STATE_CHANGED",
            {
                "ticketId": ticket,
                "previousResponseState": previous,
                "newResponseState": new,
                "trigger": "close" if closing else "manual",
            },
        )
    if not r.drafts:
        skipped[(r.audit_type, "the row's changes record no field change an event reports")] += 1


def _lifecycle(r: _Row, diff: Mapping[str, tuple[Any, Any]], closing: bool, common: dict[str, Any]) -> None:
    """Exactly one of CLOSED, ASSIGNED (user and/or team) or UPDATED, as live: a close wins over
    an assignment, an assignment over an edit."""
    if closing:
        closed_by = canonical_uuid(diff["closed_by"][1]) if "closed_by" in diff else None
        closed_at = _timestamp(diff["closed_at"][1]) if "closed_at" in diff else None
        r.add(
            "TICKET_CLOSED",
            fields(ticketId=r.ticket, closedByUserId=closed_by or r.acting_user, closedAt=closed_at or r.now)
            | common,
        )
        return
    assigned = False
    for name, kind in ASSIGNEE_COLUMNS:
        previous, new = diff.get(name, (None, None))
        if new is None:
            continue
        assigned = True
        payload: dict[str, Any] = {"ticketId": r.ticket}
        if kind == "user":
            payload["assignedToUserId"] = new
        if r.acting_user is not None:
            payload["assignedByUserId"] = r.acting_user
        if previous is not None:
            payload["previousAssigneeId"] = previous
            payload["previousAssigneeType"] = kind
        payload |= {"newAssigneeId": new, "newAssigneeType": kind, "assignedAt": r.now, **common}
        r.add("TICKET_ASSIGNED", payload, team=kind == "team")
    if not assigned and common:
        r.add("TICKET_UPDATED", fields(ticketId=r.ticket, updatedByUserId=r.acting_user) | common)


def _comment_added(r: _Row, skipped: Skipped) -> None:
    kind, details = r.audit_type, r.details
    comment_id = canonical_uuid(r.row.get("entity_id"))
    if comment_id is None:
        skipped[("TICKET_COMMENT_ADDED", "the comment row names no comment id")] += 1
        return
    if kind != "TICKET_COMMENT_PUBLISHED" and details.get("scheduled_publish_at") is not None:
        return  # scheduled: not visible yet; its TICKET_COMMENT_PUBLISHED row records it
    if kind == "TICKET_INTERNAL_NOTE_ADDED":
        visibility: str | None = "internal"
    elif kind in ("TICKET_MESSAGE_ADDED", "TICKET_CUSTOMER_REPLIED"):
        visibility = "public"
    elif kind == "TICKET_COMMENT_ADDED" and isinstance(internal := details.get("is_internal"), bool):
        visibility = "internal" if internal else "public"
    else:
        visibility = None

    # The author: the acting user of a staff comment row, the contact of a customer reply.
    author: tuple[str, str] | None = None
    if kind == "TICKET_CUSTOMER_REPLIED":
        contact = r.actor.get("actorContactId")
        author = ("contact", contact) if contact else None
    elif kind in ("TICKET_INTERNAL_NOTE_ADDED", "TICKET_MESSAGE_ADDED") and r.row.get("actor_type") == "user":
        user = r.acting_user
        author = ("user", user) if user else None
    channel = _SOURCE_CHANNEL.get(r.row.get("source") or "")

    if author is not None and channel is not None and visibility is not None:
        r.add(
            "TICKET_MESSAGE_ADDED",
            {
                "ticketId": r.ticket,
                "messageId": comment_id,
                "visibility": visibility,
                "authorId": author[1],
                "authorType": author[0],
                "channel": channel,
                "createdAt": r.now,
            },
        )
    elif author is None:
        skipped[("TICKET_MESSAGE_ADDED", f"a {kind} row names no author")] += 1
    else:
        skipped[("TICKET_MESSAGE_ADDED", f"a {kind} row's source names no channel")] += 1
    if visibility == "internal":
        r.add("TICKET_INTERNAL_NOTE_ADDED", {"ticketId": r.ticket, "noteId": comment_id, "createdAt": r.now})
    elif kind == "TICKET_CUSTOMER_REPLIED":
        if author is not None and channel is not None:
            r.add(
                "TICKET_CUSTOMER_REPLIED",
                {
                    "ticketId": r.ticket,
                    "messageId": comment_id,
                    "contactId": author[1],
                    "channel": channel,
                    "receivedAt": r.now,
                },
            )
        else:
            why = "the row names no contact" if author is None else "the row's source names no channel"
            skipped[("TICKET_CUSTOMER_REPLIED", why)] += 1
    r.add(
        "TICKET_COMMENT_ADDED",
        fields(
            ticketId=r.ticket,
            commentId=comment_id,
            visibility=visibility,
            authorId=author[1] if author else None,
            authorType=author[0] if author else None,
            createdAt=r.now,
        ),
    )


def _comment_updated(r: _Row, skipped: Skipped) -> None:
    comment_id = canonical_uuid(r.row.get("entity_id"))
    user = r.acting_user
    if comment_id is None or user is None:
        skipped[("TICKET_COMMENT_UPDATED", "the row names no editing user (the schema requires userId)")] += 1
        return
    r.add("TICKET_COMMENT_UPDATED", {"ticketId": r.ticket, "userId": user, "commentId": comment_id})
