"""Lazy conversion of raw column values to Python values, through psycopg's own loaders.

A :class:`Row` keeps each column's raw bytes as the server sent them and converts a
column only when it is read, with the C loader psycopg would use for that type oid
(uuid → UUID, timestamptz → aware datetime in UTC, numeric → Decimal, json/jsonb →
Python values, arrays → lists, enums and unknown types → str).  Equality of two images
of the same relation is decided on the raw bytes, so a 52-column ``tickets`` update
costs one conversion per column a deriver actually reads.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import orjson
from psycopg import adapters
from psycopg.abc import Loader
from psycopg.adapt import Transformer
from psycopg.pq import Format

from .pgoutput.messages import UNCHANGED_TOAST, RawValue, Relation

#: Oids below this are built in; above it are user types (enums, domains, composites).
FIRST_NORMAL_OID: Final = 16384

_TEXT_OID: Final = 25


class ValueUnknown(LookupError):
    """A column whose value cannot be known (unchanged TOAST without a before-image)."""


class _Context:
    """The smallest AdaptContext: the global adapters, no connection (timestamps load as UTC)."""

    adapters = adapters
    connection = None


_TRANSFORMER = Transformer(_Context())


def _loader(type_oid: int, fmt: Format) -> Loader:
    if type_oid >= FIRST_NORMAL_OID and adapters.types.get(type_oid) is None:
        # A user-defined enum (or other user type): both formats carry its text label.
        return _TRANSFORMER.get_loader(_TEXT_OID, Format.TEXT)
    return _TRANSFORMER.get_loader(type_oid, fmt)


class RowShape:
    """Per-relation column index and loaders; built once per Relation message."""

    __slots__ = ("_binary", "_text", "index", "names", "primary_key", "relation", "table", "type_oids")

    def __init__(self, relation: Relation, primary_key: tuple[str, ...] | None = None) -> None:
        self.relation = relation
        self.table = relation.qualified_name
        self.names: tuple[str, ...] = tuple(c.name for c in relation.columns)
        self.index: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        self.type_oids: tuple[int, ...] = tuple(c.type_oid for c in relation.columns)
        if primary_key is None:
            flagged = tuple(c.name for c in relation.columns if c.is_key)
            # Under REPLICA IDENTITY FULL every column is flagged; that is no key at all.
            primary_key = flagged if len(flagged) < len(self.names) else self.names
        self.primary_key: tuple[str, ...] = tuple(n for n in primary_key if n in self.index)
        self._text: list[Loader | None] = [None] * len(self.names)
        self._binary: list[Loader | None] = [None] * len(self.names)

    def load(self, i: int, raw: bytes, binary: bool) -> Any:
        cache = self._binary if binary else self._text
        loader = cache[i]
        if loader is None:
            loader = cache[i] = _loader(self.type_oids[i], Format.BINARY if binary else Format.TEXT)
        return loader.load(raw)

    def key_of(self, values: tuple[RawValue, ...]) -> tuple[RawValue, ...]:
        index = self.index
        return tuple(values[index[n]] for n in self.primary_key)


class Row(Mapping[str, Any]):
    """One row image; values convert on first read and are cached."""

    __slots__ = ("_cache", "data", "mask", "shape")

    def __init__(self, shape: RowShape, values: tuple[RawValue, ...], mask: int = 0) -> None:
        self.shape = shape
        self.data = values
        self.mask = mask
        self._cache: dict[int, Any] | None = None

    def __getitem__(self, name: str) -> Any:
        i = self.shape.index[name]
        raw = self.data[i]
        if raw is None:
            return None
        if raw is UNCHANGED_TOAST:
            raise ValueUnknown(name)
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        elif i in cache:
            return cache[i]
        value = cache[i] = self.shape.load(i, raw, bool(self.mask >> i & 1))  # type: ignore[arg-type]
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.shape.names)

    def __len__(self) -> int:
        return len(self.shape.names)

    def __contains__(self, name: object) -> bool:
        return name in self.shape.index

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self.shape.names == other.shape.names and self.data == other.data
        return Mapping.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def raw(self, name: str) -> RawValue:
        """The column's bytes as sent (None for NULL, UNCHANGED_TOAST if unknown)."""
        return self.data[self.shape.index[name]]

    def is_unknown(self, name: str) -> bool:
        return self.data[self.shape.index[name]] is UNCHANGED_TOAST

    def unknown_columns(self) -> list[str]:
        names = self.shape.names
        return [names[i] for i, v in enumerate(self.data) if v is UNCHANGED_TOAST]

    def changed(self, other: Row, name: str) -> bool:
        """Whether ``name`` differs between this image and ``other`` (compared raw)."""
        i = self.shape.index[name]
        j = other.shape.index.get(name)
        if j is None:
            return True
        return self.data[i] != other.data[j]

    def key(self) -> tuple[RawValue, ...]:
        return self.shape.key_of(self.data)

    def to_dict(self) -> dict[str, Any]:
        """Every known column converted (unknown ones omitted)."""
        out: dict[str, Any] = {}
        for i, name in enumerate(self.shape.names):
            if self.data[i] is not UNCHANGED_TOAST:
                out[name] = self[name]
        return out

    def __repr__(self) -> str:
        return f"Row({self.shape.relation.qualified_name}, {len(self.data)} columns)"


# --- canonical JSON forms -------------------------------------------------------------


def canonical_timestamp(value: datetime) -> str:
    """UTC ISO-8601 with milliseconds and ``Z`` (naive values are taken as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return canonical_timestamp(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, UUID | date | time):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(obj: Any) -> bytes:
    """JSON bytes in the project's canonical value forms (see module docstring)."""
    return orjson.dumps(obj, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
