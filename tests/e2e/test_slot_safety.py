"""No command takes or drops a slot that is not its own, and a lost slot is never "in place".

Through the real CLI against real Postgres: `cdc teardown` and `cdc setup` act only on the
slot of the DSN's own database and never on one in use; `cdc tail` reads through a temporary
slot unless given a slot of its own, and refuses the watcher's; a slot the server invalidated
(max_slot_wal_keep_size) is reported by `cdc setup --check`, refused by `cdc setup` and
replaced by `cdc setup --recreate-slot`, which records the range of changes that were lost.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from cdc import queries
from cdc.localpg import LocalPostgres
from cdc.lsn import parse_lsn
from cdc.sample import schema_sql
from cdc.stream import ReplicationStream
from tests.e2e.test_cli_errors import assert_one_line_error, cdc
from tests.environ import command_env
from tests.integration.conftest import run_sql, wait_for
from tests.pgharness import PgServer, drop_database

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TICKET = "99999999-9999-4999-8999-999999999991"


def step(dsn: str, name: str) -> None:
    """One write of the sample application's workload, in its own transaction."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(queries.raw("sample/workload", name))


def one(dsn: str, query: str, *params: Any) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params or None).fetchone()
        return row[0] if row is not None else None


def events(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def watch_once(dsn: str, sink: Path) -> list[dict[str, Any]]:
    """`cdc watch --once` into a JSON lines file; the events this run appended."""
    before = len(events(sink))
    res = cdc("watch", "--dsn", dsn, "--once", "--heartbeat-interval", "0.5", "--sink", f"jsonl:{sink}")
    assert res.returncode == 0, res.stderr
    return events(sink)[before:]


def setup_ok(dsn: str, *more: str) -> subprocess.CompletedProcess[str]:
    res = cdc("setup", "--dsn", dsn, *more)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def clean_env() -> dict[str, str]:
    return command_env()


STREAMING = """
SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
 WHERE s.database = current_database() AND r.state = 'streaming'"""


def status_changes(envs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in envs if e["eventType"] == "TICKET_STATUS_CHANGED"]


@pytest.fixture
def other_dsn(pg_server: PgServer, template_db: str) -> Iterator[str]:
    """A second database of the same cluster (slot names are cluster-wide)."""
    name = f"cdc_other_{uuid.uuid4().hex[:10]}"
    pg_server.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_db))
    )
    yield pg_server.dsn(name)
    drop_database(pg_server, name)


def publication_exists(dsn: str) -> bool:
    return bool(one(dsn, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'cdc_events')"))


def slot_database(dsn: str) -> str | None:
    return one(dsn, "SELECT database FROM pg_replication_slots WHERE slot_name = 'cdc_events'")  # type: ignore[no-any-return]


# -- teardown and setup: the DSN's own database only ------------------------------------------------


def test_teardown_refuses_a_slot_of_another_database_and_drops_nothing(
    db_dsn: str, db_name: str, other_dsn: str
) -> None:
    setup_ok(db_dsn)
    with psycopg.connect(other_dsn, autocommit=True) as conn:  # the other database's own publication
        conn.execute("CREATE PUBLICATION cdc_events FOR TABLE tickets")
    res = cdc("teardown", "--dsn", other_dsn)
    assert_one_line_error(res, "replication slot cdc_events belongs to database " + db_name, "--dsn")
    assert res.returncode == 1
    assert slot_database(db_dsn) == db_name
    assert publication_exists(db_dsn) and publication_exists(other_dsn)


def test_teardown_refuses_a_slot_in_use_and_drops_nothing(db_dsn: str, tmp_path: Path) -> None:
    step(db_dsn, "seed")
    setup_ok(db_dsn)
    step(db_dsn, "create_ticket")
    assert watch_once(db_dsn, tmp_path / "events.jsonl")
    checkpoint = one(db_dsn, "SELECT lsn::text FROM cdc.checkpoints WHERE slot_name = 'cdc_events'")
    assert checkpoint is not None
    with ReplicationStream(db_dsn, "cdc_events", "cdc_events", start_lsn=0):
        pid = one(db_dsn, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'cdc_events'")
        assert pid is not None
        res = cdc("teardown", "--dsn", db_dsn)
    assert_one_line_error(res, f"in use by process {pid}", "stop the process")
    assert res.returncode == 1
    assert slot_database(db_dsn) is not None and publication_exists(db_dsn)
    assert one(db_dsn, "SELECT lsn::text FROM cdc.checkpoints WHERE slot_name = 'cdc_events'") == checkpoint


def test_teardown_of_its_own_idle_slot_drops_slot_publication_and_checkpoint(
    db_dsn: str, tmp_path: Path
) -> None:
    step(db_dsn, "seed")
    setup_ok(db_dsn)
    step(db_dsn, "create_ticket")
    assert watch_once(db_dsn, tmp_path / "events.jsonl")
    res = cdc("teardown", "--dsn", db_dsn)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["dropped slot cdc_events", "dropped publication cdc_events"]
    assert slot_database(db_dsn) is None and not publication_exists(db_dsn)
    assert one(db_dsn, "SELECT count(*) FROM cdc.checkpoints") == 0


def test_setup_refuses_a_slot_of_another_database_before_changing_anything(
    db_dsn: str, db_name: str, other_dsn: str
) -> None:
    setup_ok(db_dsn)
    res = cdc("setup", "--dsn", other_dsn)
    assert_one_line_error(res, "replication slot cdc_events belongs to database " + db_name, "--slot")
    assert res.returncode == 1
    assert not publication_exists(other_dsn)
    assert not one(other_dsn, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'cdc')")
    check = cdc("setup", "--dsn", other_dsn, "--check")
    assert_one_line_error(check, "belongs to database " + db_name)


# -- tail: a live view that never consumes the watcher's changes -----------------------------------


def test_tail_by_default_leaves_the_watchers_changes_to_the_watcher(db_dsn: str, tmp_path: Path) -> None:
    """Issue 11 item 2: a default `cdc tail` consumed the watcher's slot and the event was lost."""
    step(db_dsn, "seed")
    step(db_dsn, "create_ticket")
    setup_ok(db_dsn)
    sink = tmp_path / "events.jsonl"
    watch_once(db_dsn, sink)  # caught up
    tail = subprocess.Popen(
        [sys.executable, "-m", "cdc.cli", "tail", "--dsn", db_dsn, "--max-changes", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # tail is streaming once a walsender on a slot of this database is (its own temporary one)
        assert wait_for(lambda: one(db_dsn, STREAMING) == 1)
        step(db_dsn, "status_in_progress")
        out, err = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, err
    printed = [orjson.loads(line) for line in out.splitlines()]
    assert [(x["table"], x["op"], x["after"]["ticket_id"]) for x in printed] == [
        ("public.tickets", "update", TICKET),  # the status change, with its audit row
        ("public.ticket_audit_logs", "insert", TICKET),
    ]
    delivered = status_changes(watch_once(db_dsn, sink))
    assert [e["payload"]["ticketId"] for e in delivered] == [TICKET]
    assert one(db_dsn, "SELECT count(*) FROM pg_replication_slots") == 1  # the temporary slot is gone


def test_tail_refuses_the_slot_a_watchers_checkpoint_names(db_dsn: str, tmp_path: Path) -> None:
    step(db_dsn, "seed")
    setup_ok(db_dsn)
    step(db_dsn, "create_ticket")
    assert watch_once(db_dsn, tmp_path / "events.jsonl")
    confirmed = one(db_dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots")
    step(db_dsn, "status_in_progress")
    res = cdc("tail", "--dsn", db_dsn, "--slot", "cdc_events", "--idle-exit", "1")
    assert_one_line_error(res, "cdc_events is a watcher's slot", "temporary slot")
    assert res.returncode == 1
    assert one(db_dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots") == confirmed


def test_tail_refuses_the_watchers_slot_in_a_schema_of_another_name(db_dsn: str) -> None:
    """Whatever the watcher's schema is called: tail looks in every schema of the database."""
    setup_ok(db_dsn, "--schema", "ops")  # the slot is recorded, nothing delivered yet
    confirmed = one(db_dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots")
    run_sql(db_dsn, "UPDATE tickets SET title = title")
    res = cdc("tail", "--dsn", db_dsn, "--slot", "cdc_events", "--idle-exit", "1")
    assert_one_line_error(res, "cdc_events is a watcher's slot (ops.slots names it)")
    assert res.returncode == 1
    assert one(db_dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots") == confirmed


def test_tail_refuses_an_existing_slot_as_a_temporary_name(db_dsn: str) -> None:
    run_sql(db_dsn, "SELECT pg_create_logical_replication_slot('mine', 'pgoutput')")
    res = cdc("tail", "--dsn", db_dsn, "--slot", "mine", "--temporary", "--idle-exit", "1")
    assert_one_line_error(res, "replication slot mine already exists", "another --slot name")
    assert res.returncode == 1


def test_tail_names_the_database_that_owns_the_slot(db_dsn: str, db_name: str, other_dsn: str) -> None:
    """Issue 11 item 12: this was reported as an invalidated slot, with advice to tear it down."""
    setup_ok(db_dsn)
    res = cdc("tail", "--dsn", other_dsn, "--slot", "cdc_events", "--idle-exit", "1")
    assert_one_line_error(res, "replication slot cdc_events belongs to database " + db_name)
    assert "invalidated" not in res.stderr and "teardown" not in res.stderr
    assert res.returncode == 1


# -- a slot the server invalidated ------------------------------------------------------------------


@pytest.fixture
def small_wal_dsn() -> Iterator[str]:
    """A cluster of its own whose slots lose their WAL past 1 MB (one segment switch)."""
    with LocalPostgres(settings={"max_slot_wal_keep_size": "1MB"}) as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE psa")
        dsn = pg.dsn("psa")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_sql())
        yield dsn


def invalidate_slot(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(20):
            conn.execute("SELECT pg_logical_emit_message(false, 'test', 'wal')")
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            row = conn.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'cdc_events'"
            ).fetchone()
            if row is not None and row[0] == "lost":
                return
    raise AssertionError("the slot was not invalidated")


def test_a_lost_slot_is_reported_refused_and_recreated_with_its_gap_recorded(
    small_wal_dsn: str, tmp_path: Path
) -> None:
    dsn, sink = small_wal_dsn, tmp_path / "events.jsonl"
    step(dsn, "seed")
    setup_ok(dsn)
    step(dsn, "create_ticket")
    assert watch_once(dsn, sink)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT lsn::text, commit_time FROM cdc.checkpoints").fetchone()
        assert row is not None and row[1] is not None
        old_lsn, old_time = row
    step(dsn, "status_in_progress")  # committed while the slot is still there: lost with it
    invalidate_slot(dsn)

    check = cdc("setup", "--dsn", dsn, "--check")
    assert check.returncode == 1, check.stdout
    assert "nothing to do" not in check.stdout
    assert "problem: replication slot cdc_events was invalidated" in check.stdout
    assert "cdc setup --recreate-slot" in check.stdout

    refused = cdc("setup", "--dsn", dsn)
    assert_one_line_error(refused, "cdc_events was invalidated", "cdc setup --recreate-slot")
    assert refused.returncode == 1
    stopped = cdc("watch", "--dsn", dsn, "--once", "--sink", f"jsonl:{sink}")
    assert_one_line_error(stopped, "invalidated", "cdc setup --recreate-slot")
    assert "teardown" not in stopped.stderr
    assert one(dsn, "SELECT lsn::text FROM cdc.checkpoints") == old_lsn  # nothing moved yet

    redone = setup_ok(dsn, "--recreate-slot")
    with psycopg.connect(dsn, autocommit=True) as conn:
        gap = conn.execute(
            "SELECT reason, from_lsn::text, from_time, to_lsn::text, to_time FROM cdc.slot_gaps"
        ).fetchall()
        new_start = conn.execute("SELECT consistent_point::text FROM cdc.slots").fetchone()
        wal_status = conn.execute("SELECT wal_status FROM pg_replication_slots").fetchone()
    assert new_start is not None and wal_status is not None and wal_status[0] != "lost"
    assert len(gap) == 1
    reason, from_lsn, from_time, to_lsn, to_time = gap[0]
    assert (reason, from_lsn, from_time, to_lsn) == ("lost", old_lsn, old_time, new_start[0])
    assert to_time > from_time
    assert f"changes committed after {old_lsn}" in redone.stdout
    assert f"before {new_start[0]}" in redone.stdout and "cdc.slot_gaps" in redone.stdout
    assert cdc("setup", "--dsn", dsn, "--check").stdout.startswith("nothing to do")

    # the watcher starts at the new slot's consistent point: later changes arrive, the lost one does not
    step(dsn, "close")
    after = watch_once(dsn, sink)
    assert "TICKET_CLOSED" in [e["eventType"] for e in after]
    assert min(parse_lsn(e["source"]["lsn"]) for e in after) > parse_lsn(new_start[0])


def test_teardown_of_a_lost_slot_keeps_where_the_lost_range_begins(
    small_wal_dsn: str, tmp_path: Path
) -> None:
    """Tearing down a lost slot forgets its checkpoint, but not the start of the changes it lost:
    a later `cdc setup` reports the whole range."""
    dsn, sink = small_wal_dsn, tmp_path / "events.jsonl"
    step(dsn, "seed")
    setup_ok(dsn)
    step(dsn, "create_ticket")
    assert watch_once(dsn, sink)
    old_lsn = one(dsn, "SELECT lsn::text FROM cdc.checkpoints")
    step(dsn, "status_in_progress")
    invalidate_slot(dsn)

    down = cdc("teardown", "--dsn", dsn)
    assert down.returncode == 0, down.stderr
    assert "recorded in cdc.slot_gaps" in down.stdout and "dropped slot cdc_events" in down.stdout
    assert one(dsn, "SELECT count(*) FROM cdc.checkpoints") == 0
    assert one(dsn, "SELECT from_lsn::text FROM cdc.slot_gaps WHERE to_lsn IS NULL") == old_lsn

    again = setup_ok(dsn)
    assert f"changes committed after {old_lsn}" in again.stdout
    assert one(dsn, "SELECT count(*) FROM cdc.slot_gaps WHERE to_lsn IS NOT NULL") == 1


def test_a_recreation_that_stopped_midway_is_finished_by_the_next_setup(small_wal_dsn: str) -> None:
    dsn = small_wal_dsn
    step(dsn, "seed")
    setup_ok(dsn)
    invalidate_slot(dsn)
    old_start = one(dsn, "SELECT consistent_point::text FROM cdc.slots")
    killed = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "setup", "--dsn", dsn, "--recreate-slot"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean_env(), "CDC_FAULT": "setup.after_slot_created:1"},
    )
    assert killed.returncode == -9, killed.stderr
    # the new slot exists, the gap's start is kept, its end is not known yet
    assert one(dsn, "SELECT wal_status FROM pg_replication_slots") != "lost"
    assert one(dsn, "SELECT from_lsn::text FROM cdc.slot_gaps WHERE to_lsn IS NULL") == old_start
    res = setup_ok(dsn)
    assert "finish replacing slot cdc_events" in res.stdout
    assert one(dsn, "SELECT count(*) FROM cdc.slot_gaps WHERE to_lsn IS NULL") == 0
    assert one(dsn, "SELECT from_lsn::text FROM cdc.slot_gaps") == old_start
    assert one(dsn, "SELECT to_lsn = consistent_point FROM cdc.slot_gaps, cdc.slots")
    assert cdc("setup", "--dsn", dsn, "--check").stdout.startswith("nothing to do")


def test_recreate_slot_refuses_a_slot_that_is_not_lost(db_dsn: str) -> None:
    setup_ok(db_dsn)
    before = one(db_dsn, "SELECT consistent_point::text FROM cdc.slots")
    res = cdc("setup", "--dsn", db_dsn, "--recreate-slot")
    assert_one_line_error(res, "cdc_events is not lost", "without it")
    assert res.returncode == 1
    assert one(db_dsn, "SELECT consistent_point::text FROM cdc.slots") == before
