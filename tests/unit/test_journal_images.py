"""The journal's images: a row's raw values to JSON and back, unchanged (cdc/journal.py)."""

from __future__ import annotations

import orjson

from cdc.journal import (
    _apply_diff,
    _decode_image,
    _encode_diff,
    _encode_image,
    shape_columns,
    shape_id,
    shape_of,
)
from cdc.pgoutput.messages import UNCHANGED_TOAST, Column, Relation
from cdc.values import Row, RowShape

COLUMNS = (
    Column(1, "id", 2950, -1),
    Column(0, "title", 25, -1),
    Column(0, "body", 25, -1),
    Column(0, "n", 23, -1),
    Column(0, "at", 1184, -1),
)
SHAPE = RowShape(Relation(1, "public", "tickets", "f", COLUMNS), ("id",))


def roundtrip(values: tuple[bytes | object | None, ...]) -> tuple[object, ...]:
    text = _encode_image(Row(SHAPE, values), {}).decode()  # type: ignore[arg-type]
    return _decode_image(text)


def test_values_come_back_as_the_same_bytes() -> None:
    values = (
        b"6f1c2b1e-5d0e-4c7a-9a61-2f4b8f0d9c11",
        'tab\there, "quotes", back\\slash, newline\n, é ✓'.encode(),
        b"",
        b"42",
        b"2026-01-02 03:04:05.678901+00",
    )
    assert roundtrip(values) == values


def test_null_is_null_and_unknown_stays_unknown() -> None:
    values = (b"6f1c2b1e-5d0e-4c7a-9a61-2f4b8f0d9c11", None, UNCHANGED_TOAST, None, b"x")
    assert roundtrip(values) == values
    text = _encode_image(Row(SHAPE, values), {}).decode()  # type: ignore[arg-type]
    assert text.startswith('["6f1c2b1e-5d0e-4c7a-9a61-2f4b8f0d9c11",null,false,null,')


def test_a_shape_is_rebuilt_with_its_columns_key_and_id() -> None:
    again = shape_of(SHAPE.table, shape_columns(SHAPE), SHAPE.primary_key)
    assert (again.table, again.names, again.type_oids, again.primary_key) == (
        SHAPE.table,
        SHAPE.names,
        SHAPE.type_oids,
        SHAPE.primary_key,
    )
    assert shape_id(again) == shape_id(SHAPE)
    other = RowShape(Relation(1, "public", "tickets", "f", COLUMNS[:4]), ("id",))
    assert shape_id(other) != shape_id(SHAPE)


def test_an_update_keeps_only_what_changed() -> None:
    before = (b"6f1c2b1e-5d0e-4c7a-9a61-2f4b8f0d9c11", b"a", b"b", b"1", None)
    after = (before[0], b"a", None, b"2", UNCHANGED_TOAST)
    diff = _encode_diff(Row(SHAPE, before), Row(SHAPE, after)).decode()  # type: ignore[arg-type]
    assert sorted(orjson.loads(diff).items()) == [("body", None), ("n", "2")]
    assert _apply_diff(SHAPE, before, diff, ("at",)) == after
