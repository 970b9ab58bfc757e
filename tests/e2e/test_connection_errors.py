"""Connections through the real CLI: how each failure is classified, the timeouts, the names.

* a lost connection (terminated walsender, server restart) no longer ends `cdc watch`: it
  reconnects by itself (tests/e2e/test_reconnect.py); what still stops it on the reconnect is
  what needs a change — here a password that changed meanwhile: one reconnect line, then the
  error line, exit 1;
* a server not there at the first start is exit 3, not retried — also when the outbox lives in
  another database that does answer;
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
from urllib.parse import urlencode

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cdc.localpg import LocalPostgres, free_port
from cdc.sample import schema_sql
from tests.environ import command_env
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PASSWORD_ROLE = "cdc_pw_user"
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


def start_watch(dsn: str, *, outbox: bool = False, **env: str) -> subprocess.Popen[str]:
    """`cdc watch` that would run for ten minutes (no heartbeat after the first, so that its
    stderr holds nothing but its warnings and how it ends), into the discard sink or, with
    ``outbox``, the default outbox of the watched database."""
    args = [a for a in LONG_QUIET_WATCH if a not in ("--sink", "discard")] if outbox else LONG_QUIET_WATCH
    return subprocess.Popen(
        [sys.executable, "-m", "cdc.cli", "watch", "--dsn", dsn, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cdc_env(**env),
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


@pytest.fixture(scope="module")
def own_server() -> Iterator[LocalPostgres]:
    """A cluster of this module's own, for what the shared one must not see: restarts, and a
    role that has to give a password (every other connection is trusted)."""
    hba = [f"host {db} {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256" for db in ("all", "replication")]
    with LocalPostgres(hba=hba) as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            # a superuser: it runs `cdc watch` over what the postgres user set up
            conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD 'right-password'")
        yield pg


def test_a_password_changed_while_connected_stops_the_reconnect_with_exit_1(
    own_server: LocalPostgres,
) -> None:
    dsn = own_server.dsn("pwchange")
    with psycopg.connect(own_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE pwchange")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_sql())
    setup(dsn)
    watcher = start_watch(
        own_server.dsn("pwchange", user=PASSWORD_ROLE, password="right-password"),
        CDC_RECONNECT_INITIAL_S="0.1",
    )
    try:
        streaming(dsn, "pwchange", watcher)
        with psycopg.connect(own_server.dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {PASSWORD_ROLE} PASSWORD 'another-password'")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (PASSWORD_ROLE,)
            )
        _, err = watcher.communicate(timeout=60)
    finally:
        end(watcher)
    assert watcher.returncode == 1, err  # needs a change: the reconnect does not go on
    *before, last = err.strip().splitlines()
    assert len(before) == 1 and "reconnecting in " in before[0] and "(attempt 1)" in before[0], err
    line = one_error_line(last)
    assert f'password authentication failed for user "{PASSWORD_ROLE}"' in line, line
    assert "password" not in err.replace("password authentication", "").split(" — ")[0]
    assert "right-password" not in err and "another-password" not in err


def test_a_server_not_there_at_the_first_start_is_exit_3_not_retried() -> None:
    """Only a watcher that reached its database retries: a wrong host or port fails at once."""
    port = free_port()
    res = cdc("watch", "--dsn", f"host=127.0.0.1 port={port} user=postgres dbname=postgres", "--once")
    line = one_error_line(res.stderr)
    assert res.returncode == 3, res.stderr
    assert "cannot reach the server" in line and str(port) in line and "reconnecting" not in res.stderr


def test_a_watched_server_not_there_is_exit_3_with_the_outbox_elsewhere(db_dsn: str) -> None:
    """The outbox's database answers, the watched one does not: still the first start, not retried."""
    port = free_port()
    params = {k: v for k, v in conninfo_to_dict(db_dsn).items() if k in ("host", "port", "user")}
    outbox = f"postgresql:///{conninfo_to_dict(db_dsn)['dbname']}?{urlencode(params)}"
    watched = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    res = cdc("watch", "--dsn", watched, "--sink", outbox, "--once", CDC_RECONNECT_INITIAL_S="0.1")
    line = one_error_line(res.stderr)
    assert res.returncode == 3, res.stderr
    assert "cannot reach the server" in line and str(port) in line and "reconnecting" not in res.stderr


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
    # the store (whose session holds the standby lock) and the pool of side connections
    assert {"cdc watch cdc_events: store", "cdc watch cdc_events: pool"} <= seen["client"]


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
