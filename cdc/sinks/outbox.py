"""The Postgres outbox sink: events, checkpoint and state commit in one transaction (exactly once).

``--sink postgres`` (the default) writes to ``<schema>.outbox`` in the watched database;
``--sink postgresql://…`` (or ``postgres://…``) writes to another database, which then also
holds the watcher's own ``cdc`` schema (checkpoint, state, timers, journal, dead letters), so
that all of it commits in the outbox's transaction (DESIGN §4).  The watcher sees
:attr:`OutboxSink.store_dsn`, calls :meth:`OutboxSink.prepare` on its store connection at
start and :meth:`OutboxSink.write_in` inside the checkpoint transaction of every batch.

Exactly once: a batch is in the outbox if and only if the checkpoint past it committed.  The
unique idempotency key is the second guard: ``ON CONFLICT (idempotency_key) DO NOTHING``
makes a replayed batch (a backfill over delivered history, a store restored from backup)
add nothing.

A batch goes in with ``COPY`` into a session-local staging table, then one ``INSERT …
SELECT … ON CONFLICT DO NOTHING``.  Measured against one ``INSERT … SELECT FROM unnest(…)``
of eight arrays (both one round trip per batch; bench/sinks.py, docs/sinks.md), COPY is
about four times faster at every batch size tried (100 to 5000 events);
``strategy="unnest"`` keeps the other for that comparison.

Named crash point (:mod:`cdc.faults`): ``outbox.after_insert`` — the batch is inserted, the
transaction that also moves the checkpoint has not committed yet.

Relays consume the table with the ``claim_batch`` / ``mark_published`` queries of
``sql/outbox.sql`` (documented in docs/sinks.md).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import psycopg
from psycopg import pq, sql

from catalog.envelope import Envelope

from .. import faults, queries
from ..config import DEFAULT_MAX_EVENT_BYTES
from ..connect import connect
from ..errors import ConfigError, translate
from .base import Batch

log = logging.getLogger("cdc.sinks.outbox")

Strategy = Literal["copy", "unnest"]


def _q(name: str, schema: str) -> sql.Composed | sql.SQL:
    return queries.query("outbox", name, schema=sql.Identifier(schema))


class OutboxSink:
    """Events into ``<schema>.outbox``, inside the caller's transaction."""

    name = "outbox"

    def __init__(
        self,
        store_dsn: str | None = None,
        *,
        schema: str = "cdc",
        strategy: Strategy = "copy",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        #: The database of the outbox and of the watcher's own tables; None = the watched one.
        self.store_dsn = store_dsn
        self.schema = schema
        self.strategy: Strategy = strategy
        self._max_event_bytes = max_event_bytes
        self._staging_ready: set[int] = set()  # backend pids whose session has the staging table
        self._own: psycopg.Connection[Any] | None = None  # for write() outside the watcher

    # -- the watcher's hooks ---------------------------------------------------------------
    def prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Create the outbox table and its indexes (idempotent)."""
        from ..state import ensure_schema

        try:
            ensure_schema(conn, self.schema)
            conn.execute(_q("create_outbox", self.schema))
            if self.strategy == "copy" and conn.info.transaction_status == pq.TransactionStatus.IDLE:
                # outside a transaction the staging table lasts for the session
                conn.execute(_q("create_load_table", self.schema))
                self._staging_ready.add(conn.info.backend_pid)
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def write_in(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        """Insert ``batch`` inside the caller's open transaction; the caller commits."""
        if batch.envelopes:
            write = self._copy if self.strategy == "copy" else self._unnest
            inserted = write(conn, batch)
            if inserted < len(batch.envelopes):
                log.info(
                    "outbox: %d of %d events were already there (replayed history)",
                    len(batch.envelopes) - inserted,
                    len(batch.envelopes),
                )
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

    # -- readers ---------------------------------------------------------------------------
    def read_envelopes(self, conn: psycopg.Connection[Any]) -> list[Envelope]:
        """Every event in the outbox, in delivery order."""
        return [Envelope.from_dict(row[0]) for row in conn.execute(_q("read_envelopes", self.schema))]

    # -- internals -------------------------------------------------------------------------
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

    def _copy(self, conn: psycopg.Connection[Any], batch: Batch) -> int:
        if conn.info.backend_pid not in self._staging_ready:
            # inside the caller's transaction: it may roll back, so create it every time
            conn.execute(_q("create_load_table", self.schema))
        with conn.cursor() as cur:
            with cur.copy(_q("copy_load", self.schema)) as copy:
                bodies = batch.json()
                for i, env in enumerate(batch.envelopes):
                    src = env.source
                    copy.write_row(
                        (
                            i,
                            env.id,
                            env.idempotency_key,
                            env.event_type,
                            env.tenant_id,
                            bodies[i].decode(),
                            src.lsn,
                            src.commit_time,
                        )
                    )
            cur.execute(_q("insert_from_load", self.schema))
            return cur.rowcount

    def _unnest(self, conn: psycopg.Connection[Any], batch: Batch) -> int:
        envelopes = batch.envelopes
        params = {
            "ids": [e.id for e in envelopes],
            "keys": [e.idempotency_key for e in envelopes],
            "types": [e.event_type for e in envelopes],
            "tenants": [e.tenant_id for e in envelopes],
            "envelopes": [body.decode() for body in batch.json()],
            "lsns": [e.source.lsn for e in envelopes],
            "times": [e.source.commit_time for e in envelopes],
        }
        with conn.cursor() as cur:
            cur.execute(_q("insert_unnest", self.schema), params)
            return cur.rowcount
