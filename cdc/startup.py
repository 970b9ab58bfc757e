"""What ``cdc watch`` checks and loads before it streams: :func:`start`.

0. **The store and the lock**: the connection to the database of the watcher's own tables (see
   2), and on it the standby lock of the slot (:mod:`cdc.standby`): a watcher that another one
   holds it from waits here, as a standby, until it can take over. From the moment it holds
   the lock, the store session is under the standby lease, touched by a thread of its own
   until the loop starts, so a slow start-up (the take-over's wait, a late bootstrap copy)
   never looks like a frozen leader.
1. **Preflight** on the watched database (also before step 0's wait for the lock, the slot's
   health aside, so that a standby with a wrong configuration stops at once): the server can
   replicate (:func:`~cdc.provision.check_server`), the publication exists, the slot exists and
   is healthy (:mod:`cdc.slot_health`: lost, invalidated, of another database or in use stops
   the start; ``extended``/``unreserved`` is one warning line), and every table of the
   publication is REPLICA IDENTITY FULL (changes written from now on must carry whole
   before-images, :mod:`cdc.relations`).
2. **The store**: the database of the watcher's own tables — where the sink's events commit
   when it has the same-transaction ability (``Sink.store_writer``), else the watched one — with
   those tables created and the sink's prepared.
3. **Bootstrap reconciliation**: the slot must have its reference-state bootstrap (``cdc setup``
   made both together). A reference table no deriver reads any more is forgotten; one a deriver
   reads that the bootstrap did not copy (the deriver came after the slot) is copied now under a
   fresh snapshot; one the publication does not carry stops the start with a hint.
4. **Load** what the checkpoint's transaction last wrote: the state, the timers, the open
   derivation gaps and the checkpoint itself.

:func:`replica_identity_now` and :func:`current_wal_lsn` are the two catalog reads of the
watched database the stream needs later. The watched database's short reads go through the
watcher's connection pool (:class:`cdc.connect.Pool`) when it passes one; the store is a plain
connection of its own: its session holds the standby lock and its transaction the checkpoint's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from derivers.base import Deriver

from . import queries
from .checkpoint import CheckpointStore, PostgresCheckpoints
from .connect import Pool, connect
from .errors import CdcError, PublicationMissing, SlotMissing, translate
from .lsn import parse_lsn
from .provision import check_server, slot_facts, table_facts
from .relations import RelationGuard, merge_reads, require_full_identity, table_shapes
from .schema import create_tables
from .sinks.base import Sink
from .slot_health import classify, read_slot
from .state import StateStore, bootstrap_late, forget_reference_table
from .timers import TimerStore

log = logging.getLogger("cdc.startup")


class SlotNotBootstrapped(CdcError):
    hint = "run `cdc setup` (it creates the slot together with the reference-state bootstrap)"


class ReferenceTableNotPublished(CdcError):
    hint = "run `cdc setup` with the same --tables the derivers need (it adds them to the publication)"


@dataclass(frozen=True)
class Where:
    """The slot a watcher consumes, and where its own tables live."""

    dsn: str  # the watched database
    slot: str
    publication: str
    schema: str

    def connect(self, purpose: str) -> psycopg.Connection[Any]:
        """A bounded connection to the watched database (``watch <slot>: <purpose>``)."""
        try:
            return connect(self.dsn, purpose=f"watch {self.slot}: {purpose}", bounded=True)
        except psycopg.Error as exc:
            raise translate(exc, slot=self.slot) from exc

    @contextmanager
    def reading(self, reads: Pool | None, purpose: str = "preflight") -> Iterator[psycopg.Connection[Any]]:
        """A connection of ``reads`` for a short read, or (none given) one of its own."""
        if reads is None:
            with self.connect(purpose) as conn:
                yield conn
        else:
            with reads.connection() as conn:
                yield conn


@dataclass
class Started:
    """Everything the loop needs, loaded as of the checkpoint."""

    store: psycopg.Connection[Any]  # the watcher's own tables (and the outbox, if any)
    primary_keys: dict[str, tuple[str, ...]]  # of every published table
    state: StateStore
    timers: TimerStore
    relations: RelationGuard
    checkpoints: CheckpointStore
    checkpoint: int  # end LSN the stream resumes after


def start(
    where: Where,
    sink: Sink,
    derivers: Sequence[Deriver],
    *,
    lead: Callable[[psycopg.Connection[Any], Callable[[], object]], bool] | None = None,
    unlead: Callable[[], None] | None = None,
    reads: Pool | None = None,
) -> Started:
    """Store and lock, preflight, bootstrap reconciliation and load (the module docstring's
    steps). ``lead(store, check)`` calls ``check()`` (the preflight but the slot's health) before
    it may wait, and returns, whether it waited, once the store's session holds the slot's standby lock
    (:meth:`cdc.standby.Leadership.acquire`, which keeps its lease from a thread meanwhile);
    ``unlead()`` stops that before the store closes. On failure the store connection is closed
    and the error is a :class:`CdcError`."""
    writer = sink.store_writer()
    try:
        store = connect(
            (writer.store_dsn if writer is not None else None) or where.dsn,
            purpose=f"watch {where.slot}: store",
            bounded=True,
        )
    except psycopg.Error as exc:
        raise translate(exc, slot=where.slot) from exc
    try:
        # the preflight before it may wait as a standby, so that a wrong configuration stops it
        # now, not at a take-over hours later; again after a wait (facts change)
        facts: list[Facts] = []
        if lead is not None and lead(store, lambda: facts.append(_preflight(where, reads))):
            facts.clear()
        watched, pks = facts[0] if facts else _preflight(where, reads)
        _judge_slot(where, reads)  # once it leads: before, another watcher streams from it
        create_tables(store, where.schema)
        if writer is not None:
            writer.prepare(store)
        wanted = frozenset().union(*(d.state_tables for d in derivers))
        _reconcile_bootstrap(where, store, watched, wanted, derivers)
        state = StateStore(where.slot, where.schema, {t: pks[t] for t in watched if t in wanted})
        state.load(store)
        timers = TimerStore(where.slot, where.schema)
        timers.load(store)
        relations = RelationGuard(where.slot, where.schema, merge_reads(d.reads for d in derivers))
        relations.load(store)
        checkpoints = PostgresCheckpoints(where.slot, where.schema)
        checkpoint = checkpoints.read(store)
    except psycopg.Error as exc:
        _close(store, unlead)
        raise translate(exc, slot=where.slot) from exc
    except BaseException:
        _close(store, unlead)
        raise
    return Started(store, pks, state, timers, relations, checkpoints, checkpoint)


def _close(store: psycopg.Connection[Any], unlead: Callable[[], None] | None) -> None:
    """Close the store, once nothing else touches it (a connection closed under a statement of
    another thread is not safe)."""
    if unlead is not None:
        unlead()
    store.close()


#: What the preflight found: the published tables and their primary keys.
Facts = tuple[tuple[str, ...], dict[str, tuple[str, ...]]]


def _preflight(where: Where, reads: Pool | None) -> Facts:
    """The published tables and their primary keys, once the server, the slot, the publication
    and their replica identity are fine."""
    with where.reading(reads) as source:
        try:
            check_server(source)
            if slot_facts(source, where.slot) is None:
                raise SlotMissing(f"replication slot {where.slot} does not exist")
            found = source.execute(
                queries.raw("setup", "publication_exists"), {"publication": where.publication}
            ).fetchone()
            if not (found and found[0]):
                raise PublicationMissing(f"publication {where.publication} does not exist")
            watched = tuple(
                r[0]
                for r in source.execute(
                    queries.raw("setup", "publication_tables"), {"publication": where.publication}
                )
            )
            require_full_identity(table_shapes(source, watched))
            pks = {t.qualified: t.primary_key for t in table_facts(source, watched)}
        except psycopg.Error as exc:
            raise translate(exc, slot=where.slot) from exc
    return watched, pks


def _judge_slot(where: Where, reads: Pool | None) -> None:
    """The slot's health at start (:mod:`cdc.slot_health`): a stop raises, a warning is one line."""
    with where.reading(reads) as source:
        try:
            found = read_slot(source, where.slot)
        except psycopg.Error as exc:
            raise translate(exc, slot=where.slot) from exc
    if found is None:
        raise SlotMissing(f"replication slot {where.slot} does not exist")
    health = classify(where.slot, *found, at_start=True)
    if health.error is not None:
        raise health.error
    if health.level == "warning":
        log.warning("slot health: %s", health.text)


def _reconcile_bootstrap(
    where: Where,
    store: psycopg.Connection[Any],
    watched: tuple[str, ...],
    wanted: frozenset[str],
    derivers: Sequence[Deriver],
) -> None:
    """Make the slot's bootstrapped reference tables the ones the derivers read (step 3)."""
    row = store.execute(
        queries.query("setup", "read_bootstrapped_tables", schema=sql.Identifier(where.schema)),
        {"slot": where.slot},
    ).fetchone()
    if not (row and row[0]):
        raise SlotNotBootstrapped(f"slot {where.slot} has no bootstrapped reference state")
    bootstrapped = row[1]  # NULL: a slot recorded before tables were listed
    kept = wanted & set(watched)  # what this run keeps current from the stream
    if bootstrapped is not None:
        # Rows of a table no deriver reads, or the publication no longer carries, stop being
        # current: forget them, so that reading it again gets a new copy.
        for table in sorted(set(bootstrapped) - kept):
            forget_reference_table(store, where.slot, where.schema, table)
            log.warning("reference table %s is not kept current any more: its state is dropped", table)
    for d in derivers:
        unpublished = sorted(d.state_tables - set(watched))
        if unpublished:
            raise ReferenceTableNotPublished(
                f"deriver {d.name} reads {', '.join(unpublished)}, which publication "
                f"{where.publication} does not include"
            )
    if bootstrapped is not None:
        for table in sorted(wanted - set(bootstrapped)):
            # A deriver that reads this table came after the slot: copy it now.
            copied = bootstrap_late(where.dsn, store, where.slot, where.schema, table)
            log.warning(
                "reference table %s was not in slot %s's bootstrap: copied %d rows as of now; "
                "transactions before this start see them as of now until their own changes arrive",
                table,
                where.slot,
                copied,
            )


def replica_identity_now(where: Where, table: str, reads: Pool | None = None) -> str:
    """The table's replica identity in the catalog now ('f' for a table dropped since)."""
    with where.reading(reads) as source:
        try:
            shapes = table_shapes(source, (table,))
        except psycopg.Error as exc:
            raise translate(exc, slot=where.slot) from exc
    return shapes[0].replica_identity if shapes else "f"


def current_wal_lsn(where: Where, reads: Pool | None = None) -> int:
    """The watched server's WAL position now (``--once`` streams up to it)."""
    with where.reading(reads) as source:
        try:
            row = source.execute(queries.raw("setup", "current_wal_lsn")).fetchone()
        except psycopg.Error as exc:
            raise translate(exc, slot=where.slot) from exc
    return parse_lsn(row[0]) if row else 0
