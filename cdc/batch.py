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

:meth:`Delivery.commit` makes it durable, in this order: the last chunk goes to the sink (an
envelope larger than the sink takes becomes a dead letter first); then, in the store
transaction, the caller writes the watcher's own tables (state, timers, gaps), the dead
letters are inserted and the checkpoint advances (:mod:`cdc.checkpoint`); then it commits.
Only after that may the caller confirm the position to the server. A crash anywhere before
the commit leaves the checkpoint where it was: the outbox rolls back with it (exactly once);
other sinks get the batch again on restart and de-duplicate by key (at least once).

Named crash points (:mod:`cdc.faults`): ``watch.after_sink`` after each chunk a plain sink made
durable; ``watch.after_checkpoint`` once the checkpoint committed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from catalog.dead_letters import too_large
from catalog.envelope import Envelope

from . import faults, queries
from .checkpoint import CheckpointStore, Position
from .sinks.base import Batch, Sink, take_oversized

log = logging.getLogger("cdc.batch")


@dataclass(frozen=True)
class BatchLimits:
    """A batch is delivered once it has this many events or transactions, or is this old."""

    max_events: int = 5000
    max_transactions: int = 1000
    max_delay: float = 0.5  # seconds since its first transaction


@dataclass
class Delivered:
    """What one commit made durable."""

    position: Position
    events: int  # envelopes the sink took
    too_large: list[Envelope] = field(default_factory=list)  # set aside as dead letters
    commit_times: list[datetime] = field(default_factory=list)  # of its transactions with events


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
    def _write_chunk(self) -> None:
        chunk = self.chunk
        for env, reason in take_oversized(chunk, self.sink):
            self.dead_letters.append(too_large(env, reason).params())
            self._too_large.append(env)
            log.warning("dead letter %s: %s", env.idempotency_key, reason)
        if self.writer is None:
            self.sink.write(chunk)  # durable when it returns
            faults.reached("watch.after_sink")
        else:
            if self._store_tx is None:
                self._store_tx = contextlib.ExitStack()
                self._store_tx.enter_context(self.store.transaction())
            self.writer.write_in(self.store, chunk)  # commits with the checkpoint
        self._written += len(chunk.envelopes)
        self.chunk = Batch(end_lsn=chunk.end_lsn)

    def commit(self, write_own: Callable[[psycopg.Connection[Any], Position], None]) -> Delivered:
        """Make the batch durable and move the checkpoint (the module docstring's order).
        ``write_own(conn, position)`` writes the watcher's own tables in the checkpoint's
        transaction."""
        position = self.position
        assert position is not None, "commit() of an empty batch"
        self._write_chunk()
        store = self.store
        stack = self._store_tx or contextlib.ExitStack()
        if self._store_tx is None:
            stack.enter_context(store.transaction())
        with stack:  # commits here, or rolls back on an error
            write_own(store, position)
            if self.dead_letters and self.record_dead_letters:
                with store.cursor() as cur:
                    cur.executemany(self._insert_dead, self.dead_letters)
            self.checkpoints.advance(store, position)
        faults.reached("watch.after_checkpoint")
        delivered = Delivered(position, self._written, self._too_large, self.commit_times)
        self._reset()
        return delivered
