"""The ticket deriver: every ticket-family event the watcher derives (SPEC §5.1–§5.4, §5.6).

This module owns :class:`TicketDeriver` (the deriver the registry runs for the ticket tables),
:class:`TicketTx` (the :class:`~derivers.toolkit.FamilyTx` of one transaction, with the ticket
tables' changes by name and the status lookups its rules share), and the rules on the
``tickets`` and ``ticket_resources`` rows themselves: TICKET_CREATED, the update transitions
(STATUS_CHANGED, PRIORITY_CHANGED, UNASSIGNED, QUEUE_CHANGED, REOPENED, ESCALATED, then one of
CLOSED / ASSIGNED / UPDATED, then RESPONSE_STATE_CHANGED), TICKET_DELETED (only with a declared
actor: its schema requires the deleting user, see :func:`ticket_deleted`), the suppression of
``sync_updates`` bundle propagation, and TICKET_ADDITIONAL_AGENT_ASSIGNED. Comments, bundles and SLA stages have
their own modules (:mod:`derivers.ticket_comments`, :mod:`derivers.ticket_bundles`,
:mod:`derivers.ticket_sla`); they receive the :class:`TicketTx` and emit through it. Time
entries are a deriver of their own (:mod:`derivers.time_entries`). docs/derivers.md states every
rule and how it differs from the application.

Actor rule (every event, :meth:`~derivers.toolkit.FamilyTx.declared_actor` first): the first
``ticket_audit_logs`` row inserted in the same transaction for the same tenant and ticket whose
``actor_type`` maps to an actor; else the transaction's ``cdc.context`` message; else the row's
own actor column, only where this transaction wrote it; otherwise no actor fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from catalog.envelope import EventDraft

from . import ticket_bundles, ticket_comments, ticket_sla
from .base import Change, Derived, Image, StateView, Timer, TimerOps, TxView, declare_reads
from .tables import (
    BUNDLE_MIRRORS,
    BUNDLE_SETTINGS,
    COMMENTS,
    STATUSES,
    TICKET_AUDIT,
    TICKET_RESOURCES,
    TICKETS,
    USERS,
)
from .ticket_bundles import bundle_events
from .ticket_comments import comment_change_events, comment_events
from .ticket_sla import (
    DEFAULT_THRESHOLD_SHARE,
    TIMER_EVENTS,
    sla_on_delete,
    sla_on_insert,
    sla_on_update,
    sla_timer_fired,
)
from .toolkit import NO_ACTOR, Actor, Edits, FamilyTx, fields, subject, user_actor, written_actor

# Columns whose change is a ticket edit (TICKET_UPDATED, and `updatedFields` / `changes` of
# CLOSED / ASSIGNED), in schema order. Everything else is bookkeeping that other events or nobody
# report: the keys, updated_at/updated_by, is_closed/closed_at/closed_by (TICKET_CLOSED /
# REOPENED), response_state (RESPONSE_STATE_CHANGED), master_ticket_id (MERGED / SPLIT), the sla_*
# columns (SLA stage events) and EE generated columns.
TRACKED_COLUMNS: Final = (
    "ticket_number",
    "title",
    "url",
    "contact_name_id",
    "status_id",
    "category_id",
    "subcategory_id",
    "priority_id",
    "severity_id",
    "urgency_id",
    "impact_id",
    "entered_by",
    "assigned_to",
    "entered_at",
    "attributes",
    "due_date",
    "location_id",
    "email_metadata",
    "itil_impact",
    "itil_urgency",
    "itil_priority_level",
    "escalated",
    "escalation_level",
    "escalated_at",
    "escalated_by",
    "board_id",
    "client_id",
    "source",
    "ticket_origin",
    "assigned_team_id",
    "billing_profile_id",
)

# The application's ticket events name the columns as they are (`status_id`, SPEC §5.1), not camelCase.
TICKET_EDITS: Final = Edits(TRACKED_COLUMNS, camel=False)

_UNSEEN: Final[Any] = object()

# What a sync_updates master writes onto its children (SPEC §5.1).
SYNC_COLUMNS: Final = ("status_id", "assigned_to", "priority_id")


class TicketTx(FamilyTx):
    """One transaction as the ticket rules see it: the ticket tables' changes by name, the
    reference state and timers, the actor rule (``ticket_audit_logs``), the drafts so far."""

    __slots__ = ("_closed", "comments", "mirrors", "resources", "settings", "threshold_share", "tickets")

    def __init__(
        self,
        tx: TxView,
        state: StateView,
        timers: TimerOps,
        threshold_share: float = DEFAULT_THRESHOLD_SHARE,
    ) -> None:
        super().__init__(tx, state, timers, TicketDeriver.tables, audit=TICKET_AUDIT)
        self.threshold_share = threshold_share
        self.tickets = self.changes(TICKETS)
        self.comments = self.changes(COMMENTS)
        self.resources = self.changes(TICKET_RESOURCES)
        self.settings = self.changes(BUNDLE_SETTINGS)
        self.mirrors = self.changes(BUNDLE_MIRRORS)
        self._closed: dict[tuple[str, str], bool | None] = {}

    def status_closed(self, tenant: str, status_id: str | None) -> bool | None:
        """``statuses.is_closed`` as of this transaction; None when the status is unknown."""
        if status_id is None:
            return None
        # The state view does not change while the transaction is derived: remember the answer.
        key = (tenant, status_id)
        closed = self._closed.get(key, _UNSEEN)
        if closed is _UNSEEN:
            row = self.state.get(STATUSES, key)
            closed = self._closed[key] = None if row is None else bool(row.get("is_closed"))
        return closed  # type: ignore[no-any-return]

    def deleted_by(self, tenant: str, ticket_id: str) -> tuple[Actor, str] | None:
        """The declared actor and its user when the ticket's deletion is reported: TICKET_DELETED
        requires the user who deleted it, and only a declared actor says who that is."""
        actor = self.declared_actor(tenant, ticket_id)
        user_id = actor.get("actorUserId") if actor else None
        return None if actor is None or user_id is None else (actor, user_id)


# --- TICKET_CREATED (+ ASSIGNED, SLA ENTERED) ------------------------------------------------------


def ticket_created(ctx: TicketTx, change: Change) -> None:
    row = change.after
    if row is None:
        return
    tenant, ticket_id = subject(row, "ticket_id")
    entered_by = row.get("entered_by")
    actor = ctx.declared_actor(tenant, ticket_id) or written_actor(change, "entered_by")
    created = fields(
        ticketId=ticket_id,
        createdByUserId=entered_by,
        createdAt=row.get("entered_at"),
        # Legacy snake_case extras of the application's main creation path (SPEC §5.2).
        board_id=row.get("board_id"),
        priority_id=row.get("priority_id"),
        client_id=row.get("client_id"),
        source=row.get("source"),
    )
    ctx.emit(change, "TICKET_CREATED", tenant, ticket_id, actor, created)

    assignee = row.get("assigned_to")
    assigned_by = actor.get("actorUserId")
    if assignee is not None:
        ctx.emit(
            change,
            "TICKET_ASSIGNED",
            tenant,
            ticket_id,
            actor,
            fields(
                ticketId=ticket_id,
                assignedToUserId=assignee,
                assignedByUserId=assigned_by,
                newAssigneeId=assignee,
                newAssigneeType="user",
                assignedAt=ctx.occurred_at,
            ),
        )
    team = row.get("assigned_team_id")
    if team is not None:
        ctx.emit(
            change,
            "TICKET_ASSIGNED",
            tenant,
            ticket_id,
            actor,
            fields(
                ticketId=ticket_id,
                assignedByUserId=assigned_by,
                newAssigneeId=team,
                newAssigneeType="team",
                assignedAt=ctx.occurred_at,
            ),
            discriminator="team",
        )
    sla_on_insert(ctx, change, tenant, ticket_id, actor)


# --- ticket update transitions -------------------------------------------------------------------


def sync_propagated(ctx: TicketTx, updates: list[Change]) -> set[int]:
    """Positions of child-ticket updates that are a ``sync_updates`` master's propagation in
    this transaction: the master changed status / assignee / priority and the child took the
    master's values. The application emits nothing for them (SPEC §5.1, §7.4)."""
    children: list[tuple[Change, str]] = []
    for change in updates:
        after = change.after
        assert after is not None
        master = after.get("master_ticket_id")
        if master is None or change.changed("master_ticket_id"):
            continue
        if any(change.changed(col) for col in SYNC_COLUMNS):
            children.append((change, master))
    if not children:
        return set()

    wanted = {master for _, master in children}
    masters: dict[tuple[str, str], Change] = {}
    for change in updates:
        after = change.after
        assert after is not None
        ticket_id = after["ticket_id"]
        if ticket_id in wanted:
            masters[(after["tenant"], ticket_id)] = change

    suppressed: set[int] = set()
    for change, master_id in children:
        after = change.after
        assert after is not None
        tenant = after["tenant"]
        master = masters.get((tenant, master_id))
        if master is None or not any(master.changed(col) for col in SYNC_COLUMNS):
            continue
        settings = ctx.state.get(BUNDLE_SETTINGS, (tenant, master_id))
        if settings is None or settings.get("mode") != "sync_updates":
            continue
        master_after = master.after
        assert master_after is not None
        if all(after.get(col) == master_after.get(col) for col in SYNC_COLUMNS if change.changed(col)):
            suppressed.add(change.position)
    return suppressed


class TicketUpdate:
    """The facts of one folded ``tickets`` UPDATE that the transition rules read, each read once.

    This runs for every ticket update of the stream, so it reads the changed-column set once
    and builds each payload as one dict (base fields, actor, then the event's own fields)."""

    __slots__ = (
        "actor",
        "after",
        "base",
        "before",
        "change",
        "closed_at",
        "closed_by",
        "closing",
        "edited",
        "new",
        "old",
        "reopening",
        "response_changed",
        "tenant",
        "ticket_id",
    )

    def __init__(self, ctx: TicketTx, change: Change, before: Image, after: Image) -> None:
        self.change, self.before, self.after = change, before, after
        tenant = self.tenant = after["tenant"]
        ticket_id = self.ticket_id = after["ticket_id"]
        changed = change.changed_columns()
        edited = self.edited = TICKET_EDITS.edited(changed)
        # The edited columns' values, read once (image reads convert on every access).
        old: dict[str, Any] = {}
        new: dict[str, Any] = {}
        for col in edited:
            old[col] = before.get(col)
            new[col] = after.get(col)
        self.old, self.new = old, new

        # Closed-ness: statuses.is_closed of the old and new status, else the tickets.is_closed
        # copy (a SQL fix, or a writer that sets only the flag).
        was_closed = now_closed = None
        if "status_id" in new:
            was_closed = ctx.status_closed(tenant, old["status_id"])
            now_closed = ctx.status_closed(tenant, new["status_id"])
        status_close = was_closed is False and now_closed is True
        status_reopen = was_closed is True and now_closed is False
        flag = after.get("is_closed") if "is_closed" in changed else None
        closing = self.closing = status_close or (flag is True and not status_reopen)
        self.reopening = status_reopen or (flag is False and not status_close)
        self.response_changed = "response_state" in changed

        closed_by = closed_at = None
        if closing:
            closed_by = after.get("closed_by") if "closed_by" in changed else None
            closed_at = (after.get("closed_at") if "closed_at" in changed else None) or ctx.occurred_at
        self.closed_by, self.closed_at = closed_by, closed_at
        actor = self.actor = (
            ctx.declared_actor(tenant, ticket_id)
            or user_actor(closed_by)
            or written_actor(change, "updated_by")
        )
        self.base = {"tenantId": tenant, "occurredAt": ctx.occurred_at, **actor}

    def emit(
        self, ctx: TicketTx, event_type: str, payload: Mapping[str, Any], discriminator: str | None = None
    ) -> None:
        ctx.add(self.change, event_type, self.tenant, self.ticket_id, {**self.base, **payload}, discriminator)

    def add(
        self, ctx: TicketTx, event_type: str, payload: dict[str, Any], discriminator: str | None = None
    ) -> None:
        """``payload`` starts from :attr:`base` already."""
        ctx.add(self.change, event_type, self.tenant, self.ticket_id, payload, discriminator)


def ticket_updated(ctx: TicketTx, change: Change, suppressed: bool) -> None:
    before, after = change.before, change.after
    if before is None or after is None:
        return
    update = TicketUpdate(ctx, change, before, after)
    # A sync_updates child emits nothing of its own, but keeps its SLA clock (the close the
    # master propagates settles it).
    if not suppressed and (update.edited or update.closing or update.reopening or update.response_changed):
        transition_events(ctx, update)
        lifecycle_event(ctx, update)
        if update.response_changed:
            response_state_event(ctx, update)
    sla_on_update(
        ctx,
        change,
        update.tenant,
        update.ticket_id,
        update.actor,
        update.closed_at,
        "itil_priority_level" in update.new,
    )


def transition_events(ctx: TicketTx, u: TicketUpdate) -> None:
    """STATUS_CHANGED, PRIORITY_CHANGED, UNASSIGNED, QUEUE_CHANGED, REOPENED, ESCALATED (SPEC §5.1)."""
    ticket_id, now, old, new, base = u.ticket_id, ctx.occurred_at, u.old, u.new, u.base

    old_status, new_status = old.get("status_id"), new.get("status_id")
    if old_status is not None and new_status is not None:
        u.add(
            ctx,
            "TICKET_STATUS_CHANGED",
            {
                **base,
                "ticketId": ticket_id,
                "previousStatusId": old_status,
                "newStatusId": new_status,
                "changedAt": now,
            },
        )

    old_priority, new_priority = old.get("priority_id"), new.get("priority_id")
    if old_priority is not None and new_priority is not None:
        u.add(
            ctx,
            "TICKET_PRIORITY_CHANGED",
            {
                **base,
                "ticketId": ticket_id,
                "previousPriorityId": old_priority,
                "newPriorityId": new_priority,
                "changedAt": now,
            },
        )

    for column, kind in ASSIGNEE_COLUMNS:
        previous = old.get(column)
        if previous is not None and new[column] is None:
            u.add(
                ctx,
                "TICKET_UNASSIGNED",
                {
                    **base,
                    "ticketId": ticket_id,
                    "previousAssigneeId": previous,
                    "previousAssigneeType": kind,
                    "unassignedAt": now,
                },
                discriminator="team" if kind == "team" else None,
            )

    if "board_id" in new:
        u.emit(
            ctx,
            "TICKET_QUEUE_CHANGED",
            fields(
                ticketId=ticket_id, previousBoardId=old["board_id"], newBoardId=new["board_id"], changedAt=now
            ),
        )

    if u.reopening:
        previous, new_status = u.before.get("status_id"), u.after.get("status_id")
        if previous is not None and new_status is not None:
            u.add(
                ctx,
                "TICKET_REOPENED",
                {
                    **base,
                    "ticketId": ticket_id,
                    "previousStatusId": previous,
                    "newStatusId": new_status,
                    "reopenedAt": now,
                },
            )

    if "escalated" in new and not old["escalated"] and new["escalated"] is True:
        u.emit(
            ctx,
            "TICKET_ESCALATED",
            fields(
                ticketId=ticket_id,
                fromQueueId=u.before.get("board_id"),
                toQueueId=u.after.get("board_id"),
                escalatedAt=new.get("escalated_at") or now,
            ),
        )


ASSIGNEE_COLUMNS: Final = (("assigned_to", "user"), ("assigned_team_id", "team"))


def lifecycle_event(ctx: TicketTx, u: TicketUpdate) -> None:
    """Exactly one of CLOSED, ASSIGNED (user and/or team) or UPDATED: a close wins over an
    assignment, an assignment over an edit; bookkeeping-only updates get none."""
    edited, old, new = u.edited, u.old, u.new
    common = TICKET_EDITS.payload(edited, old, new)  # updatedFields and changes, when edited
    acting_user = u.actor.get("actorUserId")

    if u.closing:
        closed = fields(ticketId=u.ticket_id, closedByUserId=u.closed_by or acting_user, closedAt=u.closed_at)
        u.emit(ctx, "TICKET_CLOSED", closed | common)
        return

    new_user, new_team = new.get("assigned_to"), new.get("assigned_team_id")
    if new_user is not None:
        payload = assigned_payload(u, "user", new_user, old["assigned_to"], acting_user, common)
        u.add(ctx, "TICKET_ASSIGNED", payload)
    if new_team is not None:
        payload = assigned_payload(u, "team", new_team, old["assigned_team_id"], acting_user, common)
        u.add(ctx, "TICKET_ASSIGNED", payload, discriminator="team")
    if new_user is None and new_team is None and edited:
        updated = fields(ticketId=u.ticket_id, updatedByUserId=acting_user)
        u.emit(ctx, "TICKET_UPDATED", updated | common)


def assigned_payload(
    u: TicketUpdate,
    kind: str,
    assignee: str,
    previous: str | None,
    acting_user: str | None,
    common: dict[str, Any],
) -> dict[str, Any]:
    """TICKET_ASSIGNED's payload for a user or team assignee, built as one dict (optional
    fields left out, never null); ``common`` holds updatedFields and changes when edited."""
    payload = {**u.base, "ticketId": u.ticket_id}
    if kind == "user":
        payload["assignedToUserId"] = assignee
    if acting_user is not None:
        payload["assignedByUserId"] = acting_user
    if previous is not None:
        payload["previousAssigneeId"] = previous
        payload["previousAssigneeType"] = kind
    payload["newAssigneeId"] = assignee
    payload["newAssigneeType"] = kind
    payload["assignedAt"] = u.base["occurredAt"]  # the transaction's commit time
    if common:
        payload.update(common)
    return payload


def response_state_event(ctx: TicketTx, u: TicketUpdate) -> None:
    if u.closing:
        trigger = "close"
    elif commented_in_tx(ctx, u.tenant, u.ticket_id):
        trigger = "comment"
    else:
        trigger = "manual"
    u.emit(
        ctx,
        "TICKET_RESPONSE_STATE_CHANGED",
        {
            "ticketId": u.ticket_id,
            # string|null in the schema: a cleared state is sent as null.
            "previousResponseState": u.before.get("response_state"),
            "newResponseState": u.after.get("response_state"),
            "trigger": trigger,  # legacy extra (SPEC §5.3)
        },
    )


def commented_in_tx(ctx: TicketTx, tenant: str, ticket_id: str) -> bool:
    """Whether this transaction added or published a comment on the ticket."""
    for change in ctx.comments:
        row = change.after
        if row is not None and row.get("ticket_id") == ticket_id and row.get("tenant") == tenant:
            return True
    return False


def ticket_deleted(ctx: TicketTx, change: Change) -> None:
    """TICKET_DELETED, whose (legacy bus) schema requires ``userId``, the user who deleted it: only
    a declared actor can say who that is (the ticket's audit rows cannot outlive it, so in practice
    the transaction's ``cdc.context`` message); without one the event is not emitted. Its SLA
    timers are forgotten either way."""
    row = change.before
    if row is None:
        return
    tenant, ticket_id = subject(row, "ticket_id")
    sla_on_delete(ctx, tenant, ticket_id)
    deleted_by = ctx.deleted_by(tenant, ticket_id)
    if deleted_by is None:
        return
    actor, user_id = deleted_by
    ctx.emit(
        change,
        "TICKET_DELETED",
        tenant,
        ticket_id,
        actor,
        # ticketNumber and title are extras: the row is gone, they say which ticket it was.
        fields(
            ticketId=ticket_id, userId=user_id, ticketNumber=row.get("ticket_number"), title=row.get("title")
        ),
    )


def ticket_events(ctx: TicketTx) -> None:
    updates = [c for c in ctx.tickets if c.op == "update" and c.after is not None and c.before is not None]
    suppressed = sync_propagated(ctx, updates) if updates else set()
    for change in ctx.tickets:
        op = change.op
        if op == "update":
            ticket_updated(ctx, change, change.position in suppressed)
        elif op == "insert":
            ticket_created(ctx, change)
        elif op == "delete":
            ticket_deleted(ctx, change)


# --- TICKET_ADDITIONAL_AGENT_ASSIGNED -------------------------------------------------------------


def additional_agent_events(ctx: TicketTx) -> None:
    added = [
        c
        for c in ctx.resources
        if c.op == "insert" and c.after is not None and c.after.get("additional_user_id")
    ]
    if not added:
        return
    # A primary reassignment deletes and re-inserts the ticket's resource rows (SPEC §1.3): an
    # agent removed and added back on the same ticket in one transaction is churn, not news.
    removed = {
        (row["tenant"], row["ticket_id"], row.get("additional_user_id"))
        for c in ctx.resources
        if c.op == "delete" and (row := c.before) is not None
    }
    for change in added:
        row = change.after
        assert row is not None
        (tenant, ticket_id), agent = subject(row, "ticket_id"), row["additional_user_id"]
        if (tenant, ticket_id, agent) in removed:
            continue
        actor = ctx.declared_actor(tenant, ticket_id) or NO_ACTOR  # ticket_resources has no actor column
        ctx.emit(
            change,
            "TICKET_ADDITIONAL_AGENT_ASSIGNED",
            tenant,
            ticket_id,
            actor,
            fields(
                ticketId=ticket_id,
                primaryAgentId=row.get("assigned_to"),
                additionalAgentId=agent,
                assignedByUserId=actor.get("actorUserId"),
                assignedAt=row.get("assigned_at") or ctx.occurred_at,
            ),
            discriminator=agent,
        )


# --- what the rules read ---------------------------------------------------------------------------

# The events of a ticket row update: the transitions, the lifecycle verdict, the response state.
UPDATE_EVENTS: Final = (
    "TICKET_STATUS_CHANGED",
    "TICKET_PRIORITY_CHANGED",
    "TICKET_UNASSIGNED",
    "TICKET_QUEUE_CHANGED",
    "TICKET_REOPENED",
    "TICKET_ESCALATED",
    "TICKET_CLOSED",
    "TICKET_ASSIGNED",
    "TICKET_UPDATED",
    "TICKET_RESPONSE_STATE_CHANGED",
)
# What depends on whether an update closes or reopens the ticket: the verdict (a close wins over an
# assignment or an edit), the response-state trigger, and the ITIL stage's MET (or its breach).
CLOSE_EVENTS: Final = (
    "TICKET_REOPENED",
    "TICKET_CLOSED",
    "TICKET_ASSIGNED",
    "TICKET_UPDATED",
    "TICKET_RESPONSE_STATE_CHANGED",
    "TICKET_SLA_STAGE_MET",
    "TICKET_SLA_STAGE_BREACHED",
)

#: What the rules of this module read (see ``derivers.base.Reads``): a row per rule, columns first.
READS: Final = (
    (TICKETS, ("tenant", "ticket_id"), ("TICKET_CREATED", *UPDATE_EVENTS, "TICKET_DELETED")),
    (TICKETS, ("ticket_number", "title"), ("TICKET_DELETED",)),
    (
        TICKETS,
        ("entered_by", "entered_at", "board_id", "priority_id", "client_id", "source"),
        ("TICKET_CREATED",),
    ),
    (TICKETS, ("assigned_to", "assigned_team_id"), ("TICKET_ASSIGNED", "TICKET_UNASSIGNED")),
    # the actor of a created ticket's events
    (TICKETS, ("entered_by",), ("TICKET_ASSIGNED", "TICKET_SLA_STAGE_ENTERED", "TICKET_SLA_STAGE_MET")),
    # the actor of an update's events, and sync_updates propagation (emits none of them)
    (
        TICKETS,
        ("updated_by", "closed_by", "master_ticket_id"),
        (*UPDATE_EVENTS, "TICKET_SLA_STAGE_ENTERED", "TICKET_SLA_STAGE_MET"),
    ),
    (BUNDLE_SETTINGS, ("tenant", "master_ticket_id", "mode"), UPDATE_EVENTS),
    # updatedFields / changes of the verdict
    (TICKETS, TICKET_EDITS.columns, ("TICKET_CLOSED", "TICKET_ASSIGNED", "TICKET_UPDATED")),
    (TICKETS, ("status_id",), ("TICKET_STATUS_CHANGED",)),
    (TICKETS, ("status_id", "is_closed"), CLOSE_EVENTS),
    (STATUSES, ("tenant", "status_id", "is_closed"), CLOSE_EVENTS),
    (TICKETS, ("closed_at",), ("TICKET_CLOSED", "TICKET_SLA_STAGE_MET")),
    (TICKETS, ("priority_id",), ("TICKET_PRIORITY_CHANGED",)),
    (TICKETS, ("board_id",), ("TICKET_QUEUE_CHANGED", "TICKET_ESCALATED")),
    (TICKETS, ("escalated", "escalated_at"), ("TICKET_ESCALATED",)),
    (TICKETS, ("response_state",), ("TICKET_RESPONSE_STATE_CHANGED",)),
    (
        TICKET_RESOURCES,
        ("tenant", "ticket_id", "additional_user_id", "assigned_to", "assigned_at"),
        ("TICKET_ADDITIONAL_AGENT_ASSIGNED",),
    ),
)

_RULE_READS: Final = (*READS, *ticket_sla.READS, *ticket_bundles.READS, *ticket_comments.READS)
# The actor rule: the transaction's audit row names the actor of every change-driven event.
_ACTOR_READS: Final = TICKET_AUDIT.reads(
    sorted({t for _, _, types in _RULE_READS for t in types} - set(TIMER_EVENTS))
)


# --- the deriver -----------------------------------------------------------------------------------


class TicketDeriver:
    """Ticket-family events from tickets, comments, resources, bundles and audit logs; SLA
    breaches from the timers it arms."""

    name = "tickets"
    tables = frozenset(
        {TICKETS, COMMENTS, TICKET_RESOURCES, BUNDLE_SETTINGS, BUNDLE_MIRRORS, TICKET_AUDIT.table}
    )
    state_tables = frozenset({STATUSES, USERS, BUNDLE_SETTINGS, BUNDLE_MIRRORS})
    reads = declare_reads(*_RULE_READS, _ACTOR_READS)

    def __init__(self, *, sla_threshold_share: float = DEFAULT_THRESHOLD_SHARE) -> None:
        if not 0 < sla_threshold_share < 1:
            raise ValueError("sla_threshold_share must be between 0 and 1 (exclusive)")
        self.sla_threshold_share = sla_threshold_share

    def derive(self, tx: TxView, state: StateView, timers: TimerOps) -> list[Derived]:
        ctx = TicketTx(tx, state, timers, self.sla_threshold_share)
        if ctx.tickets:
            ticket_events(ctx)
            bundle_events(ctx)
        if ctx.resources:
            additional_agent_events(ctx)
        if ctx.comments:
            comment_events(ctx)
            comment_change_events(ctx)
        # Delivery order is by the causing row's position; within one row, the order above.
        return ctx.drafts()

    def fire(self, timer: Timer, state: StateView) -> list[EventDraft]:
        return sla_timer_fired(timer)
