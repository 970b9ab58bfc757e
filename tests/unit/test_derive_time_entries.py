"""The time-entry deriver: TICKET_TIME_ENTRY_ADDED (derivers.time_entries)."""

from __future__ import annotations

import pytest

from derivers.testing import FakeChange, FakeTimers, make_tx
from derivers.tickets import TicketDeriver
from derivers.time_entries import TimeEntryDeriver
from tests.unit.derive_cases import (
    ABSENT,
    AUDIT,
    COMMIT,
    ENTRY1,
    ENTRY2,
    STAFF2,
    TENANT,
    TICKET,
    TICKETS,
    TIME,
    USER_STAFF,
    USER_STAFF2,
    Expected,
    audit,
    base_state,
    check,
    dele,
    entry_row,
    ins,
    run,
    ticket_row,
    upd,
)

# --- time entries --------------------------------------------------------------------------------------

TIME_CASES = [
    pytest.param(
        [ins(TIME, entry_row())],
        [
            (
                "TICKET_TIME_ENTRY_ADDED",
                {
                    "ticketId": TICKET,
                    "timeEntryId": ENTRY1,
                    "minutes": 90,
                    "billable": True,
                    "createdAt": "2026-01-02T02:30:11.000Z",
                    **USER_STAFF,
                },
            )
        ],
        id="finished-entry-inserted",
    ),
    pytest.param(
        [upd(TIME, entry_row(end_time=None), entry_row(user_id=STAFF2))],
        [("TICKET_TIME_ENTRY_ADDED", {"minutes": 90, **USER_STAFF2})],
        id="running-timer-stopped",
    ),
    pytest.param([ins(TIME, entry_row(end_time=None))], [], id="running-timer-started"),
    pytest.param([ins(TIME, entry_row(work_item_type="project_task"))], [], id="not-a-ticket"),
    pytest.param([ins(TIME, entry_row(work_item_id=None))], [], id="no-work-item"),
    pytest.param(
        [ins(TIME, entry_row(start_time="2026-01-02T01:00:10.000Z", end_time="2026-01-02T01:00:50.000Z"))],
        [],
        id="under-a-minute",
    ),
    pytest.param(
        [ins(TIME, entry_row(start_time="2026-01-02T01:00:50.000Z", end_time="2026-01-02T01:01:10.000Z"))],
        [("TICKET_TIME_ENTRY_ADDED", {"minutes": 1})],
        id="minutes-on-truncated-times",
    ),
    pytest.param(
        [ins(TIME, entry_row(start_time="2026-01-02T02:00:00.000Z", end_time="2026-01-02T01:00:00.000Z"))],
        [],
        id="end-before-start",
    ),
    pytest.param(
        [ins(TIME, entry_row(billable_duration=0))],
        [("TICKET_TIME_ENTRY_ADDED", {"billable": False})],
        id="non-billable",
    ),
    pytest.param(
        [ins(TIME, entry_row(billable_duration=None, created_at=None))],
        [("TICKET_TIME_ENTRY_ADDED", {"billable": False, "createdAt": ABSENT})],
        id="no-billable-duration-no-created_at",
    ),
    pytest.param(
        [upd(TIME, entry_row(), entry_row(end_time="2026-01-02T02:45:00.000Z"))],
        [],
        id="finished-entry-edited",
    ),
    pytest.param(
        [audit(actor_user_id=STAFF2), ins(TIME, entry_row(ENTRY1)), ins(TIME, entry_row(ENTRY2))],
        [
            ("TICKET_TIME_ENTRY_ADDED", {"timeEntryId": ENTRY1, **USER_STAFF2}),
            ("TICKET_TIME_ENTRY_ADDED", {"timeEntryId": ENTRY2}),
        ],
        id="two-entries-one-ticket",
    ),
    pytest.param([dele(TIME, entry_row())], [], id="entry-deleted"),
]


@pytest.mark.parametrize(("changes", "expected"), TIME_CASES)
def test_time_entries(changes: list[FakeChange], expected: Expected) -> None:
    result = run(changes)
    check(result, expected)
    assert all(d.draft.discriminator == d.draft.payload["timeEntryId"] for d in result.derived)


# --- the deriver on its own ------------------------------------------------------------------------------


def test_time_entries_are_a_deriver_of_their_own() -> None:
    """Without the ticket deriver: the same draft, key parts and position, and no timers."""
    tx = make_tx(
        [ins(TICKETS, ticket_row()), audit(actor_user_id=STAFF2), ins(TIME, entry_row())], commit_time=COMMIT
    )
    timers = FakeTimers()
    (derived,) = TimeEntryDeriver().derive(tx, base_state(), timers)
    draft = derived.draft
    assert (derived.position, derived.table) == (2, TIME)
    assert (draft.event_type, draft.tenant, draft.subject_id, draft.discriminator) == (
        "TICKET_TIME_ENTRY_ADDED",
        TENANT,
        TICKET,
        ENTRY1,
    )
    assert draft.payload["actorUserId"] == STAFF2  # the ticket's audit row of the transaction
    assert timers.timers == {}


def test_time_entry_reads_include_the_actor_rule() -> None:
    reads = TimeEntryDeriver.reads
    assert reads[AUDIT]["actor_type"] == {"TICKET_TIME_ENTRY_ADDED"}
    assert reads[TIME]["work_item_id"] == {"TICKET_TIME_ENTRY_ADDED"}
    assert TIME not in TicketDeriver.reads  # the ticket deriver no longer reads time entries
