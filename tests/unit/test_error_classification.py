"""How :func:`cdc.errors.translate` classifies connection failures: what a retry can fix (exit 3)
and what needs a change (exit 1). The texts are libpq's and psycopg's own, which come without an
SQLSTATE when a connection attempt fails or a connection dies."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pgerr

from cdc.errors import (
    AuthenticationFailed,
    ConnectionLost,
    ConnectTimeout,
    DatabaseMissing,
    InsufficientPrivilege,
    RoleMissing,
    ServerUnreachable,
    translate,
)

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
    silent = translate(pgerr.ConnectionTimeout("connection timeout expired"), connecting=True)
    assert type(silent) is ConnectTimeout and silent.retryable and "timed out" in str(silent)
