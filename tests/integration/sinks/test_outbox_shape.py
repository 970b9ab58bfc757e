"""The outbox's shape and write path (sql/outbox.sql, cdc/sinks/outbox.py): the byte-stable
envelope as stored, replays skipped inside the watcher's transaction, and an outbox of the
first shape migrated in place (or refused with one line when this role may not alter it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from cdc import queries
from cdc.errors import InsufficientPrivilege
from cdc.schema import ensure_schema
from cdc.sinks.base import Batch
from cdc.sinks.outbox import OutboxSink
from tests.integration.conftest import run_sql

from .helpers import make_envelopes, read_outbox

pytestmark = pytest.mark.integration

# The outbox as created before issue 12 (sql/outbox.sql at d0db5e5), verbatim.
FIRST_SHAPE = """
CREATE TABLE IF NOT EXISTS cdc.outbox (
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    id              uuid        NOT NULL PRIMARY KEY,   -- the envelope id
    idempotency_key text        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    tenant          uuid        NOT NULL,
    envelope        jsonb       NOT NULL,   -- the whole envelope (DESIGN §4), camelCase
    payload         jsonb       GENERATED ALWAYS AS (envelope -> 'payload') STORED,
    source_lsn      pg_lsn      NOT NULL,   -- end LSN of the source transaction
    commit_time     timestamptz NOT NULL,   -- commit time of the source transaction
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,            -- set by the relay once published
    claimed_by      text,                   -- the relay holding the lease
    claimed_until   timestamptz,            -- the lease expires at
    publish_attempts integer    NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_seq ON cdc.outbox (seq);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON cdc.outbox (seq) WHERE published_at IS NULL;
"""


def batch(envelopes: list[Any]) -> Batch:
    return Batch(list(envelopes), end_lsn=0x2000000, transactions=1)


def first_shape_outbox(dsn: str, events: list[Any]) -> None:
    """An outbox of the first shape holding ``events``, the first two published."""
    with psycopg.connect(dsn) as conn:
        ensure_schema(conn, "cdc")
        conn.execute(FIRST_SHAPE)  # type: ignore[call-overload]
        for env in events:
            conn.execute(
                "INSERT INTO cdc.outbox (id, idempotency_key, event_type, tenant, envelope, source_lsn,"
                " commit_time) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    env.id,
                    env.idempotency_key,
                    env.event_type,
                    env.tenant_id,
                    Jsonb(env.to_dict()),
                    env.source.lsn,
                    env.source.commit_time,
                ),
            )
        conn.execute(
            "UPDATE cdc.outbox SET published_at = now() WHERE id = ANY(%s::uuid[])",
            ([e.id for e in events[:2]],),
        )


def shape(conn: psycopg.Connection[Any], schema: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The table's columns (name, type, not null, identity, default) and its indexes."""
    columns = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,"
        "       pg_get_expr(d.adbin, d.adrelid)"
        "  FROM pg_attribute a LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)"
        " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (f"{schema}.outbox",),
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexname, replace(indexdef, schemaname || '.', '') FROM pg_indexes"
        " WHERE schemaname = %s AND tablename = 'outbox' ORDER BY indexname",
        (schema,),
    ).fetchall()
    return columns, indexes


def test_the_envelope_is_stored_as_the_bytes_the_watcher_serialised(db_dsn: str) -> None:
    events = make_envelopes(12)
    sink = OutboxSink(db_dsn)
    sink.write(batch(events))
    sink.close()
    with psycopg.connect(db_dsn) as conn:
        rows = conn.execute(
            "SELECT id::text, idempotency_key, event_type, tenant::text, envelope::text"
            " FROM cdc.outbox ORDER BY seq"
        ).fetchall()
    assert rows == [
        (e.id, e.idempotency_key, e.event_type, e.tenant_id, body.decode())
        for e, body in zip(events, batch(events).json(), strict=True)
    ]


def test_replays_inside_one_transaction_are_skipped_without_aborting_it(db_dsn: str) -> None:
    """What the watcher does with a huge source transaction: several write_in calls in one
    transaction, here overlapping each other and repeating an event within one chunk."""
    events = make_envelopes(10)
    sink = OutboxSink(db_dsn)
    with psycopg.connect(db_dsn) as conn:
        sink.prepare(conn)
        with conn.transaction():
            sink.write_in(conn, batch(events[:4]))
            sink.write_in(conn, batch([events[2], events[4], events[4], events[3], events[5]]))
            sink.write_in(conn, batch(events[:10]))
            conn.execute("SELECT 1")  # the transaction is still usable: no error was raised in it
    assert [e.idempotency_key for e in read_outbox(db_dsn)] == [e.idempotency_key for e in events]


def test_the_chunks_of_one_transaction_open_one_subtransaction_at_most(db_dsn: str) -> None:
    """A backend caches 64 subtransactions; past that every other session's snapshots slow
    down. Xids are handed out in order, so the next transaction's xid counts them."""
    events = make_envelopes(70)
    sink = OutboxSink(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn, psycopg.connect(db_dsn, autocommit=True) as other:
        sink.prepare(conn)
        with conn.transaction():
            for env in events:
                sink.write_in(conn, batch([env]))
            row = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        after = other.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
    assert row is not None and after is not None
    assert after[0] - row[0] <= 4, "one xid for the transaction, one for its savepoint, little else"
    assert len(read_outbox(db_dsn)) == 70


def test_an_outbox_of_the_first_shape_is_migrated_in_place(db_dsn: str) -> None:
    old, new = make_envelopes(6), make_envelopes(4, start=6)
    first_shape_outbox(db_dsn, old)
    sink = OutboxSink(db_dsn)
    sink.write(batch(new))  # prepares (migrates), then writes
    sink.write(batch(old[3:] + new[:2]))  # replays of migrated and of new rows add nothing
    sink.close()

    assert [e.to_dict() for e in read_outbox(db_dsn)] == [e.to_dict() for e in old + new]
    with psycopg.connect(db_dsn) as conn:
        OutboxSink(db_dsn, schema="fresh").prepare(conn)
        assert shape(conn, "cdc") == shape(conn, "fresh")
        published = conn.execute(
            "SELECT id::text FROM cdc.outbox WHERE published_at IS NOT NULL ORDER BY seq"
        )
        assert [r[0] for r in published] == [e.id for e in old[:2]]
        with conn.transaction():
            claimed = conn.execute(
                queries.query("outbox", "claim_batch", schema=psycopg.sql.Identifier("cdc")),
                {"relay": "r", "limit": 100, "lease": "60 seconds"},
            ).fetchall()
    assert [str(r[1]) for r in sorted(claimed)] == [e.id for e in old[2:] + new]


@pytest.fixture
def other_role(db_dsn: str) -> Iterator[str]:
    role = f"cdc_other_{uuid.uuid4().hex[:8]}"
    run_sql(db_dsn, f"CREATE ROLE {role} LOGIN")
    yield role
    run_sql(db_dsn, "DROP SCHEMA IF EXISTS cdc CASCADE", f"DROP OWNED BY {role}", f"DROP ROLE {role}")


def test_a_first_shape_outbox_this_role_may_not_alter_is_refused_in_one_line(
    db_dsn: str, other_role: str
) -> None:
    first_shape_outbox(db_dsn, make_envelopes(2))
    run_sql(
        db_dsn,
        f"GRANT USAGE, CREATE ON SCHEMA cdc TO {other_role}",
        f"GRANT SELECT, INSERT, UPDATE ON cdc.outbox TO {other_role}",
    )
    sink = OutboxSink(make_conninfo(db_dsn, user=other_role))
    with pytest.raises(InsufficientPrivilege) as caught:
        sink.write(batch(make_envelopes(1, start=2)))
    sink.close()
    line = caught.value.one_line()
    assert "\n" not in line and "cdc.outbox" in line and "owner" in line
    with psycopg.connect(db_dsn) as conn:
        assert shape(conn, "cdc")[0][6][0] == "payload", "the table was left as it was"
