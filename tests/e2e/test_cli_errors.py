"""Bad input gets one line on stderr saying what is wrong and what to do, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cdc.localpg import LocalPostgres, free_port
from tests.environ import command_env
from tests.integration.conftest import TAIL_SLOT, BackgroundTail, run_sql, setup_for_tail, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def cdc(*args: str) -> subprocess.CompletedProcess[str]:
    env = command_env()
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def assert_one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode not in (0, 2), res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert lines[0].startswith("cdc: error: ")
    assert " — " in lines[0]  # the cause, then what to do
    for n in needles:
        assert n in lines[0], lines[0]


def test_server_unreachable() -> None:
    res = cdc("tail", "--dsn", f"host=127.0.0.1 port={free_port()} user=postgres connect_timeout=3")
    assert_one_line_error(res, "cannot reach the server")
    assert res.returncode == 3  # worth retrying


@pytest.mark.parametrize("dsn", ["this is not a dsn", "postgresql://[bad"])
def test_bad_dsn(dsn: str) -> None:
    assert_one_line_error(cdc("setup", "--dsn", dsn), "connection string")


def test_slot_missing(db_dsn: str) -> None:
    assert_one_line_error(
        cdc("tail", "--dsn", db_dsn, "--slot", "no_such_slot"), "does not exist", "temporary slot"
    )


def test_slot_active_in_another_process(db_dsn: str) -> None:
    setup_for_tail(db_dsn)
    with BackgroundTail(db_dsn, idle_exit=30):

        def active() -> bool:
            import psycopg

            with psycopg.connect(db_dsn) as c:
                r = c.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (TAIL_SLOT,)
                ).fetchone()
                return bool(r and r[0])

        assert wait_for(active)
        res = cdc("tail", "--dsn", db_dsn, "--slot", TAIL_SLOT, "--idle-exit", "1")
    assert_one_line_error(res, "active in another process")


def test_watched_table_missing(db_dsn: str) -> None:
    assert_one_line_error(
        cdc("setup", "--dsn", db_dsn, "--tables", "public.tickets,public.nope"),
        "public.nope",
        "does not exist",
    )


def test_table_without_primary_key(db_dsn: str) -> None:
    run_sql(db_dsn, "CREATE TABLE public.no_pk (a int)")
    assert_one_line_error(cdc("setup", "--dsn", db_dsn, "--tables", "public.no_pk"), "no primary key")


def test_wal_level_not_logical() -> None:
    with LocalPostgres(settings={"wal_level": "replica"}) as pg:
        assert_one_line_error(cdc("setup", "--dsn", pg.dsn()), "wal_level")
        assert_one_line_error(cdc("tail", "--dsn", pg.dsn(), "--temporary"), "wal_level")


def test_setup_is_idempotent_and_check_reports(db_dsn: str) -> None:
    check = cdc("setup", "--dsn", db_dsn, "--check")
    assert check.returncode == 1 and "would: create logical slot cdc_events" in check.stdout
    first = cdc("setup", "--dsn", db_dsn)
    assert first.returncode == 0 and "did: set REPLICA IDENTITY FULL on public.tickets" in first.stdout
    again = cdc("setup", "--dsn", db_dsn)
    assert again.returncode == 0 and again.stdout.startswith("nothing to do"), again.stdout
    assert cdc("setup", "--dsn", db_dsn, "--check").returncode == 0
    down = cdc("teardown", "--dsn", db_dsn)
    assert (
        down.returncode == 0
        and "dropped slot cdc_events" in down.stdout
        and "dropped publication" in down.stdout
    )
    assert cdc("teardown", "--dsn", db_dsn).stdout.strip() == "nothing to drop"


def test_watch_refuses_a_publication_without_the_reference_tables(db_dsn: str) -> None:
    assert cdc("setup", "--dsn", db_dsn, "--tables", "public.tickets").returncode == 0
    assert_one_line_error(
        cdc("watch", "--dsn", db_dsn, "--once", "--sink", "discard"),
        "public.statuses",
        "does not include",
        "cdc setup",
    )
