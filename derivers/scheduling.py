"""The scheduling deriver: appointments, schedule blocks, technician dispatch and the legacy
schedule-entry events from ``schedule_entries``, ``schedule_entry_assignees`` and
``appointment_requests`` (SPEC §5.8); CAPACITY_THRESHOLD_REACHED is :mod:`derivers.capacity`'s.

**Entries and their assignees.** Every rule looks at one schedule entry *before* and *after* the
transaction, each with its assignee set: the entry row from the transaction's change, or from
the replicated state when only its assignees changed; the after-set from the replicated
``schedule_entry_assignees`` (state is applied before derive), the before-set from it minus the
assignee rows the transaction inserted plus those it deleted. So assignees count alike whether
they arrive with their entry or in a later transaction (the client portal's three
transactions), and a reassignment that deletes and re-inserts rows is one change of the set —
one APPOINTMENT_ASSIGNED, and a DISPATCHED only for a technician who was not assigned before.
An assignee row updated onto another entry (``entry_id`` changed) leaves the one and joins the
other, as a delete and an insert would.

**Classification** (SPEC §5.8): an *appointment* is an entry whose ``work_item_type`` is
``ticket`` or ``appointment_request``; a *block* is private, ``ad_hoc``, without work item,
with both times and with exactly one assignee (its owner). ``ticketId`` is the ``work_item_id``
of a ticket entry, or
the ``ticket_id`` of the appointment request an ``appointment_request`` entry names (state, as of
the transaction). ``timezone`` is always ``UTC``. Statuses are compared trimmed and lower-cased,
and an event fires when the status *enters* a vocabulary (not in it before, in it after).

**Rules**, per entry, in this order of event types:

* SCHEDULE_ENTRY_CREATED / _UPDATED / _DELETED: their schema requires ``userId``, the acting
  user, which no column records; emitted only when the transaction carries a ``cdc.context``
  message naming a user (``changes`` = ``{after, assignedUserIds}`` / ``{before, after}`` /
  ``{before}`` snapshots as the application sends them), never otherwise.
* SCHEDULE_BLOCK_CREATED when an entry is inserted as a block or becomes one (including by
  getting its single assignee later); SCHEDULE_BLOCK_DELETED when a block is deleted (reason
  ``Deleted``, or ``Deleted (all occurrences)`` for a recurring entry, whose row deletion removes
  the series) or stops being one (``No longer private ad-hoc block``: made public, given a work
  item, a second assignee, its times cleared …). Time changes of a block emit nothing. An entry
  without times (the schema allows them for ``ad_hoc``) cannot fill ``startAt``/``endAt``, so it
  is no block: no BLOCK_CREATED when it is inserted, none DELETED when it goes, and
  BLOCK_CREATED when it gets both times (what a workflow waiting for the block sees first).
  ``reason`` = the title unless it is empty or ``busy``, else the notes.
* APPOINTMENT_CREATED for an inserted appointment (``assigneeId`` only with exactly one
  assignee; ``createdAt`` = the row's ``created_at``).
* APPOINTMENT_RESCHEDULED when start or end changed and all four times exist.
* APPOINTMENT_ASSIGNED when the entry ends the transaction with exactly one assignee and it is
  not the single assignee it had before (a create with one assignee included);
  ``previousAssignee*`` only when it had exactly one.
* APPOINTMENT_CANCELED when the status enters ``cancelled|canceled|cancel``, or when an
  appointment is deleted — unless its status already was a cancel value (it was canceled once).
  The reason of a deletion is the ``declined_reason`` of the appointment request that the same
  transaction cancels or declines for it (the client portal's cancel, an MSP decline), else
  ``Deleted`` / ``Deleted (all occurrences)``.
* APPOINTMENT_COMPLETED (``completed|complete|done``), APPOINTMENT_NO_SHOW
  (``no_show|no-show|noshow|no show``; ``party`` is ``customer``, as the application always says).
* TECHNICIAN_DISPATCHED once per technician added to an appointment (subject the appointment,
  discriminator the technician). Not while the entry is a client's *pending* request (its
  ``appointment_requests`` row in status ``pending``): a preferred technician of an unconfirmed
  request is not dispatched — the application does not dispatch on the portal's create either.
  When the request is approved, its entry's technicians are dispatched then (unless the same
  transaction dispatched them already).
* TECHNICIAN_EN_ROUTE / _ARRIVED / _CHECKED_OUT once per current assignee when the status
  enters ``en_route|en-route|en route|enroute`` / ``arrived|on_site|on-site|on site|onsite`` /
  ``checked_out|checked-out|checked out|checkedout`` or a completed value; assignees in
  user-id order.

**Recurring series.** Editing one occurrence (``single``) or this-and-future (``future``) updates
the master's ``recurrence_pattern`` (a new ``exceptions`` date, or its ``endDate``) and inserts a
new row in the same transaction; ``all`` updates the master in place (an ordinary update). A
workflow author expects the edit of the occurrence, not a new appointment, so — as the
application reports it — such an insert is paired with the master and derived as an *update*
whose before is the master (its row and assignees) and whose after is the new row: no
APPOINTMENT_CREATED, TECHNICIAN_DISPATCHED only for technicians the master did not have, and
``appointmentId`` is the new row's id. Occurrences are not stored; for ``single`` the
occurrence's own times are known — the date newly added to ``exceptions`` at the master's time
of day and duration — and RESCHEDULED compares the new row with them (a title-only edit of one
occurrence reschedules nothing); for ``future``, or an exception that is not one readable date
(or whose occurrence would end past the calendar, 9999-12-31 after midnight), RESCHEDULED's
previous times are the master row's, as the application reports them. The
master's own pattern change emits nothing more. An insert is a split when exactly one master in
the transaction had its pattern cut (``exceptions`` grew: ``single``, paired with a
non-recurring insert; ``endDate`` set or moved earlier: ``future``, paired with a recurring
insert) and the insert has the master's work item. A master cut that no insert of the
transaction is paired with (none, or only unrelated ones) lost occurrences (the ``single`` /
``future`` scopes of a delete): an
appointment series gets APPOINTMENT_CANCELED about the master (reason ``Deleted``), as the
application reports it; a block series stays a block (no BLOCK_DELETED). (An ``all`` edit that
sets an end date looks the same in the rows, and it removes occurrences too.)

**Appointment requests.** APPOINTMENT_REQUEST_CREATED / _APPROVED / _DECLINED / _CANCELLED are
not emitted: their schema requires ``serviceName`` (the ``service_catalog`` row, a table the
application schema here does not have) and ``requesterEmail`` (NULL for authenticated portal
requests). The request rows are read for ``ticketId``, the cancel reason and the approval's
dispatch.

**Actors.** Schedule entries have no actor column: actor fields, ``createdByUserId`` and
``dispatchedByUserId`` come only from the transaction's ``cdc.context`` message — but for the
approval's dispatch, which falls back on the approver the request row records
(``approved_by_user_id``, when the approval wrote it). Every ``*At``
field is the commit time except ``createdAt`` (the row's ``created_at``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final

from catalog.envelope import EventDraft

from .base import (
    Change,
    Derived,
    Image,
    StateView,
    Timer,
    TimerOps,
    TxView,
    canonical_time,
    declare_reads,
    parse_time,
)
from .toolkit import NO_ACTOR, Actor, FamilyTx, fields, written_actor

SCHEDULE_ENTRIES: Final = "public.schedule_entries"
ENTRY_ASSIGNEES: Final = "public.schedule_entry_assignees"
APPOINTMENT_REQUESTS: Final = "public.appointment_requests"

ENTRY_EVENTS: Final = ("SCHEDULE_ENTRY_CREATED", "SCHEDULE_ENTRY_UPDATED", "SCHEDULE_ENTRY_DELETED")
BLOCK_EVENTS: Final = ("SCHEDULE_BLOCK_CREATED", "SCHEDULE_BLOCK_DELETED")
APPOINTMENT_EVENTS: Final = (
    "APPOINTMENT_CREATED",
    "APPOINTMENT_RESCHEDULED",
    "APPOINTMENT_ASSIGNED",
    "APPOINTMENT_CANCELED",
    "APPOINTMENT_COMPLETED",
    "APPOINTMENT_NO_SHOW",
)
TECHNICIAN_EVENTS: Final = (
    "TECHNICIAN_DISPATCHED",
    "TECHNICIAN_EN_ROUTE",
    "TECHNICIAN_ARRIVED",
    "TECHNICIAN_CHECKED_OUT",
)
EVENTS: Final = ENTRY_EVENTS + BLOCK_EVENTS + APPOINTMENT_EVENTS + TECHNICIAN_EVENTS

#: What these rules read (see ``derivers.base.Reads``).
READS: Final = (
    (
        SCHEDULE_ENTRIES,
        (
            "tenant",
            "entry_id",
            "work_item_type",
            "work_item_id",
            "is_private",
            "scheduled_start",
            "scheduled_end",
            "status",
            "is_recurring",
            "recurrence_pattern",
        ),
        EVENTS,
    ),
    (SCHEDULE_ENTRIES, ("title", "notes"), ENTRY_EVENTS + BLOCK_EVENTS),
    (SCHEDULE_ENTRIES, ("created_at",), ("SCHEDULE_BLOCK_CREATED", "APPOINTMENT_CREATED")),
    (ENTRY_ASSIGNEES, ("tenant", "entry_id", "user_id"), EVENTS),
    (
        APPOINTMENT_REQUESTS,
        ("tenant", "appointment_request_id", "ticket_id"),
        APPOINTMENT_EVENTS + TECHNICIAN_EVENTS,
    ),
    (
        APPOINTMENT_REQUESTS,
        ("status", "schedule_entry_id", "declined_reason"),
        ("APPOINTMENT_CANCELED", "TECHNICIAN_DISPATCHED"),
    ),
    (APPOINTMENT_REQUESTS, ("approved_by_user_id",), ("TECHNICIAN_DISPATCHED",)),  # the approver
)

APPOINTMENT_TYPES: Final = frozenset({"ticket", "appointment_request"})
CANCELED: Final = frozenset({"cancelled", "canceled", "cancel"})
COMPLETED: Final = frozenset({"completed", "complete", "done"})
NO_SHOW: Final = frozenset({"no_show", "no-show", "noshow", "no show"})
EN_ROUTE: Final = frozenset({"en_route", "en-route", "en route", "enroute"})
ARRIVED: Final = frozenset({"arrived", "on_site", "on-site", "on site", "onsite"})
CHECKED_OUT: Final = frozenset({"checked_out", "checked-out", "checked out", "checkedout"}) | COMPLETED

_EXCEPTIONS: Final = "exceptions"  # keys of the recurrence_pattern jsonb, not columns
_END_DATE: Final = "endDate"
_SINGLE: Final = "single"  # the application's updateType of a recurring edit
_FUTURE: Final = "future"
UTC: Final = "UTC"
#: Request statuses whose transaction deletes the request's entry: its reason is the request's.
_CLOSING_REQUEST: Final = frozenset({"cancelled", "declined"})


def _status(row: Image | None) -> str:
    value = row.get("status") if row is not None else None
    return value.strip().lower() if isinstance(value, str) else ""


def is_appointment(row: Image | None) -> bool:
    return row is not None and row.get("work_item_type") in APPOINTMENT_TYPES


def is_block(row: Image | None, assignees: tuple[str, ...]) -> bool:
    """A private ``ad_hoc`` entry without work item, with one assignee and both times (a block
    without times cannot be reported: it is none until it gets them)."""
    return (
        row is not None
        and row.get("is_private") is True
        and row.get("work_item_type") == "ad_hoc"
        and row.get("work_item_id") is None
        and row.get("scheduled_start") is not None
        and row.get("scheduled_end") is not None
        and len(assignees) == 1
    )


@dataclass
class EntryDiff:
    """One entry before and after the transaction, with its assignee sets (sorted user ids)."""

    tenant: str
    entry_id: str  # the after row's id (a split's new row), else the before row's
    before: Image | None
    after: Image | None
    assignees_before: tuple[str, ...]
    assignees_after: tuple[str, ...]
    anchor: Change  # the change its entry-level events are attached to
    added: list[tuple[str, Change]] = field(default_factory=list)  # technician, its insert
    split: str | None = None  # "single" / "future" for a recurring split
    occurrence: tuple[str, str] | None = None  # a single split: the occurrence's own times
    occurrences_deleted: bool = False  # a recurring master cut with no new row: occurrences deleted


class SchedulingTx(FamilyTx):
    """One transaction of the scheduling tables, with the entries it touched."""

    __slots__ = ("dispatched",)

    def __init__(self, tx: TxView, state: StateView, timers: TimerOps, tables: Iterable[str]) -> None:
        super().__init__(tx, state, timers, tables)
        self.dispatched: set[tuple[str, str]] = set()  # (entry, technician) dispatched in this tx

    @property
    def actor(self) -> Actor:
        return self.context_actor or NO_ACTOR

    def assignees_now(self, tenant: str, entry_id: str) -> set[str]:
        return {
            row["user_id"]
            for row in self.state.find(ENTRY_ASSIGNEES, "entry_id", entry_id)
            if row.get("tenant") == tenant
        }

    def entry_now(self, tenant: str, entry_id: str) -> Image | None:
        return self.state.get(SCHEDULE_ENTRIES, (tenant, entry_id))

    def request(self, tenant: str, request_id: Any) -> Image | None:
        if not isinstance(request_id, str):
            return None
        return self.state.get(APPOINTMENT_REQUESTS, (tenant, request_id))

    def ticket_id(self, row: Image) -> str | None:
        kind = row.get("work_item_type")
        if kind == "ticket":
            value = row.get("work_item_id")
            return value if isinstance(value, str) else None
        if kind == "appointment_request":
            request = self.request(row["tenant"], row.get("work_item_id"))
            return request.get("ticket_id") if request is not None else None
        return None

    def pending_request(self, row: Image) -> bool:
        """An ``appointment_request`` entry whose request is still pending (as of the tx)."""
        if row.get("work_item_type") != "appointment_request":
            return False
        request = self.request(row["tenant"], row.get("work_item_id"))
        return request is not None and request.get("status") == "pending"


# --- collecting the entries a transaction touched ---------------------------------------------------


def entry_diffs(ctx: SchedulingTx) -> list[EntryDiff]:
    entry_changes: dict[tuple[str, str], Change] = {}
    for change in ctx.changes(SCHEDULE_ENTRIES):
        row = change.after if change.after is not None else change.before
        if row is not None:
            entry_changes[(row["tenant"], row["entry_id"])] = change
    # assignee rows per entry: inserted / deleted users and the first change
    inserted: dict[tuple[str, str], list[tuple[str, Change]]] = {}
    deleted: dict[tuple[str, str], set[str]] = {}
    first_assignee_change: dict[tuple[str, str], Change] = {}
    for change in ctx.changes(ENTRY_ASSIGNEES):
        before, after = change.before, change.after
        if (
            before is not None
            and after is not None
            and before.get("entry_id") == after.get("entry_id")
            and before.get("user_id") == after.get("user_id")
        ):
            continue  # deleted and re-inserted (or touched): still assigned
        if before is not None:
            key = (before["tenant"], before["entry_id"])
            deleted.setdefault(key, set()).add(before["user_id"])
            first_assignee_change.setdefault(key, change)
        if after is not None:
            key = (after["tenant"], after["entry_id"])
            inserted.setdefault(key, []).append((after["user_id"], change))
            first_assignee_change.setdefault(key, change)

    def sets(key: tuple[str, str], exists_after: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        now = ctx.assignees_now(*key) if exists_after else set()
        added = {user for user, _ in inserted.get(key, ())}
        before = (now - added) | deleted.get(key, set())
        return tuple(sorted(before)), tuple(sorted(now))

    splits, cut = _recurring_splits(ctx, entry_changes)
    masters = set(splits.values())
    diffs: list[EntryDiff] = []
    for key in sorted(
        entry_changes.keys() | first_assignee_change.keys(),
        key=lambda k: (_first_position(k, entry_changes, first_assignee_change), k),
    ):
        entry_change = entry_changes.get(key)
        if key in masters and entry_change is not None:
            continue  # the master of a split: its edit is reported on the new row
        if entry_change is not None:
            before, after = entry_change.before, entry_change.after
            anchor = entry_change
        else:
            before = after = ctx.entry_now(*key)
            anchor = first_assignee_change[key]
            if after is None:
                continue  # assignee rows of an entry that is gone (deleted with it)
        assignees_before, assignees_after = sets(key, after is not None)
        split = None
        occurrence = None
        if key in splits:
            master_key = splits[key]
            master = entry_changes[master_key]
            before = master.before
            assignees_before = sets(master_key, master.after is not None)[0]
            split = _FUTURE if after is not None and after.get("is_recurring") else _SINGLE
            occurrence = _occurrence_times(master) if split == _SINGLE else None
        elif before is None:
            assignees_before = ()
        diff = EntryDiff(
            key[0],
            key[1],
            before,
            after,
            assignees_before,
            assignees_after,
            anchor,
            split=split,
            occurrence=occurrence,
        )
        if after is not None:
            diff.occurrences_deleted = key in cut and key not in masters
            had = set(diff.assignees_before)
            diff.added = [(user, c) for user, c in inserted.get(key, ()) if user not in had]
        diffs.append(diff)
    return diffs


def _occurrence_times(master: Change) -> tuple[str, str] | None:
    """The stored times of the one occurrence a ``single`` edit took out of the series: the date
    newly listed in the master's ``exceptions`` at the master's time of day and duration (UTC);
    None when that is not exactly one readable date."""
    before, after = master.before, master.after
    if before is None or after is None:
        return None
    start, end = before.get("scheduled_start"), before.get("scheduled_end")
    old = _exceptions(before.get("recurrence_pattern"))
    added = [value for value in _exceptions(after.get("recurrence_pattern")) if value not in old]
    if start is None or end is None or len(added) != 1 or not isinstance(added[0], str):
        return None
    day = _day(added[0])
    if day is None:
        return None
    try:
        first, last = parse_time(start), parse_time(end)
        occurs = datetime.combine(day, first.timetz())
        return canonical_time(occurs), canonical_time(occurs + (last - first))
    except (OverflowError, ValueError):
        return None  # past the calendar's end (9999-12-31 running past midnight): the master's


def _exceptions(pattern: Any) -> list[Any]:
    listed = pattern.get(_EXCEPTIONS) if isinstance(pattern, dict) else None
    return listed if isinstance(listed, list) else []


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(value[:10]) if isinstance(value, str) else None
    except ValueError:
        return None


def _ends_earlier(new: Any, old: Any) -> bool:
    """A series' ``endDate`` set, or moved earlier: occurrences after it are gone."""
    new_day = _day(new)
    if new_day is None:
        return False
    old_day = _day(old)
    return old_day is None or new_day < old_day


def _first_position(
    key: tuple[str, str],
    entries: Mapping[tuple[str, str], Change],
    assignees: Mapping[tuple[str, str], Change],
) -> int:
    return min(c.position for c in (entries.get(key), assignees.get(key)) if c is not None)


def _recurring_splits(
    ctx: SchedulingTx, entry_changes: Mapping[tuple[str, str], Change]
) -> tuple[dict[tuple[str, str], tuple[str, str]], set[tuple[str, str]]]:
    """New row → its master, for the ``single`` / ``future`` edits of a recurring series; and
    every master whose pattern was cut (an occurrence excepted, or an end date set)."""
    cut: dict[str, list[tuple[tuple[str, str], Change]]] = {_SINGLE: [], _FUTURE: []}
    inserts: list[tuple[tuple[str, str], Change]] = []
    for key, change in entry_changes.items():
        if change.op == "insert":
            inserts.append((key, change))
            continue
        before, after = change.before, change.after
        if before is None or after is None or not change.changed("recurrence_pattern"):
            continue
        old, new = before.get("recurrence_pattern"), after.get("recurrence_pattern")
        if not isinstance(old, dict) or not isinstance(new, dict):
            continue
        old_exceptions, new_exceptions = _exceptions(old), _exceptions(new)
        if any(d not in old_exceptions for d in new_exceptions):
            cut[_SINGLE].append((key, change))
        elif _ends_earlier(new.get(_END_DATE), old.get(_END_DATE)):
            cut[_FUTURE].append((key, change))
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for scope, masters in cut.items():
        if len(masters) != 1:
            continue  # none, or ambiguous: inserts stay inserts
        master_key, master = masters[0]
        assert master.before is not None
        for key, change in inserts:
            row = change.after
            assert row is not None
            if (
                key[0] == master_key[0]
                and bool(row.get("is_recurring")) == (scope == _FUTURE)
                and row.get("work_item_type") == master.before.get("work_item_type")
                and row.get("work_item_id") == master.before.get("work_item_id")
            ):
                out[key] = master_key
                break
    return out, {key for masters in cut.values() for key, _ in masters}


# --- the rules ---------------------------------------------------------------------------------------


def scheduling_events(ctx: SchedulingTx) -> None:
    for diff in entry_diffs(ctx):
        _entry_events(ctx, diff)
        _block_events(ctx, diff)
        _appointment_events(ctx, diff)
        _technician_events(ctx, diff)
    _approval_dispatch(ctx)


def _snapshot(row: Image, assignees: tuple[str, ...]) -> dict[str, Any]:
    return {
        "id": row["entry_id"],
        "title": row.get("title"),
        "scheduledStart": row.get("scheduled_start"),
        "scheduledEnd": row.get("scheduled_end"),
        "status": row.get("status"),
        "workItemId": row.get("work_item_id"),
        "workItemType": row.get("work_item_type"),
        "isRecurring": row.get("is_recurring"),
        "recurrencePattern": row.get("recurrence_pattern"),
        "assignedUserIds": list(assignees),
        "isPrivate": row.get("is_private"),
    }


def _entry_events(ctx: SchedulingTx, d: EntryDiff) -> None:
    actor = ctx.actor
    user_id = actor.get("actorUserId")
    if user_id is None:
        return  # the schema's userId: only a declared acting user
    before, after = d.before, d.after
    if after is not None and before is None:
        event = "SCHEDULE_ENTRY_CREATED"
        changes: dict[str, Any] = {
            "after": _snapshot(after, d.assignees_after),
            "assignedUserIds": list(d.assignees_after),
        }
    elif after is not None and before is not None:
        event = "SCHEDULE_ENTRY_UPDATED"
        old, new = _snapshot(before, d.assignees_before), _snapshot(after, d.assignees_after)
        if old == new:
            return  # nothing the snapshot shows changed (updated_at only)
        changes = {"before": old, "after": new, **fields(updateType=d.split)}
    elif before is not None:
        event = "SCHEDULE_ENTRY_DELETED"
        changes = {"before": _snapshot(before, d.assignees_before)}
    else:
        return
    ctx.emit(
        d.anchor,
        event,
        d.tenant,
        d.entry_id,
        actor,
        {"entryId": d.entry_id, "userId": user_id, "changes": changes},
    )


def _block_reason(row: Image) -> str | None:
    title = row.get("title")
    if isinstance(title, str) and title.strip() and title.strip().lower() != "busy":
        return title
    notes = row.get("notes")
    return notes if isinstance(notes, str) else None


def _block_events(ctx: SchedulingTx, d: EntryDiff) -> None:
    was = is_block(d.before, d.assignees_before)
    now = is_block(d.after, d.assignees_after)
    after = d.after
    if now and not was and after is not None:
        ctx.emit(
            d.anchor,
            "SCHEDULE_BLOCK_CREATED",
            d.tenant,
            d.entry_id,
            ctx.actor,
            fields(
                scheduleBlockId=d.entry_id,
                ownerId=d.assignees_after[0],
                ownerType="user",
                startAt=after["scheduled_start"],
                endAt=after["scheduled_end"],
                timezone=UTC,
                createdAt=after.get("created_at") if d.before is None else None,
                reason=_block_reason(after),
            ),
        )
    elif was and not now:
        assert d.before is not None
        reason = _deleted_reason(d.before) if after is None else "No longer private ad-hoc block"
        ctx.emit(
            d.anchor,
            "SCHEDULE_BLOCK_DELETED",
            d.tenant,
            d.before["entry_id"],
            ctx.actor,
            fields(scheduleBlockId=d.before["entry_id"], deletedAt=ctx.occurred_at, reason=reason),
        )


def _deleted_reason(row: Image) -> str:
    recurring = row.get("is_recurring") is True or row.get("recurrence_pattern") is not None
    return "Deleted (all occurrences)" if recurring else "Deleted"


def _appointment_events(ctx: SchedulingTx, d: EntryDiff) -> None:
    before, after = d.before, d.after
    if not (is_appointment(before) or is_appointment(after)):
        return
    actor = ctx.actor
    at = ctx.occurred_at
    if before is None:
        assert after is not None
        _created(ctx, d, after, actor)
        return
    if after is None:
        _deleted(ctx, d, before, actor)
        return
    ticket = ctx.ticket_id(after) or ctx.ticket_id(before)
    base = fields(appointmentId=d.entry_id, ticketId=ticket)
    previous = d.occurrence or (before.get("scheduled_start"), before.get("scheduled_end"))
    times = (*previous, after.get("scheduled_start"), after.get("scheduled_end"))
    if None not in times and (times[0] != times[2] or times[1] != times[3]):
        ctx.emit(
            d.anchor,
            "APPOINTMENT_RESCHEDULED",
            d.tenant,
            d.entry_id,
            actor,
            {
                **base,
                "previousStartAt": times[0],
                "previousEndAt": times[1],
                "newStartAt": times[2],
                "newEndAt": times[3],
                "timezone": UTC,
                "rescheduledAt": at,
            },
        )
    _assigned(ctx, d, base, actor)
    old, new = _status(before), _status(after)
    for vocabulary, event, when in (
        (CANCELED, "APPOINTMENT_CANCELED", "canceledAt"),
        (COMPLETED, "APPOINTMENT_COMPLETED", "completedAt"),
        (NO_SHOW, "APPOINTMENT_NO_SHOW", "markedAt"),
    ):
        if new in vocabulary and old not in vocabulary:
            extra = {"party": "customer"} if event == "APPOINTMENT_NO_SHOW" else {}
            ctx.emit(d.anchor, event, d.tenant, d.entry_id, actor, {**base, when: at, **extra})
    if d.occurrences_deleted and new not in CANCELED:
        ctx.emit(
            d.anchor,
            "APPOINTMENT_CANCELED",
            d.tenant,
            d.entry_id,
            actor,
            {**base, "canceledAt": at, "reason": "Deleted"},
        )


def _created(ctx: SchedulingTx, d: EntryDiff, row: Image, actor: Actor) -> None:
    base = fields(appointmentId=d.entry_id, ticketId=ctx.ticket_id(row))
    single = d.assignees_after[0] if len(d.assignees_after) == 1 else None
    ctx.emit(
        d.anchor,
        "APPOINTMENT_CREATED",
        d.tenant,
        d.entry_id,
        actor,
        {
            **base,
            "startAt": row.get("scheduled_start"),
            "endAt": row.get("scheduled_end"),
            "timezone": UTC,
            **fields(
                assigneeId=single,
                assigneeType="user" if single else None,
                createdByUserId=actor.get("actorUserId"),
                createdAt=row.get("created_at"),
            ),
        },
    )
    _assigned(ctx, d, base, actor)


def _assigned(ctx: SchedulingTx, d: EntryDiff, base: Mapping[str, Any], actor: Actor) -> None:
    if len(d.assignees_after) != 1 or d.assignees_after == d.assignees_before:
        return
    previous = d.assignees_before[0] if len(d.assignees_before) == 1 else None
    ctx.emit(
        d.anchor,
        "APPOINTMENT_ASSIGNED",
        d.tenant,
        d.entry_id,
        actor,
        {
            **base,
            **fields(previousAssigneeId=previous, previousAssigneeType="user" if previous else None),
            "newAssigneeId": d.assignees_after[0],
            "newAssigneeType": "user",
            "assignedAt": ctx.occurred_at,
        },
    )


def _deleted(ctx: SchedulingTx, d: EntryDiff, row: Image, actor: Actor) -> None:
    if _status(row) in CANCELED:
        return  # canceled once already
    reason = _deleted_reason(row)
    for change in ctx.changes(APPOINTMENT_REQUESTS):
        old, new = change.before, change.after
        if (
            old is not None
            and new is not None
            and new.get("status") in _CLOSING_REQUEST
            and old.get("status") != new.get("status")
            and new.get("tenant") == d.tenant
            and (
                old.get("schedule_entry_id") == d.entry_id
                or new["appointment_request_id"] == row.get("work_item_id")
            )
        ):
            declined = new.get("declined_reason")
            reason = declined if isinstance(declined, str) and declined else reason
            break
    ctx.emit(
        d.anchor,
        "APPOINTMENT_CANCELED",
        d.tenant,
        d.entry_id,
        actor,
        fields(
            appointmentId=d.entry_id, ticketId=ctx.ticket_id(row), canceledAt=ctx.occurred_at, reason=reason
        ),
    )


def _dispatch(
    ctx: SchedulingTx, change: Change, row: Image, entry_id: str, technician: str, actor: Actor | None = None
) -> None:
    tenant = row["tenant"]
    if (entry_id, technician) in ctx.dispatched:
        return
    ctx.dispatched.add((entry_id, technician))
    actor = actor or ctx.actor
    ctx.emit(
        change,
        "TECHNICIAN_DISPATCHED",
        tenant,
        entry_id,
        actor,
        fields(
            appointmentId=entry_id,
            ticketId=ctx.ticket_id(row),
            technicianUserId=technician,
            dispatchedByUserId=actor.get("actorUserId"),
            dispatchedAt=ctx.occurred_at,
        ),
        discriminator=technician,
    )


def _technician_events(ctx: SchedulingTx, d: EntryDiff) -> None:
    after = d.after
    if not is_appointment(after):
        return
    assert after is not None
    if not ctx.pending_request(after):
        for technician, change in d.added:
            _dispatch(ctx, change, after, d.entry_id, technician)
    before = d.before
    if before is None:
        return
    old, new = _status(before), _status(after)
    if old == new:
        return
    at = ctx.occurred_at
    base = fields(appointmentId=d.entry_id, ticketId=ctx.ticket_id(after))
    for vocabulary, event, when in (
        (EN_ROUTE, "TECHNICIAN_EN_ROUTE", "startedAt"),
        (ARRIVED, "TECHNICIAN_ARRIVED", "arrivedAt"),
        (CHECKED_OUT, "TECHNICIAN_CHECKED_OUT", "checkedOutAt"),
    ):
        if new in vocabulary and old not in vocabulary:
            for technician in d.assignees_after:
                ctx.emit(
                    d.anchor,
                    event,
                    d.tenant,
                    d.entry_id,
                    ctx.actor,
                    {**base, "technicianUserId": technician, when: at},
                    discriminator=technician,
                )


def _approval_dispatch(ctx: SchedulingTx) -> None:
    """A request approved: its appointment's technicians are dispatched now (the confirmation)."""
    for change in ctx.changes(APPOINTMENT_REQUESTS):
        old, new = change.before, change.after
        if old is None or new is None or new.get("status") != "approved" or old.get("status") == "approved":
            continue
        entry_id = new.get("schedule_entry_id")
        if not isinstance(entry_id, str):
            continue
        tenant = new["tenant"]
        entry = ctx.entry_now(tenant, entry_id)
        if not is_appointment(entry):
            continue
        assert entry is not None
        # who dispatches: the transaction's declared actor, else the approver the row records
        actor = ctx.actor or written_actor(change, "approved_by_user_id")
        for technician in sorted(ctx.assignees_now(tenant, entry_id)):
            _dispatch(ctx, change, entry, entry_id, technician, actor)


class SchedulingDeriver:
    """Appointments, blocks, dispatch and schedule-entry events; no timers."""

    name = "scheduling"
    tables = frozenset({SCHEDULE_ENTRIES, ENTRY_ASSIGNEES, APPOINTMENT_REQUESTS})
    #: Entries and assignees as of the transaction (assignees arrive in later transactions);
    #: requests for ticketId and their status.
    state_tables = frozenset({SCHEDULE_ENTRIES, ENTRY_ASSIGNEES, APPOINTMENT_REQUESTS})
    reads = declare_reads(*READS)

    def derive(self, tx: TxView, state: StateView, timers: TimerOps) -> list[Derived]:
        ctx = SchedulingTx(tx, state, timers, self.tables)
        scheduling_events(ctx)
        return ctx.drafts()

    def fire(self, timer: Timer, state: StateView) -> list[EventDraft]:
        return []  # arms none
