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
  start book nothing. An entry books every UTC day it overlaps, a multi-week block included,
  but at most its first :data:`MAX_BOOKING_DAYS` (366): a far end date (``9999-12-31``) would
  cost a check (and possibly an event) per day until then. Counted from its start, so that
  shortening an entry never books a day it did not book before.
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

**Cost.** Only a day on which the transaction *added* bookings to a team can cross: with the
team's membership unchanged, ``previous`` = ``current`` minus what the moved entries changed
(their intervals and assignees before and after, :func:`_user_deltas`), so a day whose bookings
did not grow is not read at all. ``current`` is a total the state keeps current for this deriver
(:data:`BOOKED`, a :class:`~derivers.base.StateTotal`: milliseconds per (tenant, UTC day, user),
summed over entries × their assignee rows as either changes), so a check reads one number per
member. A change of the team's membership in the same transaction reads the day before it from
the day's entries (:data:`ENTRIES_BY_DAY`, a state index by (tenant, UTC day)). Entry times are
parsed once (a bounded cache of the texts).

**Key and actor.** Subject = the team, discriminator = the UTC date: the uniform key
``CAPACITY_THRESHOLD_REACHED:<tenant>:<team>:<YYYY-MM-DD>@<end LSN>`` (DESIGN §4), not the app's
``capacity-threshold-reached:<teamId>:<date>``. Schedule entries carry no actor column
(SPEC §7.6): actor fields only when the transaction carries a ``cdc.context`` message. The event
sits at the position of the last change of the transaction that moved an entry of that team
on that date: after the entry's own events and dispatches, as the application checks last.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

from catalog.envelope import EventDraft

from .base import (
    Change,
    Derived,
    Image,
    StateIndex,
    StateTotal,
    StateView,
    Timer,
    TimerOps,
    TxView,
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


# --- the state before the transaction -----------------------------------------------------------------


def _key(row: Image, columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(row[column] for column in columns)


def _hashable(value: Any) -> Hashable:
    # the columns looked up here hold uuids and text; a json value compares as its text
    return value if isinstance(value, Hashable) else repr(value)


class _Undone:
    """A :class:`~derivers.base.StateView` of the state as it was before the transaction: the
    current state with the transaction's changes of :data:`PRIMARY_KEYS` tables undone (a row
    it inserted is absent, a row it updated or deleted is its before-image)."""

    __slots__ = ("_booked", "_state", "_undo", "_undone_by")

    def __init__(self, state: StateView, changes: Mapping[str, Sequence[Change]]) -> None:
        self._state = state
        self._undo: dict[str, dict[tuple[str, ...], Image | None]] = {}
        self._undone_by: dict[tuple[str, str], dict[Hashable, list[Image]]] = {}
        self._booked: dict[tuple[str, int], dict[str, int]] = {}
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
        by_value = self._undone_by.get((table, column))
        if by_value is None:  # the before-images by this column, gathered once
            by_value = self._undone_by[(table, column)] = {}
            for row in undo.values():
                if row is not None:
                    by_value.setdefault(_hashable(row.get(column)), []).append(row)
        out.extend(by_value.get(_hashable(value), ()))
        return out

    def lookup(self, index: StateIndex, key: Hashable) -> list[Image]:
        rows = self._state.lookup(index, key)
        undo = self._undo.get(index.table)
        if not undo:
            return rows
        columns = PRIMARY_KEYS[index.table]
        out = [row for row in rows if _key(row, columns) not in undo]
        out.extend(row for row in undo.values() if row is not None and key in index.keys(row))
        return out

    def total(self, total: StateTotal, key: Hashable) -> int:
        """:data:`BOOKED` before the transaction, from the day's entries (the state keeps the
        totals as of the transaction only)."""
        assert total is BOOKED, total.name
        assert isinstance(key, tuple), key
        tenant, day, user = key
        booked = self._booked.get((tenant, day))
        if booked is None:
            booked = self._booked[(tenant, day)] = _users_booked(self, tenant, day)
        return booked.get(user, 0)


# --- the numbers -----------------------------------------------------------------------------------------


def _ms(text: Any) -> int | None:
    """A canonical timestamp as milliseconds since the epoch; None for NULL or what is no time
    (``infinity``)."""
    if not isinstance(text, str):
        return None
    return _text_ms(text)


@lru_cache(maxsize=1 << 16)
def _text_ms(text: str) -> int | None:
    # the same entries' times are read by every check of their days: parsed once
    try:
        return (parse_time(text) - _EPOCH) // _MS
    except ValueError:
        return None


#: An entry books at most its first this many UTC days: a far end date (``9999-12-31``) would
#: otherwise cost a check, an index key and possibly an event per day until then. Counting from
#: the start keeps the rule continuous: shortening an entry never books a day it did not book.
MAX_BOOKING_DAYS: Final = 366


def _interval(entry: Image | None) -> tuple[int, int] | None:
    """The entry's ``[start, end)`` in milliseconds, None when it books no time."""
    if entry is None:
        return None
    start, end = _ms(entry.get("scheduled_start")), _ms(entry.get("scheduled_end"))
    if start is None or end is None or end <= start:
        return None
    return start, end


def _days(interval: tuple[int, int] | None) -> range:
    """The UTC days (days since the epoch) the interval overlaps, the first
    :data:`MAX_BOOKING_DAYS` of them."""
    if interval is None:
        return range(0)
    start, end = interval
    first = start // _DAY_MS
    return range(first, min((end - 1) // _DAY_MS + 1, first + MAX_BOOKING_DAYS))


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


def _entry_days(entry: Image) -> list[tuple[str, int]]:
    """The (tenant, UTC day) keys of the days the entry's interval overlaps (none without one)."""
    return [(entry["tenant"], day) for day in _days(_interval(entry))]


#: Schedule entries by (tenant, UTC day): a check reads the entries of the day it checks, never
#: a member's whole booking history (the state keeps the index current, derivers.base.StateIndex).
ENTRIES_BY_DAY: Final = StateIndex(SCHEDULE_ENTRIES, "entries by UTC day", _entry_days)


def _users_booked(view: StateView, tenant: str, day: int) -> dict[str, int]:
    """Milliseconds each user has booked on the UTC ``day``, read from the day's entries: each
    entry overlapping the day adds its overlap once per assignee row (:data:`BOOKED` by scan)."""
    booked: dict[str, int] = {}
    for entry in view.lookup(ENTRIES_BY_DAY, (tenant, day)):
        overlap = _overlap(_interval(entry), day)
        for assignee in view.find(ASSIGNEES, "entry_id", entry["entry_id"]):
            if assignee.get("tenant") == tenant:
                user = assignee["user_id"]
                booked[user] = booked.get(user, 0) + overlap
    return booked


def _booked_by(view: StateView, table: str, row: Image) -> Iterator[tuple[Hashable, int]]:
    """What one row adds to :data:`BOOKED`: an entry, its overlap of each UTC day once per
    assignee row it has; an assignee row, its entry's overlap of each day for its user."""
    tenant = row["tenant"]
    if table == SCHEDULE_ENTRIES:
        entry: Image | None = row
        users = [
            a["user_id"]
            for a in view.find(ASSIGNEES, "entry_id", row["entry_id"])
            if a.get("tenant") == tenant
        ]
    else:
        entry = view.get(SCHEDULE_ENTRIES, (tenant, row["entry_id"]))
        users = [row["user_id"]]
    interval = _interval(entry)
    if interval is None or not users:
        return
    for day in _days(interval):
        overlap = min(interval[1], (day + 1) * _DAY_MS) - max(interval[0], day * _DAY_MS)
        for user in users:
            yield (tenant, day, user), overlap


#: Milliseconds booked per (tenant, UTC day, user) — Σ over the user's assignee rows of their
#: entry's overlap of the day — kept current by the state as entries and assignees change
#: (derivers.base.StateTotal), so a check reads one number per team member, not the day's entries.
BOOKED: Final = StateTotal((SCHEDULE_ENTRIES, ASSIGNEES), "booked ms by tenant, day, user", _booked_by)


def _team_total(view: StateView, tenant: str, members: set[str], day: int) -> int:
    return sum(view.total(BOOKED, (tenant, day, user)) for user in members)


@dataclass(frozen=True)
class _Moved:
    """One entry the transaction moved: its interval and assignees before and after it."""

    before: tuple[int, int] | None
    users_before: tuple[str, ...]  # one per assignee row
    after: tuple[int, int] | None
    users_after: tuple[str, ...]


def _overlap(interval: tuple[int, int] | None, day: int) -> int:
    if interval is None or day not in _days(interval):
        return 0
    return min(interval[1], (day + 1) * _DAY_MS) - max(interval[0], day * _DAY_MS)


def _user_deltas(moved: Sequence[_Moved]) -> dict[int, dict[str, int]]:
    """UTC day → user → what the moved entries change in the user's booked milliseconds."""
    deltas: dict[int, dict[str, int]] = {}
    for entry in moved:
        for interval, users, sign in (
            (entry.after, entry.users_after, 1),
            (entry.before, entry.users_before, -1),
        ):
            for day in _days(interval):
                overlap = sign * _overlap(interval, day)
                of_day = deltas.setdefault(day, {})
                for user in users:
                    of_day[user] = of_day.get(user, 0) + overlap
    return deltas


def _team_booked(
    before: StateView,
    after: StateView,
    deltas: Mapping[int, Mapping[str, int]],
    tenant: str,
    team: str,
    days: Mapping[int, Any],
) -> dict[int, tuple[int, int]]:
    """(previous, current) booked milliseconds of the team on each day that may have crossed,
    each with the team's members as they were then. With the membership unchanged, only the
    moved entries differ between the two (previous = current − their ``deltas``) and a day
    whose bookings did not grow cannot cross: it is not read at all."""
    members_before = {m["user_id"] for m in _members(before, tenant, team)}
    members_after = {m["user_id"] for m in _members(after, tenant, team)}
    out: dict[int, tuple[int, int]] = {}
    for day in days:
        if members_before == members_after:
            of_day = deltas.get(day, {})
            delta = sum(of_day.get(user, 0) for user in members_after)
            if delta <= 0:
                continue
            current = _team_total(after, tenant, members_after, day)
            out[day] = (current - delta, current)
        else:
            out[day] = (
                _team_total(before, tenant, members_before, day),
                _team_total(after, tenant, members_after, day),
            )
    return out


def _hours(ms: int) -> float:
    """Hours rounded to 2 decimals."""
    return round(ms / _HOUR_MS, 2)


# --- the rule ----------------------------------------------------------------------------------------------


def _moved_entries(ctx: FamilyTx) -> dict[tuple[str, str], Change]:
    """(tenant, entry id) of every entry whose booked hours the transaction may move → the last
    change that moved it (the check comes after the entry's other events, as the application
    runs it last)."""
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
                moved[(row["tenant"], row["entry_id"])] = change
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
    # (tenant, team) → UTC day → the last change that moved an entry of the team on that day
    checks: dict[tuple[str, str], dict[int, Change]] = {}
    moved_of: dict[str, list[_Moved]] = {}  # tenant → the entries the transaction moved
    teams_of: dict[tuple[str, str], set[str]] = {}  # (tenant, user) → their teams before ∪ after
    for (tenant, entry_id), change in moved.items():
        intervals = [_interval(view.get(SCHEDULE_ENTRIES, (tenant, entry_id))) for view in views]
        assigned = [
            tuple(a["user_id"] for a in _of_tenant(view.find(ASSIGNEES, "entry_id", entry_id), tenant))
            for view in views
        ]
        moved_of.setdefault(tenant, []).append(_Moved(intervals[0], assigned[0], intervals[1], assigned[1]))
        days = set(_days(intervals[0])) | set(_days(intervals[1]))
        users = set(assigned[0]) | set(assigned[1])
        if not days or not users:
            continue
        teams: set[str] = set()
        for user_id in users:
            of_user = teams_of.get((tenant, user_id))
            if of_user is None:  # a transaction's entries share a few technicians
                of_user = teams_of[(tenant, user_id)] = {
                    member["team_id"]
                    for view in views
                    for member in _of_tenant(view.find(TEAM_MEMBERS, "user_id", user_id), tenant)
                }
            teams |= of_user
        for team in teams:
            by_day = checks.setdefault((tenant, team), {})
            for day in days:
                if day not in by_day or by_day[day].position < change.position:
                    by_day[day] = change
    actor = ctx.context_actor or NO_ACTOR
    deltas = {tenant: _user_deltas(of_tenant) for tenant, of_tenant in moved_of.items()}
    for (tenant, team), by_day in sorted(checks.items()):
        limit = _limit(after, tenant, team)
        if limit <= 0:
            continue
        limit_ms = limit * _HOUR_MS
        booked = _team_booked(before, after, deltas[tenant], tenant, team, by_day)
        for day in sorted(booked):
            previous, current = booked[day]
            if previous < limit_ms <= current:
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
                        currentBooked=_hours(current),
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
