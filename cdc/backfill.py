"""``cdc backfill``: replay the change journal through the derivers, byte-identical to the live run.

A backfill feeds a new deriver, a fixed rule or a new sink with history, without duplicating
what was delivered. It reads the slot's journal (:mod:`cdc.journal`) from its latest start at or
before the range — the snapshot of the reference tables taken when ``cdc setup`` created the
slot, or a state snapshot ``cdc journal prune`` took (:func:`take_snapshot`) — and sends every
journaled transaction, in commit order, through the very path of ``cdc watch``: a
:class:`~cdc.watch.Watcher` set up over a state and timers of its own (:meth:`Watcher.process`:
timers, state, :mod:`cdc.derive`, :mod:`cdc.envelopes`, :mod:`cdc.batch`). So:

* the state (and the timers) are rebuilt as of ``--since`` by replaying what came before it
  (from the start) without emitting, and every lookup is as of its transaction, as live;
* timers fire in event time — the watermark is the replayed commit time, moved by the replayed
  heartbeats too — so a breach that happened in the range comes with its original due time;
* envelopes are byte-identical to the live run's: the same slot in ``source``, the same keys
  and ids, the same order. Into the original sink nothing is added twice (the outbox's unique
  id, the Redis/NATS de-duplication horizon); into a new sink everything arrives once.

A backfill never touches the live checkpoint, slot, state or timers: it reads the journal and
writes only the sink and its own row of ``<schema>.backfill_runs`` (``sql/backfill.sql``).

**Range** (:func:`resolve_range`): ``--since``/``--until`` take an LSN (``X/Y``: transactions
whose end LSN is after ``--since`` and at most ``--until``, like a checkpoint) or a timestamp
(transactions committed at or after ``--since`` and before ``--until``); without ``--until`` the
range ends at the last journaled transaction when the run starts. ``--event-type`` and
``--deriver`` restrict what is emitted; only the named derivers run.

**Resumable and safe.** A run has an id and a position — the end LSN of the last replayed
transaction whose events the sink durably took, written with the sink's transaction when the
sink is an outbox in the journal's database, right after it otherwise (a crash between the two
sends that batch again, and the sink's de-duplication absorbs it). ``--resume ID`` takes the run's
own range, filters and sink (other ones given with it are refused, :func:`load_run`), replays from
the latest start at or before its position again (the state needs it) and emits after it. While a run runs, its
session holds an advisory lock; a run into the same sink over an overlapping range is refused
while that lock is held (a run killed outright is not running any more, and can be resumed).

**What it cannot do** (said with exit 1 and one line): a slot whose journal has no first entry
(set up before the journal existed), a journal that was off (``--no-journal``) or pruned
(``cdc journal prune``) between the replay's start and ``--until`` — the range that is gone is
named, and for a pruned one the LSN after which a backfill can start; a ``--since`` before the
slot's first entry (a recreated slot's journal starts over); a journal database without the
journal's tables (a wrong ``--journal-dsn``). Changes
a live watcher withheld (:mod:`cdc.relations`: a table written without FULL identity, columns
that vanished) are replayed as journaled, so a backfill over such a stretch may emit what the
live run withheld.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import errors as pgerr
from psycopg import sql

from catalog.envelope import EventDraft
from catalog.errors import FormError
from catalog.forms import parse_timestamp
from derivers.base import Derived, Deriver, StateView, Timer, TimerOps, TxView

from . import journal, queries
from .changelog import DEFAULT_SPILL_BYTES, SpillLimits
from .checkpoint import Position
from .config import DEFAULT_SPILL_CHANGES
from .connect import connect
from .errors import CdcError, ConfigError, translate
from .lsn import format_lsn, parse_lsn
from .relations import RelationGuard, merge_reads
from .sinks.base import Sink
from .sinks.memory import DiscardSink
from .startup import Started
from .state import StateStore
from .timers import TimerStore
from .values import canonical_timestamp
from .watch import Watcher, WatchOptions

log = logging.getLogger("cdc.backfill")

#: The first key of the advisory locks a running backfill holds (the second is its run id).
RUN_LOCK_CLASS: Final = 0x63646362  # "cdcb"
_LSN_RE: Final = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
#: The tables of the journal's database a backfill reads first (a missing one: a wrong --journal-dsn).
_JOURNAL_TABLES: Final = re.compile(r"\b(journal_history|change_log\w*|backfill_runs)\b")


class NoHistory(CdcError):
    hint = "keep the journal on (the default) and let `cdc watch` record history; see docs/backfill.md"


class HistoryGone(CdcError):
    hint = "backfill a slot whose journal is whole (journal_retention_days keeps more days), see docs/backfill.md"


class RunConflict(CdcError):
    hint = "wait for the other run to finish, or backfill a range that does not overlap it"


class ResumeMismatch(ConfigError):
    hint = "resume with the sink the run was started with and without range or filter options, or start a new run"


class RunNotFound(CdcError):
    hint = "name a run of <schema>.backfill_runs (`cdc backfill` prints its id when it starts)"


def _q(name: str, schema: str) -> sql.Composed | sql.SQL:
    return queries.query("backfill", name, schema=sql.Identifier(schema))


@dataclass
class BackfillOptions:
    dsn: str  # the watched database (the default outbox's)
    journal_dsn: str | None = None  # the database of the watcher's own schema; None: dsn
    slot: str = "cdc_events"
    schema: str = "cdc"
    since: str | None = None
    until: str | None = None
    event_types: tuple[str, ...] = ()
    derivers: tuple[str, ...] = ()
    dry_run: bool = False
    max_rate: float | None = None  # events per second
    resume: int | None = None
    sink_label: str = "postgres"  # the sink as the run records it (credentials masked)
    batch_max_events: int = 5000
    batch_max_transactions: int = 1000
    spill_changes: int = DEFAULT_SPILL_CHANGES
    spill_bytes: int = DEFAULT_SPILL_BYTES
    progress: bool | None = None  # a progress bar (None: when stderr is a terminal)
    progress_interval: float = 10.0  # seconds between progress lines without a bar


@dataclass
class BackfillResult:
    run_id: int | None
    from_lsn: int
    to_lsn: int
    transactions: int = 0  # replayed in the range
    rows: int = 0  # journal rows read
    events: int = 0  # emitted (delivered, or counted by a dry run)
    dead_letters: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


# --- range and history ---------------------------------------------------------------------------


def parse_bound(text: str | None, name: str) -> int | datetime | None:
    """``--since``/``--until`` as given: an LSN (``X/Y``) or an aware timestamp."""
    if text is None:
        return None
    if _LSN_RE.match(text):
        return parse_lsn(text)
    try:
        return parse_timestamp(text)
    except FormError as exc:
        raise ConfigError(
            f"--{name} {text!r} is neither an LSN nor a timestamp with a zone ({exc})",
            hint="give an LSN like 0/16B3748 or a time like 2026-01-02T03:04:05Z",
        ) from None


def _bound(conn: psycopg.Connection[Any], opts: BackfillOptions, text: str | None, name: str) -> int | None:
    """An LSN for ``--since``/``--until`` (an LSN as given; a time: the last end LSN before it)."""
    bound = parse_bound(text, name)
    if isinstance(bound, datetime):
        return journal.lsn_before(conn, opts.slot, opts.schema, bound)
    return bound


def resolve_range(conn: psycopg.Connection[Any], opts: BackfillOptions) -> tuple[int, int]:
    """(after, up to) end LSNs of the transactions whose events the run emits."""
    since = _bound(conn, opts, opts.since, "since") or 0
    until = _bound(conn, opts, opts.until, "until")
    if until is None:  # the end of the history known now (a pruned one included)
        ends = [h.to_lsn for h in journal.history(conn, opts.slot, opts.schema)]
        until = max([journal.last_lsn(conn, opts.slot, opts.schema), *ends])
    if until < since:
        raise ConfigError(f"--until ({format_lsn(until)}) comes before --since ({format_lsn(since)})")
    return since, until


@dataclass(frozen=True)
class Start:
    """Where a replay begins: the slot's first journal entry (the bootstrap snapshot, replayed
    from ``lsn`` on), or a state snapshot (loaded, then the journal after ``lsn``)."""

    lsn: int
    snapshot: bool


def check_history(conn: psycopg.Connection[Any], slot: str, schema: str, since: int, until: int) -> Start:
    """Where a replay that emits after ``since`` up to ``until`` starts: the latest start at or
    before ``since`` — once the history from there up to ``until`` is whole."""
    entries = journal.history(conn, slot, schema)
    boots = [h for h in entries if h.kind == "bootstrap"]
    if not boots:
        raise NoHistory(
            f"slot {slot} has no journal history (its slot was set up before the journal existed)"
        )
    first = boots[-1].from_lsn  # a recreated slot starts over
    if 0 < since < first:
        why = (
            "the slot was recreated there and its journal starts over"
            if len(boots) > 1
            else "the slot was created there: nothing before it was recorded"
        )
        raise HistoryGone(
            f"slot {slot}: the history from {format_lsn(since)} to {format_lsn(first)} cannot be replayed: "
            f"its journal begins at {format_lsn(first)} ({why})",
            hint=f"backfill from --since {format_lsn(first)} on (or leave --since out)",
        )
    start = Start(first, False)
    for h in entries:
        if h.kind == "snapshot" and first <= h.from_lsn <= since and h.from_lsn >= start.lsn:
            start = Start(h.from_lsn, True)
    for h in entries:
        if h.kind not in ("off", "pruned") or h.to_lsn <= start.lsn or h.from_lsn > until:
            continue
        if h.to_lsn < first:
            continue  # history of an earlier slot of the same name
        when = (
            f" (committed {canonical_timestamp(h.from_time)} to {canonical_timestamp(h.to_time)})"
            if h.from_time is not None and h.to_time is not None
            else ""
        )
        if h.kind == "off":
            raise NoHistory(
                f"slot {slot}: the journal was off (--no-journal) from {format_lsn(h.from_lsn)} to "
                f"{format_lsn(h.to_lsn)}: that history was never recorded"
            )
        later = [e.from_lsn for e in entries if e.kind == "snapshot" and e.from_lsn >= h.to_lsn]
        since_then = (
            f"; a backfill can start after {format_lsn(min(later))} (--since), where a state snapshot was taken"
            if later
            else "; no state snapshot was taken after it"
        )
        raise HistoryGone(
            f"slot {slot}: the journal from {format_lsn(h.from_lsn)} to {format_lsn(h.to_lsn)}{when} "
            f"was pruned on {canonical_timestamp(h.recorded_at)}{since_then}"
        )
    return start


# --- what is emitted -----------------------------------------------------------------------------


class Gate:
    """Whether drafts pass: only while the replay is inside the run's range, and only of the
    wanted event types. Shared by every :class:`GatedDeriver` of a run."""

    def __init__(self, event_types: frozenset[str] | None) -> None:
        self.event_types = event_types
        self.open = False

    def passes(self, event_type: str) -> bool:
        return self.open and (self.event_types is None or event_type in self.event_types)


class GatedDeriver:
    """A deriver that runs as ever (its timers arm, move and fire before the range too) but
    whose drafts reach the catalog only through its :class:`Gate`."""

    def __init__(self, inner: Deriver, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate
        self.name = inner.name
        self.tables = inner.tables
        self.state_tables = inner.state_tables
        self.reads = inner.reads

    def derive(self, tx: TxView, state: StateView, timers: TimerOps) -> list[Derived]:
        derived = self.inner.derive(tx, state, timers)
        return [d for d in derived if self.gate.passes(d.draft.event_type)]

    def fire(self, timer: Timer, state: StateView) -> list[EventDraft]:
        drafts = self.inner.fire(timer, state)
        return [d for d in drafts if self.gate.passes(d.event_type)]

    def __getattr__(self, name: str) -> Any:  # any other part of the protocol, as the rule has it
        return getattr(self.inner, name)


def select_derivers(registry: Sequence[Deriver], names: Sequence[str]) -> list[Deriver]:
    """The registry's derivers named (all of them when none is), in registry order."""
    if not names:
        return list(registry)
    known = {d.name for d in registry}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ConfigError(
            f"unknown deriver {', '.join(unknown)}", hint=f"use one of {', '.join(d.name for d in registry)}"
        )
    return [d for d in registry if d.name in names]


def check_event_types(types: Sequence[str]) -> frozenset[str] | None:
    """The event types asked for (None: all), each one the catalog knows."""
    if not types:
        return None
    from catalog.registry import specs

    known = {s.event_type for s in specs()}
    unknown = sorted(set(types) - known)
    if unknown:
        raise ConfigError(f"unknown event type {', '.join(unknown)}", hint="`cdc catalog list` names them")
    return frozenset(types)


# --- runs ----------------------------------------------------------------------------------------


@dataclass
class Run:
    """A row of ``backfill_runs``, and the session that holds its lock."""

    conn: psycopg.Connection[Any]  # autocommit, to the journal's database
    schema: str
    id: int
    position: int

    def advance(self, conn: psycopg.Connection[Any], position: Position, events: int) -> None:
        conn.execute(
            _q("advance_run", self.schema),
            {"id": self.id, "position": format_lsn(position.end_lsn), "events": events},
        )

    def finish(self, status: str) -> None:
        self.conn.execute(_q("finish_run", self.schema), {"id": self.id, "status": status})
        self.conn.execute(_q("unlock_run", self.schema), {"lock_class": RUN_LOCK_CLASS, "id": self.id})


@dataclass(frozen=True)
class StoredRun:
    """A run of ``backfill_runs`` as ``--resume`` takes it over: the options it was started with
    (its slot, bounds, event types, derivers and sink), its range and its position."""

    id: int
    opts: BackfillOptions
    since: int
    until: int
    position: int


def load_run(conn: psycopg.Connection[Any], opts: BackfillOptions) -> StoredRun:
    """The run ``opts.resume`` names, with the options it was started with. A resumed run goes on
    with its own range and filters, into its own sink: :class:`ResumeMismatch` when the command
    line asks for other ones (they would be ignored, or send the rest elsewhere)."""
    assert opts.resume is not None
    given = [
        name
        for name, value in (
            ("--since", opts.since),
            ("--until", opts.until),
            ("--event-type", opts.event_types),
            ("--deriver", opts.derivers),
            ("--dry-run", opts.dry_run),
        )
        if value
    ]
    if given:
        raise ResumeMismatch(
            f"--resume goes on with the run's own range and filters; {', '.join(given)} cannot change them"
        )
    row = conn.execute(_q("read_run", opts.schema), {"id": opts.resume}).fetchone()
    if row is None:
        raise RunNotFound(f"backfill run {opts.resume} does not exist")
    slot, since_t, until_t, from_lsn, to_lsn, types, names, sink, position, _status, _events = row
    if sink != opts.sink_label:
        raise ResumeMismatch(
            f"backfill run {opts.resume} delivers into {sink}, and the sink now is {opts.sink_label}"
        )
    stored = replace(
        opts,
        slot=slot,
        since=since_t,
        until=until_t,
        event_types=tuple(types or ()),
        derivers=tuple(names or ()),
    )
    return StoredRun(opts.resume, stored, parse_lsn(from_lsn), parse_lsn(to_lsn), parse_lsn(position))


def start_run(
    conn: psycopg.Connection[Any],
    opts: BackfillOptions,
    since: int,
    until: int,
    resumed: StoredRun | None = None,
) -> Run:
    """Register (or take over the ``resumed`` run, :func:`load_run`) a run and hold its lock; a
    running run into the same sink over an overlapping range refuses it."""
    with conn.transaction():
        conn.execute(_q("lock_registry", opts.schema), {"lock_class": RUN_LOCK_CLASS})
        if resumed is not None:
            run_id, at = resumed.id, resumed.position
        else:
            row = conn.execute(
                _q("insert_run", opts.schema),
                {
                    "slot": opts.slot,
                    "since": opts.since,
                    "until": opts.until,
                    "from_lsn": format_lsn(since),
                    "to_lsn": format_lsn(until),
                    "event_types": list(opts.event_types) or None,
                    "derivers": list(opts.derivers) or None,
                    "sink": opts.sink_label,
                },
            ).fetchone()
            assert row is not None
            run_id, at = int(row[0]), since
        others = conn.execute(
            _q("overlapping_runs", opts.schema),
            {
                "slot": opts.slot,
                "sink": opts.sink_label,
                "id": run_id,
                "from_lsn": format_lsn(since),
                "to_lsn": format_lsn(until),
                "lock_class": RUN_LOCK_CLASS,
            },
        ).fetchall()
        if others:
            other, a, b = others[0]
            raise RunConflict(
                f"backfill run {other} into the same sink is running over {a} to {b}, which overlaps this range"
            )
        locked = conn.execute(
            _q("lock_run", opts.schema), {"lock_class": RUN_LOCK_CLASS, "id": run_id}
        ).fetchone()
        if not (locked and locked[0]):
            raise RunConflict(f"backfill run {run_id} is running in another session")
        if resumed is not None:
            conn.execute(_q("restart_run", opts.schema), {"id": run_id})
    return Run(conn, opts.schema, run_id, at)


class RunPositions:
    """The run's position as the :class:`~cdc.checkpoint.CheckpointStore` of its deliveries:
    advanced in the sink's transaction when that is the journal's database (exactly once), and
    by the caller once the sink committed (:meth:`delivered`), with the events it took."""

    def __init__(self, run: Run | None) -> None:
        self.run = run

    def read(self, conn: psycopg.Connection[Any]) -> int:
        return self.run.position if self.run is not None else 0

    def advance(self, conn: psycopg.Connection[Any], position: Position) -> None:
        if self.run is not None and conn is self.run.conn:
            self.run.advance(conn, position, 0)

    def delivered(self, position: Position, events: int) -> None:
        if self.run is not None:
            self.run.advance(self.run.conn, position, events)


# --- the replay ----------------------------------------------------------------------------------


class Pace:
    """``--max-rate``: at most ``rate`` events per second, counted from :meth:`start` on (no
    limit when ``rate`` is None). :meth:`wait` sleeps while the events emitted so far are ahead
    of the rate; :meth:`report` logs how often and how long it held the run back."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.started: float | None = None
        self.pauses = 0
        self.slept = 0.0

    def start(self) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def wait(self, emitted: int) -> None:
        if not self.rate or self.started is None:
            return
        ahead = emitted / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            self.pauses += 1
            self.slept += ahead
            time.sleep(ahead)

    def report(self) -> None:
        if self.rate:
            log.info(
                "--max-rate %g events/s: held back %d times, %.1f s in all",
                self.rate,
                self.pauses,
                self.slept,
            )


class Progress:
    """A rich progress bar on a terminal (rows, events, rate, ETA), else a log line now and then."""

    def __init__(
        self, total_rows: int | None, bar: bool, interval: float, what: str = "journal rows"
    ) -> None:
        self.total = total_rows  # None: not counted beforehand (no "of N", no time left)
        self.what = what
        self.interval = interval
        self.started = time.monotonic()
        self.next_at = self.started + interval
        self._bar: Any = None
        if bar:
            from rich import progress as bars
            from rich.console import Console

            self._bar = bars.Progress(
                bars.TextColumn("backfill"),
                bars.BarColumn(),
                bars.MofNCompleteColumn(),
                bars.TextColumn(what + " · {task.fields[events]} events · {task.fields[rate]} rows/s"),
                bars.TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._bar.add_task("replay", total=total_rows or None, events=0, rate=0)
            self._bar.start()

    def update(self, rows: int, events: int) -> None:
        now = time.monotonic()
        rate = rows / max(now - self.started, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, completed=rows, events=events, rate=f"{rate:,.0f}")
        elif now >= self.next_at:
            self.next_at = now + self.interval
            if self.total is None:
                log.info("backfill: %d %s, %d events, %.0f rows/s", rows, self.what, events, rate)
                return
            left = (self.total - rows) / rate if rate and self.total > rows else 0.0
            log.info(
                "backfill: %d of %d %s, %d events, %.0f rows/s, about %.0f s left",
                rows,
                self.total,
                self.what,
                events,
                rate,
                left,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def run_backfill(
    opts: BackfillOptions,
    registry: Sequence[Deriver],
    open_sink: Callable[[], Sink],
) -> BackfillResult:
    """The backfill of the module docstring: ``registry`` is the deriver registry (``--deriver``
    picks from it), ``open_sink`` opens the sink (not called for a dry run)."""
    journal_dsn = opts.journal_dsn or opts.dsn
    check_event_types(opts.event_types)  # a bad option is refused before anything connects
    select_derivers(registry, opts.derivers)
    parse_bound(opts.since, "since")
    parse_bound(opts.until, "until")
    conn = connect(journal_dsn, purpose=f"backfill {opts.slot}", bounded=True)
    try:
        resumed = load_run(conn, opts) if opts.resume is not None else None
        if resumed is not None:  # its own options, range and position; the history from there
            opts, since, until = resumed.opts, resumed.since, resumed.until
            emit_after = max(since, resumed.position)
        else:
            since, until = resolve_range(conn, opts)
            emit_after = since
        start = check_history(conn, opts.slot, opts.schema, emit_after, until)
        types = check_event_types(opts.event_types)
        chosen = select_derivers(registry, opts.derivers)
        run = None if opts.dry_run else start_run(conn, opts, since, until, resumed)
        if run is not None:
            log.info(
                "backfill run %d: slot %s, %s to %s, into %s",
                run.id,
                opts.slot,
                format_lsn(since),
                format_lsn(until),
                opts.sink_label,
            )
        try:
            result = _replay(opts, conn, run, chosen, types, start, since, until, emit_after, open_sink)
        except BaseException:
            if run is not None:
                # the connection may be what failed: the run then stays 'running' without its lock
                with contextlib.suppress(psycopg.Error):
                    run.finish("failed")
            raise
        if run is not None:
            run.finish("done")
        return result
    except pgerr.UndefinedTable as exc:
        if not _JOURNAL_TABLES.search(exc.diag.message_primary or ""):
            raise translate(exc, slot=opts.slot) from exc
        raise NoHistory(
            f"the database of the journal has no journal tables of schema {opts.schema} ({exc.diag.message_primary})",
            hint="point --journal-dsn at the database where `cdc watch` keeps its schema (its --sink "
            "outbox database, else --dsn), and --schema at that schema",
            sqlstate=exc.sqlstate,
        ) from exc
    except psycopg.Error as exc:
        raise translate(exc, slot=opts.slot) from exc
    finally:
        conn.close()


def _replay(
    opts: BackfillOptions,
    conn: psycopg.Connection[Any],
    run: Run | None,
    derivers: list[Deriver],
    types: frozenset[str] | None,
    start: Start,
    since: int,
    until: int,
    emit_after: int,
    open_sink: Callable[[], Sink],
    keep: Callable[[Watcher], None] | None = None,
) -> BackfillResult:
    """The replay of the module docstring; ``keep`` sees the watcher (its state, timers and
    watermark) once the last transaction is replayed."""
    started = time.monotonic()
    result = BackfillResult(run.id if run is not None else None, since, until)
    sink = DiscardSink() if opts.dry_run else open_sink()
    # the journal is read (and counted, for the progress: a scan of the whole range) on a
    # connection of its own, without the statement timeout of the bounded one
    reader = connect(opts.journal_dsn or opts.dsn, purpose=f"backfill {opts.slot}: journal", autocommit=False)
    store: psycopg.Connection[Any] | None = None
    progress: Progress | None = None
    try:
        total_rows = journal.count_rows(reader, opts.slot, opts.schema, start.lsn, until)
        progress = Progress(
            total_rows,
            sys.stderr.isatty() if opts.progress is None else opts.progress,
            opts.progress_interval,
        )
        writer = sink.store_writer()
        journal_dsn = opts.journal_dsn or opts.dsn
        if writer is not None and (writer.store_dsn or opts.dsn) != journal_dsn:
            store = connect(writer.store_dsn or opts.dsn, purpose=f"backfill {opts.slot}: sink", bounded=True)
            writer.prepare(store)
        elif writer is not None:
            writer.prepare(conn)
        gate = Gate(types)
        gated: list[Deriver] = [GatedDeriver(d, gate) for d in derivers]
        shapes = journal.load_shapes(conn, opts.slot, opts.schema)
        primary_keys = {s.table: s.primary_key for s in shapes.values()}
        wanted = frozenset().union(*(d.state_tables for d in derivers))
        state = StateStore(opts.slot, opts.schema, {t: pk for t, pk in primary_keys.items() if t in wanted})
        timers = TimerStore(opts.slot, opts.schema)
        relations = RelationGuard(opts.slot, opts.schema, merge_reads(d.reads for d in derivers))
        positions = RunPositions(run)
        watch_opts = WatchOptions(
            opts.dsn,
            slot=opts.slot,
            schema=opts.schema,
            batch_max_events=opts.batch_max_events,
            batch_max_transactions=opts.batch_max_transactions,
            batch_max_delay=float("inf"),
            spill_changes=opts.spill_changes,
            spill_bytes=opts.spill_bytes,
            journal=False,
        )
        watcher = Watcher(watch_opts, sink, gated)
        watcher.use(
            Started(
                store=store or conn,
                primary_keys=primary_keys,
                state=state,
                timers=timers,
                relations=relations,
                checkpoints=positions,
                checkpoint=emit_after,
            )
        )
        if start.snapshot:  # the state, timers and watermark as a snapshot kept them
            snap = journal.load_snapshot(conn, opts.slot, opts.schema, start.lsn)
            state.restore(snap.rows)
            for timer, by in snap.timers:
                timers.arm(timer, by)  # as it was: armed, paused, fired or settled
            watcher.watermark.time = snap.watermark
            timers.committed()
        delivery = watcher.delivery
        delivery.record_dead_letters = False
        stats = watcher.stats

        def nothing(_conn: psycopg.Connection[Any]) -> None:
            pass  # the live state and timers are the watcher's: a backfill keeps its own in memory

        def commit() -> None:
            delivered = delivery.commit(nothing)
            positions.delivered(delivered.position, delivered.events)
            watcher.settle(delivered)
            result.events += delivered.events

        spill = SpillLimits(opts.spill_changes, opts.spill_bytes)
        pace = Pace(opts.max_rate)
        first = start.lsn + 1 if start.snapshot else start.lsn  # a snapshot covers its own LSN
        for tx in journal.replay(reader, opts.slot, opts.schema, first, until, spill):
            rows = len(tx.changes) + len(tx.messages) or 1
            result.rows += rows
            if tx.xid == 0:  # a snapshot entry: the reference rows, as the bootstrap copied them
                state.apply_all(tx.changes)
                tx.close()
                continue
            gate.open = tx.end_lsn > emit_after
            if gate.open:
                result.transactions += 1
                pace.start()  # --max-rate counts from where the range begins
            watcher.process(tx)
            if delivery.full():
                commit()
            emitted = sum(stats.by_type.values())
            pace.wait(emitted)
            progress.update(result.rows, emitted)
        if delivery.pending:
            commit()
        pace.report()
        if keep is not None:
            keep(watcher)
        progress.update(result.rows, sum(stats.by_type.values()))
        result.by_type = {k: v for k, v in sorted(stats.by_type.items()) if v}
        result.dead_letters = stats.dead_letters
        if opts.dry_run:
            result.events = sum(result.by_type.values())
    finally:
        if progress is not None:
            progress.close()
        reader.close()
        sink.close()
        if store is not None:
            store.close()
    result.seconds = time.monotonic() - started
    return result


def take_snapshot(opts: BackfillOptions, registry: Sequence[Deriver], lsn: int) -> bool:
    """Record the slot's state and timers as of ``lsn`` (``cdc journal prune`` calls it before it
    drops the days up to there): the journal is replayed from its latest start through every
    deriver of the registry, emitting nothing. False, with a warning, when the history up to
    ``lsn`` is not whole (nothing to rebuild the state from)."""
    conn = connect(opts.journal_dsn or opts.dsn, purpose=f"journal snapshot {opts.slot}", bounded=True)
    try:
        try:
            start = check_history(conn, opts.slot, opts.schema, lsn, lsn)
        except (NoHistory, HistoryGone) as exc:
            log.warning("no state snapshot of slot %s at %s: %s", opts.slot, format_lsn(lsn), exc.one_line())
            return False
        if start.snapshot and start.lsn == lsn:
            return True
        taken: list[journal.Snapshot] = []

        def keep(watcher: Watcher) -> None:
            rows = [(t, k, row) for t, keyed in watcher.state.rows.items() for k, row in keyed.items()]
            timers = [(t, watcher.timers.armed_by[k]) for k, t in watcher.timers.timers.items()]
            taken.append(journal.Snapshot(lsn, watcher.watermark.time, rows, timers))

        quiet = replace(opts, dry_run=True, progress=False, event_types=(), derivers=())
        _replay(quiet, conn, None, list(registry), None, start, lsn, lsn, lsn, DiscardSink, keep)
        journal.write_snapshot(conn, opts.slot, opts.schema, taken[0])
        return True
    except psycopg.Error as exc:
        raise translate(exc, slot=opts.slot) from exc
    finally:
        conn.close()


def events_table(by_type: Mapping[str, int], dry_run: bool) -> Any:
    """The summary's rich table of events by type (those with none left out), then the total."""
    from rich.table import Table

    table = Table(title="events by type" + (" (dry run: nothing delivered)" if dry_run else ""))
    table.add_column("event type")
    table.add_column("events", justify="right")
    for event_type, count in sorted(by_type.items()):
        if count:
            table.add_row(event_type, f"{count:,}")
    table.add_row("total", f"{sum(by_type.values()):,}")
    return table


def summary(result: BackfillResult, dry_run: bool) -> str:
    """The closing table: events by type, then the totals."""
    from rich.console import Console

    console = Console(width=100, record=True, file=io.StringIO(), force_terminal=False)
    console.print(events_table(result.by_type, dry_run))
    run = f"run {result.run_id}: " if result.run_id is not None else ""
    tail = (
        f"{run}replayed {result.rows:,} journal rows, {result.transactions:,} transactions in "
        f"{format_lsn(result.from_lsn)} to {format_lsn(result.to_lsn)}, {result.dead_letters} dead letters, "
        f"in {result.seconds:.1f} s"
    )
    return console.export_text().rstrip() + "\n" + tail
