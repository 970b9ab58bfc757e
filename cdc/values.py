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
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

import orjson
from psycopg import adapters
from psycopg.abc import Loader
from psycopg.adapt import Transformer
from psycopg.pq import Format

from catalog.forms import format_timestamp

from .errors import CdcError
from .pgoutput.decoder import SPEEDUPS, changed_names, has_unchanged
from .pgoutput.messages import UNCHANGED_TOAST, RawValue, Relation

#: Oids below this are built in; above it are user types (enums, domains, composites).
FIRST_NORMAL_OID: Final = 16384

_TEXT_OID: Final = 25


class ValueUnknown(CdcError, LookupError):
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

    __slots__ = (
        "_binary",
        "_json",
        "_json_fn",
        "_text",
        "index",
        "key_of",
        "names",
        "primary_key",
        "relation",
        "table",
        "type_oids",
    )

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
        # key_of(values): the primary-key values of a row's raw values, as a tuple.
        self.key_of: Callable[[tuple[RawValue, ...]], tuple[RawValue, ...]] = _key_getter(
            tuple(self.index[n] for n in self.primary_key)
        )
        self._text: list[Loader | None] = [None] * len(self.names)
        self._binary: list[Loader | None] = [None] * len(self.names)
        self._json: tuple[JsonConverter, ...] | None = None
        self._json_fn: dict[bool, Callable[[tuple[RawValue, ...]], dict[str, Any]]] | None = None

    def load(self, i: int, raw: bytes, binary: bool) -> Any:
        cache = self._binary if binary else self._text
        loader = cache[i]
        if loader is None:
            loader = cache[i] = _loader(self.type_oids[i], Format.BINARY if binary else Format.TEXT)
        return loader.load(raw)

    def json_converters(self) -> tuple[JsonConverter, ...]:
        """Per column: how a text-format raw value becomes a JSON value (see ``json_value``)."""
        if self._json is None:
            self._json = tuple(_json_converter(self, i, oid) for i, oid in enumerate(self.type_oids))
        return self._json

    def json_function(self, parsed: bool = False) -> Callable[[tuple[RawValue, ...]], dict[str, Any]]:
        """``to_json_dict`` unrolled for this shape: one generated expression per column; with
        ``parsed``, json columns are parsed (``JsonRowView.to_dict``) rather than kept as
        ``orjson.Fragment`` for serialising.

        Only for rows without unchanged-TOAST markers or binary columns (the caller checks);
        generating the code once per Relation message avoids a per-column loop in Python.
        """
        made = self._json_fn
        if made is None:
            made = self._json_fn = {}
        fn = made.get(parsed)
        if fn is None:
            env: dict[str, Any] = {}
            items = []
            for i, (name, conv) in enumerate(zip(self.names, self.json_converters(), strict=True)):
                if parsed and conv is orjson.Fragment:
                    conv = orjson.loads
                value = f"d[{i}].decode()" if conv is None else f"c{i}(d[{i}])"
                if conv is not None:
                    env[f"c{i}"] = conv
                items.append(f"{name!r}: None if d[{i}] is None else {value}")
            src = "def to_json(d):\n    return {" + ", ".join(items) + "}\n"
            exec(compile(src, f"<json {self.table}>", "exec"), env)  # column names are repr()-quoted
            fn = made[parsed] = env["to_json"]
        return fn


def _key_getter(positions: tuple[int, ...]) -> Callable[[tuple[RawValue, ...]], tuple[RawValue, ...]]:
    # itemgetter is compiled, but returns a bare value for a single position.
    if len(positions) >= 2:
        return itemgetter(*positions)
    if len(positions) == 1:
        (only,) = positions
        return lambda values: (values[only],)
    return lambda values: ()


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

    def changed(self, other: Row, name: str) -> bool:
        """Whether ``name`` differs between this image and ``other`` (compared raw)."""
        i = self.shape.index[name]
        j = other.shape.index.get(name)
        if j is None:
            return True
        return self.data[i] != other.data[j]

    def to_json_dict(self) -> dict[str, Any]:
        """Every known column as a JSON-ready value, straight from the text form where the
        text form already is the canonical JSON form (text, uuid, numeric, json, ints,
        booleans, timestamps); other types go through their psycopg loader.  Equal to
        ``to_dict()`` passed through :func:`dumps`, only faster (a test holds them equal)."""
        shape = self.shape
        mask = self.mask
        if not mask and not has_unchanged(self.data):
            return shape.json_function()(self.data)
        out: dict[str, Any] = {}
        for i, (name, raw, conv) in enumerate(
            zip(shape.names, self.data, shape.json_converters(), strict=True)
        ):
            if raw is None:
                out[name] = None
            elif raw is UNCHANGED_TOAST:
                continue
            elif mask and mask >> i & 1:
                out[name] = shape.load(i, raw, True)  # type: ignore[arg-type]
            elif conv is None:
                out[name] = raw.decode()  # type: ignore[union-attr]
            else:
                out[name] = conv(raw)  # type: ignore[arg-type]
        return out

    def json(self, name: str) -> Any:
        """One column in its canonical JSON form (jsonb parsed), as derivers and state see it."""
        i = self.shape.index[name]
        raw = self.data[i]
        if raw is None:
            return None
        if raw is UNCHANGED_TOAST:
            raise ValueUnknown(name)
        if self.mask >> i & 1:
            return orjson.loads(dumps(self.shape.load(i, raw, True)))  # type: ignore[arg-type]
        conv = self.shape.json_converters()[i]
        if conv is None:
            return raw.decode()  # type: ignore[union-attr]
        if conv is orjson.Fragment:
            return orjson.loads(raw)  # type: ignore[arg-type]
        return conv(raw)  # type: ignore[arg-type]

    def key(self) -> tuple[RawValue, ...]:
        return self.shape.key_of(self.data)

    def changed_columns(self, other: Row) -> frozenset[str]:
        """Columns whose raw values differ between ``other`` (the earlier image) and this one."""
        if other.shape is self.shape:
            return changed_names(self.shape.names, other.data, self.data)
        return frozenset(n for n in self.shape.names if self.changed(other, n))

    def to_dict(self) -> dict[str, Any]:
        """Every known column converted (unknown ones omitted)."""
        out: dict[str, Any] = {}
        for i, name in enumerate(self.shape.names):
            if self.data[i] is not UNCHANGED_TOAST:
                out[name] = self[name]
        return out

    def __repr__(self) -> str:
        return f"Row({self.shape.relation.qualified_name}, {len(self.data)} columns)"


_MISSING: Final = object()

# The compiled base of JsonRowView, when the extension is built (CDC_IMPL=python: the twin).
_RowReader: type | None = None
if SPEEDUPS:
    from .pgoutput import _speedups

    _speedups.configure_json(orjson.Fragment, orjson.loads)
    _RowReader = _speedups.RowReader


class _JsonRowViewMixin(Mapping[str, Any]):
    """What both JsonRowView implementations share: iteration and conversion."""

    __slots__ = ()
    row: Row

    def __iter__(self) -> Iterator[str]:
        row = self.row
        return (n for n, v in zip(row.shape.names, row.data, strict=True) if v is not UNCHANGED_TOAST)

    def __len__(self) -> int:
        return sum(1 for v in self.row.data if v is not UNCHANGED_TOAST)

    def to_dict(self) -> dict[str, Any]:
        """Every known column in its JSON form (what ``get`` gives)."""
        row = self.row
        if not row.mask and not has_unchanged(row.data):  # the common case: one generated call
            return row.shape.json_function(parsed=True)(row.data)
        return {n: self[n] for n in self}


class _PyJsonRowView(_JsonRowViewMixin):
    """A Row read in canonical JSON forms; unknown (unchanged-TOAST) columns are absent."""

    __slots__ = ("row",)

    def __init__(self, row: Row) -> None:
        self.row = row

    def __getitem__(self, name: str) -> Any:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        # Row.json inlined for the common case (a text value): derivers call this per column.
        row = self.row
        shape = row.shape
        i = shape.index.get(name)
        if i is None:
            return default
        raw = row.data[i]
        if raw is None:
            return None
        if raw is UNCHANGED_TOAST:
            return default
        if row.mask >> i & 1:
            return row.json(name)
        conv = (shape._json or shape.json_converters())[i]
        if conv is None:
            return raw.decode()  # type: ignore[union-attr]
        if conv is orjson.Fragment:
            return orjson.loads(raw)  # type: ignore[arg-type]
        return conv(raw)  # type: ignore[arg-type]

    def __contains__(self, name: object) -> bool:
        i = self.row.shape.index.get(name)  # type: ignore[call-overload]
        return i is not None and self.row.data[i] is not UNCHANGED_TOAST


if TYPE_CHECKING or _RowReader is None:
    JsonRowView = _PyJsonRowView
else:

    class JsonRowView(_RowReader, _JsonRowViewMixin):  # type: ignore[misc]
        """A Row read in canonical JSON forms; unknown (unchanged-TOAST) columns are absent.

        ``get``, ``[]`` and ``in`` are compiled (cdc/pgoutput/_speedups.c); derivers read a few
        columns of every row change through them. ``_PyJsonRowView`` is the pure-Python twin."""

        __slots__ = ()


# --- canonical JSON forms -------------------------------------------------------------

#: None: the UTF-8 text is the JSON value; else a function from raw text bytes to it.
JsonConverter = Callable[[bytes], Any] | None

_BOOL = {b"t": True, b"f": False}
_INT_OIDS = frozenset({20, 21, 23, 26})  # int8, int2, int4, oid
_STRING_OIDS = frozenset(
    {18, 19, 25, 1042, 1043, 1700, 2950, 1082}
)  # char, name, text, bpchar, varchar, numeric, uuid, date
_JSON_OIDS = frozenset({114, 3802})
_TIMESTAMP_OIDS = frozenset({1114, 1184})


#: How many of a column's recent timestamp texts keep their canonical form (see _timestamp_text).
TIMESTAMP_MEMO: Final = 4096


def _timestamp_text(shape: RowShape, i: int) -> Callable[[bytes], Any]:
    # The same instant text recurs within a column (every row a transaction stamps with now(),
    # an entry's times read again at its next change): the canonical form of the last texts
    # seen is kept, since formatting it costs several times the lookup.
    memo: dict[bytes, str] = {}

    def convert(raw: bytes) -> Any:
        text = memo.get(raw)
        if text is None:
            if len(memo) >= TIMESTAMP_MEMO:
                memo.clear()
            # psycopg's loader reads the server's text (any zone, BC, infinity is its to refuse)
            text = memo[raw] = timestamp_json(shape.load(i, raw, False))
        return text

    return convert


def _json_converter(shape: RowShape, i: int, oid: int) -> JsonConverter:
    if oid in _STRING_OIDS:
        return None
    if oid in _INT_OIDS:
        return int
    if oid == 16:
        return _BOOL.__getitem__
    if oid in _JSON_OIDS:
        return orjson.Fragment
    if oid in _TIMESTAMP_OIDS:
        return _timestamp_text(shape, i)
    if oid >= FIRST_NORMAL_OID and adapters.types.get(oid) is None:
        return None  # enums: the label
    return lambda raw: orjson.loads(dumps(shape.load(i, raw, False)))


#: The canonical instant text (``2026-01-02T03:04:05.678Z``), for the engine's messages and
#: records; the one definition is :mod:`catalog.forms` (a naive datetime is refused).
canonical_timestamp = format_timestamp


def timestamp_json(value: datetime) -> str:
    """A column's timestamp in its JSON form, the canonical text: a ``timestamptz`` (aware) is
    an instant; a ``timestamp without time zone`` (naive) is read as UTC — the replication
    session runs with ``TimeZone=UTC`` and the application writes UTC — the documented
    convention of ``cdc tail`` and of the row images derivers see (never the machine's zone)."""
    return format_timestamp(value if value.tzinfo is not None else value.replace(tzinfo=UTC))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return timestamp_json(value)
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
