"""Decoding of pgoutput bytes captured from a real PostgreSQL server (tests/fixtures)."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from cdc.assembler import Assembler
from cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Decoder,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    Truncate,
    TypeMessage,
    Update,
    decode_message,
)

GOLDEN = json.loads((Path(__file__).parent.parent / "fixtures" / "pgoutput_golden.json").read_text())


def _decode_all(fmt: str) -> list[object]:
    dec = Decoder()
    return [dec.decode(bytes.fromhex(h)) for h in GOLDEN[fmt]]


@pytest.mark.parametrize("fmt", ["text", "binary"])
def test_every_message_kind_is_present_and_decodes(fmt: str) -> None:
    kinds = Counter(type(m).__name__ for m in _decode_all(fmt))
    for cls in (
        Begin,
        Commit,
        Origin,
        Relation,
        TypeMessage,
        Insert,
        Update,
        Delete,
        Truncate,
        LogicalMessage,
    ):
        assert kinds[cls.__name__] > 0, cls.__name__
    assert kinds["Begin"] == kinds["Commit"]


@pytest.mark.parametrize("fmt", ["text", "binary"])
def test_golden_fields(fmt: str) -> None:
    msgs = _decode_all(fmt)
    begin = msgs[0]
    assert isinstance(begin, Begin) and begin.xid > 0
    assert begin.commit_time.year >= 2024
    mood = next(m for m in msgs if isinstance(m, TypeMessage))
    assert (mood.namespace, mood.name) == ("public", "mood")
    golden = next(m for m in msgs if isinstance(m, Relation) and m.name == "golden")
    assert golden.replica_identity == "f"
    assert [c.name for c in golden.columns] == ["id", "name", "big", "feeling", "n", "at", "tags"]
    assert golden.columns[3].type_oid == mood.oid
    keyed = next(m for m in msgs if isinstance(m, Relation) and m.name == "keyed")
    assert keyed.replica_identity == "d" and [c.is_key for c in keyed.columns] == [True, False]

    updates = [m for m in msgs if isinstance(m, Update)]
    toast = updates[0]
    assert toast.old_kind == "O" and toast.old is not None
    assert toast.new.values[2] is UNCHANGED_TOAST  # unchanged TOAST under FULL
    assert toast.old.values[2] == b"x" * 30000
    key_change = updates[1]
    assert key_change.old_kind == "K" and key_change.old is not None and key_change.old.values[1] is None
    assert updates[2].old_kind is None and updates[2].old is None

    nulls = [m for m in msgs if isinstance(m, Insert) and m.new.values[1] is None]
    assert nulls and nulls[0].new.values[1:] == (None,) * 6
    delete = next(m for m in msgs if isinstance(m, Delete))
    assert delete.old_kind == "O"
    trunc = next(m for m in msgs if isinstance(m, Truncate))
    assert trunc.relation_oids == (keyed.oid,) and not trunc.cascade
    logical = [m for m in msgs if isinstance(m, LogicalMessage)]
    assert [(m.transactional, m.prefix, m.content) for m in logical] == [
        (True, "golden.tx", b"transactional content"),
        (False, "golden.nontx", b"non-transactional"),
    ]
    origin = next(m for m in msgs if isinstance(m, Origin))
    assert origin.name == "golden_origin" and origin.commit_lsn == 0xAB
    commits = [m for m in msgs if isinstance(m, Commit)]
    assert all(c.end_lsn > c.commit_lsn for c in commits)


def test_binary_mode_sends_binary_tuples() -> None:
    inserts = [m for m in _decode_all("binary") if isinstance(m, Insert)]
    assert any(m.new.binary_mask for m in inserts)
    assert inserts[0].new.values[0] == b"\x00\x00\x00\x01"  # int4 send format


@pytest.mark.parametrize("fmt", ["text", "binary"])
def test_typed_values_through_psycopg_loaders(fmt: str) -> None:
    asm = Assembler({"public.golden": ("id",), "public.keyed": ("id",)})
    dec = Decoder()
    txs = [t for h in GOLDEN[fmt] if (t := asm.feed(dec.decode(bytes.fromhex(h)))) is not None]
    first = txs[0].changes[0]
    assert first.op == "insert" and first.after is not None
    row = first.after
    assert row["id"] == 1 and row["name"] == "one" and row["feeling"] == "happy"
    assert row["n"] == Decimal("12.50") and row["tags"] == ["a", "b"]
    assert row["at"].isoformat() == "2026-01-02T03:04:05.678000+00:00"
    upd = txs[1].changes[0]
    assert upd.after is not None and upd.before is not None
    assert upd.after["big"] == "x" * 30000  # filled from the before-image
    assert upd.unknown == ()
    assert upd.after.changed(upd.before, "name") and not upd.after.changed(upd.before, "big")


def test_trailing_bytes_are_rejected() -> None:
    from cdc.errors import DecodeError

    with pytest.raises(DecodeError):
        decode_message(bytes.fromhex(GOLDEN["text"][0]) + b"\x00")


def test_json_fast_path_equals_the_loader_path() -> None:
    from cdc.values import dumps

    asm = Assembler({"public.golden": ("id",), "public.keyed": ("id",)})
    dec = Decoder()
    rows = []
    for h in GOLDEN["text"] + GOLDEN["binary"]:
        tx = asm.feed(dec.decode(bytes.fromhex(h)))
        if tx is not None:
            rows += [r for c in tx.changes for r in (c.before, c.after) if r is not None]
    assert len(rows) > 10
    for row in rows:
        assert dumps(row.to_json_dict()) == dumps(row.to_dict())


def test_tail_transaction_encoding_equals_one_record_per_change() -> None:
    from cdc.tail import change_record, encode_transaction
    from cdc.values import dumps

    asm = Assembler({"public.golden": ("id",), "public.keyed": ("id",)})
    dec = Decoder()
    checked = 0
    for h in GOLDEN["text"]:
        tx = asm.feed(dec.decode(bytes.fromhex(h)))
        if tx is not None:
            expected = b"".join(dumps(change_record(tx, c)) + b"\n" for c in tx.changes)
            assert encode_transaction(tx) == expected
            checked += 1
    assert checked >= 8


def test_row_view_reads_equal_row_json() -> None:
    """JsonRowView.get inlines Row.json's common path: both give the same value for every
    column of every golden row image (text and binary), and the view leaves unknowns out."""
    from cdc.values import JsonRowView, ValueUnknown

    asm = Assembler({"public.golden": ("id",), "public.keyed": ("id",)})
    dec = Decoder()
    seen = 0
    for h in GOLDEN["text"] + GOLDEN["binary"]:
        tx = asm.feed(dec.decode(bytes.fromhex(h)))
        if tx is None:
            continue
        for row in (r for c in tx.changes for r in (c.before, c.after) if r is not None):
            view = JsonRowView(row)
            known = {}
            for name in row.shape.names:
                try:
                    expected = known[name] = row.json(name)
                except ValueUnknown:
                    assert view.get(name, "absent") == "absent" and name not in view
                    continue
                assert view.get(name) == expected and view[name] == expected
                seen += 1
            # to_dict (a generated function for rows without unknown or binary columns) agrees
            assert view.to_dict() == known and list(view.to_dict()) == list(known)
    assert seen > 50


def test_compiled_row_view_equals_its_python_twin() -> None:
    """The compiled JsonRowView and _PyJsonRowView answer every read alike: get with and
    without a default, [] (KeyError for unknown and missing names), in, iteration, len and
    to_dict, on every golden row image, text and binary."""
    import pytest

    from cdc.pgoutput import decoder
    from cdc.values import JsonRowView, _PyJsonRowView

    if not decoder.SPEEDUPS:
        pytest.skip("the compiled decoder is not in use (CDC_IMPL=python or not built)")
    assert JsonRowView is not _PyJsonRowView

    def answers(view: object, names: list[object]) -> list[object]:
        out: list[object] = []
        reads = (
            lambda n: view.get(n),  # type: ignore[attr-defined]
            lambda n: view.get(n, "absent"),  # type: ignore[attr-defined]
            lambda n: view[n],  # type: ignore[index]
            lambda n: n in view,  # type: ignore[operator]
        )
        for name in names:
            for read in reads:
                try:
                    out.append(("ok", read(name)))
                except Exception as exc:  # the same exception type, for the same reads
                    out.append(("raised", type(exc)))
        out += [list(view), len(view), view.to_dict(), dict(view.items())]  # type: ignore[attr-defined]
        return out

    asm = Assembler({"public.golden": ("id",), "public.keyed": ("id",)})
    dec = Decoder()
    rows = 0
    for h in GOLDEN["text"] + GOLDEN["binary"]:
        tx = asm.feed(dec.decode(bytes.fromhex(h)))
        if tx is None:
            continue
        for row in (r for c in tx.changes for r in (c.before, c.after) if r is not None):
            names: list[object] = [*row.shape.names, "no_such_column", ["unhashable"]]
            assert answers(JsonRowView(row), names) == answers(_PyJsonRowView(row), names)
            assert JsonRowView(row).row is row
            rows += 1
    assert rows > 10
    view, twin = JsonRowView(row), _PyJsonRowView(row)
    for name in (("tenant", "id"), "no_such_column"):  # a tuple name stays one KeyError argument
        with pytest.raises(KeyError) as mine:
            view[name]  # type: ignore[index]
        with pytest.raises(KeyError) as theirs:
            twin[name]  # type: ignore[index]
        assert mine.value.args == theirs.value.args
    with pytest.raises(AttributeError):  # not a Row
        JsonRowView(object())  # type: ignore[arg-type]
