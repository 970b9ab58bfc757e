"""The one exception root of the project and the single place psycopg errors are translated.

Every failure an operator can meet is a :class:`CdcError` subclass carrying a one-line
``hint`` (what to do) and a ``retryable`` flag (retry with backoff, or stop with a clear
message).  Messages never contain row values.  :func:`translate` converts a psycopg
exception into the matching subclass, chained with ``from exc`` by the caller.
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pgerr


class CdcError(Exception):
    """Root of every error this project raises on purpose."""

    hint: str = ""
    retryable: bool = False
    sqlstate: str | None = None

    def __init__(self, message: str, *, hint: str | None = None, sqlstate: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint
        if sqlstate is not None:
            self.sqlstate = sqlstate

    def one_line(self) -> str:
        """The operator-facing line: cause, then what to do."""
        text = str(self).strip().splitlines()[0] if str(self).strip() else type(self).__name__
        return f"{text} — {self.hint}" if self.hint else text


class ConfigError(CdcError):
    hint = "check the command-line options, CDC_* variables and the config file"


class BadDsn(ConfigError):
    hint = "pass a libpq connection string or URI, e.g. --dsn postgresql://user@host:5432/db"


class ServerUnreachable(CdcError):
    hint = "check that Postgres is running and that host, port and credentials in --dsn/CDC_DSN are right"
    retryable = True


class ConnectionLost(CdcError):
    hint = "the watcher reconnects and resumes from the last checkpoint"
    retryable = True


class WalLevelNotLogical(CdcError):
    hint = "set wal_level = logical in postgresql.conf and restart the server"


class SlotMissing(CdcError):
    hint = "run `cdc setup` to create it, or pass --slot with an existing slot (or --temporary)"


class SlotInUse(CdcError):
    hint = "another process is consuming this slot; stop it or pass a different --slot"
    retryable = True


class SlotInvalidated(CdcError):
    hint = "the slot lost required WAL (max_slot_wal_keep_size); run `cdc teardown` and `cdc setup` and backfill the gap"


class PublicationMissing(CdcError):
    hint = "run `cdc setup` to create the publication, or pass --publication"


class TableMissing(ConfigError):
    hint = "create the table or remove it from the watched tables (--tables / CDC_TABLES)"


class NoPrimaryKey(ConfigError):
    hint = "add a primary key to the table or stop watching it; events need a row identity"


class ReplicaIdentityNotFull(CdcError):
    hint = "run `cdc setup` (it sets REPLICA IDENTITY FULL on the watched tables)"


class InsufficientPrivilege(CdcError):
    hint = "grant the role REPLICATION and ownership of the watched tables, or run `cdc setup` as their owner"


class DecodeError(CdcError):
    """A pgoutput message that does not parse: truncated, malformed or of an unknown kind."""

    hint = "the replication stream sent bytes this decoder does not understand; report it with the server version"


class StreamProtocolError(CdcError):
    hint = "the replication connection sent something unexpected; the watcher reconnects"
    retryable = True


def translate(exc: BaseException, *, slot: str | None = None) -> CdcError:
    """Map a psycopg (or OS) error to the CdcError an operator should see."""
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
    detail = str(getattr(getattr(exc, "diag", None), "message_detail", "") or "")
    if isinstance(exc, pgerr.ObjectNotInPrerequisiteState) and (
        "invalidated" in raw or "invalidated" in detail or "replication slot" in raw
    ):
        return SlotInvalidated(f"replication slot was invalidated{where}", sqlstate=sqlstate)
    if isinstance(exc, pgerr.UndefinedObject) and "publication" in raw:
        return PublicationMissing(f"publication does not exist{where}", sqlstate=sqlstate)
    if isinstance(exc, pgerr.InsufficientPrivilege):
        return InsufficientPrivilege(f"permission denied: {raw}", sqlstate=sqlstate)
    if isinstance(exc, pgerr.InvalidAuthorizationSpecification | pgerr.InvalidPassword):
        return ServerUnreachable(f"authentication failed: {raw}", sqlstate=sqlstate)
    if isinstance(exc, psycopg.OperationalError):
        if "invalid" in raw.lower() and ("option" in raw.lower() or "uri" in raw.lower()):
            return BadDsn(f"bad connection string: {raw}")
        if sqlstate is None:
            return ServerUnreachable(f"cannot reach the server: {raw}")
        return ConnectionLost(f"connection failed: {raw}", sqlstate=sqlstate)
    if isinstance(exc, psycopg.Error):
        return CdcError(f"database error: {raw}", sqlstate=sqlstate)
    if isinstance(exc, OSError):
        return ConnectionLost(f"I/O error: {raw}")
    return CdcError(raw)
