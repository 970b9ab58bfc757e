"""How :func:`cdc.errors.translate` classifies connection failures: what a retry can fix (exit 3)
and what needs a change (exit 1). The texts are libpq's and psycopg's own, which come without an
SQLSTATE when a connection attempt fails or a connection dies."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pgerr

from cdc.errors import (
    AuthenticationFailed,
    CdcError,
    ConnectionLost,
    ConnectTimeout,
    DatabaseMissing,
    InsufficientPrivilege,
    RoleMissing,
    ServerUnreachable,
    SlotHeldByOther,
    SlotInUse,
    SlotInvalidated,
    StatementCanceled,
    WalLevelNotLogical,
    translate,
    watcher_reconnects,
)
from cdc.sinks.retry import SinkGaveUp

AT = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: '


@pytest.mark.parametrize(
    "exc",
    [
        # what _raise_end_of_copy gets from libpq when the socket closes: no SQLSTATE, not Operational
        psycopg.DatabaseError("server closed the connection unexpectedly\n\tThis probably means ..."),
        psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
        psycopg.OperationalError("receiving copy data failed: could not receive data from server"),
        psycopg.OperationalError("the connection is closed"),
        pgerr.AdminShutdown("terminating connection due to administrator command"),
        pgerr.CrashShutdown("terminating connection because of crash of another server process"),
        pgerr.IdleSessionTimeout("terminating connection due to idle-session timeout"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
def test_a_dead_connection_is_lost_and_worth_retrying(exc: BaseException) -> None:
    err = translate(exc, slot="cdc_events")
    assert type(err) is ConnectionLost and err.retryable
    assert "reconnects" not in err.hint and "run the command again" in err.hint


@pytest.mark.parametrize(
    ("text", "kind", "cause"),
    [
        (AT + 'FATAL:  password authentication failed for user "u"', AuthenticationFailed,
         'password authentication failed for user "u"'),
        (AT + "fe_sendauth: no password supplied", AuthenticationFailed,
         "the server asks for a password and none was supplied"),
        (AT + 'FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "u", database "d", no encryption',
         AuthenticationFailed, 'no pg_hba.conf entry for host "10.0.0.1", user "u", database "d"'),
        (AT + 'FATAL:  database "d" does not exist', DatabaseMissing, 'database "d" does not exist'),
        (AT + 'FATAL:  role "r" does not exist', RoleMissing, 'role "r" does not exist'),
        (AT + "FATAL:  must be superuser or replication role to start walsender", InsufficientPrivilege,
         "must be superuser or replication role to start walsender"),
        (AT + 'FATAL:  role "r" is not permitted to log in', AuthenticationFailed,
         'role "r" is not permitted to log in'),
    ],
)  # fmt: skip
def test_a_connection_refused_for_a_reason_needs_a_change(
    text: str, kind: type[Exception], cause: str
) -> None:
    err = translate(psycopg.OperationalError(text), connecting=True)
    assert type(err) is kind and not err.retryable
    assert cause in str(err) and "connection to server at" not in str(err)


def test_a_server_that_is_not_there_is_worth_retrying() -> None:
    refused = translate(psycopg.OperationalError(AT + "Connection refused"), connecting=True)
    assert type(refused) is ServerUnreachable and refused.retryable
    starting = translate(pgerr.CannotConnectNow("the database system is starting up"), connecting=True)
    assert type(starting) is ServerUnreachable and starting.retryable
    for state in ("starting up", "shutting down", "not accepting connections"):
        answered = translate(
            psycopg.OperationalError(AT + f"FATAL:  the database system is {state}"), connecting=True
        )
        assert type(answered) is ServerUnreachable and answered.retryable
        assert str(answered).startswith("the server refused the connection: connection to server at")
        assert str(answered).endswith(f"failed: the database system is {state}")
    assert str(refused).startswith("cannot reach the server: ")
    silent = translate(pgerr.ConnectionTimeout("connection timeout expired"), connecting=True)
    assert type(silent) is ConnectTimeout and silent.retryable and "timed out" in str(silent)


@pytest.mark.parametrize(
    ("error", "reconnects"),
    [
        (ConnectionLost("lost the connection to the server"), True),
        (ServerUnreachable("cannot reach the server"), True),
        (ConnectTimeout("timed out connecting to the server"), True),
        (SlotInUse("replication slot is active in another process"), True),
        (SlotHeldByOther("replication slot is held by pg_recvlogical"), False),
        (AuthenticationFailed("password authentication failed"), False),
        (SlotInvalidated("replication slot was invalidated"), False),
        (WalLevelNotLogical("the server's wal_level is not logical"), False),
        (StatementCanceled("canceling statement due to statement timeout"), False),
        (SinkGaveUp("the sink kept failing"), False),
        (CdcError("database error"), False),
    ],
)
def test_what_a_running_watcher_reconnects_after(error: CdcError, reconnects: bool) -> None:
    """Classified once (cdc.errors.WATCHER_RECONNECTS); a canceled statement and a sink that
    gave up are worth running again (exit 3) but not worth a reconnect of their own."""
    assert watcher_reconnects(error) is reconnects
    assert not reconnects or error.retryable


def test_the_server_going_away_mid_stream_is_a_reconnect() -> None:
    for exc in (
        pgerr.AdminShutdown("terminating connection due to administrator command"),
        pgerr.IdleSessionTimeout("terminating connection due to idle-session timeout"),
        pgerr.CannotConnectNow("the database system is shutting down"),
        psycopg.OperationalError("the connection is lost"),
    ):
        assert watcher_reconnects(translate(exc, slot="cdc_events")), exc
