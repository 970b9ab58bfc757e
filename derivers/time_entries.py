"""TICKET_TIME_ENTRY_ADDED from ``time_entries`` rows (SPEC §5.5), for every writer: the REST
service, the in-app time sheet and timers, imports, SQL.

An entry is added when it is inserted finished (``end_time`` set) or when a running timer stops
(``end_time`` NULL → value), if it is booked against a ticket (``work_item_type = 'ticket'``,
``work_item_id`` set) and lasts at least one whole minute: minutes = round((end − start) / 60 s)
with both times truncated to the minute, as the application computes it. ``billable`` is
``billable_duration > 0`` (minutes; 0 marks a non-billable entry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .base import Change, parse_time
from .tables import TIME_ENTRIES

if TYPE_CHECKING:
    from .tickets import TicketTx

#: What these rules read (see ``derivers.base.Reads``); the actor is declared with the ticket rules.
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
        ("TICKET_TIME_ENTRY_ADDED",),
    ),
)


def time_entry_events(ctx: TicketTx) -> None:
    for change in ctx.time_entries:
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


def _entry_added(ctx: TicketTx, change: Change, tenant: str, ticket_id: str, minutes: int) -> None:
    row = change.after
    assert row is not None
    entry_id = row["entry_id"]
    actor = ctx.audit_actor(tenant, ticket_id) or ctx.user_actor(row.get("user_id"))
    billable = row.get("billable_duration")
    ctx.emit(
        change,
        "TICKET_TIME_ENTRY_ADDED",
        tenant,
        ticket_id,
        actor,
        ctx.fields(
            ticketId=ticket_id,
            timeEntryId=entry_id,
            minutes=minutes,
            billable=isinstance(billable, int) and billable > 0,
            createdAt=row.get("created_at"),
        ),
        # Two entries on one ticket in one transaction: the entry id tells the events apart.
        discriminator=entry_id,
    )
