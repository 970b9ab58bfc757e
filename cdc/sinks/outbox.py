"""The Postgres outbox sink: events, checkpoint and state commit in one transaction (exactly once).

``--sink postgres`` (the default) writes to ``<schema>.outbox`` in the watched database;
``--sink postgresql://…`` (or ``postgres://…``) writes to another database, which then also
holds the watcher's own ``cdc`` schema (checkpoint, state, timers, journal, dead letters), so
that all of it commits in the outbox's transaction (DESIGN §4).  The watcher uses it through
:meth:`OutboxSink.store_writer`: :attr:`~OutboxSink.store_dsn`, :meth:`~OutboxSink.prepare`
on its store connection at start, :meth:`~OutboxSink.write_in` inside the checkpoint
transaction of every batch (once per chunk of a huge source transaction).

Exactly once: a batch is in the outbox if and only if the checkpoint past it committed.  The
watcher skips every transaction at or below its checkpoint, so what it writes was never
committed before, and the rows go straight into the table with ``COPY``.  What can still be
there is the rare replay from outside that rule — a backfill over delivered history, a
timer-driven key (``…@<due time>``, no LSN in it) fired again after ``cdc teardown`` and
``cdc setup``, a store restored from a backup — and one conflicting row inside ``COPY`` would
abort the whole transaction, checkpoint included, at every restart.  So the ``COPY`` runs in a
savepoint; on a unique violation it is undone and the write asks which of its envelope ids the
table holds (``existing_ids``, one index probe per event) and copies only the others, in
order, each once.  A savepoint is a subtransaction, and a backend caches 64 of them: past
that every other session's snapshots slow down while the transaction is open.  A huge source
transaction reaches this sink in hundreds of chunks inside one store transaction, so only a
write that comes first in its transaction takes a savepoint; a later chunk asks first, then
copies (~3 µs more per event).  The unique ``id`` (the UUIDv5 of the idempotency key) stays
the second guard either way.

The ``COPY`` is binary: the envelope goes in as the byte-stable JSON the watcher serialised
(:meth:`~cdc.sinks.base.Batch.json`) into a ``json`` column, so the server neither unescapes
nor re-parses it into jsonb, and a relay publishes exactly those bytes.  docs/sinks.md has the
measurements behind the table's shape and this path.

An outbox of the first shape (before issue 12: jsonb envelope, generated payload copy, uuid
primary key, unique key text) is migrated in place by :meth:`OutboxSink.prepare`, once.

Named crash point (:mod:`cdc.faults`): ``outbox.after_insert`` — the batch is inserted, the
transaction that also moves the checkpoint has not committed yet.

Relays consume the table with the ``claim_batch`` / ``mark_published`` queries of
``sql/outbox.sql`` (documented in docs/sinks.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import errors, postgres, sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from catalog.envelope import Envelope

from .. import faults, queries
from ..config import DEFAULT_MAX_EVENT_BYTES
from ..connect import connect
from ..errors import ConfigError, InsufficientPrivilege, translate
from .base import Batch, PlainSink

log = logging.getLogger("cdc.sinks.outbox")


def _q(name: str, schema: str) -> sql.Composed | sql.SQL:
    return queries.query("outbox", name, schema=sql.Identifier(schema))


class _UuidTextDumper(Dumper):
    """A uuid given as its text (the envelope's ``id``, ``tenantId``), in binary COPY."""

    format = Format.BINARY
    oid = postgres.types["uuid"].oid

    def dump(self, obj: str) -> bytes:
        return bytes.fromhex(obj.replace("-", ""))


class _JsonBytesDumper(Dumper):
    """JSON serialised already: the binary form of ``json`` is the text itself."""

    format = Format.BINARY
    oid = postgres.types["json"].oid

    def dump(self, obj: bytes) -> bytes:
        return obj


#: The columns of the copy_outbox query, as binary COPY types.
_COPY_TYPES = ["uuid", "text", "text", "uuid", "json"]


class OutboxSink(PlainSink):
    """Events into ``<schema>.outbox``, inside the caller's transaction."""

    name = "outbox"

    def __init__(
        self,
        store_dsn: str | None = None,
        *,
        schema: str = "cdc",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        #: The database of the outbox and of the watcher's own tables; None = the watched one.
        self.store_dsn = store_dsn
        self.schema = schema
        self._max_event_bytes = max_event_bytes
        self._own: psycopg.Connection[Any] | None = None  # for write() outside the watcher

    # -- the watcher's hooks ---------------------------------------------------------------
    def store_writer(self) -> OutboxSink:
        """The outbox writes in the checkpoint's transaction (the ``Sink`` protocol's ability)."""
        return self

    def prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Create the outbox table and its index (idempotent), or migrate one of the first shape."""
        from ..schema import ensure_schema

        try:
            ensure_schema(conn, self.schema)
            envelope = self._envelope_type(conn)
            if envelope is None:
                conn.execute(_q("create_outbox", self.schema))
            elif envelope == "jsonb":
                self._migrate_first_shape(conn)
            # else it is there already: no DDL, which a role that only writes it may not run
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def write_in(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        """Insert ``batch`` inside the caller's open transaction; the caller commits."""
        if batch.envelopes:
            rows = zip(batch.envelopes, batch.json(), strict=True)
            if not self._wrote_in_this_transaction(conn):
                try:
                    with conn.transaction():  # a savepoint: a conflict undoes this COPY only
                        self._copy(conn, rows)
                except errors.UniqueViolation:
                    self._copy(conn, self._not_there_yet(conn, batch))
            else:
                self._copy(conn, self._not_there_yet(conn, batch))
        faults.reached("outbox.after_insert")

    # -- the plain Sink protocol (tests, tools): one transaction of its own per batch --------
    def write(self, batch: Batch) -> None:
        conn = self._connection()
        try:
            with conn.transaction():
                self.write_in(conn, batch)
        except psycopg.Error as exc:
            self._drop_own()
            raise translate(exc) from exc

    def max_event_bytes(self) -> int:
        return self._max_event_bytes

    def close(self) -> None:
        self._drop_own()

    # -- internals -------------------------------------------------------------------------
    def _wrote_in_this_transaction(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the caller's transaction has written anything (has an xid) — then it may
        hold subtransactions of earlier chunks already, and this write takes no savepoint."""
        row = conn.execute(queries.raw("outbox", "transaction_wrote")).fetchone()
        return bool(row and row[0])

    def _not_there_yet(self, conn: psycopg.Connection[Any], batch: Batch) -> list[tuple[Envelope, bytes]]:
        """The batch's events whose id the outbox does not hold, in order, each once."""
        # One array literal (uuids need no quoting): psycopg's list dumper, element by element
        # in Python, took ~2.5 µs per event, ten times the rest of the probe.
        ids = "{" + ",".join(env.id for env in batch.envelopes) + "}"
        seen = {row[0] for row in conn.execute(_q("existing_ids", self.schema), {"ids": ids})}
        fresh = []
        for env, body in zip(batch.envelopes, batch.json(), strict=True):
            if env.id not in seen:
                seen.add(env.id)
                fresh.append((env, body))
        if len(fresh) < len(batch.envelopes):
            log.info(
                "outbox: %d of %d events were already there (replayed history)",
                len(batch.envelopes) - len(fresh),
                len(batch.envelopes),
            )
        return fresh

    def _copy(self, conn: psycopg.Connection[Any], rows: Iterable[tuple[Envelope, bytes]]) -> None:
        with conn.cursor() as cur:
            # on this cursor only: the watcher's other statements keep psycopg's dumpers
            cur.adapters.register_dumper(None, _UuidTextDumper)
            cur.adapters.register_dumper(None, _JsonBytesDumper)
            with cur.copy(_q("copy_outbox", self.schema)) as copy:
                copy.set_types(_COPY_TYPES)
                for env, body in rows:
                    copy.write_row((env.id, env.idempotency_key, env.event_type, env.tenant_id, body))

    def _envelope_type(self, conn: psycopg.Connection[Any]) -> str | None:
        row = conn.execute(queries.raw("outbox", "envelope_type"), {"schema": self.schema}).fetchone()
        return None if row is None else str(row[0])

    def _migrate_first_shape(self, conn: psycopg.Connection[Any]) -> None:
        table = f"{self.schema}.outbox"
        started = time.monotonic()
        try:
            with conn.transaction():
                conn.execute(_q("lock_outbox", self.schema))
                if self._envelope_type(conn) != "jsonb":
                    return  # another watcher migrated it while this one waited for the lock
                log.warning(
                    "%s has the first outbox shape (jsonb envelope, payload copy, unique key text): "
                    "migrating it in place; the table is rewritten once and relays wait for it",
                    table,
                )
                conn.execute(_q("migrate_first_shape", self.schema))
        except errors.InsufficientPrivilege as exc:
            raise InsufficientPrivilege(
                f"{table} has the shape of an earlier version and this role may not alter it",
                hint=f"start `cdc watch` once as the owner of {table}: it migrates the table in place",
                sqlstate=exc.sqlstate,
            ) from exc
        log.warning("%s migrated in %.1f s", table, time.monotonic() - started)

    def _connection(self) -> psycopg.Connection[Any]:
        if self.store_dsn is None:
            raise ConfigError(
                "the outbox in the watched database is written by `cdc watch` only",
                hint="give the outbox a database (--sink postgresql://…) to write to it directly",
            )
        if self._own is None or self._own.closed:
            self._own = connect(self.store_dsn, purpose="outbox", bounded=True)
            self.prepare(self._own)
        return self._own

    def _drop_own(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None
