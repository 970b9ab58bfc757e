"""The watcher when watched tables change shape under it, against a real Postgres: a table that
loses REPLICA IDENTITY FULL (through the real ``cdc`` CLI), a TRUNCATE, a renamed column."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from cdc import queries
from cdc.sinks.memory import MemorySink
from cdc.watch import Watcher, WatchOptions
from derivers import default_derivers
from tests.environ import command_env

from .conftest import run_sql, setup_with_state, wait_for

pytestmark = pytest.mark.integration

T1 = "99999999-9999-4999-8999-999999999991"
T3 = "99999999-9999-4999-8999-999999999993"
OPEN = "66666666-6666-4666-8666-666666666661"
IN_PROGRESS = "66666666-6666-4666-8666-666666666662"
SETTINGS = "public.ticket_bundle_settings"
STATUS_CHANGE = ["TICKET_STATUS_CHANGED", "TICKET_UPDATED"]  # what a status change yields


def step(dsn: str, name: str) -> None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(queries.raw("sample/workload", name))


def fetch(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


# -- through the CLI ------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return command_env()


def cdc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, timeout=120, env=_env()
    )


def the_error_line(returncode: int, stderr: str) -> str:
    """Exit 1 ("needs a change") and one error line, the last, cause then hint; no traceback.
    (The watcher's own log lines may come before it.)"""
    assert returncode == 1, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("cdc: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert " — " in errors[0]
    return errors[0]


def assert_refused_for_identity(returncode: int, stderr: str) -> None:
    line = the_error_line(returncode, stderr)
    assert "public.tickets" in line and "REPLICA IDENTITY DEFAULT" in line, line
    assert line.endswith("— run `cdc setup` (it sets REPLICA IDENTITY FULL on the watched tables)"), line


def delivered(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def types(path: Path, ticket: str = T1) -> list[str]:
    return [e["eventType"] for e in delivered(path) if e["payload"].get("ticketId") == ticket]


def watch_once(dsn: str, out: Path) -> subprocess.CompletedProcess[str]:
    return cdc("watch", "--dsn", dsn, "--once", "--heartbeat-interval", "0.5", "--sink", f"jsonl:{out}")


def cli_setup(dsn: str) -> None:
    res = cdc("setup", "--dsn", dsn)
    assert res.returncode == 0, res.stderr


def test_watch_refuses_to_start_while_a_watched_table_is_not_full_and_loses_nothing(
    db_dsn: str, tmp_path: Path
) -> None:
    run_sql(db_dsn, queries.raw("sample/workload", "seed"))
    step(db_dsn, "create_ticket")
    cli_setup(db_dsn)
    step(db_dsn, "status_in_progress")  # written under FULL, waiting in the slot
    run_sql(db_dsn, "ALTER TABLE tickets REPLICA IDENTITY DEFAULT")
    out = tmp_path / "events.jsonl"
    for _ in range(2):  # and still after a restart
        res = watch_once(db_dsn, out)
        assert_refused_for_identity(res.returncode, res.stderr)
        assert delivered(out) == []
    assert fetch(db_dsn, "SELECT lsn FROM cdc.checkpoints") == []

    cli_setup(db_dsn)  # restores FULL
    res = watch_once(db_dsn, out)
    assert res.returncode == 0, res.stderr
    assert types(out) == STATUS_CHANGE  # the change that waited is delivered
    assert fetch(db_dsn, "SELECT count(*) FROM cdc.derivation_gaps") == [(0,)]


def test_watch_stops_at_the_first_change_without_full_identity_before_deriving_it(
    db_dsn: str, tmp_path: Path
) -> None:
    run_sql(db_dsn, queries.raw("sample/workload", "seed"))
    step(db_dsn, "create_ticket")
    cli_setup(db_dsn)
    out = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cdc.cli",
            "watch",
            "--dsn",
            db_dsn,
            "--heartbeat-interval",
            "0.5",
            "--sink",
            f"jsonl:{out}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        step(db_dsn, "status_in_progress")
        assert wait_for(lambda: "TICKET_STATUS_CHANGED" in types(out), timeout=60)  # streaming, past start
        run_sql(db_dsn, "ALTER TABLE tickets REPLICA IDENTITY DEFAULT")
        step(db_dsn, "priority_high")  # pgoutput sends the table's Relation (DEFAULT) ahead of it
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert_refused_for_identity(proc.returncode, stderr)
    assert types(out) == STATUS_CHANGE  # nothing of the priority change's transaction
    [(checkpoint,)] = fetch(db_dsn, "SELECT lsn::text FROM cdc.checkpoints")

    res = watch_once(db_dsn, out)  # a restart refuses too, at start
    assert_refused_for_identity(res.returncode, res.stderr)

    cli_setup(db_dsn)
    run_sql(db_dsn, f"UPDATE tickets SET status_id = '{OPEN}' WHERE ticket_id = '{T1}'")  # under FULL again
    res = watch_once(db_dsn, out)
    assert res.returncode == 0, res.stderr
    # The priority change was written without a before-image: it yields nothing (never a guess),
    # and its range is recorded; the change written after `cdc setup` is delivered.
    assert types(out) == STATUS_CHANGE + STATUS_CHANGE
    assert delivered(out)[-2]["payload"]["newStatusId"] == OPEN
    errors = [line for line in res.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "REPLICA IDENTITY DEFAULT" in errors[0] and "derivation_gaps" in errors[0]
    [gap] = fetch(
        db_dsn,
        "SELECT table_name, reason, missing_columns, from_lsn > %s::pg_lsn, to_lsn > from_lsn, "
        "'TICKET_PRIORITY_CHANGED' = ANY (event_types) FROM cdc.derivation_gaps",
        (checkpoint,),
    )
    assert gap == ("public.tickets", "replica_identity", [], True, True, True)


# -- in process -------------------------------------------------------------------------------------


def prepare(dsn: str) -> None:
    run_sql(dsn, queries.raw("sample/workload", "seed"))
    setup_with_state(dsn)


def drain(dsn: str) -> tuple[Watcher, list[Any]]:
    sink = MemorySink()
    watcher = Watcher(
        WatchOptions(dsn, once=True, heartbeat_interval=0.5, status_interval=1.0), sink, default_derivers()
    )
    watcher.run()
    return watcher, sink.envelopes


def server_now(dsn: str) -> datetime:
    [(now,)] = fetch(dsn, "SELECT now()")
    return now  # type: ignore[no-any-return]


def test_truncate_cancels_the_timers_its_rows_armed_and_empties_their_reference_state(db_dsn: str) -> None:
    prepare(db_dsn)
    for name in ("create_ticket", "bundle", "bundle_attach"):
        step(db_dsn, name)
    run_sql(
        db_dsn,
        queries.raw("sample/workload", "sla_ticket").replace("interval '2 seconds'", "interval '1 second'"),
    )
    _, first = drain(db_dsn)
    assert "TICKET_SLA_STAGE_ENTERED" in [e.event_type for e in first]
    timers = fetch(
        db_dsn,
        # each stage's breach timer (its threshold twin, `…:threshold`, is armed and forgotten with it)
        "SELECT subject_id, due_at, armed_table FROM cdc.timers WHERE state = 'armed' AND timer_key NOT LIKE '%:threshold'",
    )
    assert {subject for subject, _, _ in timers} == {T1, T3}  # T1's ITIL stage, T3's policy stage
    assert {table for _, _, table in timers} == {"public.tickets"}
    [due] = [due for subject, due, _ in timers if subject == T3]
    assert fetch(db_dsn, f"SELECT count(*) FROM cdc.state_rows WHERE table_name = '{SETTINGS}'") == [(1,)]

    run_sql(db_dsn, "TRUNCATE tickets CASCADE")
    assert wait_for(lambda: server_now(db_dsn) > due, timeout=30)
    watcher, after = drain(db_dsn)
    assert watcher.watermark.time is not None and watcher.watermark.time > due  # the due time has passed ...
    assert [
        e.event_type for e in after if e.event_type == "TICKET_SLA_STAGE_BREACHED"
    ] == []  # ... unbreached
    assert watcher.stats.timers_fired == 0
    assert fetch(db_dsn, "SELECT count(*) FROM cdc.timers") == [(0,)]
    assert fetch(db_dsn, f"SELECT count(*) FROM cdc.state_rows WHERE table_name = '{SETTINGS}'") == [(0,)]
    assert fetch(db_dsn, "SELECT count(*) FROM cdc.state_rows WHERE table_name = 'public.statuses'") == [(3,)]


def test_a_renamed_column_withholds_the_events_that_read_it_and_records_the_gap(
    db_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    prepare(db_dsn)
    step(db_dsn, "create_ticket")
    drain(db_dsn)
    run_sql(db_dsn, "ALTER TABLE tickets RENAME COLUMN status_id TO status_ref")
    run_sql(db_dsn, f"UPDATE tickets SET status_ref = '{IN_PROGRESS}' WHERE ticket_id = '{T1}'")
    step(db_dsn, "priority_high")
    with caplog.at_level(logging.WARNING):
        _, envs = drain(db_dsn)
    assert [e.event_type for e in envs] == ["TICKET_PRIORITY_CHANGED"]  # no STATUS_CHANGED, no UPDATED
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "public.tickets" in errors[0] and "status_id" in errors[0] and "TICKET_STATUS_CHANGED" in errors[0]
    [gap] = fetch(
        db_dsn,
        "SELECT table_name, reason, missing_columns, event_types, from_lsn::text, seen_lsn::text, to_lsn "
        "FROM cdc.derivation_gaps",
    )
    table, reason, missing, event_types, from_lsn, seen_lsn, to_lsn = gap
    assert (table, reason, missing, to_lsn) == ("public.tickets", "columns_missing", ["status_id"], None)
    assert "TICKET_STATUS_CHANGED" in event_types and "TICKET_PRIORITY_CHANGED" not in event_types
    [(checkpoint, in_order)] = fetch(
        db_dsn, "SELECT lsn::text, %s::pg_lsn <= lsn FROM cdc.checkpoints", (from_lsn,)
    )
    assert in_order and seen_lsn == checkpoint  # open, reaching as far as the checkpoint

    run_sql(db_dsn, "ALTER TABLE tickets RENAME COLUMN status_ref TO status_id")
    run_sql(db_dsn, f"UPDATE tickets SET status_id = '{OPEN}' WHERE ticket_id = '{T1}'")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, envs = drain(db_dsn)
    assert "TICKET_STATUS_CHANGED" in [e.event_type for e in envs]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    [(closed,)] = fetch(db_dsn, "SELECT to_lsn > from_lsn AND to_lsn > seen_lsn FROM cdc.derivation_gaps")
    assert closed
