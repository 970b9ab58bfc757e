"""The typed pgoutput messages (protocol version 1), as immutable named tuples.

Named tuples rather than dataclasses: hundreds of thousands are built per second and a
tuple is the cheapest immutable object Python can make.  Column values of a row stay
raw (``bytes`` in the wire format the server chose, ``None`` for SQL NULL, or
:data:`UNCHANGED_TOAST`); conversion to Python values happens later and lazily
(:mod:`cdc.values`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple


class _UnchangedToast:
    """Marker for a TOASTed column the server did not send because it did not change."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = _UnchangedToast()

#: Raw column value: bytes as sent, None for NULL, or UNCHANGED_TOAST.
RawValue = bytes | None | _UnchangedToast

POSTGRES_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


def pg_timestamp(micros: int) -> datetime:
    """A replication-protocol timestamp (microseconds since 2000-01-01 UTC) as datetime."""
    return POSTGRES_EPOCH + timedelta(microseconds=micros)


def pg_micros(at: datetime) -> int:
    """An aware datetime as a replication-protocol timestamp (the inverse of :func:`pg_timestamp`)."""
    delta = at - POSTGRES_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class TupleData(NamedTuple):
    """One row image: raw values in column order, and a bitmask of binary-format columns."""

    values: tuple[RawValue, ...]
    binary_mask: int = 0


class Begin(NamedTuple):
    final_lsn: int  # LSN of the commit record
    commit_ts: int  # microseconds since 2000-01-01 UTC
    xid: int

    @property
    def commit_time(self) -> datetime:
        return pg_timestamp(self.commit_ts)


class Commit(NamedTuple):
    flags: int
    commit_lsn: int
    end_lsn: int  # what a consumer confirms once the transaction is durable
    commit_ts: int

    @property
    def commit_time(self) -> datetime:
        return pg_timestamp(self.commit_ts)


class Origin(NamedTuple):
    commit_lsn: int
    name: str


class Column(NamedTuple):
    flags: int  # 1 = part of the replica identity key
    name: str
    type_oid: int
    type_modifier: int

    @property
    def is_key(self) -> bool:
        return bool(self.flags & 1)


class Relation(NamedTuple):
    oid: int
    namespace: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}.{self.name}"


class TypeMessage(NamedTuple):
    oid: int
    namespace: str
    name: str


class Insert(NamedTuple):
    relation_oid: int
    new: TupleData


class Update(NamedTuple):
    relation_oid: int
    old_kind: str | None  # 'O' full old row, 'K' key only, None when not sent
    old: TupleData | None
    new: TupleData


class Delete(NamedTuple):
    relation_oid: int
    old_kind: str  # 'O' or 'K'
    old: TupleData


class Truncate(NamedTuple):
    options: int  # 1 = CASCADE, 2 = RESTART IDENTITY
    relation_oids: tuple[int, ...]

    @property
    def cascade(self) -> bool:
        return bool(self.options & 1)

    @property
    def restart_identity(self) -> bool:
        return bool(self.options & 2)


class LogicalMessage(NamedTuple):
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin | Commit | Origin | Relation | TypeMessage | Insert | Update | Delete | Truncate | LogicalMessage
)
