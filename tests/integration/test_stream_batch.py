"""ReplicationStream.read_batch delivers what read() delivers, and never lets a keepalive move
the flush position past changes the consumer has not confirmed."""

from __future__ import annotations

import time

import psycopg
import pytest

from cdc.stream import ReplicationStream

from .conftest import PUB, do_setup, in_one_transaction, run_sql

pytestmark = pytest.mark.integration


def _workload(dsn: str, tenant: str) -> None:
    in_one_transaction(
        dsn, *[f"INSERT INTO boards (tenant, board_name) VALUES ('{tenant}', 'one-{i}')" for i in range(300)]
    )
    run_sql(
        dsn, *[f"INSERT INTO boards (tenant, board_name) VALUES ('{tenant}', 'own-{i}')" for i in range(5)]
    )


def _end_lsn(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        assert row is not None
        return int(row[0])


def _drain(stream: ReplicationStream, endpos: int, batched: bool, commits: int = 6) -> list[bytes]:
    """Everything up to the workload's last commit (one big transaction and five small ones)."""
    out: list[bytes] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if batched:
            got = stream.read_batch(0.5, limit=64)
        else:
            one = stream.read(0.5)
            got = [] if one is None else [one]
        out += got
        if sum(m[:1] == b"C" for m in out) >= commits:
            assert stream.received_lsn <= endpos
            return out
    raise AssertionError(
        f"the stream did not reach the end of the workload: {[m[:1] for m in out][-12:]} {len(out)}"
    )


def test_read_batch_delivers_what_read_delivers(db_dsn: str, tenant: str) -> None:
    do_setup(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('twin', 'pgoutput')")
    _workload(db_dsn, tenant)
    endpos = _end_lsn(db_dsn)
    with ReplicationStream(db_dsn, "cdc_events", PUB, status_interval=1.0) as one:
        singles = _drain(one, endpos, batched=False)
        single_received = one.received_lsn
    with ReplicationStream(db_dsn, "twin", PUB, status_interval=1.0) as many:
        batches = _drain(many, endpos, batched=True)
        assert many.received_lsn == single_received
    assert batches == singles
    assert sum(m[:1] == b"I" for m in batches) == 305


def test_keepalives_during_a_batch_do_not_confirm_undelivered_changes(db_dsn: str, tenant: str) -> None:
    """The flush position may follow keepalives only while everything received was delivered:
    changes read in a batch and not confirmed keep the slot where it was."""
    do_setup(db_dsn)
    _workload(db_dsn, tenant)
    endpos = _end_lsn(db_dsn)
    with ReplicationStream(db_dsn, "cdc_events", PUB, status_interval=0.2) as stream:
        received = _drain(stream, endpos, batched=True)
        first_commit_end = int.from_bytes(next(m for m in received if m[:1] == b"C")[10:18], "big")
        # idle: keepalives arrive (wal_sender_timeout is 6 s in the test cluster)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert stream.read_batch(0.5) == []
        # nothing confirmed: the flush position has not reached even the first transaction
        assert stream.flushed_lsn < first_commit_end
        stream.confirm(stream.received_lsn)
        stream.send_status()
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'cdc_events'"
        ).fetchone()
        assert row is not None and int(row[0]) >= endpos - 1024
