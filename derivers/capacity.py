"""The capacity deriver: CAPACITY_THRESHOLD_REACHED when a schedule change books a team to its
daily capacity (SPEC §5.8 "Capacity threshold", events.md), for every writer of
``schedule_entries`` / ``schedule_entry_assignees``.

**The numbers, as of the transaction's LSN.** Everything comes from the replicated reference
state (``schedule_entries``, ``schedule_entry_assignees``, ``team_members``, ``resources``,
``users``), which the watcher keeps current from the stream and persists with the checkpoint:
no live table is ever read, and a restart resumes with the state of its checkpoint. The state
seen by :meth:`CapacityDeriver.derive` already includes the transaction; the state *before* it
is that state with the transaction's changes of those five tables undone from their
before-images (:class:`_Undone`). For a team T and a UTC date D:

* ``capacityLimit`` = Σ ``COALESCE(resources.max_daily_capacity, 0)`` over T's members whose
  ``users.is_inactive`` is ``false`` (the app's join: NULL or no users row is not active;
  every resource row of the user counts, the app's left join), as of the transaction (after it);
* booked(D) = Σ over T's members, over each of their ``schedule_entry_assignees`` rows, of the
  hours the entry's ``[scheduled_start, scheduled_end)`` overlaps the UTC day D. Computed in
  whole milliseconds (the precision of the canonical timestamps), so the comparison is exact;
* the event fires on the crossing ``previous < capacityLimit ≤ current`` only, with
  ``previous`` = booked(D) before the transaction and ``current`` = booked(D) after it. A
  second booking past the limit (previous already ≥ limit) emits nothing; a booking that falls
  back under the limit and crosses it again fires again (a new crossing, at a new LSN).

**Which (team, date) pairs a transaction checks.** An entry is *moved* by the transaction
when its row is inserted or deleted, when its ``scheduled_start``/``scheduled_end`` change,
or when one of its assignee rows is inserted, deleted or changed; edits of title, status or
notes book no hours and cannot cross anything. For each moved entry: the users assigned
before ∪ after, their teams before ∪ after, and the UTC dates its before and after intervals
overlap (an entry ending exactly at midnight does not touch the next day).

**Decisions where the facts were silent or odd** (documented for workflow authors):

* *Entries spanning midnight* add to each UTC day the hours that fall in it; each day is
  checked and keyed on its own (``discriminator`` = the date), so one transaction may report
  several dates of one team.
* *A limit of 0* (no active member has a resource row with a capacity) never fires: the app
  skips it, and "0 ≤ booked" would otherwise report every first booking of every team.
* *Two members of one team on one entry* count twice (SPEC: booked sums over the assignee
  rows joined with the team's members, and the limit is a sum of per-member capacities, so
  both are person-hours).
* *Private blocks, cancelled and completed entries* count, as SPEC says (they hold the
  technician's time until the row is deleted or moved); a status change alone emits nothing.
* *Recurring series*: only rows count (the master's own interval, and the standalone rows a
  ``single``/``future`` edit inserts); virtual occurrences are not booked, as in the app.
* *Entries without times* (ad-hoc entries may have NULL times) or with an end not after their
  start book nothing.
* *Member, resource and user changes* (a member joins or leaves, a capacity is edited, a user
  is deactivated) move the limit and the bookings but do not run the check by themselves, as
  in the app: the event reports bookings crossing the limit, not the limit moving under the
  bookings. When such a change shares a transaction with a schedule change, ``previous`` is
  measured with the membership as it was before the transaction and the limit as it is after.
* *Inactive members*: their capacity leaves the limit, their bookings stay in booked (SPEC).
* *Spilled transactions* (larger than the watcher's in-memory limit, delivered to derivers in
  windows) undo only the window's own changes; a schedule transaction that large is not an
  application shape, and its capacity checks are then approximate.
* *TRUNCATE* of a schedule table carries no rows and emits nothing; the state forgets the rows,
  so later checks count only what is booked after it.
* *Payload numbers*: ``capacityLimit`` (the integer sum) and ``currentBooked`` (rounded to 2
  decimals) are JSON numbers as the catalog's model writes them (``8.0``, ``8.5``);
  ``triggeredAt`` is the commit time.

**Cost.** The state offers lookups by key and by column value, not by date, so a check reads
every assignee row of the team's members (``find`` by user, then the entry by key; canonical
timestamps compare as text, so rows outside the checked days are skipped unparsed), once on the
current state and again on the state before the transaction only for the members whose
bookings it moved. That is linear in the team's booking history, about 1–2 µs per assignee row
per schedule transaction (a team of 10 with 1,000 bookings each: ~10 ms).

**Key and actor.** Subject = the team, discriminator = the UTC date: the uniform key
``CAPACITY_THRESHOLD_REACHED:<tenant>:<team>:<YYYY-MM-DD>@<end LSN>`` (DESIGN §4), not the app's
``capacity-threshold-reached:<teamId>:<date>``. Schedule entries carry no actor column
(SPEC §7.6): actor fields only when the transaction carries a ``cdc.context`` message. The event
sits at the position of the first change of the transaction that moved an entry of that team
on that date.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
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
from .tables import USERS
from .toolkit import NO_ACTOR, FamilyTx, fields

SCHEDULE_ENTRIES: Final = "public.schedule_entries"
ASSIGNEES: Final = "public.schedule_entry_assignees"
TEAM_MEMBERS: Final = "public.team_members"
RESOURCES: Final = "public.resources"

EVENT: Final = "CAPACITY_THRESHOLD_REACHED"
EVENTS: Final = (EVENT,)

#: Primary keys of the state tables, for undoing a transaction's changes (``users`` really is
#: keyed by (tenant, user_id, email) in the application's schema).
PRIMARY_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    SCHEDULE_ENTRIES: ("tenant", "entry_id"),
    ASSIGNEES: ("tenant", "entry_id", "user_id"),
    TEAM_MEMBERS: ("tenant", "team_id", "user_id"),
    RESOURCES: ("tenant", "resource_id"),
    USERS: ("tenant", "user_id", "email"),
}

#: What these rules read (see ``derivers.base.Reads``).
READS: Final = (
    (SCHEDULE_ENTRIES, ("tenant", "entry_id", "scheduled_start", "scheduled_end"), EVENTS),
    (ASSIGNEES, ("tenant", "entry_id", "user_id"), EVENTS),
    (TEAM_MEMBERS, ("tenant", "team_id", "user_id"), EVENTS),
    (RESOURCES, ("tenant", "resource_id", "user_id", "max_daily_capacity"), EVENTS),
    (USERS, ("tenant", "user_id", "email", "is_inactive"), EVENTS),
)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_DAY_MS: Final = 86_400_000
_HOUR_MS: Final = 3_600_000
_CANONICAL_LENGTH: Final = len("2026-01-02T03:04:05.678Z")


# --- the state before the transaction -----------------------------------------------------------------


def _key(row: Image, columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(row[column] for column in columns)


class _Undone:
    """A :class:`~derivers.base.StateView` of the state as it was before the transaction: the
    current state with the transaction's changes of :data:`PRIMARY_KEYS` tables undone (a row
    it inserted is absent, a row it updated or deleted is its before-image)."""

    __slots__ = ("_state", "_undo")

    def __init__(self, state: StateView, changes: Mapping[str, Sequence[Change]]) -> None:
        self._state = state
        self._undo: dict[str, dict[tuple[str, ...], Image | None]] = {}
        for table, of_table in changes.items():
            if not of_table:
                continue
            columns = PRIMARY_KEYS[table]
            undo: dict[tuple[str, ...], Image | None] = {}
            for change in of_table:  # keys the transaction created did not exist before it ...
                if change.after is not None:
                    undo.setdefault(_key(change.after, columns), None)
            for change in of_table:  # ... unless a before-image says they did
                if change.before is not None:
                    undo[_key(change.before, columns)] = change.before
            self._undo[table] = undo

    def get(self, table: str, key: tuple[str, ...]) -> Image | None:
        undo = self._undo.get(table)
        if undo is not None and key in undo:
            return undo[key]
        return self._state.get(table, key)

    def find(self, table: str, column: str, value: Any) -> list[Image]:
        rows = self._state.find(table, column, value)
        undo = self._undo.get(table)
        if not undo:
            return rows
        columns = PRIMARY_KEYS[table]
        out = [row for row in rows if _key(row, columns) not in undo]
        out.extend(row for row in undo.values() if row is not None and row.get(column) == value)
        return out


# --- the numbers -----------------------------------------------------------------------------------------


def _ms(text: Any) -> int | None:
    """A canonical timestamp as milliseconds since the epoch; None for NULL or what is no time
    (``infinity``)."""
    if not isinstance(text, str):
        return None
    try:
        return (parse_time(text) - _EPOCH) // _MS
    except ValueError:
        return None


def _interval(entry: Image | None) -> tuple[int, int] | None:
    """The entry's ``[start, end)`` in milliseconds, None when it books no time."""
    if entry is None:
        return None
    start, end = _ms(entry.get("scheduled_start")), _ms(entry.get("scheduled_end"))
    if start is None or end is None or end <= start:
        return None
    return start, end


def _days(interval: tuple[int, int] | None) -> range:
    """The UTC days (days since the epoch) the interval overlaps."""
    if interval is None:
        return range(0)
    start, end = interval
    return range(start // _DAY_MS, (end - 1) // _DAY_MS + 1)


def _date_text(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).date().isoformat()


def _of_tenant(rows: Iterable[Image], tenant: str) -> list[Image]:
    return [row for row in rows if row.get("tenant") == tenant]


def _members(view: StateView, tenant: str, team: str) -> list[Image]:
    return _of_tenant(view.find(TEAM_MEMBERS, "team_id", team), tenant)


def _active(view: StateView, tenant: str, user_id: str) -> bool:
    """``users.is_inactive = false``, as the app's join filters (NULL or no row: not active)."""
    return any(
        user.get("is_inactive") is False for user in _of_tenant(view.find(USERS, "user_id", user_id), tenant)
    )


def _limit(view: StateView, tenant: str, team: str) -> int:
    """Σ COALESCE(max_daily_capacity, 0) over the team's members that are not inactive."""
    total = 0
    for member in _members(view, tenant, team):
        user_id = member["user_id"]
        if not _active(view, tenant, user_id):
            continue
        for resource in _of_tenant(view.find(RESOURCES, "user_id", user_id), tenant):
            capacity = resource.get("max_daily_capacity")
            if isinstance(capacity, int):
                total += capacity
    return total


def _booked(view: StateView, tenant: str, user_id: str, days: Mapping[int, Any]) -> dict[int, int]:
    """Milliseconds the user's assignee rows book on each of ``days`` (UTC days): each row
    adds its entry's overlap with the day."""
    totals = dict.fromkeys(days, 0)
    low, high = min(days) * _DAY_MS, (max(days) + 1) * _DAY_MS
    low_text, high_text = _canonical_text(low), _canonical_text(high)
    get = view.get
    for assignee in view.find(ASSIGNEES, "user_id", user_id):
        if assignee.get("tenant") != tenant:
            continue
        entry = get(SCHEDULE_ENTRIES, (tenant, assignee["entry_id"]))
        if entry is None:
            continue
        start_text, end_text = entry.get("scheduled_start"), entry.get("scheduled_end")
        # Canonical timestamps order as text: most of a member's history is skipped unparsed.
        if (
            type(start_text) is str
            and type(end_text) is str
            and len(start_text) == len(end_text) == _CANONICAL_LENGTH
            and (start_text >= high_text or end_text <= low_text)
        ):
            continue
        interval = _interval(entry)
        if interval is None or interval[0] >= high or interval[1] <= low:
            continue
        start, end = interval
        for day in _days(interval):
            if day in totals:
                totals[day] += min(end, (day + 1) * _DAY_MS) - max(start, day * _DAY_MS)
    return totals


def _canonical_text(ms: int) -> str:
    return canonical_time(_EPOCH + ms * _MS)


def _team_booked(
    before: StateView, after: StateView, tenant: str, team: str, days: Mapping[int, Any], touched: set[str]
) -> tuple[dict[int, int], dict[int, int]]:
    """Booked milliseconds per day of the team before and after the transaction. A member's own
    bookings differ between the two only if the transaction moved an entry assigned to them
    (``touched``); the others are measured once, on the current state."""
    members_before = {m["user_id"] for m in _members(before, tenant, team)}
    members_after = {m["user_id"] for m in _members(after, tenant, team)}
    now = {user: _booked(after, tenant, user, days) for user in sorted(members_after | members_before)}
    then = {user: _booked(before, tenant, user, days) for user in sorted(members_before & touched)}
    previous = dict.fromkeys(days, 0)
    current = dict.fromkeys(days, 0)
    for day in days:
        previous[day] = sum(then[user][day] if user in then else now[user][day] for user in members_before)
        current[day] = sum(now[user][day] for user in members_after)
    return previous, current


def _hours(ms: int) -> float:
    """Hours rounded to 2 decimals."""
    return round(ms / _HOUR_MS, 2)


# --- the rule ----------------------------------------------------------------------------------------------


def _moved_entries(ctx: FamilyTx) -> dict[tuple[str, str], Change]:
    """(tenant, entry id) of every entry whose booked hours the transaction may move → the first
    change that moved it."""
    changes = sorted(ctx.changes(SCHEDULE_ENTRIES) + ctx.changes(ASSIGNEES), key=_position)
    moved: dict[tuple[str, str], Change] = {}
    for change in changes:
        if (
            change.table == SCHEDULE_ENTRIES
            and change.op == "update"
            and not (change.changed("scheduled_start") or change.changed("scheduled_end"))
        ):
            continue  # an edit of title, status, notes: no hours move
        for row in (change.before, change.after):
            if row is not None:
                moved.setdefault((row["tenant"], row["entry_id"]), change)
    return moved


def _position(change: Change) -> int:
    return change.position


def capacity_events(ctx: FamilyTx) -> None:
    moved = _moved_entries(ctx)
    if not moved:
        return
    after: StateView = ctx.state
    before = _Undone(after, {table: ctx.changes(table) for table in PRIMARY_KEYS})
    views: tuple[StateView, StateView] = (before, after)
    # (tenant, team) → UTC day → the first change that moved an entry of the team on that day
    checks: dict[tuple[str, str], dict[int, Change]] = {}
    touched: set[str] = set()  # users assigned (before or after) to a moved entry
    for (tenant, entry_id), change in moved.items():
        days: set[int] = set()
        users: set[str] = set()
        for view in views:
            days.update(_days(_interval(view.get(SCHEDULE_ENTRIES, (tenant, entry_id)))))
            users.update(a["user_id"] for a in _of_tenant(view.find(ASSIGNEES, "entry_id", entry_id), tenant))
        touched |= users
        if not days or not users:
            continue
        teams = {
            member["team_id"]
            for view in views
            for user_id in users
            for member in _of_tenant(view.find(TEAM_MEMBERS, "user_id", user_id), tenant)
        }
        for team in teams:
            by_day = checks.setdefault((tenant, team), {})
            for day in days:
                by_day.setdefault(day, change)
    actor = ctx.context_actor or NO_ACTOR
    for (tenant, team), by_day in sorted(checks.items()):
        limit = _limit(after, tenant, team)
        if limit <= 0:
            continue
        limit_ms = limit * _HOUR_MS
        previous, current = _team_booked(before, after, tenant, team, by_day, touched)
        for day in sorted(by_day):
            if previous[day] < limit_ms <= current[day]:
                date = _date_text(day)
                ctx.emit(
                    by_day[day],
                    EVENT,
                    tenant,
                    team,
                    actor,
                    fields(
                        teamId=team,
                        date=date,
                        capacityLimit=float(limit),
                        currentBooked=_hours(current[day]),
                        triggeredAt=ctx.occurred_at,
                    ),
                    # one team, several dates in one transaction (an entry across midnight)
                    discriminator=date,
                )


class CapacityDeriver:
    """CAPACITY_THRESHOLD_REACHED from schedule entries and their assignees; the bookings and
    capacities come from the reference state. No timers."""

    name = "capacity"
    tables = frozenset({SCHEDULE_ENTRIES, ASSIGNEES})
    state_tables = frozenset(PRIMARY_KEYS)
    reads = declare_reads(*READS)

    def derive(self, tx: TxView, state: StateView, timers: TimerOps) -> list[Derived]:
        ctx = FamilyTx(tx, state, timers, PRIMARY_KEYS)
        capacity_events(ctx)
        return ctx.drafts()

    def fire(self, timer: Timer, state: StateView) -> list[EventDraft]:
        return []  # arms none
