"""Slot health at the start of `cdc watch` (issue 14 item 2), on a throwaway cluster of its own.

With ``max_slot_wal_keep_size`` 1 MB (and ``max_wal_size`` 1 GB, so that no checkpoint comes
on its own) one ``pg_switch_wal()`` with the watcher stopped makes its slot ``unreserved``; with
32 MB for checkpoints and 64 MB for slots a few make it ``extended``; back at 1 MB, a
CHECKPOINT invalidates it (``lost``). Each time `cdc watch --once` is started: a warning line naming the
state and the WAL left in MB (and it still delivers), then for the lost slot one error line with
the `cdc setup --recreate-slot` hint and exit 1, before anything is delivered. While a watcher
streams, a change of state is one warning line; invalidating its slot ends its walsender (the
server's doing): the watcher reads why and exits 1 with the hint, as the next start does.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdc.localpg import LocalPostgres
from cdc.sample import schema_sql
from tests.e2e.test_cli_errors import assert_one_line_error, cdc
from tests.e2e.test_slot_safety import events, one, setup_ok, step
from tests.environ import command_env
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    # the WAL limits by ALTER SYSTEM, which the tests change (a -c option would outrank it)
    with LocalPostgres(settings={"wal_keep_size": "0"}) as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE psa")
        with psycopg.connect(pg.dsn("psa"), autocommit=True) as conn:
            conn.execute(schema_sql())
        configure(pg.dsn("psa"), max_slot_wal_keep_size="1MB", max_wal_size="1GB")
        yield pg.dsn("psa")


def configure(dsn: str, **settings: str) -> None:
    """ALTER SYSTEM and reload, waiting until a new session sees the values."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        conn.execute("SELECT pg_reload_conf()")
    for _ in range(50):
        with psycopg.connect(dsn, autocommit=True) as conn:
            seen = {n: conn.execute(f"SHOW {n}").fetchone() for n in settings}
        if all(seen[n] is not None and seen[n][0] == v for n, v in settings.items()):
            return
        time.sleep(0.1)
    raise AssertionError(f"settings {settings} not taken")


def switch_until(dsn: str, wanted: str, *, checkpoint: bool = False, slot: str = "cdc_events") -> int | None:
    """Write and switch WAL segments until the slot's wal_status is ``wanted``; its safe_wal_size."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(12):
            conn.execute("SELECT pg_logical_emit_message(false, 'test', 'wal')")
            conn.execute("SELECT pg_switch_wal()")
            if checkpoint:
                conn.execute("CHECKPOINT")
            row = conn.execute(
                "SELECT wal_status, safe_wal_size FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            assert row is not None
            if row[0] == wanted:
                return row[1]
    raise AssertionError(f"the slot did not become {wanted}")


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "slot health" in line]


def watch_once(dsn: str, sink: Path) -> subprocess.CompletedProcess[str]:
    return cdc("watch", "--dsn", dsn, "--once", "--heartbeat-interval", "0.5", "--sink", f"jsonl:{sink}")


def mb(size: int | None) -> str:
    return f"{(size or 0) / 1024 / 1024:.1f} MB"


def test_start_warns_of_unreserved_and_extended_and_stops_on_lost(dsn: str, tmp_path: Path) -> None:
    sink = tmp_path / "events.jsonl"
    step(dsn, "seed")
    setup_ok(dsn)

    # past max_slot_wal_keep_size (1 MB), with no checkpoint yet to remove the WAL
    step(dsn, "create_ticket")
    safe = switch_until(dsn, "unreserved")
    res = watch_once(dsn, sink)
    assert res.returncode == 0, res.stderr
    said = warnings_of(res.stderr)
    assert len(said) == 1, res.stderr
    assert "wal_status unreserved" in said[0] and f"{mb(safe)} safe WAL left" in said[0]
    assert "TICKET_CREATED" in [e["eventType"] for e in events(sink)]  # a warning, not a stop

    # past max_wal_size (32 MB), within max_slot_wal_keep_size (64 MB)
    configure(dsn, max_slot_wal_keep_size="64MB", max_wal_size="32MB")
    safe = switch_until(dsn, "extended")
    assert safe is not None and safe > 0
    res = watch_once(dsn, sink)
    assert res.returncode == 0, res.stderr
    said = warnings_of(res.stderr)
    assert len(said) == 1, res.stderr
    assert "wal_status extended" in said[0] and f"{mb(safe)} more WAL" in said[0]

    # a reserved slot: no line at all
    res = watch_once(dsn, sink)
    assert res.returncode == 0 and warnings_of(res.stderr) == [], res.stderr

    configure(dsn, max_slot_wal_keep_size="1MB")
    step(dsn, "status_in_progress")
    switch_until(dsn, "lost", checkpoint=True)
    before = len(events(sink))
    res = watch_once(dsn, sink)
    assert res.returncode == 1
    assert_one_line_error(res, "cdc_events was invalidated (wal_status lost)", "cdc setup --recreate-slot")
    assert len(events(sink)) == before


STREAMING = """
SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
 WHERE s.slot_name = 'cdc_b' AND r.state = 'streaming'"""


def test_while_streaming_a_change_of_state_is_one_warning_line(dsn: str, tmp_path: Path) -> None:
    """The monitor reads the slot every 10 s while the watcher streams: unreserved is said once;
    invalidated, the server ends the walsender and the watcher exits 1 naming the invalidation,
    with the hint, and so does the next start."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE psb")
    other = dsn.replace("dbname=psa", "dbname=psb")
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute(schema_sql())
    step(other, "seed")
    setup_ok(other, "--slot", "cdc_b")
    sink, log = tmp_path / "events.jsonl", tmp_path / "stderr.txt"
    # an open transaction that has written WAL holds the slot's restart_lsn back while the watcher
    # streams and confirms (one that only took an xid does not: the next running-xacts record,
    # every 15 s, moved restart_lsn on and the slot was reserved again before the monitor looked)
    holder = psycopg.connect(other)
    holder.execute("SELECT pg_logical_emit_message(true, 'test', 'hold')")
    cmd = [sys.executable, "-m", "cdc.cli", "watch", "--dsn", other, "--slot", "cdc_b"]
    with log.open("w") as err:
        proc = subprocess.Popen([*cmd, "--sink", f"jsonl:{sink}"], stderr=err, env=command_env())
    try:
        assert wait_for(lambda: one(other, STREAMING) == 1, timeout=20)
        assert warnings_of(log.read_text()) == []  # reserved at start
        safe = switch_until(other, "unreserved", slot="cdc_b")
        assert wait_for(lambda: warnings_of(log.read_text()) != [], timeout=30), log.read_text()
        time.sleep(1.0)  # no second line for the same state
        # invalidated while streaming: the server ends the walsender first
        holder.rollback()
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        assert proc.wait(timeout=20) == 1  # the slot's invalidation, not a retryable lost connection
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        holder.close()
    text = log.read_text()
    # the server ended the walsender; the watcher read why and says it, with what to do
    last = text.splitlines()[-1]
    assert "cdc_b was invalidated (wal_status lost)" in last and "cdc setup --recreate-slot" in last, text
    said = warnings_of(text)
    assert len(said) == 1, text
    assert "cdc_b is about to lose WAL it needs (wal_status unreserved)" in said[0]
    # the heartbeat writes WAL too: the figure is the one the monitor read, at most the one here
    shown = re.search(r"(-?[0-9.]+) MB safe WAL left", said[0])
    assert shown is not None and float(shown.group(1)) <= float(mb(safe).split()[0])
    # the next start says what happened
    res = cdc(*cmd[3:], "--once", "--sink", f"jsonl:{sink}")
    assert_one_line_error(res, "cdc_b was invalidated (wal_status lost)", "cdc setup --recreate-slot")
    assert res.returncode == 1
