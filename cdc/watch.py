"""``cdc watch``: the daemon — the flow of DESIGN §3, one named step per part.

Start (:mod:`cdc.startup`): preflight, the store connection, the bootstrap reconciliation, and
the state, timers, derivation gaps and checkpoint as the last checkpoint left them. Then, for
each message of the stream, in commit order:

1. **stream** (:mod:`cdc.stream`) hands out pgoutput messages, decoded by :mod:`cdc.pgoutput`;
2. **assembler** (:mod:`cdc.assembler`) gathers Begin … Commit into a
   :class:`~cdc.assembler.Transaction` — its changes in memory, or spilled to a temporary file
   past the spill limits (:mod:`cdc.changelog`), so a transaction of any size fits. Each
   Relation message is checked on the way (:mod:`cdc.relations`): a watched table that is not
   REPLICA IDENTITY FULL stops the watcher before anything of the transaction is derived, and
   columns the derivers read that the table lacks withhold the events that depend on them.
   A transaction at or below the checkpoint (resent after a crash between checkpoint and
   confirmation) is skipped. Then :meth:`Watcher.process`:
3. **timers** (:mod:`cdc.timers`): the watermark moves to the commit time, and every armed
   timer it passed fires first, its events sourced at the change that armed it (so a watcher
   that was down at a due time reports it on catch-up, before later transactions, and one that
   is behind never reports a breach that a resolution committed before the due time prevents);
4. **state** (:mod:`cdc.state`): the reference-table changes are applied, and a TRUNCATE
   forgets the timers the truncated table's rows armed;
5. **derivers** (:mod:`cdc.derive`): the folded changes become drafts — the whole transaction
   at once, or window after window when it was spilled;
6. **envelopes**: the catalog validates each draft into an envelope (a failure becomes a dead
   letter);
7. **sink** (:mod:`cdc.batch`): envelopes gather into a batch of whole transactions (by event
   count, transaction count and age); a huge transaction's envelopes go to the sink in chunks
   as they fill, inside one sink transaction for the outbox;
8. **checkpoint** (:mod:`cdc.checkpoint`): when the batch is full, it is made durable — the
   sink, then the state, timers, gaps, dead letters and the checkpoint (the batch's last end
   LSN) in one transaction of the watcher's own schema — and only then is the end LSN
   confirmed to the server. That transaction commits on a thread of its own while the next
   transactions are derived (one batch in flight, :mod:`cdc.batch`); the loop waits for it
   before the next batch is sent, when nothing more has come, and before it ends. While one
   long transaction is worked through, the stream is kept alive with status updates that
   report the old flush position.

The watermark also moves with the watcher's own transactional heartbeat (:mod:`cdc.heartbeat`),
emitted every few seconds and right after the next timer's due time — never with keepalives.

**Lifecycle** (:class:`Signals`). SIGTERM or SIGINT: the messages already read are processed,
the pending batch is delivered and checkpointed, a final status update tells the server, and the
watcher exits 0 — a second SIGTERM/SIGINT exits at once (130) without that last checkpoint, so
the next start resumes from the one before (the outbox repeats nothing; other sinks may repeat
that batch, de-duplicated by its keys). SIGHUP reloads the settings that can change live
(:data:`cdc.config.LIVE_SETTINGS`: log level, progress, status and heartbeat intervals, batch
limits) as :func:`cdc.config.load_settings` reads them — the command-line flags of the running
process still win, its environment cannot change, so in practice from the ``CDC_CONFIG`` file —
and logs each change; a changed setting that cannot change live is logged as needing a restart,
and a reload that fails keeps the running configuration.

**Reconnect and resume.** Once the watcher has reached its database, a failure that
:func:`cdc.errors.watcher_reconnects` classifies as worth retrying (the connection lost — a
server restart, a crash, a terminated backend —, the server unreachable or starting up, the
slot still held by a dying walsender) does not end it: it closes everything but the sink, waits
(:class:`cdc.lifecycle.Backoff`: ``reconnect_initial_s``, doubling to ``reconnect_max_s``, full
jitter; reset after an attempt that delivered a batch), logs one line per attempt with the cause,
and starts over from the start: state, timers, gaps, checkpoint and watermark as the last
checkpoint left them. The batch that was pending is dropped and read again from the slot (the
server resends everything after the confirmed position), so nothing is lost, and nothing is
delivered twice: the outbox commits events and checkpoint together, other sinks de-duplicate by
key. The counters of the exit summary go back to what was delivered. Anything else (credentials,
wal_level, a lost slot, replica identity, configuration, a sink that gave up) stops the watcher
with its one line, as does any failure before it first reached the database — the watched one,
not only the store (another database when the outbox lives elsewhere). A stop (SIGTERM)
during the wait exits 0 at once.

**Standby** (:mod:`cdc.standby`). Every start takes the slot's advisory lock on the store
connection first; a watcher that finds it held waits as a standby and takes over, ending the old
walsender, once the other's session is gone (a slot that a program other than a watcher streams
from stops it instead). From the moment it holds the lock, the active watcher keeps its lock
session from going silent for a whole lease (during the start-up a thread of
:mod:`cdc.standby` touches it; while streaming, :meth:`Watcher.keepalive` and the loop do),
and a store session that the server ended is a lost connection: the watcher reconnects, and is
then a standby if another took over meanwhile.

The watched database's side connections (the heartbeat, the catalog reads of a Relation
message, ``--once``'s target, a take-over's slot look-ups) come from a small pool per attempt
(:class:`cdc.connect.Pool`); the store and the stream are connections of their own.

**What it tells** (:class:`Reporter`, the one place the watcher reports progress and state
changes): a start line (version, slot, publication, sink and database without credentials,
resume LSN), a progress line every ``progress_interval`` seconds while transactions arrive
(transactions, changes and events of the interval, events/s, lag bytes = the server's WAL end
as the stream last heard it − the checkpoint), each state change (stopping, reloaded), and an
exit summary (``delivered N events from M transactions …``), also when an error ends a watcher
that had started streaming. Formats and redaction: :mod:`cdc.logs`. With ``--metrics-addr``
the same watcher feeds :mod:`cdc.metrics` (Prometheus figures, ``/healthz``, ``/readyz``):
changes per processed transaction, the rest once per delivered batch.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from derivers.base import Deriver

from . import logs, slot_health
from .assembler import Assembler, RowChange, Transaction
from .batch import BatchLimits, Delivered, Delivery
from .changelog import DEFAULT_SPILL_BYTES, SpillLimits
from .checkpoint import Pending, Position
from .config import (
    DEFAULT_RECONNECT_INITIAL_S,
    DEFAULT_RECONNECT_MAX_S,
    DEFAULT_SPILL_CHANGES,
    DEFAULT_STANDBY_LEASE_S,
)
from .connect import Pool
from .derive import Derivation
from .envelopes import EnvelopeBuilder
from .errors import CdcError, ConnectionLost, translate, watcher_reconnects
from .heartbeat import Heartbeat
from .journal import Journal
from .lifecycle import Backoff, LiveSettings, Signals, pause
from .lsn import format_lsn
from .pgoutput import Decoder
from .pgoutput.messages import Relation
from .report import Reporter
from .sinks.base import Sink
from .standby import Leadership, StoppedWaiting
from .startup import Started, Where, current_wal_lsn, replica_identity_now, start
from .stream import ReplicationStream
from .tail import StopFlag
from .timers import Watermark

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("cdc.watch")


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
    spill_changes: int = DEFAULT_SPILL_CHANGES
    spill_bytes: int = DEFAULT_SPILL_BYTES
    progress_interval: float = 10.0
    #: The sink as the start line names it (credentials are redacted anyway).
    sink_label: str = ""
    #: SIGHUP: the live settings as the configuration now says (None: nothing to reload).
    reload: Callable[[], LiveSettings] | None = None
    #: ``--metrics-addr``: the metrics and health the watcher reports into (cdc.metrics).
    metrics: Metrics | None = None
    #: Reconnects: the first wait's bound, doubling up to the cap (cdc.lifecycle.Backoff).
    reconnect_initial: float = DEFAULT_RECONNECT_INITIAL_S
    reconnect_max: float = DEFAULT_RECONNECT_MAX_S
    #: Seconds the lock session may stay silent before the server ends it (cdc.standby).
    standby_lease: float = DEFAULT_STANDBY_LEASE_S
    #: Record every consumed change in the change journal (cdc.journal); ``--no-journal``: off.
    journal: bool = True

    @property
    def where(self) -> Where:
        return Where(self.dsn, self.slot, self.publication, self.schema)


@dataclass
class WatchStats:
    transactions: int = 0
    changes: int = 0
    events: int = 0
    dead_letters: int = 0
    timers_fired: int = 0
    batches: int = 0
    checkpoint: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class Watcher:
    """The loop of the module docstring over the parts :func:`cdc.startup.start` loaded."""

    def __init__(self, opts: WatchOptions, sink: Sink, derivers: Sequence[Deriver]) -> None:
        self.opts = opts
        self.sink = sink
        self.derivers = list(derivers)
        self.stats = WatchStats()
        self.watermark = Watermark()
        self.stream: ReplicationStream | None = None
        self.parts: Started | None = None
        self.reporter = Reporter(self)
        self.metrics = opts.metrics
        self.exit_reason = "stopped"
        self._status_cap: float | None = None  # the stream's bound from wal_sender_timeout
        self.checkpoint = 0  # the end LSN delivered last (use() loads it)
        self.reads: Pool | None = None  # the watched database's side connections (run)
        self.leadership: Leadership | None = None  # the slot's standby lock (run)
        self._stop = StopFlag()
        self._reached = False  # the database answered once: from now on, failures are retried
        self._delivered = replace(self.stats)  # the counters as of the last delivered batch
        self._target: int | None = None  # --once: the WAL position to catch up to

    # -- start-up (cdc.startup) -----------------------------------------------------------------
    def prepare(self) -> None:
        """Check and load everything the loop needs (before the stream starts); in :meth:`run`,
        first the slot's lock (waiting as a standby while another watcher holds it)."""
        leadership = self.leadership
        lead = self._lead if leadership is not None else None
        unlead = leadership.release if leadership is not None else None
        self.use(start(self.opts.where, self.sink, self.derivers, lead=lead, unlead=unlead, reads=self.reads))

    def _lead(self, store: psycopg.Connection[Any], check: Callable[[], object]) -> bool:
        assert self.leadership is not None and self.reads is not None
        # The store answered; the watched database must too before failures are retried (the
        # store is another database when the outbox lives elsewhere).
        with self.reads.connection():
            self._reached = True
        check()  # a standby that could never stream stops now, not at a take-over
        return self.leadership.acquire(store, self._stop, self.reads)

    def _on_wait(self, holder: int | None) -> None:
        who = f"pid {holder}" if holder is not None else "another session"
        self.reporter.state(f"standby: waiting for the lock held by {who}", holder_pid=holder, role="standby")
        if self.metrics is not None:
            self.metrics.set_role(standby=True)

    def _on_lead(self, waited: float | None) -> None:
        if waited is not None:
            self.reporter.state(f"standby: took over the lock after {waited:.1f} s", role="active")
        if self.metrics is not None:
            self.metrics.set_role(standby=False)
        assert self.leadership is not None and self.reads is not None
        self.leadership.take_slot(self.reads, self.opts.dsn)

    def use(self, parts: Started) -> None:
        """Set the steps up over ``parts``, as loaded by :func:`cdc.startup.start`."""
        self.parts = parts
        self.state, self.timers, self.relations = parts.state, parts.timers, parts.relations
        self.checkpoint = parts.checkpoint
        self.stats.checkpoint = parts.checkpoint
        self.derivation = Derivation(self.derivers, parts.state, parts.timers, parts.relations)
        opts = self.opts
        limits = BatchLimits(opts.batch_max_events, opts.batch_max_transactions, opts.batch_max_delay)
        self.delivery = Delivery(self.sink, parts.store, parts.checkpoints, limits, opts.schema)
        self.envelopes = EnvelopeBuilder(opts.slot, self.delivery, self.stats.by_type)
        self.journal = Journal(opts.slot, opts.schema, enabled=opts.journal, checkpoint=parts.checkpoint)

    def assembler(self) -> Assembler:
        assert self.parts is not None
        limits = SpillLimits(self.opts.spill_changes, self.opts.spill_bytes)
        return Assembler(self.parts.primary_keys, self._on_relation, limits)

    def _on_relation(self, relation: Relation, tx: Transaction | None) -> None:
        """A watched table's definition, as the changes that follow it were written: a table
        not FULL now stops the watcher before anything of ``tx`` is derived (cdc.relations)."""
        at = tx.begin_lsn if tx is not None else self.checkpoint
        where, reads = self.opts.where, self.reads
        self.relations.observe(relation, at, lambda table: replica_identity_now(where, table, reads))

    # -- one transaction: steps 3 to 7 ------------------------------------------------------------
    def process(self, tx: Transaction) -> None:
        """Timers, state, derivers, envelopes and the batch, for one committed transaction."""
        self.delivery.begin_transaction()
        self.fire_due_timers(tx.commit_time)
        if tx.changes:
            self.apply_state(tx)
            for i, window in enumerate(tx.changes.windows(self.opts.batch_max_events, self.keepalive)):
                if i:  # more of a huge (spilled) transaction: a full chunk goes to the sink first
                    self.delivery.write_full_chunk()
                self.derive(tx, window)
        self.delivery.end_transaction(Position(tx.end_lsn, tx.xid, tx.commit_time))
        self.stats.transactions += 1
        self.stats.changes += len(tx.changes)
        if self.metrics is not None:
            self.metrics.transaction(tx)
        self.journal.record(tx)
        tx.close()

    def fire_due_timers(self, commit_time: datetime) -> None:
        """Step 3: the watermark moves; the timers it passed fire before the transaction."""
        for fired in self.derivation.fire(self.watermark.advance(commit_time)):
            by = fired.armed_by
            for draft in fired.drafts:
                if not self.envelopes.envelope(draft, by.lsn, by.xid, by.commit_time, by.table, True):
                    self.stats.dead_letters += 1
            self.stats.timers_fired += 1

    def apply_state(self, tx: Transaction) -> None:
        """Step 4: reference rows as of this transaction, before any deriver looks them up."""
        if self.state.primary_keys.keys() & tx.tables():
            for changes in tx.changes.chunks(self.opts.batch_max_events):
                self.state.apply_all(changes)
                self.keepalive()
        for table in tx.truncated:
            # The rows are gone, and with them the timers they armed (a DELETE's rules forget them).
            self.timers.forget_table(table)

    def derive(self, tx: Transaction, window: Sequence[RowChange]) -> None:
        """Steps 5 to 7 for folded changes of ``tx``: drafts and envelopes into the open batch.
        (Only a spilled transaction's further windows write a full chunk mid-transaction; one
        that fills the batch at its end ends it, and the batch commits beside the next one.)"""
        derived = self.derivation.derive(tx, window)
        self.stats.dead_letters += self.envelopes.envelopes(derived, tx.end_lsn, tx.xid, tx.commit_time)
        self.keepalive()

    # -- step 8: durable, then confirmed ----------------------------------------------------------
    def settle(
        self,
        delivered: Delivered,
        flushed: Sequence[Pending] | None = None,
        *,
        stats: WatchStats | None = None,
    ) -> None:
        """A batch is durable: what the steps handed over for it (``flushed``: the state's,
        timers' and gaps' :class:`Pending`; None: all of it) is no longer pending, an envelope
        larger than the sink takes counts as a dead letter, the rest as delivered — in
        ``stats`` too when given (also `cdc backfill`'s)."""
        state, timers, relations = flushed if flushed is not None else (None, None, None)
        self.state.committed(state)
        self.timers.committed(timers)
        self.relations.committed(relations)
        for counts in (self.stats, stats) if stats is not None else (self.stats,):
            for env in delivered.too_large:
                counts.dead_letters += 1
                counts.by_type[env.event_type] -= 1
            counts.events += delivered.events
            counts.batches += 1
            counts.checkpoint = delivered.position.end_lsn

    def deliver(self, *, caught_up: bool, wait: bool = True) -> None:
        """Send the batch on its way to durable (cdc.batch: its store transaction runs while the
        loop goes on); with ``wait``, return once it is durable and confirmed. ``caught_up``:
        nothing handed out by the stream after the batch is waiting (cdc.stream.FlushPosition)."""
        # The batch before is durable first (send would wait for it anyway): what it took is
        # no longer pending, so this batch takes only its own changes.
        self.delivery.wait()
        position = self.delivery.position
        assert position is not None
        flushed = (
            self.state.take_flush(),
            self.timers.take_flush(),
            self.relations.take_flush(position.end_lsn),
        )
        journal = self.journal.take_flush(position)
        counted = replace(self.stats, by_type=dict(self.stats.by_type))  # as of the batch's end
        changes = self.metrics.take_changes() if self.metrics is not None else {}

        def own(conn: psycopg.Connection[Any]) -> None:
            """What commits with the checkpoint besides the events and dead letters."""
            for pending in (*flushed, journal):
                pending.write(conn)

        def durable(delivered: Delivered, caught_up_now: bool) -> None:
            self.settle(delivered, flushed, stats=counted)
            self.checkpoint = delivered.position.end_lsn
            self._delivered = counted
            if self.metrics is not None:
                self.metrics.delivered(delivered, counted, self.timers, changes)
            stream = self.stream
            if stream is not None and stream.conn is not None:  # not when stopping on an error
                # caught up: nothing handed out after the batch was waiting when it was sent, nor
                # is where it is waited for (Delivery.wait)
                stream.confirm(delivered.position.end_lsn, caught_up=caught_up and caught_up_now)
                stream.send_status()

        self.delivery.send(own, durable)
        if wait:
            self.delivery.wait(caught_up=True)  # nothing was handed out since it was sent

    def keepalive(self) -> None:
        """A status update with the old flush position, once due: a long transaction never
        outlasts the server's wal_sender_timeout; and a word on the lock session, so that it
        never outlasts the standby lease either."""
        if self.stream is not None and self.stream.conn is not None:
            self.stream.keepalive()
        if self.leadership is not None and not self.delivery.committing:
            self.leadership.touch()  # (a store transaction in flight keeps the session busy anyway)

    def _sink_keepalive(self) -> None:
        # A sink retrying through an outage keeps the replication connection alive; a dead
        # connection is the loop's to notice, not the sink's.
        with contextlib.suppress(CdcError):
            self.keepalive()

    # -- the loop: steps 1 and 2 ------------------------------------------------------------------
    def run(self, stop: StopFlag | None = None) -> WatchStats:
        """Stream until done (``--once``, ``--idle-exit``, a stop), reconnecting after what
        :func:`~cdc.errors.watcher_reconnects` says is worth it (the module docstring)."""
        opts = self.opts
        self._stop = stop = stop or StopFlag()
        self.leadership = Leadership(
            opts.slot, lease_s=opts.standby_lease, on_wait=self._on_wait, on_lead=self._on_lead
        )
        backoff = Backoff(opts.reconnect_initial, opts.reconnect_max)
        failed = True
        try:  # whatever fails from here on, the connections and the sink are closed
            while True:
                batches = self.stats.batches
                try:
                    self._attempt(stop)
                    break
                except StoppedWaiting:
                    self.exit_reason = f"stopped by {self._why(stop)} while waiting as a standby"
                    break
                except (CdcError, psycopg.Error) as exc:
                    error = translate(exc, slot=opts.slot)
                    if not (self._reached and watcher_reconnects(error)):
                        if error is exc:
                            raise
                        raise error from exc
                if stop.stopped:  # what was not delivered is read again by the next start
                    self.exit_reason = f"stopped by {self._why(stop)} while reconnecting"
                    break
                self._forget_pending()
                if self.stats.batches > batches:
                    backoff.reset()  # that connection got somewhere: start the waits over
                wait = backoff.next()
                cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
                self.reporter.reconnecting(cause, wait, backoff.attempt)
                if not pause(stop, wait):
                    self.exit_reason = f"stopped by {self._why(stop)} while reconnecting"
                    break
            failed = False
        except KeyboardInterrupt:
            self.exit_reason, failed = "stopped at once by a second signal (no final checkpoint)", False
            raise
        finally:
            self.sink.close()
            if self.reporter.has_started or (self._reached and not failed):  # a standby stopped
                self.reporter.finished("stopped by an error" if failed else self.exit_reason)
            elif self.metrics is not None:
                self.metrics.stopped()
        return self.stats

    @staticmethod
    def _why(stop: StopFlag) -> str:
        return stop.reason if isinstance(stop, Signals) and stop.reason else "stop requested"

    def _attempt(self, stop: StopFlag) -> None:
        """One connection's worth: lock, start, heartbeat, stream and loop; everything but the
        sink is closed at the end, however it ends."""
        opts = self.opts
        self.watermark = Watermark()  # as a fresh start has it: moved by what arrives from now
        self.reads = Pool(opts.dsn, purpose=f"watch {opts.slot}: pool", slot=opts.slot)
        heartbeat: Heartbeat | None = None
        streaming = False
        at_once = False  # a second signal: stop now, not after the batch in flight
        try:
            self.prepare()  # the slot's lock under its lease (cdc.standby), and what the loop needs
            heartbeat = Heartbeat(opts.dsn, opts.heartbeat_interval, pool=self.reads)
            heartbeat.emit()  # a watermark right away: timers overdue at start fire on catch-up
            if opts.once and self._target is None:
                # --once: up to the watched server's position at the first start (the store may
                # be another server)
                self._target = current_wal_lsn(opts.where, self.reads)
            heartbeat.start()
            self.sink.keepalive = self._sink_keepalive
            self.stream = ReplicationStream(
                opts.dsn,
                opts.slot,
                opts.publication,
                start_lsn=self.checkpoint,
                status_interval=opts.status_interval,
                purpose=f"watch {opts.slot}",
            )
            try:
                with self.stream as stream:
                    if stream.status_interval < opts.status_interval:
                        self._status_cap = stream.status_interval
                    self.reporter.started()
                    streaming = True
                    if self.leadership is not None:
                        self.leadership.streaming()  # the loop touches the lease from now on
                    self._loop(stream, heartbeat, stop, self._target)
            except ConnectionLost as lost:
                # the server ends an invalidated slot's walsender: say that, not "connection lost"
                invalid = slot_health.invalidated(opts.dsn, opts.slot)
                if invalid is None:
                    raise
                raise invalid from lost
        except KeyboardInterrupt:
            at_once = True
            raise
        finally:
            closable = True
            if self.parts is not None:
                # an error stops the loop: the batch in flight ends first
                closable = self.delivery.abandon(at_once=at_once)
            if heartbeat is not None:
                heartbeat.stop()
            if self.leadership is not None:
                self.leadership.release()  # first: its start-up keeper may still touch the store
            if self.parts is not None and closable:
                self.parts.store.close()  # its session's end releases the lock
            self.reads.close()
            if streaming:
                self.reporter.disconnected()

    def _forget_pending(self) -> None:
        """After a lost connection: the counters go back to the last delivered batch (what was
        processed since comes again from the slot)."""
        stats, delivered = self.stats, self._delivered
        stats.transactions, stats.changes = delivered.transactions, delivered.changes
        stats.dead_letters, stats.timers_fired = delivered.dead_letters, delivered.timers_fired
        stats.by_type.clear()
        stats.by_type.update(delivered.by_type)
        if self.metrics is not None:
            self.metrics.disconnected()

    def _loop(
        self, stream: ReplicationStream, heartbeat: Heartbeat, stop: StopFlag, target: int | None
    ) -> None:
        decode, assembler = Decoder().decode, self.assembler()
        feed = assembler.feed
        delivery = self.delivery
        reporter = self.reporter
        signals = stop if isinstance(stop, Signals) else None
        last_activity = time.monotonic()
        touch = self.leadership.touch if self.leadership is not None else None
        while not stop.stopped:
            if touch is not None and not delivery.committing:
                touch()  # the lock session is not silent for a whole lease
            if signals is not None and signals.reload_requested:
                signals.reload_requested = False
                self.reload(heartbeat)
            if time.monotonic() >= reporter.next_at:
                reporter.progress()
            messages = stream.read_batch(0.0 if delivery.pending or delivery.in_flight else 0.5)
            if not messages:
                if delivery.pending:
                    self.deliver(caught_up=not assembler.in_transaction, wait=False)
                    heartbeat.wake_at(self.timers.next_due())
                    continue
                if delivery.in_flight:  # nothing more has come: the batch sent last is confirmed now
                    delivery.wait(caught_up=not assembler.in_transaction)
                    continue
                if assembler.in_transaction:
                    continue
                if target is not None and (self.checkpoint >= target or stream.server_wal_end >= target):
                    self.exit_reason = f"--once: caught up to {format_lsn(target)}"
                    break  # --once: delivered up to the target, or nothing of ours is left before it
                if (
                    self.opts.idle_exit is not None
                    and time.monotonic() - last_activity >= self.opts.idle_exit
                ):
                    self.exit_reason = f"--idle-exit: no transaction for {self.opts.idle_exit:g} s"
                    break
                continue
            last = len(messages) - 1
            for i, data in enumerate(messages):
                tx = feed(decode(data), len(data))
                if tx is None:
                    continue
                if tx.end_lsn <= self.checkpoint:
                    tx.close()
                    continue  # delivered before a crash that came ahead of the confirmation
                if tx.changes:
                    last_activity = time.monotonic()
                self.process(tx)
                reached = target is not None and tx.end_lsn >= target
                if reached or delivery.full():
                    # while more is coming, the batch commits as the next transactions are derived
                    self.deliver(caught_up=i == last and not assembler.in_transaction, wait=reached)
                    heartbeat.wake_at(self.timers.next_due())
                if reached:
                    self.exit_reason = f"--once: caught up to {format_lsn(target or 0)}"
                    return
        if stop.stopped:
            why = self._why(stop)
            self.exit_reason = f"stopped by {why}"
            reporter.state(
                f"{why}: stopping after the current batch ({delivery.transactions} transactions pending)",
                pending_transactions=delivery.transactions,
            )
        if delivery.pending:
            self.deliver(caught_up=not assembler.in_transaction)
        else:
            delivery.wait(caught_up=not assembler.in_transaction)
            stream.send_status()  # the last word to the server: where a restart resumes

    # -- SIGHUP ---------------------------------------------------------------------------------
    def reload(self, heartbeat: Heartbeat | None = None) -> None:
        """Take over the live settings as the configuration now says; log what changed."""
        if self.opts.reload is None:
            self.reporter.state("SIGHUP: no configuration to reload")
            return
        try:
            new = self.opts.reload()
        except CdcError as exc:
            log.error(
                "configuration reload failed, the running configuration stays: %s",
                exc.one_line(),
                extra=logs.fields(slot=self.opts.slot),
            )
            return
        opts, changed = self.opts, {}
        old = {
            "log_level": logs.current_level(),
            "progress_interval_s": self.reporter.interval,
            "status_interval_s": opts.status_interval,
            "heartbeat_interval_s": opts.heartbeat_interval,
            "batch_events": opts.batch_max_events,
            "batch_transactions": opts.batch_max_transactions,
            "batch_delay_s": opts.batch_max_delay,
        }
        now = {
            "log_level": new.log_level,
            "progress_interval_s": new.progress_interval,
            "status_interval_s": new.status_interval,
            "heartbeat_interval_s": new.heartbeat_interval,
            "batch_events": new.batch_max_events,
            "batch_transactions": new.batch_max_transactions,
            "batch_delay_s": new.batch_max_delay,
        }
        changed = {k: [old[k], now[k]] for k in old if old[k] != now[k]}
        logs.set_level(new.log_level)
        self.reporter.interval = opts.progress_interval = new.progress_interval
        self.reporter.next_at = min(self.reporter.next_at, time.monotonic() + new.progress_interval)
        opts.status_interval = new.status_interval
        if self.stream is not None:
            cap = self._status_cap
            self.stream.status_interval = (
                new.status_interval if cap is None else min(cap, new.status_interval)
            )
        if heartbeat is not None and new.heartbeat_interval != opts.heartbeat_interval:
            heartbeat.set_interval(new.heartbeat_interval)
        opts.heartbeat_interval = new.heartbeat_interval
        opts.batch_max_events = new.batch_max_events
        opts.batch_max_transactions = new.batch_max_transactions
        opts.batch_max_delay = new.batch_max_delay
        self.delivery.limits = BatchLimits(
            new.batch_max_events, new.batch_max_transactions, new.batch_max_delay
        )
        text = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()) or "nothing changed"
        self.reporter.state(f"configuration reloaded (SIGHUP): {text}", changed=changed)
        if new.restart_needed:
            log.warning(
                "configuration reload: %s changed, which takes effect only after a restart",
                ", ".join(new.restart_needed),
                extra=logs.fields(slot=opts.slot, restart_needed=list(new.restart_needed)),
            )


# Net allocations of container objects between two young-generation collections in the daemon
# (the interpreter's default is 700). A batch's envelopes, payloads and drafts all live until the
# batch is flushed, so the generational premise (most objects die young) does not hold for them:
# at 700 the collector walks them again and again while the batch fills.
GC_THRESHOLD = (100_000, 20, 100)

#: After how long the loop's thread is asked to hand the interpreter's lock to another thread
#: that waits for it (CPython's default is 5 ms; the handover comes at the next bytecode, so a
#: long C call still runs to its end). The batch in flight commits on its own thread
#: (cdc.batch), which has to take the lock back every time it has waited on the store's socket,
#: several times a statement; with the loop busy deriving, a checkpoint's transaction took
#: ~200 ms instead of ~70 ms (its ``BEGIN`` alone ~165 ms, some thirty intervals) — longer than
#: the loop took for the next batch, so the loop waited for it (``python -m bench.ab``:
#: docs/sinks.md has the figures).
SWITCH_INTERVAL_S = 0.0005


def run_watch(
    opts: WatchOptions, sink: Sink, derivers: Sequence[Deriver], stop: StopFlag | None = None
) -> WatchStats:
    """The daemon (``cdc watch``) over the registry's ``derivers``. Everything loaded before the
    loop (modules, catalog schemas) lives as long as the process: it is moved out of the
    collector's reach, which would otherwise walk it again and again while a busy stream
    allocates, and the young generation is collected every :data:`GC_THRESHOLD` net allocations
    rather than every 700 (measured together: ~30 % of the per-event cost, ``python -m
    bench.replay --gc``). Reference cycles are still collected, only less often. The loop's
    thread is asked for the interpreter's lock after :data:`SWITCH_INTERVAL_S` by a thread that
    waits for it (the commit in flight). The collector's thresholds and the switch interval are
    the caller's again once the watcher returns (what was frozen stays frozen); one watcher per
    process."""
    gc.collect()
    gc.freeze()
    previous = gc.get_threshold(), sys.getswitchinterval()
    try:
        gc.set_threshold(*GC_THRESHOLD)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        return Watcher(opts, sink, derivers).run(stop)
    finally:
        gc.set_threshold(*previous[0])
        sys.setswitchinterval(previous[1])
