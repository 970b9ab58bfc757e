"""The fold rules of a transaction's per-row net effect (DESIGN §3.3)."""

from __future__ import annotations

import pytest

from cdc.assembler import Assembler, RowChange, fold
from cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    Relation,
    TupleData,
    Update,
)
from cdc.values import Row, RowShape, ValueUnknown

REL = Relation(
    100,
    "public",
    "t",
    "f",
    (Column(1, "id", 23, -1), Column(1, "v", 25, -1), Column(1, "big", 25, -1)),
)
SHAPE = RowShape(REL, ("id",))


def row(id_: int, v: str, big: object = b"B") -> Row:
    return Row(SHAPE, (str(id_).encode(), v.encode(), big))  # type: ignore[arg-type]


def ins(pos: int, id_: int, v: str) -> RowChange:
    return RowChange("public.t", "insert", None, row(id_, v), pos)


def upd(pos: int, id_: int, old: str, new: str) -> RowChange:
    return RowChange("public.t", "update", row(id_, old), row(id_, new), pos)


def dele(pos: int, id_: int, old: str) -> RowChange:
    return RowChange("public.t", "delete", row(id_, old), None, pos)


def summary(changes: list[RowChange]) -> list[tuple[str, str | None, str | None]]:
    return [(c.op, c.before["v"] if c.before else None, c.after["v"] if c.after else None) for c in changes]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ([ins(0, 1, "a"), upd(1, 1, "a", "b"), upd(2, 1, "b", "c")], [("insert", None, "c")]),
        ([ins(0, 1, "a"), upd(1, 1, "a", "b"), dele(2, 1, "b")], []),
        ([dele(0, 1, "a"), ins(1, 1, "b")], [("update", "a", "b")]),
        ([upd(0, 1, "a", "b"), dele(1, 1, "b")], [("delete", "a", None)]),
        ([upd(0, 1, "a", "b"), upd(1, 1, "b", "c"), upd(2, 1, "c", "d")], [("update", "a", "d")]),
        ([ins(0, 1, "a"), dele(1, 1, "a"), ins(2, 1, "z")], [("insert", None, "z")]),
        (
            [upd(0, 2, "x", "y"), ins(1, 1, "a"), upd(2, 2, "y", "z"), upd(3, 1, "a", "b")],
            [("update", "x", "z"), ("insert", None, "b")],
        ),
    ],
    ids=[
        "insert+update",
        "insert+delete",
        "delete+insert",
        "update+delete",
        "updates",
        "reinsert",
        "order",
    ],
)
def test_fold_rules(changes: list[RowChange], expected: list[tuple[str, str | None, str | None]]) -> None:
    assert summary(fold(changes)) == expected


def test_truncate_kept() -> None:
    t = RowChange("public.t", "truncate", None, None, 1)
    assert fold([ins(0, 1, "a"), t]) == [fold([ins(0, 1, "a")])[0], t]


def _feed(asm: Assembler, *msgs: object) -> list[object]:
    return [r for m in msgs if (r := asm.feed(m)) is not None]  # type: ignore[arg-type]


def test_unchanged_toast_filled_from_before_image() -> None:
    asm = Assembler({"public.t": ("id",)})
    (tx,) = _feed(
        asm,
        REL,
        Begin(10, 0, 7),
        Update(100, "O", TupleData((b"1", b"a", b"huge")), TupleData((b"1", b"b", UNCHANGED_TOAST))),
        Commit(0, 10, 20, 0),
    )
    change = tx.changes[0]  # type: ignore[attr-defined]
    assert change.after["big"] == "huge" and change.unknown == ()


def test_unknown_toast_is_marked_never_null() -> None:
    asm = Assembler({"public.t": ("id",)})
    (tx,) = _feed(
        asm,
        REL,
        Begin(10, 0, 7),
        Update(100, None, None, TupleData((b"1", b"b", UNCHANGED_TOAST))),
        Commit(0, 10, 20, 0),
    )
    change = tx.changes[0]  # type: ignore[attr-defined]
    assert change.unknown == ("big",)
    assert change.after.is_unknown("big")
    with pytest.raises(ValueUnknown):
        change.after["big"]
    assert "big" not in change.after.to_dict()


def test_transaction_fields_and_delete() -> None:
    asm = Assembler({"public.t": ("id",)})
    (tx,) = _feed(
        asm,
        REL,
        Begin(10, 5, 7),
        Insert(100, TupleData((b"1", b"a", None))),
        Delete(100, "O", TupleData((b"1", b"a", None))),
        Commit(0, 10, 20, 5),
    )
    assert (tx.xid, tx.commit_lsn, tx.end_lsn) == (7, 10, 20)  # type: ignore[attr-defined]
    assert tx.folded() == []  # type: ignore[attr-defined]
    assert [c.op for c in tx.changes] == ["insert", "delete"]  # type: ignore[attr-defined]


def test_relation_replaced_after_alter_table() -> None:
    asm = Assembler()
    wider = REL._replace(columns=(*REL.columns, Column(0, "extra", 23, -1)))
    (t1, t2) = _feed(
        asm,
        REL,
        Begin(1, 0, 1),
        Insert(100, TupleData((b"1", b"a", None))),
        Commit(0, 1, 2, 0),
        wider,
        Begin(3, 0, 2),
        Insert(100, TupleData((b"2", b"b", None, b"42"))),
        Commit(0, 3, 4, 0),
    )
    assert "extra" not in t1.changes[0].after  # type: ignore[attr-defined]
    assert t2.changes[0].after["extra"] == 42  # type: ignore[attr-defined]


def test_key_only_old_tuple_never_fills_toast_with_null() -> None:
    asm = Assembler({"public.t": ("id",)})
    (tx,) = _feed(
        asm,
        REL,
        Begin(10, 0, 7),
        Update(100, "K", TupleData((b"1", None, None)), TupleData((b"2", b"b", UNCHANGED_TOAST))),
        Commit(0, 10, 20, 0),
    )
    change = tx.changes[0]  # type: ignore[attr-defined]
    assert change.unknown == ("big",)
    assert change.after.is_unknown("big")
