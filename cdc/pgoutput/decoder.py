"""Bytes → pgoutput message objects, with precompiled struct unpackers.

Every way an input can be wrong (truncated, trailing bytes, unknown message or tuple
kind, negative length, bad UTF-8 in a name) raises :class:`~cdc.errors.DecodeError`;
nothing else escapes.  The row path (Insert/Update/Delete) is the hot path: it slices
raw column values and does nothing else per column.

With the compiled speedups (``SPEEDUPS``), a row message is decoded whole by one call
(``_speedups.decode_row``) and, when the message is a ``bytes`` object, each row image stays a
``Values``: offsets into the message that make a column's bytes only when it is read, and that
answer ``len``, ``[i]``, slices, iteration, ``==`` and ``repr`` as the tuple would (not hashing).
Without them the Python handlers below build tuples.

Which implementation runs is chosen by one switch, ``CDC_IMPL`` (as psycopg's ``PSYCOPG_IMPL``):
``python`` — the pure-Python twins; ``c`` — the compiled one, and an error if it was not built;
unset — the compiled one when it was built. ``make test`` runs the whole suite under each.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from ..errors import DecodeError
from .messages import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    RawValue,
    Relation,
    Truncate,
    TupleData,
    TypeMessage,
    Update,
)

_BEGIN = struct.Struct(">QqI")  # final LSN, commit ts, xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit LSN, end LSN, commit ts
_U64 = struct.Struct(">Q").unpack_from
_I32 = struct.Struct(">i").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U16 = struct.Struct(">H").unpack_from
_COLUMN_TAIL = struct.Struct(">Ii")  # type oid, type modifier
_U32_U8 = struct.Struct(">IB")  # relation oid, following byte
_TRUNC_HEAD = struct.Struct(">iB")  # relation count, options
_MSG_HEAD = struct.Struct(">BQ")  # flags, lsn

_T, _N, _U, _B = ord("t"), ord("n"), ord("u"), ord("b")
_K, _O, _NEW = ord("K"), ord("O"), ord("N")

_REPLICA_IDENTITIES = frozenset("dnfi")


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise DecodeError("unterminated string")
    return buf[pos:end].decode("utf-8"), end + 1


def _py_tuple(buf: bytes, pos: int) -> tuple[TupleData, int]:
    # The per-column loop is the decoder's hot spot (a tickets row is 52 columns, twice
    # per update): lengths are read unsigned and checked once at the end, since a bogus
    # length can only push the position past the end of the message.
    (ncols,) = _U16(buf, pos)
    pos += 2
    values: list[RawValue] = []
    append = values.append
    u32 = _U32
    mask = 0
    for i in range(ncols):
        kind = buf[pos]
        if kind == _T:
            (length,) = u32(buf, pos + 1)
            pos += 5
            append(buf[pos : pos + length])
            pos += length
        elif kind == _N:
            append(None)
            pos += 1
        elif kind == _U:
            append(UNCHANGED_TOAST)
            pos += 1
        elif kind == _B:
            (length,) = u32(buf, pos + 1)
            pos += 5
            append(buf[pos : pos + length])
            pos += length
            mask |= 1 << i
        else:
            raise DecodeError(f"unknown tuple column kind 0x{kind:02x}")
    if pos > len(buf):
        raise DecodeError("column value runs past the end of the message")
    return TupleData(tuple(values), mask), pos


IMPL = os.environ.get("CDC_IMPL", "")
if IMPL not in ("", "python", "c"):
    raise ImportError(f"CDC_IMPL={IMPL!r}: use 'python' or 'c' (or leave it unset)")

try:  # the compiled twin of _py_tuple (cdc/pgoutput/_speedups.c), unless CDC_IMPL=python
    if IMPL == "python":
        raise ImportError("CDC_IMPL=python")
    from . import _speedups
except ImportError:  # asked for the pure Python, or a build without a C compiler
    if IMPL == "c":
        raise ImportError("CDC_IMPL=c but cdc/pgoutput/_speedups.c was not built (a C compiler?)") from None
    _speedups = None  # type: ignore[assignment]

SPEEDUPS = _speedups is not None
"""True when the compiled tuple splitter is in use (the pure-Python twin otherwise)."""


def _py_changed_names(
    names: tuple[str, ...], before: tuple[RawValue, ...], after: tuple[RawValue, ...]
) -> frozenset[str]:
    """The names whose raw values differ between two images of one shape."""
    return frozenset(n for n, x, y in zip(names, before, after, strict=True) if x != y)


# tuple.__new__ on the NamedTuple classes: their own constructors cost a Python frame each.
_tuple_new = tuple.__new__


def _py_has_unchanged(values: tuple[RawValue, ...]) -> bool:
    """Whether an unchanged-TOAST marker is among the values."""
    return UNCHANGED_TOAST in values


if _speedups is not None:
    _speedups.configure(UNCHANGED_TOAST, DecodeError)
    _split = _speedups.split_tuple
    changed_names = _speedups.changed_names
    has_unchanged = _speedups.has_unchanged
    _speedups.configure_rows(TupleData, Insert, Update, Delete)
    _decode_row = _speedups.decode_row
    # Row messages (the bulk of a stream) are decoded whole by one compiled call.
    _COMPILED_KINDS: frozenset[int] = frozenset(b"IUD")

    def _tuple(buf: bytes, pos: int) -> tuple[TupleData, int]:
        values, mask, end = _split(buf, pos)
        return _tuple_new(TupleData, (values, mask)), end

else:
    _tuple = _py_tuple
    changed_names = _py_changed_names
    has_unchanged = _py_has_unchanged
    _COMPILED_KINDS = frozenset()


def _begin(buf: bytes) -> tuple[Message, int]:
    return Begin(*_BEGIN.unpack_from(buf, 1)), 1 + _BEGIN.size


def _commit(buf: bytes) -> tuple[Message, int]:
    return Commit(*_COMMIT.unpack_from(buf, 1)), 1 + _COMMIT.size


def _origin(buf: bytes) -> tuple[Message, int]:
    (lsn,) = _U64(buf, 1)
    name, pos = _cstring(buf, 9)
    return Origin(lsn, name), pos


def _relation(buf: bytes) -> tuple[Message, int]:
    (oid,) = _U32(buf, 1)
    namespace, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    identity = chr(buf[pos])
    if identity not in _REPLICA_IDENTITIES:
        raise DecodeError(f"unknown replica identity {identity!r}")
    (ncols,) = _U16(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(ncols):
        flags = buf[pos]
        colname, pos = _cstring(buf, pos + 1)
        type_oid, typmod = _COLUMN_TAIL.unpack_from(buf, pos)
        pos += _COLUMN_TAIL.size
        columns.append(Column(flags, colname, type_oid, typmod))
    return Relation(oid, namespace, name, identity, tuple(columns)), pos


def _type(buf: bytes) -> tuple[Message, int]:
    (oid,) = _U32(buf, 1)
    namespace, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    return TypeMessage(oid, namespace, name), pos


def _insert(buf: bytes) -> tuple[Message, int]:
    oid, marker = _U32_U8.unpack_from(buf, 1)
    if marker != _NEW:
        raise DecodeError("insert without a new tuple")
    new, pos = _tuple(buf, 6)
    return Insert(oid, new), pos


def _update(buf: bytes) -> tuple[Message, int]:
    oid, marker = _U32_U8.unpack_from(buf, 1)
    pos = 6
    old: TupleData | None = None
    old_kind: str | None = None
    if marker in (_K, _O):
        old_kind = chr(marker)
        old, pos = _tuple(buf, pos)
        marker = buf[pos]
        pos += 1
    if marker != _NEW:
        raise DecodeError("update without a new tuple")
    new, pos = _tuple(buf, pos)
    return _tuple_new(Update, (oid, old_kind, old, new)), pos


def _delete(buf: bytes) -> tuple[Message, int]:
    oid, marker = _U32_U8.unpack_from(buf, 1)
    if marker != _K and marker != _O:
        raise DecodeError("delete without an old tuple")
    old, pos = _tuple(buf, 6)
    return Delete(oid, chr(marker), old), pos


def _truncate(buf: bytes) -> tuple[Message, int]:
    count, options = _TRUNC_HEAD.unpack_from(buf, 1)
    if count < 0:
        raise DecodeError("negative relation count")
    pos = 1 + _TRUNC_HEAD.size
    oids = struct.unpack_from(f">{count}I", buf, pos)
    return Truncate(options, oids), pos + 4 * count


def _message(buf: bytes) -> tuple[Message, int]:
    flags, lsn = _MSG_HEAD.unpack_from(buf, 1)
    prefix, pos = _cstring(buf, 1 + _MSG_HEAD.size)
    (length,) = _I32(buf, pos)
    pos += 4
    end = pos + length
    if length < 0 or end > len(buf):
        raise DecodeError("logical message content runs past the end")
    return LogicalMessage(bool(flags & 1), lsn, prefix, bytes(buf[pos:end])), end


_DISPATCH: dict[int, Callable[[bytes], tuple[Message, int]]] = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _message,
}


def decode_message(buf: bytes) -> Message:
    """Decode one complete pgoutput message; raise DecodeError if it is not one."""
    try:
        kind = buf[0]
        if kind in _COMPILED_KINDS:
            return _decode_row(buf)
        handler = _DISPATCH.get(kind)
        if handler is None:
            raise DecodeError(f"unknown pgoutput message kind 0x{buf[0]:02x}")
        msg, pos = handler(buf)
    except DecodeError:
        raise
    except (IndexError, struct.error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise DecodeError(f"malformed or truncated pgoutput message: {type(exc).__name__}") from exc
    if pos != len(buf):
        raise DecodeError(f"{len(buf) - pos} unexpected trailing bytes after pgoutput message")
    return msg


class Decoder:
    """Stateful wrapper: decodes messages and keeps the relation cache up to date.

    The server sends a Relation message before the first change of a table in a session
    and again after its shape changes (ALTER TABLE); a later Relation for the same oid
    replaces the earlier one, so rows decode with the shape they were written with.
    """

    __slots__ = ("relations", "types")

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self.types: dict[int, TypeMessage] = {}

    def decode(self, buf: bytes) -> Message:
        msg = decode_message(buf)
        if type(msg) is Relation:
            self.relations[msg.oid] = msg
        elif type(msg) is TypeMessage:
            self.types[msg.oid] = msg
        return msg

    def relation(self, oid: int) -> Relation:
        try:
            return self.relations[oid]
        except KeyError:
            raise DecodeError(f"row for relation oid {oid} before its Relation message") from None
