"""`cdc lag`: the slot's figures from the server alone, through the real CLI and real Postgres.

Each figure is checked against SQL the test runs itself just before and just after the command
(concurrent WAL moves between them: the command's value must lie between the two); a stopped
watcher plus new writes passes `--max-lag-bytes 1` and a small `--max-lag-seconds` (exit 2, one
line), and a missing slot is one error line (exit 1).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from catalog.forms import parse_timestamp
from cdc.lag import Lag, Thresholds, over, source_lag_seconds
from tests.e2e.test_cli_errors import assert_one_line_error, cdc
from tests.e2e.test_slot_safety import setup_ok, step
from tests.environ import command_env
from tests.integration.conftest import wait_for
from tests.pgharness import PgServer, drop_database

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SLOT_NOW = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS current,
       pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint AS confirmed,
       pg_wal_lsn_diff(restart_lsn, '0/0')::bigint AS restart,
       wal_status, active_pid, now() AS now, safe_wal_size
  FROM pg_replication_slots WHERE slot_name = 'cdc_events'"""


def slot_now(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute(SLOT_NOW).fetchone()
        assert row is not None
        return row


def assert_agrees(got: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> None:
    """The command's figures lie between what SQL saw just before and just after it (WAL is
    written, and a running watcher confirms, in between)."""
    lag, retained = got["replicationLagBytes"], got["retainedWalBytes"]
    assert before["current"] - after["confirmed"] <= lag <= after["current"] - before["confirmed"]
    assert before["current"] - after["restart"] <= retained <= after["current"] - before["restart"]
    assert got["walStatus"] in (before["wal_status"], after["wal_status"])
    assert (got["safeWalSize"] is None) == (before["safe_wal_size"] is None)


def checkpoint(dsn: str) -> tuple[str, datetime]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT lsn::text, commit_time FROM cdc.checkpoints WHERE slot_name = 'cdc_events'"
        ).fetchone()
        assert row is not None
        return row[0], row[1]


def lag_json(dsn: str, *more: str) -> tuple[dict[str, Any], tuple[Any, ...], tuple[Any, ...]]:
    """`cdc lag` (stdout a pipe: JSON by default), with the slot read by SQL before and after."""
    before = slot_now(dsn)
    res = cdc("lag", "--dsn", dsn, *more)
    after = slot_now(dsn)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    return orjson.loads(res.stdout), before, after


def watch_once(dsn: str) -> None:
    res = cdc("watch", "--dsn", dsn, "--once", "--heartbeat-interval", "0.5")
    assert res.returncode == 0, res.stderr


def test_a_stopped_watcher_behind_new_writes(db_dsn: str) -> None:
    step(db_dsn, "seed")
    setup_ok(db_dsn)
    step(db_dsn, "create_ticket")
    watch_once(db_dsn)  # delivered into the outbox, checkpoint written; then stopped
    cp_lsn, cp_time = checkpoint(db_dsn)
    step(db_dsn, "assign")  # pending for the stopped watcher

    got, before, after = lag_json(db_dsn)
    assert_agrees(got, before, after)
    assert got["replicationLagBytes"] > 0
    assert got["walStatus"] == "reserved"
    assert got["activePid"] is None and before["active_pid"] is None
    assert got["standbyCount"] == 0
    assert got["checkpointLsn"] == cp_lsn
    assert parse_timestamp(got["lastDeliveredCommitTime"]) == cp_time.replace(
        microsecond=cp_time.microsecond // 1000 * 1000
    )
    # pending WAL: seconds since the last delivered commit, by the server's clock
    low, high = (before["now"] - cp_time).total_seconds(), (after["now"] - cp_time).total_seconds()
    assert low - 0.001 <= got["sourceLagSeconds"] <= high + 0.001
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        delivered = conn.execute("SELECT count(*) FROM cdc.outbox").fetchone()
    assert delivered is not None and delivered[0] > 0
    assert got["eventsLastMinute"] == delivered[0] and got["eventsLastMinuteCapped"] is False

    # thresholds: exit 2 with one line saying which and by how much; under them, 0
    res = cdc("lag", "--dsn", db_dsn, "--max-lag-bytes", "1")
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "over --max-lag-bytes 1 by " in line and "bytes" in line and "source lag" not in line
    assert cdc("lag", "--dsn", db_dsn, "--max-lag-bytes", str(1 << 40)).returncode == 0
    time.sleep(max(0.0, 0.6 - (datetime.now(UTC) - cp_time).total_seconds()))
    res = cdc("lag", "--dsn", db_dsn, "--max-lag-seconds", "0.5", "--max-lag-bytes", str(1 << 40))
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "over --max-lag-seconds 0.5 by " in line and "replication lag" not in line
    assert cdc("lag", "--dsn", db_dsn, "--max-lag-seconds", "3600").returncode == 0

    # the table names every figure and shows its value
    res = cdc("lag", "--dsn", db_dsn, "--table")
    assert res.returncode == 0, res.stderr
    for figure in (
        "replication lag bytes",
        "retained WAL bytes",
        "wal_status",
        "safe_wal_size",
        "source lag seconds",
        "last delivered commit time",
        "events in the last minute",
        "active pid",
        "standby count",
    ):
        assert figure in res.stdout, figure
    assert "reserved" in res.stdout and got["lastDeliveredCommitTime"] in res.stdout

    # --watch: a JSON line per refresh until Ctrl-C, which exits 0
    watching = subprocess.Popen(
        [sys.executable, "-m", "cdc.cli", "lag", "--dsn", db_dsn, "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(),
    )
    assert watching.stdout is not None
    readings = [orjson.loads(watching.stdout.readline()) for _ in range(2)]
    watching.send_signal(signal.SIGINT)
    rest, err = watching.communicate(timeout=30)
    assert watching.returncode == 0, err
    assert err == ""
    for r in readings + [orjson.loads(ln) for ln in rest.splitlines()]:
        assert r["checkpointLsn"] == cp_lsn and r["replicationLagBytes"] >= got["replicationLagBytes"]
    assert readings[1]["sourceLagSeconds"] > readings[0]["sourceLagSeconds"]


def test_a_running_watcher_and_one_waiting(db_dsn: str, db_name: str) -> None:
    step(db_dsn, "seed")
    setup_ok(db_dsn)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "cdc.cli", "watch", "--dsn", db_dsn, "--heartbeat-interval", "0.5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(),
    )
    try:

        def streaming() -> bool:
            assert watcher.poll() is None, watcher.communicate()[1]
            return slot_now(db_dsn)["active_pid"] is not None

        assert wait_for(streaming, timeout=30), "the watcher never streamed"
        step(db_dsn, "create_ticket")
        # a second watcher of the slot, waiting: a session named as a standby names its own
        # (cdc/standby.py; tests/e2e/test_standby.py counts a real one)
        with psycopg.connect(
            db_dsn, application_name="cdc watch cdc_events: standby", autocommit=True
        ) as waiting:
            got, before, after = lag_json(db_dsn, "--json")
            named = waiting.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'cdc watch cdc_events%'"
            ).fetchone()
        assert named is not None and named[0] >= 3  # the watcher's stream and store are not counted
        assert got["activePid"] == before["active_pid"] == after["active_pid"]
        assert got["standbyCount"] == 1
        assert_agrees(got, before, after)
        # delivered by now (a heartbeat every 0.5 s): a small lag, and it counts the ticket's events
        assert wait_for(
            lambda: orjson.loads(cdc("lag", "--dsn", db_dsn).stdout)["eventsLastMinute"] > 0, timeout=20
        )
        got, _, _ = lag_json(db_dsn)
        assert got["standbyCount"] == 0
        assert got["sourceLagSeconds"] is not None and got["sourceLagSeconds"] < 5
    finally:
        watcher.terminate()
        watcher.communicate(timeout=30)


def test_a_missing_slot_is_one_line(db_dsn: str) -> None:
    res = cdc("lag", "--dsn", db_dsn, "--slot", "no_such_slot")
    assert_one_line_error(res, "replication slot no_such_slot does not exist", "cdc setup")
    assert res.returncode == 1
    assert res.stdout == ""


@pytest.fixture
def other_dsn(pg_server: PgServer, template_db: str) -> Iterator[str]:
    """A second database of the same cluster (slot names are cluster-wide)."""
    name = f"cdc_other_{uuid.uuid4().hex[:10]}"
    pg_server.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_db))
    )
    yield pg_server.dsn(name)
    drop_database(pg_server, name)


def test_a_slot_of_another_database_or_a_physical_slot_is_one_line(
    db_dsn: str, db_name: str, other_dsn: str
) -> None:
    physical = f"cdc_lag_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('cdc_lag_logical', 'pgoutput')")
        conn.execute("SELECT pg_create_physical_replication_slot(%s)", (physical,))
    try:
        res = cdc("lag", "--dsn", other_dsn, "--slot", "cdc_lag_logical")
        assert_one_line_error(res, f"replication slot cdc_lag_logical belongs to database {db_name}", "--dsn")
        assert res.returncode == 1
        res = cdc("lag", "--dsn", db_dsn, "--slot", physical)
        assert_one_line_error(res, f"replication slot {physical} is a physical slot", "logical slot")
        assert res.returncode == 1
    finally:
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (physical,))


# -- the pure parts ------------------------------------------------------------------------------

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("current", "confirmed", "checkpoint_lsn", "commit_time", "expected"),
    [
        ("0/200", "0/100", "0/180", T0, 12.5),  # pending: seconds since the last delivered commit
        ("0/200", "0/200", "0/180", T0, 0.0),  # confirmed up to the current position
        ("0/200", "0/100", "0/200", T0, 0.0),  # checkpoint at the current position
        ("0/200", "0/100", None, None, None),  # pending, nothing delivered yet: unknown
        ("0/100", "0/100", None, None, 0.0),  # nothing pending, nothing delivered
    ],
)
def test_source_lag_seconds(
    current: str,
    confirmed: str,
    checkpoint_lsn: str | None,
    commit_time: datetime | None,
    expected: float | None,
) -> None:
    now = datetime(2026, 1, 2, 3, 4, 18, 178000, tzinfo=UTC)
    assert (
        source_lag_seconds(
            current_lsn=current,
            confirmed_flush_lsn=confirmed,
            checkpoint_lsn=checkpoint_lsn,
            commit_time=commit_time,
            now=now,
        )
        == expected
    )


def reading(lag_bytes: int | None, lag_s: float | None) -> Lag:
    return Lag(
        slot="s",
        current_lsn="0/200",
        confirmed_flush_lsn="0/100",
        restart_lsn="0/100",
        replication_lag_bytes=lag_bytes,
        retained_wal_bytes=256,
        wal_status="reserved",
        safe_wal_size=None,
        checkpoint_lsn=None,
        last_delivered_commit_time=None,
        source_lag_seconds=lag_s,
        events_last_minute=None,
        events_last_minute_capped=False,
        active_pid=None,
        standby_count=0,
        server_time=T0,
    )


def test_over_names_each_threshold_passed_and_by_how_much() -> None:
    both = Thresholds(max_lag_bytes=100, max_lag_seconds=2)
    assert over(reading(100, 2.0), both) is None  # at the threshold is not over it
    assert over(reading(None, None), both) is None  # unknown is never over
    assert over(reading(150, 1.0), both) == (
        "cdc: lag: slot s: replication lag 150 bytes is over --max-lag-bytes 100 by 50 bytes"
    )
    assert over(reading(150, 3.25), both) == (
        "cdc: lag: slot s: replication lag 150 bytes is over --max-lag-bytes 100 by 50 bytes; "
        "source lag 3.250 s is over --max-lag-seconds 2 by 1.250 s"
    )
    assert over(reading(10**9, 10**6), Thresholds()) is None


def test_readme_shows_every_option_of_lag() -> None:
    from tests.e2e.test_cli_surface import _help_options, _readme_synopsis

    assert _readme_synopsis("lag") == _help_options("lag")
