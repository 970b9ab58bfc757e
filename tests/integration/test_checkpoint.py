"""The checkpoint contract, run against the Postgres store and its in-memory twin."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from cdc.checkpoint import CheckpointStore, MemoryCheckpoints, Position, PostgresCheckpoints
from cdc.schema import create_tables

pytestmark = pytest.mark.integration

T1 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T2 = datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)


@pytest.fixture(params=["postgres", "memory"])
def store(request: pytest.FixtureRequest, db_dsn: str) -> Iterator[tuple[CheckpointStore, Any]]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        if request.param == "memory":
            yield MemoryCheckpoints(), conn
            return
        create_tables(conn, "cdc")
        yield PostgresCheckpoints("s1", "cdc"), conn


def test_nothing_delivered_reads_zero(store: tuple[CheckpointStore, Any]) -> None:
    checkpoints, conn = store
    assert checkpoints.read(conn) == 0


def test_advance_moves_forward_and_never_back(store: tuple[CheckpointStore, Any]) -> None:
    checkpoints, conn = store
    checkpoints.advance(conn, Position(0x200, 7, T1))
    assert checkpoints.read(conn) == 0x200
    checkpoints.advance(conn, Position(0x300, 8, T2))
    assert checkpoints.read(conn) == 0x300
    checkpoints.advance(conn, Position(0x250, 9, T1))  # an older position is not taken
    assert checkpoints.read(conn) == 0x300


def test_postgres_checkpoints_are_per_slot_and_keep_the_transaction(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create_tables(conn, "cdc")
        a, b = PostgresCheckpoints("a", "cdc"), PostgresCheckpoints("b", "cdc")
        a.advance(conn, Position(0x16B3748, 41, T2))
        a.advance(conn, Position(0x100, 40, T1))
        assert (a.read(conn), b.read(conn)) == (0x16B3748, 0)
        row = conn.execute(
            "SELECT lsn::text, xid, commit_time FROM cdc.checkpoints WHERE slot_name = 'a'"
        ).fetchone()
        assert row == ("0/16B3748", 41, T2)  # xid and commit time of the position kept, not the older one


def test_postgres_checkpoint_moves_with_the_callers_transaction(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create_tables(conn, "cdc")
        checkpoints = PostgresCheckpoints("s1", "cdc")
        with pytest.raises(RuntimeError), conn.transaction():
            checkpoints.advance(conn, Position(0x500, 1, T1))
            raise RuntimeError("the batch's delivery failed")
        assert checkpoints.read(conn) == 0
