"""The time-entry deriver: TICKET_TIME_ENTRY_ADDED from ``time_entries`` rows (SPEC §5.5), for
every writer: the REST service, the in-app time sheet and timers, imports, SQL.

An entry is added when it is inserted finished (``end_time`` set) or when a running timer stops
(``end_time`` NULL → value), if it is booked against a ticket (``work_item_type = 'ticket'``,
``work_item_id`` set) and lasts at least one whole minute: minutes = round((end − start) / 60 s)
with both times truncated to the minute, as the application computes it. ``billable`` is
``billable_duration > 0`` (minutes; 0 marks a non-billable entry).

The event is about the ticket, so the actor rule is the ticket's (:mod:`derivers.toolkit`): the
``ticket_audit_logs`` row of the same transaction, else the ``cdc.context`` message, else the
entry's ``user_id`` (whose time it is).
"""

from __future__ import annotations

from typing import Final

from catalog.envelope import EventDraft

from .base import Change, Derived, StateView, Timer, TimerOps, TxView, declare_reads, parse_time
from .tables import TICKET_AUDIT, TIME_ENTRIES
from .toolkit import FamilyTx, fields, user_actor

EVENTS: Final = ("TICKET_TIME_ENTRY_ADDED",)

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
)


def time_entry_events(ctx: FamilyTx) -> None:
    for change in ctx.changes(TIME_ENTRIES):
        row = change.after
        if row is None or row.get("end_time") is None:
            continue
        if change.op == "update":
            before = change.before
            if before is None or before.get("end_time") is not None:
                continue
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
    """TICKET_TIME_ENTRY_ADDED from ``time_entries``; no timers, no reference state."""

    name = "time_entries"
    tables = frozenset({TIME_ENTRIES})
    state_tables: frozenset[str] = frozenset()
    reads = declare_reads(*READS)

    def derive(self, tx: TxView, state: StateView, timers: TimerOps) -> list[Derived]:
        ctx = FamilyTx(tx, state, timers, self.tables, audit=TICKET_AUDIT)
        time_entry_events(ctx)
        return ctx.drafts()

    def fire(self, timer: Timer, state: StateView) -> list[EventDraft]:
        return []  # arms none
