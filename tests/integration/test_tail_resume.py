"""Acknowledgement and resume: what a restart of `cdc tail` streams again, and idle slots."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import psycopg
import pytest

from .conftest import TAIL_SLOT, BackgroundTail, run_sql, setup_for_tail, tail_lines, wait_for

pytestmark = pytest.mark.integration


def _insert_boards(dsn: str, tenant: str, names: list[str]) -> None:
    run_sql(dsn, *[f"INSERT INTO boards (tenant, board_name) VALUES ('{tenant}', '{n}')" for n in names])


def test_restart_yields_exactly_the_unacknowledged_transactions(db_dsn: str, tenant: str) -> None:
    setup_for_tail(db_dsn)
    names = [f"b{i}" for i in range(10)]
    _insert_boards(db_dsn, tenant, names)
    first = tail_lines(db_dsn, max_changes=4)
    assert [x["after"]["board_name"] for x in first] == names[:4]
    rest = tail_lines(db_dsn, idle_exit=1.5)
    assert [x["after"]["board_name"] for x in rest] == names[4:]
    assert tail_lines(db_dsn, idle_exit=1.0) == []


def _cdc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args],
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_kill_9_between_print_and_ack_repeats_only_that_transaction(db_dsn: str, tenant: str) -> None:
    setup_for_tail(db_dsn)
    names = [f"k{i}" for i in range(6)]
    _insert_boards(db_dsn, tenant, names)
    killed = _cdc(
        "tail",
        "--dsn",
        db_dsn,
        "--slot",
        TAIL_SLOT,
        "--idle-exit",
        "2",
        env={"CDC_FAULT": "tail.after_print:3"},
    )
    assert killed.returncode == -9
    printed = [orjson.loads(x) for x in killed.stdout.splitlines()]
    assert [x["after"]["board_name"] for x in printed] == names[:3]
    again = _cdc("tail", "--dsn", db_dsn, "--slot", TAIL_SLOT, "--idle-exit", "1.5")
    assert again.returncode == 0, again.stderr
    resumed = [orjson.loads(x) for x in again.stdout.splitlines()]
    assert [x["after"]["board_name"] for x in resumed] == names[2:]
    assert resumed[0]["lsn"] == printed[2]["lsn"]  # the same transaction, same commit position
    assert resumed[0]["xid"] == printed[2]["xid"]


def test_idle_slot_follows_the_server_wal_position(db_dsn: str, tenant: str) -> None:
    setup_for_tail(db_dsn)
    with BackgroundTail(db_dsn, idle_exit=60):
        run_sql(
            db_dsn,
            *[f"INSERT INTO clients (tenant, client_name) VALUES ('{tenant}', 'c{i}')" for i in range(20)],
        )
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
            assert row is not None
            target = row[0]

            def caught_up() -> bool:
                r = conn.execute(
                    "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                    (target, TAIL_SLOT),
                ).fetchone()
                return bool(r and r[0])

            # wal_sender_timeout is 6 s in the test cluster: keepalives every ~3 s
            assert wait_for(caught_up, timeout=20, interval=0.5)
