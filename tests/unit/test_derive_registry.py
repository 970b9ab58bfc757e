"""The registered derivers as the watcher sees them: their tables, and one order for the events
of a transaction across derivers (derivers.default_derivers).
"""

from __future__ import annotations

from derivers import default_derivers
from derivers.tickets import TicketDeriver
from derivers.time_entries import TimeEntryDeriver
from tests.unit.derive_cases import (
    AUDIT,
    COMMENTS,
    MIRRORS,
    P1,
    P2,
    RESOURCES,
    SETTINGS,
    TENANT,
    TICKETS,
    TIME,
    comment_row,
    entry_row,
    ins,
    run,
    ticket_upd,
    u,
)

# --- the deriver as the framework sees it ------------------------------------------------------------


def test_the_registry_runs_the_ticket_family_then_time_entries() -> None:
    assert [d.name for d in default_derivers()] == ["tickets", "time_entries"]


def test_deriver_declares_its_tables() -> None:
    deriver = TicketDeriver()
    assert deriver.name == "tickets"
    assert deriver.tables == {TICKETS, COMMENTS, RESOURCES, SETTINGS, MIRRORS, AUDIT}
    assert deriver.state_tables == {"public.statuses", "public.users", SETTINGS, MIRRORS}
    entries = TimeEntryDeriver()
    assert entries.name == "time_entries"
    assert entries.tables == {TIME}
    assert entries.state_tables == frozenset()


def test_unrelated_tables_are_ignored() -> None:
    assert run([ins("public.projects", {"tenant": TENANT, "project_id": u(5)})]).types == []


def test_events_follow_row_positions() -> None:
    result = run(
        [
            ins(TIME, entry_row()),
            ticket_upd({"priority_id": P1}, {"priority_id": P2}),
            ins(COMMENTS, comment_row()),
        ]
    )
    assert result.types == [
        "TICKET_TIME_ENTRY_ADDED",
        "TICKET_PRIORITY_CHANGED",
        "TICKET_UPDATED",
        "TICKET_MESSAGE_ADDED",
        "TICKET_COMMENT_ADDED",
    ]
    assert [d.position for d in result.derived] == [0, 1, 1, 2, 2]


def test_events_of_two_derivers_interleave_by_row_position() -> None:
    """A time entry between a ticket update and a comment: the merge is by position, not by deriver."""
    result = run(
        [
            ticket_upd({"priority_id": P1}, {"priority_id": P2}),
            ins(TIME, entry_row()),
            ins(COMMENTS, comment_row()),
        ]
    )
    assert result.types == [
        "TICKET_PRIORITY_CHANGED",
        "TICKET_UPDATED",
        "TICKET_TIME_ENTRY_ADDED",
        "TICKET_MESSAGE_ADDED",
        "TICKET_COMMENT_ADDED",
    ]
    assert [d.position for d in result.derived] == [0, 0, 1, 2, 2]
