"""A batch on its way to durable: envelopes to the sink in chunks, then one checkpoint.

Transactions are grouped into a batch (by event count, transaction count and age,
:class:`BatchLimits`); the batch ends at a transaction boundary, and the checkpoint moves once
per batch, to the end LSN of its last transaction. :class:`Delivery` holds the open batch:

* the envelopes not yet handed to the sink (a :class:`~cdc.sinks.base.Batch`, the *chunk*).
  When the chunk reaches ``max_events`` in the middle of a transaction — a huge one — it is
  written at once (:meth:`Delivery.write_full_chunk`), so memory holds one chunk, never the
  transaction's events: a sink with the same-transaction ability (the outbox) gets every chunk
  through ``write_in`` inside ONE store transaction that stays open until the checkpoint
  commits; any other sink gets sequential ``write`` calls, each durable;
* the dead letters of the batch, and the position it ends at.

:meth:`Delivery.send` makes it durable, in this order: the last chunk goes to the sink (an
envelope larger than the sink takes becomes a dead letter first); then, in the store
transaction, the caller's own tables (state, timers, gaps, journal) are written, the dead
letters are inserted and the checkpoint advances (:mod:`cdc.checkpoint`); then it commits.
Only after that may the caller confirm the position to the server: :meth:`Delivery.wait`
hands the durable batch to the ``durable`` callback it was sent with.

**One batch in flight.** The store transaction runs on a thread of its own (the *committer*)
while the watcher goes on with the transactions that follow: the server's work on the batch
(the outbox COPY, the journal's and the state's rows, the commit's WAL flush) overlaps the
derivation of the next one. At most one batch is in flight, and batches commit in order:
``send`` first waits for the one before, and so does anything else that uses the store
connection or the sink (a huge transaction's chunk). The caller's own tables hand over what
they write when the batch is sent (each store's ``take_flush``), so the committer touches
nothing the watcher goes on changing. A failed commit is raised by the next ``wait``; the
watcher then starts over from the checkpoint (state, timers and journal reloaded), as before.

Named crash points (:mod:`cdc.faults`): ``watch.after_sink`` after each chunk a plain sink made
durable; ``watch.after_checkpoint`` once the checkpoint committed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql

from catalog.dead_letters import too_large
from catalog.envelope import Envelope

from . import faults, queries
from .checkpoint import CheckpointStore, Position
from .sinks.base import Batch, Sink, StoreWriter, take_oversized

log = logging.getLogger("cdc.batch")


@dataclass(frozen=True)
class BatchLimits:
    """A batch is delivered once it has this many events or transactions, or is this old."""

    max_events: int = 5000
    max_transactions: int = 1000
    max_delay: float = 0.5  # seconds since its first transaction


#: Seconds a second signal waits for the cancelled commit in flight to let go of its connection.
ABANDON_WAIT_S: Final = 2.0

#: What the caller writes in the checkpoint's transaction, on the store connection it is given.
OwnWrite = Callable[[psycopg.Connection[Any]], None]
#: Called once a sent batch is durable: (what it made durable, caught_up — see Delivery.wait).
Durable = Callable[["Delivered", bool], None]


@dataclass
class Delivered:
    """What one commit made durable."""

    position: Position
    events: int  # envelopes the sink took
    too_large: list[Envelope] = field(default_factory=list)  # set aside as dead letters
    commit_times: list[datetime] = field(default_factory=list)  # of its transactions with events
    durable_at: float | None = None  # time.time() once its transaction committed


class Delivery:
    """The open batch (see the module docstring)."""

    def __init__(
        self,
        sink: Sink,
        store: psycopg.Connection[Any],
        checkpoints: CheckpointStore,
        limits: BatchLimits,
        schema: str,
    ) -> None:
        self.sink = sink
        self.writer = sink.store_writer()
        self.store = store
        self.checkpoints = checkpoints
        self.limits = limits
        self._insert_dead = queries.query("dead_letters", "insert_dead_letter", schema=sql.Identifier(schema))
        #: False: dead letters are counted, not written (a backfill replays history whose dead
        #: letters the live run wrote already, and its store may hold no watcher tables).
        self.record_dead_letters = True
        self._committer: _InFlight | None = None  # the batch sent and not yet waited for
        self._reset()

    def _reset(self) -> None:
        self.chunk = Batch()  # envelopes are appended here by the envelope step
        self.dead_letters: list[dict[str, Any]] = []  # DeadLetter.params() of the batch
        self.transactions = 0
        self.position: Position | None = None
        self.started = 0.0
        self._written = 0  # envelopes already handed to the sink in earlier chunks
        self._too_large: list[Envelope] = []
        self.commit_times: list[datetime] = []  # of the transactions that brought events (metrics)
        self._events_before = 0  # envelopes of the batch when the current transaction began
        self._store_tx: contextlib.ExitStack | None = None  # open while a store sink's chunks wait

    # -- filling ---------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        """Some transaction is in the batch and not yet durable."""
        return self.transactions > 0

    def begin_transaction(self) -> None:
        if self.transactions == 0:
            self.started = time.monotonic()
        self._events_before = self._written + len(self.chunk.envelopes)

    def end_transaction(self, position: Position) -> None:
        """Every envelope of the transaction at ``position`` is in the batch."""
        self.transactions += 1
        self.position = position
        self.chunk.end_lsn = position.end_lsn
        self.chunk.transactions += 1
        if self._written + len(self.chunk.envelopes) > self._events_before:
            self.commit_times.append(position.commit_time)

    def full(self) -> bool:
        limits = self.limits
        return (
            self._written + len(self.chunk.envelopes) >= limits.max_events
            or self.transactions >= limits.max_transactions
            or time.monotonic() - self.started >= limits.max_delay
        )

    def write_full_chunk(self) -> None:
        """Hand the chunk to the sink now if it holds ``max_events`` (a large transaction)."""
        if len(self.chunk.envelopes) >= self.limits.max_events:
            self._write_chunk()

    # -- delivering ------------------------------------------------------------------------------
    def _take_chunk(self) -> Batch:
        """The chunk, with what is larger than the sink takes set aside as dead letters."""
        chunk = self.chunk
        for env, reason in take_oversized(chunk, self.sink):
            self.dead_letters.append(too_large(env, reason).params())
            self._too_large.append(env)
            log.warning("dead letter %s: %s", env.idempotency_key, reason)
        self._written += len(chunk.envelopes)
        self.chunk = Batch(end_lsn=chunk.end_lsn)
        return chunk

    def _write_chunk(self) -> None:
        """A full chunk in the middle of a transaction: to the sink now, durable (a plain sink)
        or in the store transaction that stays open until the checkpoint (a store sink)."""
        self.wait()  # the store connection and the sink belong to the batch in flight until then
        chunk = self._take_chunk()
        if self.writer is None:
            self.sink.write(chunk)  # durable when it returns
            faults.reached("watch.after_sink")
            return
        if self._store_tx is None:
            self._store_tx = contextlib.ExitStack()
            self._store_tx.enter_context(self.store.transaction())
        self.writer.write_in(self.store, chunk)  # commits with the checkpoint

    @property
    def in_flight(self) -> bool:
        """A sent batch's store transaction may still be running (:meth:`wait` for it)."""
        return self._committer is not None

    @property
    def committing(self) -> bool:
        """The batch in flight's store transaction is still running (the store connection is
        the committer's until it ends)."""
        return self._committer is not None and self._committer.running

    def send(self, own: OwnWrite, durable: Durable | None = None) -> None:
        """Start making the batch durable (the module docstring's order) and open the next one.
        ``own(conn)`` writes the caller's own tables in the checkpoint's transaction; once that
        committed, :meth:`wait` calls ``durable`` with what it made durable."""
        position = self.position
        assert position is not None, "send() of an empty batch"
        self.wait()  # one batch in flight, in order
        chunk: Batch | None = self._take_chunk()
        if self.writer is None:
            assert chunk is not None
            self.sink.write(chunk)  # durable when it returns
            faults.reached("watch.after_sink")
            chunk = None
        flight = _InFlight(
            self.store,
            self._store_tx,
            self.writer,
            chunk,
            own,
            self.dead_letters if self.record_dead_letters else [],
            self._insert_dead,
            self.checkpoints,
            Delivered(position, self._written, self._too_large, self.commit_times),
            durable,
        )
        if self._store_tx is not None:
            flight.run()  # a huge transaction's store transaction is open on this thread: end it here
        else:
            flight.start()
        self._committer = flight
        self._reset()

    def wait(self, *, caught_up: bool = False) -> Delivered | None:
        """The batch in flight is durable (its ``durable`` callback has run); raises what its
        commit raised. None when nothing was in flight. ``caught_up`` (for the callback): the
        caller holds nothing the stream handed out after that batch — never from inside the
        next batch (:meth:`send`, a huge transaction's chunk), whose transactions are not durable."""
        flight = self._committer
        if flight is None:
            return None
        flight.join()  # an interrupt here leaves it in flight, for abandon()
        self._committer = None
        delivered = flight.result()
        faults.reached("watch.after_checkpoint")
        if flight.durable is not None:
            flight.durable(delivered, caught_up)
        return delivered

    def abandon(self, *, at_once: bool = False) -> bool:
        """The watcher is stopping on an error: let the batch in flight end before the store
        connection closes; if it committed, its callback still runs (what failed is raised by
        the caller, not this commit's error). ``at_once`` (a second signal): its statement is
        cancelled instead, and the server rolls it back. Returns whether the store connection
        may be closed now — not while the committer is still in a statement on it (libpq
        allows one thread per connection at a time)."""
        flight = self._committer
        if flight is None:
            return True
        if at_once:
            self._committer = None
            if flight.running:
                with contextlib.suppress(psycopg.Error):
                    flight.store.cancel_safe(timeout=ABANDON_WAIT_S)
                flight.join(ABANDON_WAIT_S)
            return not flight.running  # else the process's exit closes the socket
        flight.join()
        self._committer = None
        try:
            delivered = flight.result()
        except Exception as exc:  # the error the caller is raising comes first
            log.debug("the batch in flight did not commit either: %s", exc)
            return True
        if flight.durable is not None:
            flight.durable(delivered, False)
        return True

    def commit(self, own: OwnWrite) -> Delivered:
        """:meth:`send`, then :meth:`wait`: the batch is durable when it returns."""
        self.send(own)
        delivered = self.wait()
        assert delivered is not None
        return delivered


@dataclass(eq=False)
class _InFlight:
    """One batch's store transaction: the last chunk (for a store sink), the caller's own tables,
    the dead letters and the checkpoint, committed together on the committer thread."""

    store: psycopg.Connection[Any]
    open_tx: contextlib.ExitStack | None  # the store transaction a huge transaction's chunks opened
    writer: StoreWriter | None
    chunk: Batch | None  # for the writer; None: a plain sink made it durable already
    own: OwnWrite
    dead_letters: list[dict[str, Any]]
    insert_dead: Any
    checkpoints: CheckpointStore
    delivered: Delivered
    durable: Durable | None
    _thread: threading.Thread | None = field(default=None, init=False)
    _error: BaseException | None = field(default=None, init=False)
    # Set when run() is over. Not Thread.is_alive(): a join interrupted by KeyboardInterrupt
    # can leave a running thread marked as stopped (CPython before 3.13).
    _done: threading.Event = field(default_factory=threading.Event, init=False)

    def start(self) -> None:
        # a daemon: a process stopped at once by a second signal does not wait for it (the
        # server rolls an unfinished transaction back)
        self._thread = threading.Thread(target=self._run_catching, name="cdc-commit", daemon=True)
        self._thread.start()

    def _run_catching(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # raised on the watcher's thread by result()
            self._error = exc
        finally:
            self._done.set()

    def run(self) -> None:
        store = self.store
        # the transaction a huge transaction's chunks opened, or one of its own
        with self.open_tx if self.open_tx is not None else store.transaction():  # commits, or rolls back
            if self.writer is not None and self.chunk is not None:
                self.writer.write_in(store, self.chunk)
            self.own(store)
            if self.dead_letters:
                with store.cursor() as cur:
                    cur.executemany(self.insert_dead, self.dead_letters)
            self.checkpoints.advance(store, self.delivered.position)
        self.delivered.durable_at = time.time()

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._done.wait(timeout)

    def result(self) -> Delivered:
        """What it made durable, once :meth:`join` returned; raises what its commit raised."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self.delivered
