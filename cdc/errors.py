"""The engine's errors and the single place psycopg errors are translated.

Every failure an operator can meet is a :class:`CdcError` subclass carrying a one-line
``hint`` (what to do) and a ``retryable`` flag (retry with backoff, or stop with a clear
message).  Messages never contain row values.  :func:`translate` converts a psycopg
exception into the matching subclass, chained with ``from exc`` by the caller.  The root
itself is :mod:`catalog.errors`'s (the lowest layer, so that the catalog's errors share it) and
is re-exported here for the engine.
"""

from __future__ import annotations

import re
from typing import Final

import psycopg
from psycopg import errors as pgerr

from catalog.errors import CdcError as CdcError


class ConfigError(CdcError):
    hint = "check the command-line options, CDC_* variables and the config file"


class BadDsn(ConfigError):
    hint = "pass a libpq connection string or URI, e.g. --dsn postgresql://user@host:5432/db"


class ServerUnreachable(CdcError):
    """No connection: nothing answers, the server refuses or is starting up or shutting down."""

    hint = "check that Postgres is running and that host and port in --dsn/CDC_DSN are right, then run the command again"
    retryable = True


class ConnectTimeout(ServerUnreachable):
    hint = (
        "check that host and port in --dsn/CDC_DSN are those of a Postgres server that is not overloaded; "
        "connect_timeout in the DSN or CDC_CONNECT_TIMEOUT_S sets how long to wait"
    )


class ConnectionLost(CdcError):
    """An open connection died: server restart or crash, terminated backend, network."""

    # `cdc watch` reconnects by itself (watcher_reconnects); the other commands end with this.
    hint = "run the command again (`cdc watch` resumes from its last checkpoint)"
    retryable = True


class StatementCanceled(CdcError):
    """The server canceled a statement: statement_timeout (see cdc/connect.py) or a cancel request."""

    hint = "a lock or an overloaded server held it up; run the command again once that has cleared"
    retryable = True


class AuthenticationFailed(CdcError):
    hint = "check the user and password (in --dsn, PGPASSWORD or ~/.pgpass) and the server's pg_hba.conf"


class DatabaseMissing(CdcError):
    hint = "create it (CREATE DATABASE), or fix dbname in --dsn/CDC_DSN"


class RoleMissing(CdcError):
    hint = "create it (CREATE ROLE … LOGIN), or fix user in --dsn/CDC_DSN"


class WalLevelNotLogical(CdcError):
    hint = "set wal_level = logical in postgresql.conf and restart the server"


class SlotMissing(CdcError):
    hint = "run `cdc setup` to create it, or pass --slot with an existing slot"


class SlotInUse(CdcError):
    hint = "another process is consuming this slot; stop it or pass a different --slot"
    retryable = True


class SlotHeldByOther(CdcError):
    """The slot is streamed by a process that is no watcher of it (``pg_recvlogical``, another
    tool), or by one whose session is gone while the slot stays active: waiting would not end it
    (cdc.standby). Outside :data:`WATCHER_RECONNECTS`: the watcher stops."""

    hint = "another process is consuming this slot; stop it or pass a different --slot"


class SlotStillActive(CdcError):
    """A command that would drop a slot found a process streaming from it: it waits for nobody."""

    hint = (
        "stop the process streaming from it (active_pid in pg_replication_slots), then run the command again"
    )


class SlotOfAnotherDatabase(CdcError):
    """A logical slot is bound to the database it was created in; the DSN names another one."""

    hint = "pass a --dsn naming the database that owns the slot, or a different --slot"


class SlotExists(CdcError):
    """``cdc tail --slot NAME --temporary`` named a slot that exists already."""

    hint = "pass another --slot name for the temporary slot, or leave out --slot"


class SlotOfWatcher(CdcError):
    """``cdc tail --slot`` named the slot a watcher consumes: tailing it would take its changes."""

    hint = (
        "leave out --slot to read through a temporary slot (it consumes nothing), or pass a slot of your own"
    )


class SlotInvalidated(CdcError):
    hint = (
        "the server removed WAL the slot still needed (max_slot_wal_keep_size); run `cdc setup --recreate-slot`: "
        "it makes a new slot and reports the range of changes that were lost"
    )


class SlotNotLost(CdcError):
    hint = "--recreate-slot only replaces a slot the server invalidated; run `cdc setup` without it"


class PublicationMissing(CdcError):
    hint = "run `cdc setup` to create the publication, or pass --publication"


class TableMissing(ConfigError):
    hint = "create the table or remove it from the watched tables (--tables / CDC_TABLES)"


class NoPrimaryKey(ConfigError):
    hint = "add a primary key to the table or stop watching it; events need a row identity"


class ReplicaIdentityNotFull(CdcError):
    hint = "run `cdc setup` (it sets REPLICA IDENTITY FULL on the watched tables)"


class InsufficientPrivilege(CdcError):
    hint = (
        "run `cdc setup` as the owner of the watched tables; the watcher itself needs REPLICATION, "
        "SELECT on the watched tables and a schema of its own (README: Least-privilege role)"
    )


class DecodeError(CdcError):
    """A pgoutput message that does not parse: truncated, malformed or of an unknown kind."""

    hint = "the replication stream sent bytes this decoder does not understand; report it with the server version"


class StreamProtocolError(CdcError):
    hint = "the replication connection sent something unexpected; run the command again, and report it if it repeats"
    retryable = True


#: The failures after which a running ``cdc watch`` closes everything and starts over from its
#: checkpoint, with capped exponential backoff (cdc.watch): the server went away (a restart, a
#: crash, a terminated backend, the network), is not reachable or not accepting connections yet
#: (starting up, shutting down, in recovery), or the slot is still held by a walsender that is
#: dying (a previous connection of this watcher, or of the watcher it took over from). Everything
#: else stops it — a slot that a process other than a watcher streams from (SlotHeldByOther) too: what a change must fix (credentials, wal_level, a lost or missing slot, replica
#: identity, configuration), a canceled statement (a lock on its own tables: an operator should
#: look), a decoding error, and a sink that gave up (the sink retries on its own first).
WATCHER_RECONNECTS: Final = (ConnectionLost, ServerUnreachable, SlotInUse)


def watcher_reconnects(exc: BaseException) -> bool:
    """Whether a running ``cdc watch`` retries after ``exc`` (:data:`WATCHER_RECONNECTS`)."""
    return isinstance(exc, WATCHER_RECONNECTS)


#: What libpq and psycopg say, without an SQLSTATE, when an open connection dies.
_LOST: Final = (
    "server closed the connection unexpectedly",
    "terminating connection",
    "connection to server was lost",
    "could not receive data from server",
    "could not send data to server",
    "ssl syscall error",
    "ssl connection has been closed unexpectedly",
    "no connection to the server",
    "the connection is closed",
    "the connection is lost",
)

#: libpq's prefixes before what the server said: `connection to server at "h", port 5432 failed: FATAL:  …`.
_LIBPQ_PREFIX: Final = re.compile(
    r"^(?:connection failed: )?(?:connection to server (?:at|on socket) .*? failed: )?(?:FATAL:\s+)?"
)


def _server_said(line: str) -> str:
    return _LIBPQ_PREFIX.sub("", line, count=1)


def _connection_failure(
    exc: BaseException, raw: str, sqlstate: str | None, slot: str | None, connecting: bool
) -> CdcError | None:
    """Failures to connect, and connections that die: retryable, except what a change must fix
    (credentials, a missing database or role, a missing privilege).

    A failed connection attempt comes from libpq without an SQLSTATE: its text is all there is
    to go by (psycopg lists every host it tried, so the whole text is searched)."""
    text = str(exc)
    low = text.lower()
    said = _server_said(raw)
    at_connect = sqlstate is None or sqlstate.startswith("28") or sqlstate == "3D000"
    if at_connect:
        if "no password supplied" in low:
            return AuthenticationFailed(
                "the server asks for a password and none was supplied",
                hint="give it in --dsn (password=…), PGPASSWORD or ~/.pgpass",
                sqlstate=sqlstate,
            )
        if failed := re.search(r"\S+ authentication failed for user \"[^\"]*\"", text):
            return AuthenticationFailed(failed.group(0), sqlstate=sqlstate)
        if no_entry := re.search(r"no pg_hba\.conf entry for [^\n]*", text):
            return AuthenticationFailed(
                no_entry.group(0),
                hint="add a pg_hba.conf line for this host, user and database (`replication` as the "
                "database for replication connections) and reload the server",
                sqlstate=sqlstate,
            )
        if refused := re.search(r'role "[^"]*" is not permitted to log in', text):
            return AuthenticationFailed(
                refused.group(0), hint="ALTER ROLE … LOGIN, or pass another user in --dsn", sqlstate=sqlstate
            )
        if missing := re.search(r'role "[^"]*" does not exist', text):
            return RoleMissing(missing.group(0), sqlstate=sqlstate)
        if missing := re.search(r'database "[^"]*" does not exist', text):
            return DatabaseMissing(missing.group(0), sqlstate=sqlstate)
        if connecting and ("must be superuser or replication role" in low or "permission denied" in low):
            return InsufficientPrivilege(f"permission denied: {said}", sqlstate=sqlstate)
    if isinstance(exc, pgerr.QueryCanceled):
        return StatementCanceled(f"the server canceled a statement: {said}", sqlstate=sqlstate)
    if isinstance(exc, psycopg.errors.ConnectionTimeout):
        return ConnectTimeout("timed out connecting to the server (no answer within connect_timeout)")
    if isinstance(exc, pgerr.CannotConnectNow | pgerr.TooManyConnections) or (
        connecting and isinstance(exc, psycopg.OperationalError)
    ):
        # libpq's own words, which name the host and port it tried; a server that answered with
        # a FATAL (starting up, shutting down, in recovery, too many clients) refused it
        tried = raw.removeprefix("connection failed: ")
        answered = re.sub(r"FATAL:\s+", "", tried)
        if answered != tried:
            return ServerUnreachable(f"the server refused the connection: {answered}", sqlstate=sqlstate)
        return ServerUnreachable(f"cannot reach the server: {tried}", sqlstate=sqlstate)
    if (
        # admin shutdown, crash shutdown, idle session timeout; connection exceptions
        sqlstate in ("57P01", "57P02", "57P05")
        or (sqlstate or "").startswith("08")
        or (sqlstate is None and isinstance(exc, psycopg.OperationalError))
        or any(t in low for t in _LOST)
    ):
        where = f" (slot {slot})" if slot else ""
        return ConnectionLost(f"lost the connection to the server{where}: {said}", sqlstate=sqlstate)
    return None


def translate(exc: BaseException, *, slot: str | None = None, connecting: bool = False) -> CdcError:
    """Map a psycopg (or OS) error to the CdcError an operator should see.

    ``connecting``: the error came from opening a connection (:func:`cdc.connect.connect`), so a
    failure without an SQLSTATE means the server was not reached rather than a connection lost."""
    if isinstance(exc, CdcError):
        return exc
    sqlstate = getattr(exc, "sqlstate", None)
    raw = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = f" (slot {slot})" if slot else ""
    low = raw.lower()
    if isinstance(exc, psycopg.ProgrammingError) and (
        "invalid dsn" in low
        or "connection info string" in low
        or "invalid uri" in low
        or "invalid connection option" in low
    ):
        return BadDsn(f"bad connection string: {raw}")
    if isinstance(exc, pgerr.UndefinedObject) and "replication slot" in raw:
        return SlotMissing(f"replication slot does not exist{where}", sqlstate=sqlstate)
    if isinstance(exc, pgerr.ObjectInUse):
        return SlotInUse(f"replication slot is active in another process{where}", sqlstate=sqlstate)
    if isinstance(exc, pgerr.ObjectNotInPrerequisiteState) and "wal_level" in raw:
        return WalLevelNotLogical("the server's wal_level is not logical", sqlstate=sqlstate)
    if isinstance(exc, pgerr.ObjectNotInPrerequisiteState) and "not created in this database" in raw:
        return SlotOfAnotherDatabase(
            f"replication slot belongs to another database{where}", sqlstate=sqlstate
        )
    detail = str(getattr(getattr(exc, "diag", None), "message_detail", "") or "")
    if isinstance(exc, pgerr.ObjectNotInPrerequisiteState) and (
        "invalidated" in raw or "invalidated" in detail or "replication slot" in raw
    ):
        return SlotInvalidated(f"replication slot was invalidated{where}", sqlstate=sqlstate)
    if isinstance(exc, pgerr.UndefinedObject) and "publication" in raw:
        return PublicationMissing(f"publication does not exist{where}", sqlstate=sqlstate)
    if isinstance(exc, pgerr.InsufficientPrivilege):
        return InsufficientPrivilege(f"permission denied: {raw}", sqlstate=sqlstate)
    if isinstance(exc, psycopg.OperationalError) and "invalid" in low and ("option" in low or "uri" in low):
        return BadDsn(f"bad connection string: {raw}")
    if isinstance(exc, psycopg.Error) and (
        failure := _connection_failure(exc, raw, sqlstate, slot, connecting)
    ):
        return failure
    if isinstance(exc, psycopg.Error):
        return CdcError(f"database error: {raw}", sqlstate=sqlstate)
    if isinstance(exc, ConnectionError | TimeoutError):
        return ConnectionLost(f"I/O error: {raw}")
    if isinstance(exc, OSError):
        return CdcError(f"I/O error: {raw}", hint="check the path, its permissions and the free space")
    return CdcError(raw)
