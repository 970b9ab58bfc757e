"""``cdc watch``: the daemon loop — stream, state, derivers, catalog, sink, checkpoint, acknowledge.

For each committed transaction, in commit order:

1. the watermark moves to its commit time, and every armed timer whose due time it passed
   fires first (so a watcher that was down at a due time reports it on catch-up, before
   later transactions, and one that is behind never reports a breach that a resolution
   committed before the due time prevents);
2. its reference-table changes are applied to the state store, and a TRUNCATE forgets the
   timers the truncated table's rows armed;
3. the derivers turn the folded transaction into drafts, which the catalog validates into
   envelopes (failures become dead letters).

Before that, while the transaction is received, each Relation message is checked
(:mod:`cdc.relations`): a watched table that is not REPLICA IDENTITY FULL stops the watcher
before anything of the transaction is derived, and columns the derivers read that the table
lacks withhold the events that depend on them, recorded as a derivation gap.

Transactions are grouped into batches (by event count, transaction count and age).  An
event larger than the sink takes (its ``max_event_bytes``) becomes a dead letter rather than
a write that could never succeed; the rest of the
batch is made durable by the sink, then the state, timers, dead letters, derivation gaps and
the checkpoint (the batch's last end LSN) commit in one transaction of the watcher's own
schema, and only then is the end LSN confirmed to the server.  A transaction at or below the checkpoint
(resent after a crash between checkpoint and confirmation) is skipped.

The watermark comes from transactions' commit times and from the watcher's own
transactional heartbeat message (``pg_logical_emit_message(true, 'cdc.heartbeat', …)``),
emitted every few seconds and right after the next timer's due time by an apscheduler
background job — never from keepalives.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import psycopg
from apscheduler.jobstores.base import JobLookupError
from psycopg import sql

from catalog.dead_letters import dead_letter, too_large
from catalog.envelope import EventDraft, EventValidationError, build_envelope, envelope_source, fast_envelope
from derivers import default_derivers
from derivers.base import Derived, Deriver, TxView

from . import faults, queries
from .assembler import Assembler, RowChange, Transaction
from .connect import connect
from .errors import CdcError, SlotMissing, translate
from .lsn import format_lsn, parse_lsn
from .pgoutput import Decoder
from .pgoutput.decoder import changed_names
from .pgoutput.messages import Relation
from .provision import check_server, primary_keys, slot_facts
from .relations import RelationGuard, merge_reads, require_full_identity, table_shapes
from .sinks.base import Batch, Sink, take_oversized
from .state import (
    StateStore,
    TimerStore,
    bootstrap_late,
    create_tables,
    forget_reference_table,
)
from .stream import ReplicationStream
from .tail import StopFlag
from .values import JsonRowView

log = logging.getLogger("cdc.watch")

HEARTBEAT_PREFIX = "cdc.heartbeat"


class SlotNotBootstrapped(CdcError):
    hint = "run `cdc setup` (it creates the slot together with the reference-state bootstrap)"


class ReferenceTableNotPublished(CdcError):
    hint = "run `cdc setup` with the same --tables the derivers need (it adds them to the publication)"


@dataclass
class WatchOptions:
    dsn: str
    slot: str = "cdc_events"
    publication: str = "cdc_events"
    schema: str = "cdc"
    once: bool = False
    idle_exit: float | None = None
    heartbeat_interval: float = 5.0
    status_interval: float = 10.0
    batch_max_events: int = 5000
    batch_max_transactions: int = 1000
    batch_max_delay: float = 0.5


@dataclass
class WatchStats:
    transactions: int = 0
    events: int = 0
    dead_letters: int = 0
    timers_fired: int = 0
    batches: int = 0
    checkpoint: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class DeriverChange:
    """A folded RowChange as derivers see it: canonical JSON images, raw-byte ``changed``.

    Plain attributes rather than properties: derivers read them for every row."""

    __slots__ = ("_changed", "after", "before", "op", "position", "table")

    def __init__(self, rc: RowChange) -> None:
        self.table = rc.table
        self.op = rc.op
        self.position = rc.position
        b, a = rc.before, rc.after
        self.before = JsonRowView(b) if b is not None else None
        self.after = JsonRowView(a) if a is not None else None
        # Every column whose raw value differs between the images, found in one (compiled) pass.
        if a is None or b is None:
            self._changed: frozenset[str] = _NONE
        elif a.shape is b.shape:  # Row.changed_columns inlined: this runs for every change
            self._changed = changed_names(a.shape.names, b.data, a.data)
        else:
            self._changed = a.changed_columns(b)

    def changed(self, column: str) -> bool:
        return column in self._changed

    def changed_columns(self) -> frozenset[str]:
        return self._changed


_NONE: frozenset[str] = frozenset()


_POSITION = itemgetter(1)  # Derived.position, without a Python frame per item


class Heartbeat:
    """Emits the watcher's transactional heartbeat message from a background scheduler."""

    def __init__(self, dsn: str, interval: float, purpose: str = "heartbeat") -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.dsn = dsn
        self.interval = interval
        self.purpose = purpose
        self._conn: psycopg.Connection[Any] | None = None
        self._scheduler = BackgroundScheduler(daemon=True)
        self._wake_at: datetime | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def emit(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._emit()

    def _emit(self) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.dsn, purpose=self.purpose, bounded=True)
            self._conn.execute("SELECT pg_logical_emit_message(true, %s, now()::text)", (HEARTBEAT_PREFIX,))
        except (psycopg.Error, CdcError) as exc:  # the loop notices a dead server on its own
            log.warning("heartbeat failed (the next one connects again): %s", translate(exc))
            self._conn = None

    def start(self) -> None:
        self._scheduler.add_job(self.emit, "interval", seconds=self.interval, id="heartbeat")
        self._scheduler.start()

    def wake_at(self, due: datetime | None) -> None:
        """One extra heartbeat just after the next timer's due time, so it fires promptly."""
        if due == self._wake_at:
            return
        self._wake_at = due
        if due is None:
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job("timer-wake")
            return
        run_at = max(due + timedelta(milliseconds=50), datetime.now(UTC))
        self._scheduler.add_job(self.emit, "date", run_date=run_at, id="timer-wake", replace_existing=True)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._conn is not None:
                self._conn.close()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)


class Watcher:
    def __init__(self, opts: WatchOptions, sink: Sink, derivers: Sequence[Deriver] | None = None) -> None:
        self.opts = opts
        self.sink = sink
        self.derivers = list(derivers if derivers is not None else default_derivers())
        self.by_name = {d.name: d for d in self.derivers}
        self.stats = WatchStats()
        self.watermark: datetime | None = None
        self.conn: psycopg.Connection[Any] | None = None
        self.stream: ReplicationStream | None = None
        self._dead: list[dict[str, Any]] = []
        self._batch = Batch()
        self._batch_started = 0.0
        self._last_xid = 0
        self._last_commit: datetime | None = None

    # -- start-up ---------------------------------------------------------------------------
    def _prepare(self) -> None:
        opts = self.opts
        try:
            with connect(opts.dsn, purpose=f"watch {opts.slot}: preflight", bounded=True) as source:
                check_server(source)
                if slot_facts(source, opts.slot) is None:
                    raise SlotMissing(f"replication slot {opts.slot} does not exist")
                watched_tables = tuple(
                    r[0]
                    for r in source.execute(
                        queries.raw("setup", "publication_tables"), {"publication": opts.publication}
                    )
                )
                # Changes written from now on must carry whole before-images (cdc.relations).
                require_full_identity(table_shapes(source, watched_tables))
            # The watcher's own tables live where the outbox is, so they commit with it.
            self.conn = connect(
                getattr(self.sink, "store_dsn", None) or opts.dsn,
                purpose=f"watch {opts.slot}: store",
                bounded=True,
            )
        except psycopg.Error as exc:
            raise translate(exc, slot=opts.slot) from exc
        conn = self.conn
        create_tables(conn, opts.schema)
        prepare = getattr(self.sink, "prepare", None)
        if prepare is not None:
            prepare(conn)
        row = conn.execute(
            queries.query("setup", "read_bootstrapped_tables", schema=sql.Identifier(opts.schema)),
            {"slot": opts.slot},
        ).fetchone()
        if not (row and row[0]):
            raise SlotNotBootstrapped(f"slot {opts.slot} has no bootstrapped reference state")
        watched = watched_tables
        pks = primary_keys(opts.dsn, watched, f"watch {opts.slot}: preflight")
        self.primary_keys = pks
        wanted_state: set[str] = set()
        for d in self.derivers:
            wanted_state |= d.state_tables
        kept = wanted_state & set(watched)  # what this run keeps current from the stream
        bootstrapped = row[1]
        try:
            if bootstrapped is not None:  # NULL: a slot recorded before tables were listed
                # Rows of a table no deriver reads, or the publication no longer carries,
                # stop being current: forget them, so that reading it again gets a new copy.
                for table in sorted(set(bootstrapped) - kept):
                    forget_reference_table(conn, opts.slot, opts.schema, table)
                    log.warning(
                        "reference table %s is not kept current any more: its state is dropped", table
                    )
        except psycopg.Error as exc:
            raise translate(exc, slot=opts.slot) from exc
        for d in self.derivers:
            unpublished = sorted(d.state_tables - set(watched))
            if unpublished:
                raise ReferenceTableNotPublished(
                    f"deriver {d.name} reads {', '.join(unpublished)}, which publication "
                    f"{opts.publication} does not include"
                )
        if bootstrapped is not None:
            try:
                for table in sorted(wanted_state - set(bootstrapped)):
                    # A deriver that reads this table came after the slot: copy it now.
                    copied = bootstrap_late(opts.dsn, conn, opts.slot, opts.schema, table)
                    log.warning(
                        "reference table %s was not in slot %s's bootstrap: copied %d rows as of now; "
                        "transactions before this start see them as of now until their own changes arrive",
                        table,
                        opts.slot,
                        copied,
                    )
            except psycopg.Error as exc:
                raise translate(exc, slot=opts.slot) from exc
        self.state = StateStore(opts.slot, opts.schema, {t: pks[t] for t in watched if t in wanted_state})
        self.state.load(conn)
        self.timers = TimerStore(opts.slot, opts.schema)
        self.timers.load(conn)
        self.relations = RelationGuard(opts.slot, opts.schema, merge_reads(d.reads for d in self.derivers))
        self.relations.load(conn)
        ck = conn.execute(
            queries.query("setup", "read_checkpoint", schema=sql.Identifier(opts.schema)), {"slot": opts.slot}
        ).fetchone()
        self.checkpoint = parse_lsn(ck[0]) if ck else 0
        self.stats.checkpoint = self.checkpoint

    def _on_relation(self, relation: Relation, tx: Transaction | None) -> None:
        """A watched table's definition, as the changes that follow it were written: a table
        not FULL now stops the watcher before anything of ``tx`` is derived (cdc.relations)."""
        at = tx.begin_lsn if tx is not None else self.checkpoint
        self.relations.observe(relation, at, self._identity_now)

    def _identity_now(self, table: str) -> str:
        """The table's replica identity in the catalog now ('f' for a table dropped since)."""
        try:
            with connect(self.opts.dsn, purpose=f"watch {self.opts.slot}: preflight", bounded=True) as source:
                shapes = table_shapes(source, (table,))
        except psycopg.Error as exc:
            raise translate(exc, slot=self.opts.slot) from exc
        return shapes[0].replica_identity if shapes else "f"

    # -- per transaction -----------------------------------------------------------------------
    def _envelope(
        self, draft: EventDraft, lsn: int, xid: int, commit_time: datetime, table: str, timer: bool
    ) -> None:
        try:
            env = build_envelope(
                draft,
                slot=self.opts.slot,
                lsn=lsn,
                xid=xid,
                commit_time=commit_time,
                table=table,
                timer=timer,
            )
        except EventValidationError as err:
            dl = dead_letter(
                draft,
                err,
                slot=self.opts.slot,
                lsn=lsn,
                xid=xid,
                commit_time=commit_time,
                table=table,
                timer=timer,
            )
            self._dead.append(dl.params())
            self.stats.dead_letters += 1
            log.warning("dead letter %s: %s", err.key, ", ".join(err.paths))
            return
        self._batch.envelopes.append(env)
        self.stats.by_type[env.event_type] = self.stats.by_type.get(env.event_type, 0) + 1

    def _envelopes(self, derived: list[Derived], lsn: int, xid: int, commit_time: datetime) -> None:
        """Envelopes for a transaction's drafts, in order. The common draft is built by the
        compiled builder in one call; any other (and every failure) by :meth:`_envelope`."""
        fast = fast_envelope
        if fast is None:
            for item in derived:
                self._envelope(item.draft, lsn, xid, commit_time, item.table, False)
            return
        slot = self.opts.slot
        append = self._batch.envelopes.append
        by_type = self.stats.by_type
        table = derived[0].table if derived else ""
        source = envelope_source(slot, lsn, xid, commit_time, table, False)
        lsn_text = source.lsn
        for draft, _at, item_table in derived:
            if item_table != table:
                table = item_table
                source = envelope_source(slot, lsn, xid, commit_time, table, False)
            env = fast(draft, source, lsn_text, True)  # the drafts are dropped after this: adopt
            if env is None:
                self._envelope(draft, lsn, xid, commit_time, item_table, False)
                continue
            append(env)
            event_type = env.event_type
            by_type[event_type] = by_type.get(event_type, 0) + 1

    def _fire_due(self) -> None:
        if self.watermark is None:
            return
        relations = self.relations
        for timer in self.timers.due(self.watermark):
            deriver = self.by_name.get(timer.deriver)
            by = self.timers.armed_by[timer.key]
            if deriver is not None:
                for draft in deriver.fire(timer, self.state):
                    # Whether the verdict still holds is unknown while its inputs are (cdc.relations).
                    if draft.event_type in relations.blocked or by.table in relations.withheld:
                        continue
                    self._envelope(draft, by.lsn, by.xid, by.commit_time, by.table, True)
            self.timers.mark_fired(timer.key)
            self.stats.timers_fired += 1

    def process(self, tx: Transaction) -> None:
        commit_time = tx.commit_time
        if self.watermark is None or commit_time > self.watermark:
            self.watermark = commit_time
        self._fire_due()
        if tx.changes:
            self.state.apply_all(tx.changes)
            for table in tx.truncated:
                # The rows are gone, and with them the timers they armed (a DELETE's rules forget them).
                self.timers.forget_table(table)
            relations = self.relations
            tables = tx.tables()
            if relations.withheld:
                tables -= relations.withheld
            active = [d for d in self.derivers if d.tables & tables]
            if active:
                folded = tx.folded()
                if relations.withheld:  # written without before-images: nothing is derived from them
                    folded = [c for c in folded if c.table not in relations.withheld]
                view = TxView(
                    tx.xid,
                    tx.end_lsn,
                    commit_time,
                    [DeriverChange(c) for c in folded],
                    [(m.prefix, m.content) for m in tx.messages],
                )
                derived: list[Derived] = []
                self.timers.context = (tx.end_lsn, tx.xid, commit_time)
                for d in active:
                    self.timers.deriver = d.name
                    derived.extend(d.derive(view, self.state, self.timers))
                if relations.blocked:  # columns they read are missing: never emit from a guessed value
                    derived = [item for item in derived if item.draft.event_type not in relations.blocked]
                derived.sort(key=_POSITION)  # stable: within a row, the deriver's order
                self._envelopes(derived, tx.end_lsn, tx.xid, commit_time)
        self.stats.transactions += 1
        self._batch.end_lsn = tx.end_lsn
        self._batch.transactions += 1
        self._last_xid = tx.xid
        self._last_commit = commit_time

    # -- delivery -------------------------------------------------------------------------------
    def _set_aside_too_large(self, batch: Batch) -> None:
        """An event larger than the sink takes becomes a dead letter (with the flush's
        checkpoint), so that it is never retried for ever and the rest of the stream goes on."""
        for env, reason in take_oversized(batch, self.sink):
            self._dead.append(too_large(env, reason).params())
            self.stats.dead_letters += 1
            self.stats.by_type[env.event_type] -= 1
            log.warning("dead letter %s: %s", env.idempotency_key, reason)

    def flush(self) -> None:
        batch = self._batch
        if batch.transactions == 0:
            return
        self._set_aside_too_large(batch)
        conn = self.conn
        assert conn is not None
        in_transaction = getattr(self.sink, "write_in", None)
        if in_transaction is None:
            self.sink.write(batch)  # durable when it returns
            faults.reached("watch.after_sink")
        schema = sql.Identifier(self.opts.schema)
        with conn.transaction():
            if in_transaction is not None:
                in_transaction(conn, batch)  # the outbox: events and checkpoint commit together
            self.state.flush(conn)
            self.timers.flush(conn)
            self.relations.flush(conn, batch.end_lsn)
            if self._dead:
                with conn.cursor() as cur:
                    cur.executemany(
                        queries.query("dead_letters", "insert_dead_letter", schema=schema), self._dead
                    )
            conn.execute(
                queries.query("setup", "advance_checkpoint", schema=schema),
                {
                    "slot": self.opts.slot,
                    "lsn": format_lsn(batch.end_lsn),
                    "xid": self._last_xid,
                    "commit_time": self._last_commit,
                },
            )
        self.state.committed()
        self.timers.committed()
        self.relations.committed()
        faults.reached("watch.after_checkpoint")
        self._dead = []
        self.checkpoint = batch.end_lsn
        self.stats.checkpoint = batch.end_lsn
        self.stats.events += len(batch.envelopes)
        self.stats.batches += 1
        assert self.stream is not None
        self.stream.confirm(batch.end_lsn)
        self.stream.send_status()
        self._batch = Batch()

    def _stream_keepalive(self) -> None:
        if self.stream is not None and self.stream.conn is not None:
            # Only a status message: reading here would take data the loop has not reached.
            with contextlib.suppress(CdcError):
                self.stream.send_status()

    def _batch_full(self) -> bool:
        b = self._batch
        return (
            len(b.envelopes) >= self.opts.batch_max_events
            or b.transactions >= self.opts.batch_max_transactions
            or time.monotonic() - self._batch_started >= self.opts.batch_max_delay
        )

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop: StopFlag | None = None) -> WatchStats:
        opts = self.opts
        stop = stop or StopFlag()
        heartbeat: Heartbeat | None = None
        try:  # whatever fails from here on, the connections and the sink are closed
            self._prepare()
            heartbeat = Heartbeat(opts.dsn, opts.heartbeat_interval, f"watch {opts.slot}: heartbeat")
            heartbeat.emit()  # a watermark right away: timers overdue at start fire on catch-up
            target: int | None = None
            if opts.once:  # the watched server's position (the store may be another server)
                try:
                    with connect(opts.dsn, purpose=f"watch {opts.slot}: preflight", bounded=True) as source:
                        row = source.execute(queries.raw("setup", "current_wal_lsn")).fetchone()
                except psycopg.Error as exc:
                    raise translate(exc, slot=opts.slot) from exc
                target = parse_lsn(row[0]) if row else 0
            heartbeat.start()
            decoder = Decoder()
            assembler = Assembler(self.primary_keys, self._on_relation)
            feed, decode = assembler.feed, decoder.decode
            self.stream = ReplicationStream(
                opts.dsn,
                opts.slot,
                opts.publication,
                start_lsn=self.checkpoint,
                status_interval=opts.status_interval,
                purpose=f"watch {opts.slot}",
            )
            if hasattr(self.sink, "keepalive"):
                # A sink retrying through an outage keeps the replication connection alive.
                self.sink.keepalive = self._stream_keepalive
            last_activity = time.monotonic()
            with self.stream as stream:
                done = False
                while not done and not stop.stopped:
                    pending = self._batch.transactions > 0
                    messages = stream.read_batch(0.0 if pending else 0.5)
                    if not messages:
                        if pending:
                            self.flush()
                            heartbeat.wake_at(self.timers.next_due())
                            continue
                        if assembler.in_transaction:
                            continue
                        if target is not None and self.checkpoint >= target:
                            break
                        if (
                            target is not None
                            and stream.server_wal_end >= target
                            and self.checkpoint < target
                        ):
                            # nothing of ours left before the target: the server has moved past it
                            break
                        if opts.idle_exit is not None and time.monotonic() - last_activity >= opts.idle_exit:
                            break
                        continue
                    for data in messages:
                        tx = feed(decode(data))
                        if tx is None:
                            continue
                        if tx.end_lsn <= self.checkpoint:
                            continue  # delivered before a crash that came ahead of the confirmation
                        if tx.changes:
                            last_activity = time.monotonic()
                        if self._batch.transactions == 0:
                            self._batch_started = time.monotonic()
                        self.process(tx)
                        if self._batch_full():
                            self.flush()
                            heartbeat.wake_at(self.timers.next_due())
                        if target is not None and tx.end_lsn >= target:
                            self.flush()
                            done = True
                            break
                self.flush()
        finally:
            if heartbeat is not None:
                heartbeat.stop()
            self.sink.close()
            if self.conn is not None:
                self.conn.close()
        return self.stats


# Net allocations of container objects between two young-generation collections in the daemon
# (the interpreter's default is 700). A batch's envelopes, payloads and drafts all live until the
# batch is flushed, so the generational premise (most objects die young) does not hold for them:
# at 700 the collector walks them again and again while the batch fills.
GC_THRESHOLD = (100_000, 20, 100)


def run_watch(opts: WatchOptions, sink: Sink, stop: StopFlag | None = None) -> WatchStats:
    """The daemon (``cdc watch``). Everything loaded before the loop (modules, catalog schemas)
    lives as long as the process: it is moved out of the collector's reach, which would
    otherwise walk it again and again while a busy stream allocates, and the young generation
    is collected every :data:`GC_THRESHOLD` net allocations rather than every 700 (measured
    together: ~30 % of the per-event cost, ``python -m bench.replay --gc``). Reference cycles
    are still collected, only less often."""
    gc.collect()
    gc.freeze()
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        return Watcher(opts, sink).run(stop)
    finally:
        gc.set_threshold(*previous)
