"""``cdc backfill --from-audit-log``: the application's ``ticket_audit_logs`` rows read in order and
turned into envelopes of the ticket events they record.

What a row records — the mapping, the keys and what cannot be reconstructed — is the pure part,
``derivers.audit_history`` (rows in, drafts out); the command line hands it in
(:class:`AuditMapping`), as it hands the watcher its derivers. Here: the read and the envelopes.

Rows are read with one server-side cursor in ``(occurred_at, audit_id)`` order (``sql/
audit_history.sql``), a few thousand at a time: memory stays bounded whatever the range. Every
event is sourced at ``{slot, lsn "0/0", xid 0, commitTime = occurred_at, table
"public.ticket_audit_logs"}``: Postgres's invalid LSN and transaction id, which no committed
transaction has, so no live key (which ends in a commit's end LSN) can equal an audit key.

**Invalid drafts** (a value in the row that its payload model rejects, a non-uuid status id say)
are a counted skip, not a dead letter: :class:`AuditStats` ``invalid`` counts them by event type
and a warning names the key and the failing field paths (never values). The dead-letter table is
keyed by the change that produced an event and written with a checkpoint; an audit history has
neither, and re-reading the same audit rows would reject the same drafts again.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import errors as pgerr
from psycopg.rows import dict_row

from catalog.envelope import Envelope, EventDraft, EventValidationError, build_envelope
from catalog.forms import parse_timestamp

from . import journal, queries
from .backfill import BackfillOptions, Pace, Progress, check_event_types, events_table, parse_bound
from .connect import connect
from .errors import CdcError, ConfigError, translate
from .sinks.base import Batch, Sink, take_oversized
from .values import canonical_timestamp

log = logging.getLogger("cdc.audit_history")

# The engine reaches the derivers only through what it is given (the AuditMapping), never by
# import (tests/unit/test_import_layers.py): these three stand beside derivers.audit_history's.
AUDIT_TABLE: Final = "public.ticket_audit_logs"
#: (event type, reason) → rows that record the event but lack what its schema requires.
Skipped = Counter[tuple[str, str]]


def _occurred(row: Mapping[str, Any]) -> datetime:
    """The row's ``occurred_at``: an aware datetime (as psycopg reads it) or its text."""
    value = row["occurred_at"]
    return value if isinstance(value, datetime) else parse_timestamp(value)


#: The source LSN and xid of every audit-history event (see the module docstring).
AUDIT_LSN: Final = 0
AUDIT_XID: Final = 0


@dataclass(frozen=True)
class AuditMapping:
    """What the audit rows record (``derivers.audit_history``): ``yields`` audit event type → the
    events a row of it may record (the read's filter), ``drafts(row, skipped)`` one row's drafts."""

    yields: Mapping[str, tuple[str, ...]]
    drafts: Callable[[Mapping[str, Any], Skipped], list[EventDraft]]


class AuditLogMissing(CdcError):
    """The database has no ``public.ticket_audit_logs`` table."""

    hint = (
        "--from-audit-log reads the application's ticket activity log; point --dsn at the "
        "application's database (an application release without ticket activity has no such log)"
    )


@dataclass
class AuditStats:
    """What a run read and yielded: ``rows`` read; ``events`` by event type; ``skipped`` (event
    type, reason) → rows that record the event but lack what its schema requires (keyed by the
    row's own ``event_type`` when an update row yields nothing at all); ``unmapped``
    audit event type → rows that record no catalog event (documents, checklists, …); ``invalid``
    event type → drafts whose payload model rejected a value of the row."""

    rows: int = 0
    events: Counter[str] = field(default_factory=Counter)
    skipped: Skipped = field(default_factory=Counter)
    unmapped: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)


# --- drafts → envelopes --------------------------------------------------------------------------------


def audit_envelope(draft: EventDraft, row: Mapping[str, Any], slot: str) -> Envelope:
    """``draft`` (of ``row``) validated and wrapped: key ``…:audit-<audit_id>@0/0``, source
    ``{slot, lsn 0/0, xid 0, commitTime = occurred_at, table public.ticket_audit_logs}``. Raises
    :class:`~catalog.errors.EventValidationError` as :func:`catalog.envelope.build_envelope` does."""
    return build_envelope(
        draft, slot=slot, lsn=AUDIT_LSN, xid=AUDIT_XID, commit_time=_occurred(row), table=AUDIT_TABLE
    )


def audit_envelopes(
    conn: psycopg.Connection[Any],
    mapping: AuditMapping,
    *,
    slot: str,
    since: datetime | None = None,
    until: datetime | None = None,
    event_types: Collection[str] | None = None,
    tenant: str | None = None,
    stats: AuditStats | None = None,
    itersize: int = 2000,
) -> Iterator[Envelope]:
    """The envelopes of the ticket events recorded by ``public.ticket_audit_logs`` rows with
    ``occurred_at`` in [``since``, ``until``) (either open), of ``tenant`` when given, in
    ``(occurred_at, audit_id)`` order; only ``event_types`` when given. ``slot`` goes into
    ``source`` (the slot the live events name, so that a sink sees one slot). ``stats`` is filled
    as the rows are read. The rows come through a server-side cursor inside a transaction of
    ``conn`` (a savepoint when one is open). :class:`AuditLogMissing` when the table does not
    exist; other database errors as :func:`cdc.errors.translate` maps them."""
    stats = stats if stats is not None else AuditStats()
    wanted = frozenset(event_types) if event_types is not None else None
    audit_types: list[str] | None = None
    if wanted is not None:
        audit_types = sorted(t for t, yields in mapping.yields.items() if wanted.intersection(yields))
        if not audit_types:
            return
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime")
    params = {"tenant": tenant, "since": since, "until": until, "audit_types": audit_types}
    skipped: Skipped = Counter()
    try:
        with conn.transaction(), conn.cursor(name="cdc_audit_history", row_factory=dict_row) as cur:
            cur.itersize = itersize
            cur.execute(queries.query("audit_history", "audit_rows"), params)
            for row in cur:
                stats.rows += 1
                drafts = mapping.drafts(row, skipped)
                if not drafts and row["event_type"] not in mapping.yields:
                    stats.unmapped[row["event_type"]] += 1
                for draft in drafts:
                    if wanted is not None and draft.event_type not in wanted:
                        continue
                    try:
                        env = audit_envelope(draft, row, slot)
                    except EventValidationError as err:
                        stats.invalid[draft.event_type] += 1
                        log.warning("audit row not reconstructed %s: %s", err.key, ", ".join(err.paths))
                        continue
                    stats.events[env.event_type] += 1
                    yield env
    except pgerr.UndefinedTable as exc:
        raise AuditLogMissing(f"the database has no table {AUDIT_TABLE}", sqlstate=exc.sqlstate) from exc
    except psycopg.Error as exc:
        raise translate(exc, slot=slot) from exc
    finally:
        for (event_type, why), count in skipped.items():
            if wanted is None or wanted.intersection(mapping.yields.get(event_type, (event_type,))):
                stats.skipped[(event_type, why)] += count


# --- the run: cdc backfill --from-audit-log --------------------------------------------------------------


class AuditOptionError(ConfigError):
    hint = (
        "--from-audit-log takes --since/--until as timestamps (audit rows have no LSN), "
        "--event-type, --sink, --dry-run and --max-rate"
    )


@dataclass
class AuditRun:
    """What ``cdc backfill --from-audit-log`` did: the range it read, what it delivered (or would
    have, ``--dry-run``), and the notes it prints before its summary."""

    since: datetime | None
    until: datetime | None
    stats: AuditStats = field(default_factory=AuditStats)
    delivered: int = 0
    too_large: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _timestamp_bound(text: str | None, name: str) -> datetime | None:
    bound = parse_bound(text, name)
    if bound is not None and not isinstance(bound, datetime):
        raise AuditOptionError(f"--{name} {text}: an LSN, and audit rows have no LSN")
    return bound


def _journal_start(opts: BackfillOptions) -> datetime | None:
    """When the slot's journal begins (its bootstrap entry), None without one: the live run
    delivers what came after it under its own keys."""
    try:
        with connect(opts.journal_dsn or opts.dsn, purpose=f"backfill {opts.slot}", bounded=True) as conn:
            entries = journal.history(conn, opts.slot, opts.schema)
    except pgerr.UndefinedTable:
        return None  # no journal in this database: nothing to stop before
    except psycopg.Error as exc:
        raise translate(exc, slot=opts.slot) from exc
    starts = [e.from_time for e in entries if e.kind == "bootstrap" and e.from_time is not None]
    return min(starts) if starts else None


def run_audit_history(
    opts: BackfillOptions, mapping: AuditMapping, open_sink: Callable[[], Sink]
) -> AuditRun:
    """Read the audit rows of ``opts``' range and deliver their events to the sink ``open_sink``
    opens (none for a dry run), in order, in batches of ``opts.batch_max_events``. Without
    ``--until`` the range ends where the slot's journal begins; a slot whose journal has no
    start (no bootstrap entry, or no journal in that database) needs ``--until``. No run record: the keys make a
    re-run add nothing, so an interrupted run is simply run again."""
    if opts.resume is not None or opts.derivers:
        raise AuditOptionError("--resume and --deriver replay the journal; --from-audit-log reads no journal")
    types = check_event_types(opts.event_types)
    run = AuditRun(_timestamp_bound(opts.since, "since"), _timestamp_bound(opts.until, "until"))
    began = _journal_start(opts)
    if began is None and run.until is None:
        raise AuditOptionError(
            f"slot {opts.slot} has no journal start to stop at: without --until the audit rows would be "
            "read up to now, and the live run delivered the recent ones under its own keys",
            hint="give --until the time the live watcher began delivering (its first event's timestamp)",
        )
    if began is not None and run.until is None:
        run.until = began
        run.notes.append(
            f"up to {canonical_timestamp(began)}, where the journal of slot {opts.slot} begins "
            "(the live run delivered what came after; --until to change)"
        )
    elif began is not None and run.until is not None and run.until > began:
        run.notes.append(
            f"warning: --until is after {canonical_timestamp(began)}, where the journal of slot "
            f"{opts.slot} begins: the audit events after it describe changes the live run delivered "
            "under its own keys"
        )
    started = time.monotonic()
    pace = Pace(opts.max_rate)
    pace.start()
    sink = None if opts.dry_run else open_sink()
    progress = Progress(
        None,
        opts.progress if opts.progress is not None else sys.stderr.isatty(),
        opts.progress_interval,
        what="audit rows",
    )
    pending: list[Envelope] = []
    # a sink that writes in the caller's transaction (the outbox, also the default one in the
    # watched database) is written on a store connection of the run's, as the journal's replay does
    writer = sink.store_writer() if sink is not None else None
    store: psycopg.Connection[Any] | None = None

    def deliver() -> None:
        nonlocal store
        batch = Batch(pending[:], end_lsn=0, transactions=len(pending))
        pending.clear()
        if sink is None:
            return
        for env, why in take_oversized(batch, sink):
            run.too_large += 1
            run.stats.events[env.event_type] -= 1
            log.error("audit event not delivered %s: %s", env.idempotency_key, why)
        if not batch.envelopes:
            return
        if writer is None:
            sink.write(batch)
        else:
            if store is None:
                store = connect(
                    writer.store_dsn or opts.dsn, purpose=f"backfill {opts.slot}: sink", bounded=True
                )
                writer.prepare(store)
            with store.transaction():
                writer.write_in(store, batch)
        run.delivered += len(batch.envelopes)

    emitted = 0
    try:
        with connect(opts.dsn, purpose=f"backfill {opts.slot}: audit log", bounded=True) as conn:
            for env in audit_envelopes(
                conn,
                mapping,
                slot=opts.slot,
                since=run.since,
                until=run.until,
                event_types=types,
                stats=run.stats,
            ):
                pending.append(env)
                emitted += 1
                if len(pending) >= opts.batch_max_events:
                    deliver()
                pace.wait(emitted)
                progress.update(run.stats.rows, emitted)
            if pending:
                deliver()
            pace.report()
    finally:
        progress.close()
        if store is not None:
            store.close()
        if sink is not None:
            sink.close()
    run.seconds = time.monotonic() - started
    return run


def audit_summary(run: AuditRun, mapping_gaps: Sequence[tuple[str, str]], dry_run: bool) -> str:
    """The closing text: events by type, rows skipped with the reason, then what the audit log
    cannot give (``mapping_gaps``, ``derivers.audit_history.gaps``)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120, record=True, file=io.StringIO(), force_terminal=False)
    console.print(events_table(run.stats.events, dry_run))
    if run.stats.skipped:
        skipped = Table(title="not reconstructed from rows that record them")
        skipped.add_column("event type")
        skipped.add_column("rows", justify="right")
        skipped.add_column("why")
        for (event_type, why), count in sorted(run.stats.skipped.items()):
            skipped.add_row(event_type, f"{count:,}", why)
        console.print(skipped)
    if mapping_gaps:
        gaps = Table(title="what the application's audit log cannot give")
        gaps.add_column("event type")
        gaps.add_column("why")
        for event_type, why in mapping_gaps:
            gaps.add_row(event_type, why)
        console.print(gaps)
    span = (
        f"{canonical_timestamp(run.since) if run.since else 'the first row'} to "
        f"{canonical_timestamp(run.until) if run.until else 'the last row'}"
    )
    invalid = run.stats.invalid.total()
    tail = (
        f"read {run.stats.rows:,} audit rows from {span}; "
        + (f"delivered {run.delivered:,} events" if not dry_run else "delivered nothing (dry run)")
        + (f", {invalid} rejected by their payload model" if invalid else "")
        + (f", {run.too_large} over the sink's size cap" if run.too_large else "")
        + f", in {run.seconds:.1f} s"
    )
    return "\n".join([*run.notes, console.export_text().rstrip(), tail])
