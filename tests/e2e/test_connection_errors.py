"""Connections through the real CLI: how each failure is classified, the timeouts, the names.

* a lost connection (terminated walsender, server restart) exits 3 — worth retrying — with one
  line that promises nothing that does not happen (nothing reconnects on its own yet);
* a wrong or missing password, a missing database or role exits 1 — needs a change — naming it;
* a server that accepts TCP and never answers ends the command after the connect timeout;
* a lock held on the watcher's own tables ends it after the statement timeout;
* every connection carries an application name saying what it is for.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from cdc.localpg import LocalPostgres
from cdc.sample import schema_sql
from tests.environ import command_env
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PASSWORD_ROLE = "cdc_pw_user"
ROUNDS = 3  # losing the connection was classified differently from run to run
# --log-level warning: a streaming watcher's start line and exit summary are info lines; the
# error that ends it is then the only line on stderr
LONG_QUIET_WATCH = (
    "--sink", "discard", "--idle-exit", "600", "--heartbeat-interval", "3600", "--log-level", "warning",
)  # fmt: skip


def cdc_env(**extra: str) -> dict[str, str]:
    env = command_env()
    return {**env, **extra}


def cdc(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cdc_env(**env),
    )


def setup(dsn: str) -> None:
    res = cdc("setup", "--dsn", dsn)
    assert res.returncode == 0, res.stderr


def one_error_line(stderr: str) -> str:
    """The only line on stderr: `cdc: error: <cause> — <what to do>`, no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("cdc: error: ") and " — " in lines[0], stderr
    return lines[0]


def start_watch(dsn: str) -> subprocess.Popen[str]:
    """`cdc watch` that would run for ten minutes (no heartbeat after the first, so that its
    stderr holds nothing but how it ends)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cdc.cli", "watch", "--dsn", dsn, *LONG_QUIET_WATCH],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cdc_env(),
    )


def end(watcher: subprocess.Popen[str]) -> None:
    if watcher.poll() is None:
        watcher.kill()
    watcher.communicate()  # and its pipe is closed


def walsender_pid(dsn: str, dbname: str) -> int | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender' AND datname = %s",
            (dbname,),
        ).fetchone()
    return int(row[0]) if row else None


def streaming(dsn: str, dbname: str, watcher: subprocess.Popen[str]) -> int:
    """The pid of the watcher's walsender once it streams."""
    pid: list[int] = []

    def found() -> bool:
        assert watcher.poll() is None, watcher.communicate()[1]
        got = walsender_pid(dsn, dbname)
        pid[:] = [got] if got is not None else []
        return bool(pid)

    assert wait_for(found, timeout=60)
    return pid[0]


def assert_lost_connection(watcher: subprocess.Popen[str]) -> None:
    _, err = watcher.communicate(timeout=60)
    line = one_error_line(err)
    assert watcher.returncode == 3, err  # worth retrying
    assert "lost the connection to the server" in line or "ended the replication stream" in line, line
    assert "run the command again" in line and "resumes from its last checkpoint" in line, line
    assert "reconnects" not in line  # nothing does, yet


# -- the connection is lost ---------------------------------------------------------------------
def test_terminated_walsender_ends_watch_with_exit_3(db_dsn: str, db_name: str) -> None:
    setup(db_dsn)
    for _ in range(ROUNDS):
        watcher = start_watch(db_dsn)
        try:
            pid = streaming(db_dsn, db_name, watcher)
            with psycopg.connect(db_dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            assert_lost_connection(watcher)
        finally:
            end(watcher)


@pytest.fixture(scope="module")
def own_server() -> Iterator[LocalPostgres]:
    """A cluster of this module's own, for what the shared one must not see: restarts, and a
    role that has to give a password (every other connection is trusted)."""
    with LocalPostgres(hba=[f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256"]) as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right-password'")
        yield pg


def test_server_restart_ends_watch_with_exit_3(own_server: LocalPostgres) -> None:
    dsn = own_server.dsn("restarts")
    with psycopg.connect(own_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE restarts")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_sql())
    setup(dsn)
    for _ in range(ROUNDS):
        watcher = start_watch(dsn)
        try:
            streaming(dsn, "restarts", watcher)
            own_server.restart("fast")
            assert_lost_connection(watcher)
        finally:
            end(watcher)


# -- credentials and missing objects: a change is needed ----------------------------------------
def test_wrong_password_exits_1_naming_the_user(own_server: LocalPostgres) -> None:
    dsn = own_server.dsn(user=PASSWORD_ROLE, password="wrong-password")
    for command in ("setup", "tail"):
        res = cdc(command, "--dsn", dsn)
        line = one_error_line(res.stderr)
        assert res.returncode == 1, res.stderr
        assert f'password authentication failed for user "{PASSWORD_ROLE}"' in line
        assert "password" in line.split(" — ")[1] and "pg_hba.conf" in line
        assert "cannot reach" not in line and "wrong-password" not in line


def test_no_password_supplied_exits_1(own_server: LocalPostgres) -> None:
    dsn = own_server.dsn(user=PASSWORD_ROLE, passfile="/nonexistent")  # not even ~/.pgpass
    res = cdc("setup", "--dsn", dsn)
    line = one_error_line(res.stderr)
    assert res.returncode == 1, res.stderr
    assert "asks for a password and none was supplied" in line and "PGPASSWORD" in line


def test_missing_database_exits_1(db_dsn: str) -> None:
    res = cdc("setup", "--dsn", make_conninfo(db_dsn, dbname="no_such_db"))
    line = one_error_line(res.stderr)
    assert res.returncode == 1, res.stderr
    assert 'database "no_such_db" does not exist' in line and "CREATE DATABASE" in line


def test_missing_role_exits_1(db_dsn: str) -> None:
    res = cdc("watch", "--dsn", make_conninfo(db_dsn, user="no_such_role"), "--once")
    line = one_error_line(res.stderr)
    assert res.returncode == 1, res.stderr
    assert 'role "no_such_role" does not exist' in line and "CREATE ROLE" in line


# -- timeouts -------------------------------------------------------------------------------
@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts TCP connections and never says a word."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # closed: the test is over
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    for conn in held:
        conn.close()


@pytest.mark.parametrize("how", ["dsn", "setting"])
def test_silent_server_times_out_with_exit_3(silent_server: int, how: str) -> None:
    dsn = f"host=127.0.0.1 port={silent_server} user=postgres dbname=postgres"
    if how == "dsn":
        res = cdc("setup", "--dsn", f"{dsn} connect_timeout=2", timeout=60)
    else:
        res = cdc("setup", "--dsn", dsn, timeout=60, CDC_CONNECT_TIMEOUT_S="2")
    line = one_error_line(res.stderr)
    assert res.returncode == 3, res.stderr  # worth retrying
    assert "timed out connecting to the server" in line and "connect_timeout" in line


def test_lock_on_the_watchers_tables_ends_watch_after_the_statement_timeout(db_dsn: str) -> None:
    setup(db_dsn)
    with psycopg.connect(db_dsn) as locker:
        locker.execute("LOCK TABLE cdc.slots IN ACCESS EXCLUSIVE MODE")  # held until the end
        res = cdc("watch", "--dsn", db_dsn, "--once", "--sink", "discard", CDC_STATEMENT_TIMEOUT_S="1")
        locker.rollback()
    line = one_error_line(res.stderr)
    assert res.returncode == 3, res.stderr
    assert "canceling statement due to statement timeout" in line


# -- application names --------------------------------------------------------------------------
def names(dsn: str, dbname: str) -> dict[str, set[str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, backend_type FROM pg_stat_activity WHERE datname = %s", (dbname,)
        ).fetchall()
        replication = conn.execute(
            "SELECT r.application_name FROM pg_stat_replication r "
            "JOIN pg_stat_activity a USING (pid) WHERE a.datname = %s",
            (dbname,),
        ).fetchall()
    return {
        "walsender": {r[0] for r in rows if r[1] == "walsender"},
        "client": {r[0] for r in rows if r[1] == "client backend"},
        "replication": {r[0] for r in replication},
    }


def test_watch_connections_carry_their_purpose(db_dsn: str, db_name: str) -> None:
    setup(db_dsn)
    watcher = start_watch(db_dsn)
    try:
        streaming(db_dsn, db_name, watcher)
        seen = names(db_dsn, db_name)
    finally:
        end(watcher)
    assert seen["replication"] == {"cdc watch cdc_events"}
    assert seen["walsender"] == {"cdc watch cdc_events"}
    assert {"cdc watch cdc_events: store", "cdc watch cdc_events: heartbeat"} <= seen["client"]


def test_an_application_name_in_the_dsn_wins(db_dsn: str, db_name: str) -> None:
    setup(db_dsn)
    watcher = start_watch(make_conninfo(db_dsn, application_name="psa-events"))
    try:
        streaming(db_dsn, db_name, watcher)
        seen = names(db_dsn, db_name)
    finally:
        end(watcher)
    assert seen["replication"] == {"psa-events"}
    assert not any(name.startswith("cdc ") for name in seen["client"])
