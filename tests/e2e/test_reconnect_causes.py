"""What `cdc watch` makes of the states a server can be in when it reconnects (README: Reconnect
and standby), through the real CLI against one cluster of this module's own:

* a server that refuses connections while it shuts down (a smart shutdown held up by a session,
  SQLSTATE 57P03 "the database system is shutting down") or recovers (started with
  `standby.signal` and `hot_standby = off`: 57P03 "the database system is not accepting
  connections"): the watcher logs `reconnecting in … (attempt N): <cause>` lines saying so and
  keeps trying; once the server is a primary again it reconnects, and the outbox holds every
  event of a workload before and after exactly once;
* a role that can no longer log in (`ALTER ROLE … NOLOGIN`) and a watched database dropped
  (`DROP DATABASE … WITH (FORCE)`) stop it on the reconnect: one `reconnecting` line, then one
  error line naming the cause with what to do, exit 1 — as a password that changed does
  (tests/e2e/test_connection_errors.py).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cdc.localpg import LocalPostgres
from tests.e2e.test_connection_errors import end, one_error_line, start_watch, streaming
from tests.e2e.test_reconnect import (
    FAST,
    WATCH_ARGS,
    Workload,
    assert_exactly_once,
    assert_no_replay,
    dsn,  # noqa: F401 - the fixture
    pg_ctl,
    reconnect_lines,
    server_up,
    stop,
    wait_streaming,
)
from tests.e2e.test_watch_lifecycle import Watch
from tests.integration.conftest import wait_for
from tests.pgharness import PgServer, drop_database

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

#: The role of the watcher whose login is taken away.
NOLOGIN_ROLE = "cdc_nologin_user"
#: How the watcher's connections are named (walsender, store, pool, sink).
WATCHER_SESSIONS = "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'cdc watch %'"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPostgres]:
    """The module's cluster (test_reconnect's `dsn` fixture makes a database of it per test)."""
    with LocalPostgres() as pg:
        yield pg


def dbname(watched: str) -> str:
    return str(conninfo_to_dict(watched)["dbname"])


def rows_of(server: LocalPostgres, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def refused(server: LocalPostgres) -> str:
    """What the server answers a new connection with ("" when it lets it in)."""
    try:
        with psycopg.connect(server.dsn(), connect_timeout=5):
            return ""
    except psycopg.OperationalError as exc:
        return str(exc)


def cannot_connect(server: LocalPostgres, said: str) -> str:
    """The cause a reconnect line gives when the server answers a connection with ``said``."""
    return f'the server refused the connection: connection to server at "127.0.0.1", port {server.port} failed: {said}'


def causes(watch: Watch, cause: str) -> int:
    """How many reconnect lines gave ``cause``."""
    return sum(1 for r in reconnect_lines(watch) if r["cause"] == cause)


def a_little_workload(watched: str, numbered_from: int) -> None:
    """20 transactions of test_reconnect's workload (ticket numbers `R-<numbered_from + i>`:
    unique across the runs of one test)."""
    work = Workload(watched)
    work.done = numbered_from
    with work:
        work.wait_done(20)


def one_reconnect_then(err: str) -> str:
    """Stderr of a watcher stopped on its reconnect: one `reconnecting` line (the lost
    connection), then the error line, which is returned."""
    *before, last = err.strip().splitlines()
    assert len(before) == 1 and "reconnecting in " in before[0] and "(attempt 1)" in before[0], err
    assert "lost the connection to the server" in before[0] or "ended the replication" in before[0], err
    return one_error_line(last)


def delivering_through(watched: str, refusing: Any) -> Watch:
    """The watcher delivers a workload, ``refusing()`` keeps the server refusing it for a while
    (and returns once it is a primary that lets it in again); then it reconnects and delivers
    another: every event exactly once."""
    watch = Watch("--dsn", watched, *WATCH_ARGS, env=FAST)
    try:
        wait_streaming(watch)
        a_little_workload(watched, 0)
        refusing(watch)
        wait_streaming(watch, after=1)
        a_little_workload(watched, 1000)
        assert watch.proc.poll() is None, "\n".join(watch.lines)
        assert_exactly_once(watched)
        assert_no_replay(watch)
        stop(watch)
    finally:
        watch.kill()
    return watch


# -- refused for a while: retried ---------------------------------------------------------------
def test_a_server_shutting_down_is_retried_until_it_is_back(server: LocalPostgres, dsn: str) -> None:  # noqa: F811
    shutting_down = cannot_connect(server, "the database system is shutting down")

    def smart_shutdown(watch: Watch) -> None:
        running = server.datadir / "postmaster.pid"
        try:
            # a smart shutdown waits for the sessions there are, and lets no new one in
            with psycopg.connect(server.dsn(), autocommit=True) as held:
                pg_ctl(server, "-m", "smart", "-W", "stop")
                assert wait_for(lambda: "the database system is shutting down" in refused(server), timeout=30)
                ended = held.execute(
                    f"SELECT pg_terminate_backend(pid) FROM ({WATCHER_SESSIONS}) w"
                ).fetchall()
                assert ended and all(ok for (ok,) in ended), ended
                assert wait_for(lambda: causes(watch, shutting_down) >= 2, timeout=30), "\n".join(watch.lines)
                assert watch.proc.poll() is None, "\n".join(watch.lines)
            # the last session gone, the server stops
            assert wait_for(lambda: not running.exists(), timeout=60)
        finally:  # and starts again, as the other tests need it
            if running.exists():
                pg_ctl(server, "-m", "fast", "-w", "stop")
            server_up(server)

    watch = delivering_through(dsn, smart_shutdown)
    first, *_ = reconnect_lines(watch)
    assert first["cause"].startswith(
        ("lost the connection to the server (slot cdc_events): ", "the server ended the replication stream")
    ), first


def test_a_server_in_recovery_is_retried_until_it_is_a_primary_again(
    server: LocalPostgres,
    dsn: str,  # noqa: F811
) -> None:
    recovering = cannot_connect(server, "the database system is not accepting connections")
    standby_signal = server.datadir / "standby.signal"

    def in_recovery(watch: Watch) -> None:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET hot_standby = off")  # read at the next start
        try:
            pg_ctl(server, "-m", "fast", "-w", "stop")
            standby_signal.touch()
            server_up(server)  # a standby that lets no one in
            assert "Hot standby mode is disabled" in refused(server)
            assert wait_for(lambda: causes(watch, recovering) >= 2, timeout=30), "\n".join(watch.lines)
            assert watch.proc.poll() is None, "\n".join(watch.lines)
            pg_ctl(server, "-m", "fast", "-w", "stop")
        finally:  # a primary again, as the other tests need it
            standby_signal.unlink(missing_ok=True)
            if (server.datadir / "postmaster.pid").exists():
                pg_ctl(server, "-m", "fast", "-w", "stop")
            server_up(server)
            # with hot_standby off, pg_ctl counts the server started once its recovery begins:
            # the crash recovery after a standby's shutdown refuses connections for a moment
            assert wait_for(lambda: refused(server) == "", timeout=60), refused(server)
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                conn.execute("ALTER SYSTEM RESET hot_standby")

    delivering_through(dsn, in_recovery)


# -- what a change must fix: stopped -------------------------------------------------------------
def test_a_role_that_can_no_longer_log_in_stops_the_reconnect_with_exit_1(
    server: LocalPostgres,
    dsn: str,  # noqa: F811
) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        # a superuser: it runs `cdc watch` over what the postgres user set up
        conn.execute(f"CREATE ROLE {NOLOGIN_ROLE} LOGIN SUPERUSER")
    try:
        watcher = start_watch(
            make_conninfo(dsn, user=NOLOGIN_ROLE), outbox=True, CDC_RECONNECT_INITIAL_S="0.1"
        )
        try:
            streaming(dsn, dbname(dsn), watcher)
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                conn.execute(f"ALTER ROLE {NOLOGIN_ROLE} NOLOGIN")
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (NOLOGIN_ROLE,),
                )
            _, err = watcher.communicate(timeout=60)
        finally:
            end(watcher)
    finally:  # the role owns the outbox its watcher created: handed over, so that the role can go
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {NOLOGIN_ROLE} TO postgres")
            conn.execute(f"DROP ROLE {NOLOGIN_ROLE}")
    assert watcher.returncode == 1, err  # needs a change: the reconnect does not go on
    line = one_reconnect_then(err)
    assert line == (
        f'cdc: error: role "{NOLOGIN_ROLE}" is not permitted to log in — ALTER ROLE … LOGIN, or pass another '
        "user in --dsn"
    ), line


def test_a_dropped_database_stops_the_reconnect_with_exit_1(server: LocalPostgres, dsn: str) -> None:  # noqa: F811
    name = dbname(dsn)
    watcher = start_watch(dsn, outbox=True, CDC_RECONNECT_INITIAL_S="0.1")
    try:
        streaming(dsn, name, watcher)
        # A database with a slot cannot be dropped: its walsender ends and the slot goes first,
        # the watcher frozen meanwhile so that it cannot take the slot again before the
        # database is gone (its outbox goes with it).
        watcher.send_signal(signal.SIGSTOP)
        try:
            drop_database(PgServer(server.dsn(), "local"), name)  # DROP DATABASE … WITH (FORCE)
            assert rows_of(server, "SELECT 1 FROM pg_database WHERE datname = %s", name) == []
        finally:
            watcher.send_signal(signal.SIGCONT)
        _, err = watcher.communicate(timeout=60)
    finally:
        end(watcher)
    assert watcher.returncode == 1, err
    line = one_reconnect_then(err)
    assert line == (
        f'cdc: error: database "{name}" does not exist — create it (CREATE DATABASE), or fix dbname in '
        "--dsn/CDC_DSN"
    ), line
