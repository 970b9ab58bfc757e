"""The time-entry deriver: the time-entry family from ``time_entries`` rows, for every writer
(the REST service, the in-app time sheet and timers, approvals, imports, SQL).

**TICKET_TIME_ENTRY_ADDED** (SPEC §5.5): an entry is added when it is inserted finished
(``end_time`` set) or when a running timer stops (``end_time`` NULL → value; not a restarted
entry stopped again, see below), if it is booked
against a ticket (``work_item_type = 'ticket'``, ``work_item_id`` set) and lasts at least one whole
minute: minutes = round((end − start) / 60 s) with both times truncated to the minute, as the
application computes it. ``billable`` is ``billable_duration > 0`` (minutes; 0 marks a non-billable
entry). The event is about the ticket, so the actor rule is the ticket's (:mod:`derivers.toolkit`):
the ``ticket_audit_logs`` row of the same transaction, else the ``cdc.context`` message, else the
entry's ``user_id`` (whose time it is).

The entry's own events are about the entry (subject ``entry_id``; one of each type per entry and
transaction, so no discriminator), in this order for one row: CREATED, UPDATED, SUBMITTED,
APPROVED, CHANGES_REQUESTED, DELETED, then TICKET_TIME_ENTRY_ADDED.

* **A running timer session is not an entry yet.** A row with ``end_time`` NULL is the
  application's running time-tracking session: inserting, editing or discarding it emits nothing.
  **TIME_ENTRY_CREATED** fires when an entry comes into being — inserted finished, or a running
  session stopped (``end_time`` NULL → value; that update is the creation, not an UPDATED).
* **TIME_ENTRY_UPDATED**: an update of a finished entry that changes one of the entry's own
  columns (:data:`ENTRY_EDITS`: who, when, what it is booked against, notes, billable minutes,
  service, contract line); ``updatedFields`` / ``changes`` (``{previous, new}``) name them in
  camelCase. Bookkeeping (``updated_at``/``updated_by``, ``invoiced``, tax and pricing columns,
  ``approval_status``, ``time_sheet_id``) is no edit.
* **Approval transitions** (``approval_status``, values DRAFT, SUBMITTED, APPROVED, REJECTED,
  CHANGES_REQUESTED) of a finished entry: → SUBMITTED is **TIME_ENTRY_SUBMITTED**, → APPROVED
  **TIME_ENTRY_APPROVED**, → CHANGES_REQUESTED **TIME_ENTRY_CHANGES_REQUESTED**. The catalog has no
  type for REJECTED, nor for a return to DRAFT: nothing. An entry inserted already submitted or
  approved (an import) gets CREATED only: an insert is no transition. The v1 schemas of SUBMITTED
  and APPROVED require a ticket or project-task work item (``workItemType`` TICKET|PROJECT_TASK,
  ``workItemId``); entries booked against anything else (ad hoc, non-billable category,
  interaction) cannot satisfy them and get no SUBMITTED / APPROVED. ``userId`` is the entry's user
  (whose time it is), not the approver; the approver or requester is the actor when the transaction
  declares one (``requestedBy`` of CHANGES_REQUESTED too). No column holds a reason: none is sent.
* **TIME_ENTRY_DELETED**: a finished entry deleted (or a restarted one, see below).
* **A finished entry restarted** (``end_time`` value → NULL, which the application's own paths
  never write: an import, SQL, a client that resumes a stopped timer) is not a new session: the
  entry was created once and its ticket got its TICKET_TIME_ENTRY_ADDED. The restart emits
  nothing (the entry is running again); its next stop is **TIME_ENTRY_UPDATED** of the existing
  entry, whose ``changes`` compare the entry as it was finished before the restart with the
  entry as stopped now (``endTime``, usually; nothing when it stops exactly as it was), with
  approval transitions as for any update — no second CREATED and no second
  TICKET_TIME_ENTRY_ADDED (that type has no "changed" form; a workflow that sums a ticket's
  time reads the entry's UPDATED). Deleting it while it runs is TIME_ENTRY_DELETED. What the
  entry was is remembered in a timer that is settled as soon as it is set and so never fires
  (key ``time_entry:<tenant>:<entry>:restarted``, data the :data:`ENTRY_EDITS` columns), the
  deriver's durable memory: it commits with the checkpoint and is rebuilt by a backfill; the
  stop or the delete forgets it. An entry restarted before the watcher saw its history (no
  marker) is, at its stop, CREATED with TICKET_TIME_ENTRY_ADDED, as a first stop is.
* Payloads (the legacy bus ``TimeEntryEventPayloadSchema`` for CREATED / UPDATED / DELETED /
  CHANGES_REQUESTED): ``timeEntryId``, ``userId``, ``workItemId``, ``workItemType``, plus the extras
  ``workDate``, ``startTime``, ``endTime``, ``billableDuration`` (what a workflow usually needs of an
  entry). ``workItemType`` is the column's value upper-cased (``TICKET``, ``PROJECT_TASK``,
  ``AD_HOC``, …) in every event of the family, as the v1 schemas spell the two they know.
* **Actor**: the transaction's ``cdc.context`` message, else the actor column this change wrote
  (``created_by`` of an insert, ``updated_by`` when an update changed it), else no actor fields; a
  delete names an actor only through the context message. A stopped session's CREATED falls back
  on its ``created_by`` (who created the row: never stale) when the stop did not write
  ``updated_by``. The ticket's audit rows are not used
  for the entry's own events: they say who acted on the ticket.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

from catalog.envelope import EventDraft

from .base import Change, Derived, Image, StateView, Timer, TimerOps, TxView, declare_reads, parse_time
from .tables import TICKET_AUDIT, TIME_ENTRIES
from .toolkit import NO_ACTOR, Actor, Edits, FamilyTx, fields, user_actor, written_actor

EVENTS: Final = ("TICKET_TIME_ENTRY_ADDED",)

#: The entry's own events, in their order for one row.
ENTRY_EVENTS: Final = (
    "TIME_ENTRY_CREATED",
    "TIME_ENTRY_UPDATED",
    "TIME_ENTRY_SUBMITTED",
    "TIME_ENTRY_APPROVED",
    "TIME_ENTRY_CHANGES_REQUESTED",
    "TIME_ENTRY_DELETED",
)
_LEGACY_EVENTS: Final = (
    "TIME_ENTRY_CREATED",
    "TIME_ENTRY_UPDATED",
    "TIME_ENTRY_CHANGES_REQUESTED",
    "TIME_ENTRY_DELETED",
)
#: approval_status value reached → the event it is.
APPROVAL_EVENTS: Final = {
    "SUBMITTED": "TIME_ENTRY_SUBMITTED",
    "APPROVED": "TIME_ENTRY_APPROVED",
    "CHANGES_REQUESTED": "TIME_ENTRY_CHANGES_REQUESTED",
}
_V1_WORK_ITEM_TYPES: Final = frozenset({"TICKET", "PROJECT_TASK"})

#: The columns whose change makes an update of a finished entry a TIME_ENTRY_UPDATED, in order.
ENTRY_EDITS: Final = Edits(
    (
        "user_id",
        "work_date",
        "start_time",
        "end_time",
        "work_timezone",
        "work_item_type",
        "work_item_id",
        "service_id",
        "contract_line_id",
        "billable_duration",
        "notes",
    )
)

#: What these rules read (see ``derivers.base.Reads``), the actor rule included.
READS: Final = (
    (
        TIME_ENTRIES,
        (
            "tenant",
            "entry_id",
            "start_time",
            "end_time",
            "work_item_type",
            "work_item_id",
            "billable_duration",
            "user_id",
            "created_at",
        ),
        EVENTS,
    ),
    TICKET_AUDIT.reads(EVENTS),
    (
        TIME_ENTRIES,
        ("tenant", "entry_id", "user_id", "work_item_id", "work_item_type", "end_time", "created_by"),
        ENTRY_EVENTS,
    ),
    (TIME_ENTRIES, ("work_date", "start_time", "billable_duration"), _LEGACY_EVENTS),
    (TIME_ENTRIES, ("approval_status",), tuple(APPROVAL_EVENTS.values())),
    (TIME_ENTRIES, ("updated_by",), ENTRY_EVENTS[:5]),
    (TIME_ENTRIES, ENTRY_EDITS.columns, ("TIME_ENTRY_UPDATED",)),
)


# --- the entry's own events ----------------------------------------------------------------------


def restarted_key(tenant: str, entry_id: str) -> str:
    """The marker timer of a finished entry put back to running (settled as it is armed: never fires)."""
    return f"time_entry:{tenant}:{entry_id}:restarted"


def entry_events(ctx: FamilyTx) -> set[tuple[str, str]]:
    """The entry's own events; returns the restarted entries this transaction stopped again."""
    stopped_again: set[tuple[str, str]] = set()
    for change in ctx.changes(TIME_ENTRIES):
        before, after = change.before, change.after
        if change.op == "insert" and after is not None:
            if after.get("end_time") is not None:
                _entry_event(ctx, change, after, "TIME_ENTRY_CREATED", written_actor(change, "created_by"))
        elif change.op == "update" and before is not None and after is not None:
            if after.get("end_time") is None:
                if before.get("end_time") is not None:
                    _mark_restarted(ctx, change, before)
                continue  # a running session (or one restarted): not an entry
            actor = written_actor(change, "updated_by")
            if before.get("end_time") is None:
                finished = _restarted_entry(ctx, after)
                if finished is not None:  # an entry restarted and stopped again: an edit of it
                    stopped_again.add((after["tenant"], after["entry_id"]))
                    edited = [c for c in ENTRY_EDITS.columns if finished.get(c) != after.get(c)]
                    if edited:
                        edits = ENTRY_EDITS.payload(edited, finished, after)
                        _entry_event(ctx, change, after, "TIME_ENTRY_UPDATED", actor, edits)
                else:
                    # the session that stopped was created by created_by, unless this change names who stopped it
                    creator = actor or user_actor(after.get("created_by"))
                    _entry_event(ctx, change, after, "TIME_ENTRY_CREATED", creator)
            else:
                edits = ENTRY_EDITS.of(change)
                if edits:
                    _entry_event(ctx, change, after, "TIME_ENTRY_UPDATED", actor, edits)
            if change.changed("approval_status"):
                event_type = APPROVAL_EVENTS.get(str(after.get("approval_status")))
                if event_type is not None:
                    _approval_event(ctx, change, after, event_type, actor)
        elif change.op == "delete" and before is not None:
            restarted = before.get("end_time") is None and _restarted_entry(ctx, before) is not None
            if before.get("end_time") is not None or restarted:
                _entry_event(ctx, change, before, "TIME_ENTRY_DELETED", NO_ACTOR)
    return stopped_again


def _mark_restarted(ctx: FamilyTx, change: Change, finished: Image) -> None:
    """Remember a finished entry put back to running, with its edit columns as they were: its
    next stop is an edit of the entry, not a new one (a settled timer never fires; it is the
    deriver's durable memory, replayed with the journal like any timer)."""
    tenant, entry_id = finished["tenant"], finished["entry_id"]
    key = restarted_key(tenant, entry_id)
    ctx.timers.forget(key)  # a marker left over (a stop the watcher never saw) is stale
    ctx.timers.arm(
        key,
        change,
        tenant=tenant,
        subject_id=entry_id,
        stage="restarted",
        due_at=ctx.tx.commit_time,
        data={column: finished.get(column) for column in ENTRY_EDITS.columns},
    )
    ctx.timers.settle(key)


def _restarted_entry(ctx: FamilyTx, row: Image) -> dict[str, Any] | None:
    """The finished entry's edit columns when ``row`` is a restarted entry (the marker is
    forgotten: the stop or the delete ends the restart)."""
    key = restarted_key(row["tenant"], row["entry_id"])
    marker = ctx.timers.get(key)
    if marker is None:
        return None
    ctx.timers.forget(key)
    return dict(marker.data)


def _work_item_type(row: Image) -> str | None:
    kind = row.get("work_item_type")
    return kind.upper() if isinstance(kind, str) else None


def _entry_event(
    ctx: FamilyTx,
    change: Change,
    row: Image,
    event_type: str,
    written: Actor,
    extra: dict[str, Any] | None = None,
) -> None:
    tenant, entry_id = row["tenant"], row["entry_id"]
    actor = ctx.context_actor or written
    payload = fields(
        timeEntryId=entry_id,
        userId=row.get("user_id"),
        workItemId=row.get("work_item_id"),
        workItemType=_work_item_type(row),
        workDate=row.get("work_date"),
        startTime=row.get("start_time"),
        endTime=row.get("end_time"),
        billableDuration=row.get("billable_duration"),
    )
    if extra:
        payload.update(extra)
    ctx.emit(change, event_type, tenant, entry_id, actor, payload)


def _approval_event(ctx: FamilyTx, change: Change, row: Image, event_type: str, written: Actor) -> None:
    actor = ctx.context_actor or written
    if event_type == "TIME_ENTRY_CHANGES_REQUESTED":
        requested = actor.get("actorUserId")
        _entry_event(ctx, change, row, event_type, written, fields(requestedBy=requested))
        return
    work_item_type, work_item_id, user_id = _work_item_type(row), row.get("work_item_id"), row.get("user_id")
    if work_item_type not in _V1_WORK_ITEM_TYPES or work_item_id is None or user_id is None:
        return  # the v1 schema requires a ticket or project-task work item
    tenant, entry_id = row["tenant"], row["entry_id"]
    ctx.emit(
        change,
        event_type,
        tenant,
        entry_id,
        actor,
        {
            "timeEntryId": entry_id,
            "userId": user_id,
            "workItemId": work_item_id,
            "workItemType": work_item_type,
        },
    )


# --- TICKET_TIME_ENTRY_ADDED -----------------------------------------------------------------------


def time_entry_events(ctx: FamilyTx, restarted: Collection[tuple[str, str]] = ()) -> None:
    """TICKET_TIME_ENTRY_ADDED; ``restarted``: entries stopped again after a restart (not added)."""
    for change in ctx.changes(TIME_ENTRIES):
        row = change.after
        if row is None or row.get("end_time") is None:
            continue
        tenant, entry_id = row["tenant"], row["entry_id"]
        if change.op == "update":
            before = change.before
            if before is None or before.get("end_time") is not None or (tenant, entry_id) in restarted:
                continue  # edits, and restarted entries stopped again, are no additions
        elif change.op != "insert":
            continue
        if row.get("work_item_type") != "ticket":
            continue
        ticket_id = row.get("work_item_id")
        minutes = _whole_minutes(row.get("start_time"), row["end_time"])
        if ticket_id is None or minutes is None or minutes <= 0:
            continue
        _entry_added(ctx, change, row["tenant"], ticket_id, minutes)


def _whole_minutes(start: str | None, end: str) -> int | None:
    if start is None:
        return None
    start_minute = parse_time(start).replace(second=0, microsecond=0)
    end_minute = parse_time(end).replace(second=0, microsecond=0)
    return round((end_minute - start_minute).total_seconds() / 60)


def _entry_added(ctx: FamilyTx, change: Change, tenant: str, ticket_id: str, minutes: int) -> None:
    row = change.after
    assert row is not None
    entry_id = row["entry_id"]
    actor = ctx.declared_actor(tenant, ticket_id) or user_actor(row.get("user_id"))
    billable = row.get("billable_duration")
    ctx.emit(
        change,
        "TICKET_TIME_ENTRY_ADDED",
        tenant,
        ticket_id,
        actor,
        fields(
            ticketId=ticket_id,
            timeEntryId=entry_id,
            minutes=minutes,
            billable=isinstance(billable, int) and billable > 0,
            createdAt=row.get("created_at"),
        ),
        # Two entries on one ticket in one transaction: the entry id tells the events apart.
        discriminator=entry_id,
    )


class TimeEntryDeriver:
    """The time-entry family from ``time_entries``; no reference state; a settled marker timer
    per restarted entry (none fires)."""

    name = "time_entries"
    tables = frozenset({TIME_ENTRIES})
    state_tables: frozenset[str] = frozenset()
    reads = declare_reads(*READS)

    def derive(self, tx: TxView, state: StateView, timers: TimerOps) -> list[Derived]:
        ctx = FamilyTx(tx, state, timers, self.tables, audit=TICKET_AUDIT)
        time_entry_events(ctx, entry_events(ctx))
        return ctx.drafts()

    def fire(self, timer: Timer, state: StateView) -> list[EventDraft]:
        return []  # arms none
