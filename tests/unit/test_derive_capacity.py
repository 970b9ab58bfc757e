"""The capacity deriver: CAPACITY_THRESHOLD_REACHED (derivers.capacity).

Each case is the reference world before the transaction, the transaction's folded changes and
the drafts it must yield. As in the watcher, the state the deriver sees already includes the
transaction (:func:`applied`), and the deriver runs only when the transaction touches one of
its tables. Every draft becomes an envelope, so a payload the catalog rejects fails the test.

The world: team A = STAFF (4 h/day), STAFF2 (4 h/day) and INACTIVE (10 h/day, deactivated):
limit 8 h. Team B = STAFF3 (6 h/day): limit 6 h. Team C = STAFF4 (no capacity): limit 0.
Booked before every case: STAFF 6 h on 2026-01-05 (09:00–15:00), STAFF2 8 h on 2026-01-04.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from catalog import build_envelope
from catalog.envelope import Envelope
from derivers.base import Derived
from derivers.capacity import (
    ASSIGNEES,
    MAX_BOOKING_DAYS,
    PRIMARY_KEYS,
    RESOURCES,
    SCHEDULE_ENTRIES,
    TEAM_MEMBERS,
    CapacityDeriver,
    _Undone,
)
from derivers.tables import USERS
from derivers.testing import FakeChange, FakeState, FakeTimers, make_tx
from tests.unit.derive_cases import ABSENT, NO_ACTOR, STAFF, STAFF2, STAFF3, TENANT, dele, ins, u, upd

TEAM_A, TEAM_B, TEAM_C = u(40), u(41), u(42)
INACTIVE = u(24)
STAFF4 = u(25)
BOOKED = u(110)  # STAFF, 2026-01-05 09:00–15:00
OTHER_DAY = u(111)  # STAFF2, 2026-01-04 08:00–16:00
E1, E2, E3 = u(112), u(113), u(114)

COMMIT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
NOW = "2026-01-02T03:04:05.678Z"
DAY = "2026-01-05"
CONTEXT = ("cdc.context", f'{{"actorUserId": "{STAFF2}"}}'.encode())


def at(day: str, hour: int, minute: int = 0) -> str:
    return f"{day}T{hour:02d}:{minute:02d}:00.000Z"


def entry(entry_id: str, start: str | None, end: str | None, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "entry_id": entry_id,
        "title": "Onsite visit",
        "work_item_id": None,
        "scheduled_start": start,
        "scheduled_end": end,
        "status": "scheduled",
        "notes": None,
        "recurrence_pattern": None,
        "work_item_type": "ad_hoc",
        "created_at": NOW,
        "updated_at": NOW,
        "original_entry_id": None,
        "is_recurring": False,
        "is_private": False,
    }
    row.update(values)
    return row


def assignee(entry_id: str, user_id: str) -> dict[str, Any]:
    return {"tenant": TENANT, "entry_id": entry_id, "user_id": user_id, "created_at": NOW, "updated_at": NOW}


def member(team: str, user_id: str) -> dict[str, Any]:
    return {"tenant": TENANT, "team_id": team, "user_id": user_id, "role": "member", "created_at": NOW}


def resource(user_id: str, capacity: int | None) -> dict[str, Any]:
    return {
        "tenant": TENANT,
        "resource_id": f"00000000-0000-4000-9000-{user_id[-12:]}",
        "user_id": user_id,
        "skills": None,
        "max_daily_capacity": capacity,
        "max_weekly_capacity": None,
        "created_at": NOW,
        "updated_at": NOW,
    }


def user(user_id: str, inactive: bool | None = False) -> dict[str, Any]:
    return {"tenant": TENANT, "user_id": user_id, "email": f"{user_id[-2:]}@x.test", "is_inactive": inactive}


def world() -> list[tuple[str, Mapping[str, Any]]]:
    return [
        *((USERS, user(x)) for x in (STAFF, STAFF2, STAFF3, STAFF4)),
        (USERS, user(INACTIVE, inactive=True)),
        *((TEAM_MEMBERS, member(TEAM_A, x)) for x in (STAFF, STAFF2, INACTIVE)),
        (TEAM_MEMBERS, member(TEAM_B, STAFF3)),
        (TEAM_MEMBERS, member(TEAM_C, STAFF4)),
        (RESOURCES, resource(STAFF, 4)),
        (RESOURCES, resource(STAFF2, 4)),
        (RESOURCES, resource(INACTIVE, 10)),
        (RESOURCES, resource(STAFF3, 6)),
        (RESOURCES, resource(STAFF4, None)),
        (SCHEDULE_ENTRIES, entry(BOOKED, at(DAY, 9), at(DAY, 15))),
        (ASSIGNEES, assignee(BOOKED, STAFF)),
        (SCHEDULE_ENTRIES, entry(OTHER_DAY, at("2026-01-04", 8), at("2026-01-04", 16))),
        (ASSIGNEES, assignee(OTHER_DAY, STAFF2)),
    ]


def key(table: str, row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(row[c] for c in PRIMARY_KEYS[table])


def state_of(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> FakeState:
    state = FakeState()
    for table, row in rows:
        state.put(table, key(table, row), row)
    return state


def applied(state: FakeState, changes: Sequence[FakeChange]) -> FakeState:
    """The state as the watcher hands it to derivers: with the transaction's changes applied."""
    for change in changes:
        rows = state.rows.setdefault(change.table, {})
        if change.before is not None:
            rows.pop(key(change.table, change.before), None)
        if change.after is not None:
            rows[key(change.table, change.after)] = change.after
    return state


def run(
    changes: Sequence[FakeChange],
    before: Sequence[tuple[str, Mapping[str, Any]]] = (),
    messages: Sequence[tuple[str, bytes]] = (),
) -> tuple[list[Derived], list[Envelope]]:
    tx = make_tx(changes, commit_time=COMMIT, messages=messages)
    deriver = CapacityDeriver()
    if not deriver.tables & {c.table for c in tx.changes}:
        return [], []
    state = applied(state_of([*world(), *before]), tx.changes)
    derived = deriver.derive(tx, state, FakeTimers(deriver="capacity"))
    envelopes = [
        build_envelope(
            d.draft, slot="t", lsn=tx.end_lsn, xid=tx.xid, commit_time=tx.commit_time, table=d.table
        )
        for d in derived
    ]
    keys = [e.idempotency_key for e in envelopes]
    assert len(set(keys)) == len(keys), keys
    assert [d.position for d in derived] == sorted(d.position for d in derived)
    for d in derived:
        assert d.table == tx.changes[d.position].table
    return derived, envelopes


def reached(team: str, date: str, limit: int, booked: float, **more: Any) -> dict[str, Any]:
    return {"teamId": team, "date": date, "capacityLimit": limit, "currentBooked": booked, **more}


def book(entry_id: str, start: str | None, end: str | None, *users: str, **values: Any) -> list[FakeChange]:
    """An entry and its assignees inserted in one transaction (addScheduleEntry)."""
    return [
        ins(SCHEDULE_ENTRIES, entry(entry_id, start, end, **values)),
        *(ins(ASSIGNEES, assignee(entry_id, x)) for x in users),
    ]


CASES = [
    pytest.param(
        book(E1, at(DAY, 15), at(DAY, 17), STAFF2),
        [],
        [(1, reached(TEAM_A, DAY, 8, 8, triggeredAt=NOW, **NO_ACTOR))],
        id="booking-reaches-the-limit",
    ),
    pytest.param(book(E1, at(DAY, 15), at(DAY, 16), STAFF2), [], [], id="booking-under-the-limit"),
    pytest.param(
        book(E1, at(DAY, 15), at(DAY, 17, 30), STAFF2),
        [],
        [(1, reached(TEAM_A, DAY, 8, 8.5))],
        id="booking-past-the-limit-fractional-hours",
    ),
    pytest.param(
        book(E2, at(DAY, 15), at(DAY, 16), STAFF2),
        [(SCHEDULE_ENTRIES, entry(E1, at(DAY, 16), at(DAY, 18))), (ASSIGNEES, assignee(E1, STAFF))],
        [],
        id="second-booking-past-the-limit-emits-nothing",
    ),
    pytest.param(
        [ins(SCHEDULE_ENTRIES, entry(E1, at(DAY, 15), at(DAY, 17)))],
        [],
        [],
        id="entry-without-assignee-books-nobody",
    ),
    pytest.param(
        [ins(ASSIGNEES, assignee(E1, STAFF2))],
        [(SCHEDULE_ENTRIES, entry(E1, at(DAY, 15), at(DAY, 17)))],
        [(0, reached(TEAM_A, DAY, 8, 8))],
        id="assignee-in-a-later-transaction",
    ),
    pytest.param(
        book(E1, at(DAY, 15), at(DAY, 16), STAFF, STAFF2),
        [],
        [(2, reached(TEAM_A, DAY, 8, 8))],
        id="two-members-of-one-team-count-twice",
    ),
    pytest.param(
        book(E1, at(DAY, 22), at("2026-01-06", 8), STAFF2),
        [],
        [(1, reached(TEAM_A, DAY, 8, 8)), (1, reached(TEAM_A, "2026-01-06", 8, 8))],
        id="across-midnight-each-utc-day",
    ),
    pytest.param(
        book(E1, at(DAY, 22), at("2026-01-06", 0), STAFF, STAFF2),
        [],
        [(2, reached(TEAM_A, DAY, 8, 10))],
        id="ending-at-midnight-touches-one-day",
    ),
    pytest.param(book(E1, at(DAY, 0), at(DAY, 23), STAFF4), [], [], id="limit-zero-never-fires"),
    pytest.param(
        book(E1, at(DAY, 15), at(DAY, 17), INACTIVE),
        [],
        [(1, reached(TEAM_A, DAY, 8, 8))],
        id="inactive-member-books-but-adds-no-capacity",
    ),
    pytest.param(
        book(E1, at(DAY, 15), at(DAY, 17), STAFF2, STAFF3),
        [],
        [(2, reached(TEAM_A, DAY, 8, 8))],
        id="teams-checked-separately",
    ),
    pytest.param(
        book(E1, at("2026-01-07", 8), at("2026-01-07", 14), STAFF3),
        [],
        [(1, reached(TEAM_B, "2026-01-07", 6, 6))],
        id="from-nothing-to-the-limit",
    ),
    pytest.param(
        [
            upd(
                SCHEDULE_ENTRIES,
                entry(E1, at("2026-01-04", 16), at("2026-01-04", 18)),
                entry(E1, at(DAY, 16), at(DAY, 18)),
            )
        ],
        [
            (SCHEDULE_ENTRIES, entry(E1, at("2026-01-04", 16), at("2026-01-04", 18))),
            (ASSIGNEES, assignee(E1, STAFF2)),
        ],
        [(0, reached(TEAM_A, DAY, 8, 8))],
        id="rescheduled-onto-a-full-day",
    ),
    pytest.param(
        [
            upd(
                SCHEDULE_ENTRIES,
                entry(E1, at(DAY, 15), at(DAY, 16)),
                entry(E1, at(DAY, 15), at(DAY, 17)),
            )
        ],
        [(SCHEDULE_ENTRIES, entry(E1, at(DAY, 15), at(DAY, 16))), (ASSIGNEES, assignee(E1, STAFF2))],
        [(0, reached(TEAM_A, DAY, 8, 8))],
        id="extended-to-the-limit",
    ),
    pytest.param(
        [
            upd(
                SCHEDULE_ENTRIES,
                entry(E1, at(DAY, 15), at(DAY, 17)),
                entry(E1, at(DAY, 15), at(DAY, 17), status="cancelled", title="x"),
            )
        ],
        [(SCHEDULE_ENTRIES, entry(E1, at(DAY, 15), at(DAY, 17))), (ASSIGNEES, assignee(E1, STAFF2))],
        [],
        id="status-and-title-edit-moves-no-hours",
    ),
    pytest.param(
        [
            dele(ASSIGNEES, assignee(BOOKED, STAFF)),
            dele(SCHEDULE_ENTRIES, entry(BOOKED, at(DAY, 9), at(DAY, 15))),
        ],
        [],
        [],
        id="deleted-entry-frees-hours",
    ),
    pytest.param(
        [dele(ASSIGNEES, assignee(E1, STAFF3)), ins(ASSIGNEES, assignee(E1, STAFF2))],
        [(SCHEDULE_ENTRIES, entry(E1, at(DAY, 15), at(DAY, 17))), (ASSIGNEES, assignee(E1, STAFF3))],
        [(1, reached(TEAM_A, DAY, 8, 8))],
        id="reassigned-to-another-team",
    ),
    pytest.param(
        [dele(ASSIGNEES, assignee(E1, STAFF)), ins(ASSIGNEES, assignee(E1, STAFF2))],
        [(SCHEDULE_ENTRIES, entry(E1, at(DAY, 15), at(DAY, 17))), (ASSIGNEES, assignee(E1, STAFF))],
        [],
        id="reassigned-within-the-team-no-churn",
    ),
    pytest.param(
        book(E1, at(DAY, 15), at(DAY, 17), STAFF2),
        [
            (SCHEDULE_ENTRIES, entry(E2, at(DAY, 15), at(DAY, 17), is_private=True)),
            (ASSIGNEES, assignee(E2, STAFF)),
        ],
        [],
        id="private-block-counts-already-full",
    ),
    pytest.param(
        book(E1, at(DAY, 15), at(DAY, 17), STAFF2),
        [
            (SCHEDULE_ENTRIES, entry(E2, at(DAY, 15), at(DAY, 17), status="cancelled")),
            (ASSIGNEES, assignee(E2, STAFF)),
        ],
        [],
        id="cancelled-entry-counts-already-full",
    ),
    pytest.param(
        [
            ins(TEAM_MEMBERS, member(TEAM_B, STAFF2)),
            *book(E1, at(DAY, 11), at(DAY, 21), STAFF2),
        ],
        [],
        [(2, reached(TEAM_A, DAY, 8, 16)), (2, reached(TEAM_B, DAY, 10, 10))],
        id="member-joins-with-a-booking-previous-without-them",
    ),
    pytest.param(
        [
            upd(RESOURCES, resource(STAFF, 4), resource(STAFF, 2)),
            *book(E1, at(DAY, 15), at(DAY, 16), STAFF2),
        ],
        [],
        [],
        id="limit-moved-under-the-bookings-is-no-crossing",
    ),
    pytest.param(
        [upd(RESOURCES, resource(STAFF2, 4), resource(STAFF2, 1))],
        [],
        [],
        id="resource-change-alone-runs-no-check",
    ),
    pytest.param(
        [ins(TEAM_MEMBERS, member(TEAM_B, STAFF))],
        [],
        [],
        id="membership-change-alone-runs-no-check",
    ),
    pytest.param(
        book(E1, None, None, STAFF2),
        [],
        [],
        id="entry-without-times-books-nothing",
    ),
    pytest.param(
        book(E1, at(DAY, 17), at(DAY, 15), STAFF2),
        [],
        [],
        id="end-before-start-books-nothing",
    ),
    pytest.param(
        [
            ins(SCHEDULE_ENTRIES, entry(E1, at(DAY, 15), at(DAY, 16))),
            ins(ASSIGNEES, assignee(E1, STAFF2)),
            ins(SCHEDULE_ENTRIES, entry(E2, at(DAY, 16), at(DAY, 17))),
            ins(ASSIGNEES, assignee(E2, STAFF2)),
        ],
        [],
        [(3, reached(TEAM_A, DAY, 8, 8))],
        id="two-entries-one-transaction-one-event",
    ),
]


@pytest.mark.parametrize(("changes", "before", "expected"), CASES)
def test_capacity(
    changes: list[FakeChange],
    before: list[tuple[str, Mapping[str, Any]]],
    expected: list[tuple[int, Mapping[str, Any]]],
) -> None:
    derived, envelopes = run(changes, before)
    assert [(d.draft.event_type, d.position) for d in derived] == [
        ("CAPACITY_THRESHOLD_REACHED", position) for position, _ in expected
    ]
    for d, envelope, (_, wanted) in zip(derived, envelopes, expected, strict=True):
        assert d.draft.subject_id == wanted["teamId"]
        assert d.draft.discriminator == wanted["date"]
        assert envelope.payload["tenantId"] == TENANT and envelope.payload["occurredAt"] == NOW
        for name, value in wanted.items():
            if value is ABSENT:
                assert name not in envelope.payload, name
            else:
                assert envelope.payload.get(name, ABSENT) == value, (name, envelope.payload)


def test_an_entry_of_40_days_books_each_of_them() -> None:
    """A multi-week block books every UTC day it overlaps: each day is checked on its own."""
    _, envelopes = run(book(E1, at(DAY, 15), at("2026-02-14", 0), STAFF2))
    dates = [e.payload["date"] for e in envelopes]
    assert len(dates) == 40 and dates[0] == DAY and dates[-1] == "2026-02-13"
    assert envelopes[0].payload["currentBooked"] == 15  # 6 h booked before + 9 h of the entry
    assert {e.payload["currentBooked"] for e in envelopes[1:]} == {24}


def test_a_far_end_date_books_the_first_366_days() -> None:
    """An entry to 9999-12-31 books its first MAX_BOOKING_DAYS UTC days, not one per day until
    then (a check and an index key each)."""
    _, envelopes = run(book(E1, at(DAY, 15), "9999-12-31T00:00:00.000Z", STAFF2))
    dates = [e.payload["date"] for e in envelopes]
    assert MAX_BOOKING_DAYS == 366
    assert len(dates) == 366 and dates[0] == DAY and dates[-1] == "2027-01-05"


@pytest.mark.parametrize(
    "end_before",
    ["2026-02-14", "9999-12-31"],  # 40 days; longer than MAX_BOOKING_DAYS
)
def test_shortening_a_long_entry_books_nothing_new(end_before: str) -> None:
    """Shortening never books a day the entry did not book before: no crossing (a reduction)."""
    long = entry(E1, at(DAY, 15), at(end_before, 0))
    short = entry(E1, at(DAY, 15), at("2026-02-05", 0))
    derived, _ = run(
        [upd(SCHEDULE_ENTRIES, long, short)], [(SCHEDULE_ENTRIES, long), (ASSIGNEES, assignee(E1, STAFF2))]
    )
    assert derived == []


def test_key_is_team_and_utc_date_at_the_transaction() -> None:
    _, envelopes = run(book(E1, at(DAY, 15), at(DAY, 17), STAFF2))
    [envelope] = envelopes
    assert envelope.idempotency_key == f"CAPACITY_THRESHOLD_REACHED:{TENANT}:{TEAM_A}:{DAY}@0/16B3748"
    assert envelope.payload_schema_ref == "payload.CapacityThresholdReached.v1"
    assert b'"capacityLimit":8.0,"currentBooked":8.0,"date":"2026-01-05"' in envelope.to_json_bytes()


def test_actor_only_from_the_transactions_context_message() -> None:
    _, envelopes = run(book(E1, at(DAY, 15), at(DAY, 17), STAFF2), messages=[CONTEXT])
    [envelope] = envelopes
    assert envelope.payload["actorType"] == "USER"
    assert envelope.payload["actorUserId"] == STAFF2


def test_state_before_the_transaction_undoes_its_changes() -> None:
    """Inserted rows are absent, updated and deleted rows are their before-images, and a row
    whose key an update moved is found under its old key."""
    changes = [
        ins(ASSIGNEES, assignee(E1, STAFF2)),
        dele(ASSIGNEES, assignee(BOOKED, STAFF)),
        upd(
            SCHEDULE_ENTRIES,
            entry(OTHER_DAY, at(DAY, 1), at(DAY, 2)),
            entry(OTHER_DAY, at(DAY, 3), at(DAY, 4)),
        ),
        upd(TEAM_MEMBERS, member(TEAM_A, STAFF), member(TEAM_B, STAFF)),
    ]
    after = applied(state_of(world()), changes)
    before = _Undone(after, {table: [c for c in changes if c.table == table] for table in PRIMARY_KEYS})
    assert before.find(ASSIGNEES, "user_id", STAFF2) == [assignee(OTHER_DAY, STAFF2)]
    assert before.find(ASSIGNEES, "user_id", STAFF) == [assignee(BOOKED, STAFF)]
    assert before.get(SCHEDULE_ENTRIES, (TENANT, OTHER_DAY)) == entry(OTHER_DAY, at(DAY, 1), at(DAY, 2))
    assert before.get(SCHEDULE_ENTRIES, (TENANT, BOOKED)) == after.get(SCHEDULE_ENTRIES, (TENANT, BOOKED))
    assert before.get(TEAM_MEMBERS, (TENANT, TEAM_B, STAFF)) is None
    assert {m["team_id"] for m in before.find(TEAM_MEMBERS, "user_id", STAFF)} == {TEAM_A}
    assert {m["team_id"] for m in after.find(TEAM_MEMBERS, "user_id", STAFF)} == {TEAM_B}


def test_deriver_declares_its_tables_and_arms_no_timers() -> None:
    deriver = CapacityDeriver()
    assert deriver.name == "capacity"
    assert deriver.tables == {SCHEDULE_ENTRIES, ASSIGNEES}
    assert deriver.state_tables == {SCHEDULE_ENTRIES, ASSIGNEES, TEAM_MEMBERS, RESOURCES, USERS}
    assert set(deriver.reads) == deriver.state_tables
    timers = FakeTimers(deriver="capacity")
    tx = make_tx(book(E1, at(DAY, 15), at(DAY, 17), STAFF2), commit_time=COMMIT)
    deriver.derive(tx, applied(state_of(world()), tx.changes), timers)
    assert timers.timers == {}


def test_the_check_comes_after_the_entrys_other_events() -> None:
    """As the application runs it last (after the appointment's events and one dispatch per
    technician): the event sits on the last row change that moved the entry."""
    from derivers import default_derivers

    changes = book(E1, at(DAY, 15), at(DAY, 17), STAFF2, STAFF3, work_item_type="ticket", work_item_id=u(90))
    tx = make_tx(changes, commit_time=COMMIT)
    state = applied(state_of(world()), tx.changes)
    derived: list[Derived] = []
    for deriver in default_derivers():
        if deriver.tables & {c.table for c in tx.changes}:
            derived.extend(deriver.derive(tx, state, FakeTimers()))
    derived.sort(key=lambda d: d.position)  # as the watcher merges them
    types = [d.draft.event_type for d in derived]
    assert types[-1] == "CAPACITY_THRESHOLD_REACHED", types
    assert types.count("TECHNICIAN_DISPATCHED") == 2 and types[0] == "APPOINTMENT_CREATED", types
