"""The registered derivers as the watcher sees them: their tables, and one order for the events
of a transaction across derivers (derivers.default_derivers).
"""

from __future__ import annotations

from catalog.registry import specs
from cdc.catalog_cli import emitted_types
from derivers import default_derivers
from derivers.not_derived import NOT_DERIVED
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


def test_the_registry_runs_the_families_in_one_order() -> None:
    assert [d.name for d in default_derivers()] == [
        "tickets",
        "time_entries",
        "scheduling",
        "capacity",
        "projects",
    ]


def test_every_type_of_the_four_families_is_derived_or_says_why_not() -> None:
    emitted = emitted_types()
    family_types = {
        s.event_type for s in specs() if s.family in ("tickets", "scheduling", "projects", "time")
    }
    assert set(NOT_DERIVED) <= family_types  # only catalogued types of the four families
    assert not emitted & set(NOT_DERIVED)  # a type a deriver emits is not listed as not derived
    assert family_types == emitted | set(NOT_DERIVED)
    assert all(reason.strip() for reason in NOT_DERIVED.values())


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
    assert run([ins("public.clients", {"tenant": TENANT, "client_id": u(5)})]).types == []


def test_events_follow_row_positions() -> None:
    result = run(
        [
            ins(TIME, entry_row()),
            ticket_upd({"priority_id": P1}, {"priority_id": P2}),
            ins(COMMENTS, comment_row()),
        ]
    )
    assert result.types == [
        "TIME_ENTRY_CREATED",
        "TICKET_TIME_ENTRY_ADDED",
        "TICKET_PRIORITY_CHANGED",
        "TICKET_UPDATED",
        "TICKET_MESSAGE_ADDED",
        "TICKET_COMMENT_ADDED",
    ]
    assert [d.position for d in result.derived] == [0, 0, 1, 1, 2, 2]


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
        "TIME_ENTRY_CREATED",
        "TICKET_TIME_ENTRY_ADDED",
        "TICKET_MESSAGE_ADDED",
        "TICKET_COMMENT_ADDED",
    ]
    assert [d.position for d in result.derived] == [0, 0, 1, 1, 2, 2]
