"""The relay side of the outbox: the named queries of sql/outbox.sql that docs/sinks.md documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cdc import queries
from cdc.sinks.base import Batch
from cdc.sinks.outbox import OutboxSink

from .helpers import make_envelopes

pytestmark = pytest.mark.integration

S = sql.Identifier("cdc")


def q(name: str) -> sql.Composed | sql.SQL:
    return queries.query("outbox", name, schema=S)


def claim(conn: psycopg.Connection[Any], relay: str, limit: int, lease: float = 60) -> list[tuple[Any, ...]]:
    with conn.transaction():
        rows = conn.execute(
            q("claim_batch"), {"relay": relay, "limit": limit, "lease": timedelta(seconds=lease)}
        ).fetchall()
    return sorted(rows)


@pytest.fixture
def outbox(db_dsn: str) -> list[str]:
    """Ten events in the outbox; returns their ids in delivery order."""
    events = make_envelopes(10)
    sink = OutboxSink(db_dsn)
    sink.write(Batch(events[:4], end_lsn=1, transactions=1))
    sink.write(Batch(events[4:], end_lsn=2, transactions=1))
    sink.close()
    return [e.id for e in events]


def test_claims_in_order_share_work_and_mark_published(db_dsn: str, outbox: list[str]) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as a, psycopg.connect(db_dsn, autocommit=True) as b:
        first = claim(a, "relay-a", 4)
        assert [str(r[1]) for r in first] == outbox[:4]
        second = claim(b, "relay-b", 4)  # skips what relay-a holds
        assert [str(r[1]) for r in second] == outbox[4:8]
        assert first[0][5]["id"] == outbox[0] and first[0][3] == first[0][5]["eventType"]
        a.execute(q("mark_published"), {"ids": [r[1] for r in first], "relay": "relay-a"})
        # relay-b cannot mark relay-a's rows, nor rows it does not hold
        cur = b.execute(q("mark_published"), {"ids": [r[1] for r in first], "relay": "relay-b"})
        assert cur.rowcount == 0
        b.execute(q("release_claims"), {"ids": [r[1] for r in second], "relay": "relay-b"})
        again = claim(a, "relay-a", 10)
        assert [str(r[1]) for r in again] == outbox[4:]
        backlog = a.execute(q("outbox_backlog")).fetchone()
        assert backlog is not None and backlog[0] == 6


def test_an_expired_lease_is_claimable_again(db_dsn: str, outbox: list[str]) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        dead = claim(conn, "relay-dead", 3, lease=0.001)
        conn.execute("SELECT pg_sleep(0.01)")
        taken = claim(conn, "relay-new", 3)
        assert [r[1] for r in taken] == [r[1] for r in dead]
        attempts = conn.execute(
            "SELECT publish_attempts FROM cdc.outbox WHERE id = %s", (taken[0][1],)
        ).fetchone()
        assert attempts == (2,)


def test_purge_removes_only_published_rows(db_dsn: str, outbox: list[str]) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        rows = claim(conn, "relay", 5)
        conn.execute(q("mark_published"), {"ids": [r[1] for r in rows], "relay": "relay"})
        conn.execute(q("purge_published"), {"before": datetime.now(UTC) + timedelta(seconds=1)})
        left = conn.execute("SELECT id::text FROM cdc.outbox ORDER BY seq").fetchall()
    assert [r[0] for r in left] == outbox[5:]
