"""The deriver contract: what a deriver reads, what it returns, and the timer operations.

A deriver is pure: ``derive(tx, state, timers)`` looks at one committed transaction (its
folded row changes, in the order of each row's first change), at the replicated
reference state as of that transaction, and at the durable timers it armed earlier, and
returns :class:`Derived` drafts.  It does no I/O and imports no database driver.

Value forms in row images and state rows (the canonical JSON forms): uuid → lower-case
``str``; timestamptz → ``"2026-01-02T03:04:05.678Z"`` (UTC, milliseconds); boolean,
integers → ``bool``/``int``; numeric → ``str``; json/jsonb → parsed Python values;
text, varchar, enums → ``str``; arrays → lists; SQL NULL → ``None``.

Reference state is applied *before* the derivers see a transaction: a status created in
the same transaction as the ticket that moves to it is visible.  The before-images of the
transaction show what a reference row was before it.

Each deriver declares what its rules read (:data:`Reads`: table → column → the event types
that depend on it), so that the watcher can tell, when a column is renamed or dropped, which
events it can no longer derive — and withhold them rather than emit them from a guessed value.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

from catalog.envelope import EventDraft
from catalog.forms import format_timestamp, parse_timestamp

Op = Literal["insert", "update", "delete", "truncate"]
Image = Mapping[str, Any]

TimerState = Literal["armed", "paused", "fired", "settled"]

Reads = Mapping[str, Mapping[str, frozenset[str]]]
"""What a deriver's rules read: schema-qualified table → column → the event types whose
existence or payload depends on that column (reference tables read through the state included)."""


def declare_reads(*rules: tuple[str, Iterable[str], Iterable[str]]) -> Reads:
    """A :data:`Reads` from ``(table, columns, event types)`` rows, one per rule or group of
    rules: every column of a row feeds every event type of that row (rows add up)."""
    out: dict[str, dict[str, frozenset[str]]] = {}
    for table, columns, event_types in rules:
        if isinstance(columns, str) or isinstance(event_types, str):
            raise TypeError(f"declare_reads: columns and event types of {table} are collections, not a str")
        types = frozenset(event_types)
        by_column = out.setdefault(table, {})
        for column in columns:
            by_column[column] = by_column.get(column, frozenset()) | types
    return out


class Change(Protocol):
    """One folded row change (first before-image, last after-image)."""

    @property
    def table(self) -> str: ...  # schema-qualified: "public.tickets"
    @property
    def op(self) -> Op: ...
    @property
    def before(self) -> Image | None: ...
    @property
    def after(self) -> Image | None: ...
    @property
    def position(self) -> int: ...

    def changed(self, column: str) -> bool:
        """Both images present and ``column`` differs between them."""
        ...

    def changed_columns(self) -> frozenset[str]:
        """Every column that differs between the images (empty unless both are present)."""
        ...


@dataclass(frozen=True)
class TxView:
    """A committed transaction as derivers see it."""

    xid: int
    end_lsn: int
    commit_time: datetime  # aware, UTC
    changes: Sequence[Change]  # folded
    messages: Sequence[tuple[str, bytes]] = ()  # transactional logical messages (prefix, content)

    def of(self, table: str) -> list[Change]:
        return [c for c in self.changes if c.table == table]

    @property
    def occurred_at(self) -> str:
        """The commit time in the canonical form: every change-driven event's ``occurredAt``."""
        return canonical_time(self.commit_time)


@dataclass(frozen=True, eq=False)
class StateIndex:
    """A lookup a deriver asks the state to keep for it: every row of ``table`` is found under
    each key ``keys(row)`` yields (none: not found). ``keys`` must be a pure function of the row;
    the state keeps the index current as rows change. For lookups no single column answers,
    e.g. schedule entries by the UTC days they overlap. Compared by identity: define one per
    lookup, at module level."""

    table: str
    name: str
    keys: Callable[[Image], Iterable[Hashable]]


@dataclass(frozen=True, eq=False)
class StateTotal:
    """A sum over reference rows a deriver asks the state to keep current for it, by key —
    typically a sum over a join (hours booked per user and day: entries × their assignee rows),
    which no lookup answers without reading every row it sums.

    ``contributions(view, table, row)`` yields ``(key, amount)`` for what ``row`` of ``table``
    adds to the totals *together with the rows of the other* ``tables`` *as* ``view`` *holds
    them*: for a join, every combination the row is part of, each combination once. The state
    keeps the totals by taking a row's contributions away before it changes (the rest of the
    state as it is) and adding the new row's after, so each combination is counted exactly
    while any of its rows changes; it builds them first from the rows of ``tables[0]`` (each
    combination has one row there). ``contributions`` must be pure and read only ``tables``.
    Amounts are integers (exact: no drift however often a row changes). Compared by identity:
    define one per total, at module level."""

    tables: tuple[str, ...]
    name: str
    contributions: Callable[[StateView, str, Image], Iterable[tuple[Hashable, int]]]


def scan_total(view: StateView, total: StateTotal, key: Hashable, rows: Iterable[Image]) -> int:
    """``total`` under ``key`` computed from ``rows``, every row of ``total.tables[0]`` that
    ``view`` holds — for a view that does not keep totals (a test twin); the state keeps them."""
    table = total.tables[0]
    return sum(
        amount for row in rows for found, amount in total.contributions(view, table, row) if found == key
    )


class StateView(Protocol):
    """Replicated reference rows, as of the transaction being derived."""

    def get(self, table: str, key: tuple[str, ...]) -> Image | None:
        """The row of ``table`` whose primary key (in key column order, canonical forms) is ``key``."""
        ...

    def find(self, table: str, column: str, value: Any) -> list[Image]:
        """Rows of ``table`` whose ``column`` equals ``value``."""
        ...

    def lookup(self, index: StateIndex, key: Hashable) -> list[Image]:
        """Rows of ``index.table`` that ``index.keys`` files under ``key`` (in no order)."""
        ...

    def total(self, total: StateTotal, key: Hashable) -> int:
        """The sum ``total`` keeps under ``key`` as of the transaction (0 when nothing adds to it)."""
        ...


@dataclass(frozen=True)
class Timer:
    """A durable timer: one stage instance of one subject, owned by one deriver."""

    key: str  # the deriver's identity for the stage instance, e.g. "sla:<tenant>:<ticket>:resolution"
    deriver: str
    tenant: str
    subject_id: str
    stage: str
    due_at: datetime  # aware UTC
    state: TimerState = "armed"
    data: Mapping[str, Any] = field(default_factory=dict)  # JSON-able; read back by fire()


class TimerOps(Protocol):
    """What derive() may do with its timers; the framework persists it with the checkpoint."""

    def get(self, key: str) -> Timer | None: ...

    def arm(
        self,
        key: str,
        change: Change,
        *,
        tenant: str,
        subject_id: str,
        stage: str,
        due_at: datetime,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Create the timer, or move an armed/paused one to ``due_at`` (state becomes armed).
        A fired or settled timer is left alone: exactly one verdict per stage instance.
        ``change`` is the row change of the transaction being derived that arms it: the timer
        event's source names that change (its table, and its transaction's LSN, xid and commit
        time), and a TRUNCATE of its table forgets the timer, as a DELETE of the row would.
        Moving a timer re-arms it, so the source becomes the change that moved it."""
        ...

    def pause(self, key: str) -> None:
        """An armed timer stops counting: it will not fire until armed again."""
        ...

    def settle(self, key: str) -> None:
        """The stage got its verdict from a change (e.g. met): the timer never fires."""
        ...

    def forget(self, key: str) -> None:
        """Drop the timer entirely (a new stage instance may then be armed under the key)."""
        ...


class Derived(NamedTuple):
    """A draft plus where it came from: the position of the row change and its table.

    Events of one transaction are delivered ordered by ``position``, then in the order the
    deriver returned them (its declared order of event types).
    """

    draft: EventDraft
    position: int
    table: str


class Deriver(Protocol):
    name: str
    tables: frozenset[str]  # tables whose changes trigger derive(); others are skipped
    state_tables: frozenset[str]  # reference tables it reads through StateView
    reads: Reads  # every column its rules read, with the event types that depend on it

    def derive(self, tx: TxView, state: StateView, timers: TimerOps) -> list[Derived]:
        """The drafts of one transaction. Their payloads are handed over: the watcher's envelopes
        take the payload dicts (and the lists and dicts in them) as they are, so a deriver never
        keeps or changes one after returning it; drafts may share containers."""
        ...

    def fire(self, timer: Timer, state: StateView) -> list[EventDraft]:
        """The watermark passed ``timer.due_at`` while it was armed: the timer-driven events.
        Their drafts carry ``timer_stage`` and ``due_at`` (the key uses them)."""
        ...


#: The canonical time text (``2026-01-02T03:04:05.678Z``) and back, for derivers: the one
#: definition is :mod:`catalog.forms` (a naive datetime, or text without a zone, is refused).
canonical_time = format_timestamp
parse_time = parse_timestamp
