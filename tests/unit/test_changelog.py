"""A transaction's change log: spilled to disk past its limits, read and folded the same."""

from __future__ import annotations

import random

import pytest

from cdc.assembler import Assembler, Transaction
from cdc.changelog import ChangeLog, RowChange, SpillLimits, fold
from cdc.pgoutput import UNCHANGED_TOAST, Begin, Column, Commit, Insert, Relation, Truncate, TupleData, Update
from cdc.values import Row, RowShape

REL = Relation(
    100, "public", "t", "f", (Column(1, "id", 23, -1), Column(1, "v", 25, -1), Column(1, "big", 25, -1))
)
SHAPE = RowShape(REL, ("id",))
OTHER = RowShape(Relation(200, "public", "u", "f", (Column(1, "id", 23, -1),)), ("id",))


def image(change: RowChange) -> tuple[object, ...]:
    return (
        change.table,
        change.op,
        change.position,
        change.unknown,
        change.before.data if change.before is not None else None,
        change.after.data if change.after is not None else None,
    )


def random_changes(seed: int, count: int, keys: int) -> list[RowChange]:
    """Changes a real transaction could send: per key, inserts only when absent, updates and
    deletes only when present; some truncates and another table in between."""
    rng = random.Random(seed)
    present: dict[int, bytes] = {}
    out: list[RowChange] = []
    for pos in range(count):
        k = rng.randrange(keys)
        if rng.random() < 0.02:
            out.append(RowChange("public.t", "truncate", None, None, pos))
            present.clear()
            continue
        if rng.random() < 0.1:
            out.append(RowChange("public.u", "insert", None, Row(OTHER, (str(pos).encode(),)), pos))
            continue
        value = f"v{pos}".encode()
        key = str(k).encode()
        if k not in present:
            out.append(RowChange("public.t", "insert", None, Row(SHAPE, (key, value, None)), pos))
            present[k] = value
        elif rng.random() < 0.3:
            out.append(RowChange("public.t", "delete", Row(SHAPE, (key, present.pop(k), None)), None, pos))
        else:
            before = Row(SHAPE, (key, present[k], b"big"))
            after = Row(SHAPE, (key, value, UNCHANGED_TOAST), 0)
            out.append(RowChange("public.t", "update", before, after, pos, ("big",)))
            present[k] = value
    return out


def logged(changes: list[RowChange], limits: SpillLimits) -> ChangeLog:
    log = ChangeLog(limits)
    for change in changes:
        log.append(change)
    return log


@pytest.mark.parametrize("seed", range(40))
def test_a_spilled_log_folds_like_the_transaction_in_memory(seed: int) -> None:
    changes = random_changes(seed, count=60, keys=5 + seed % 30)
    log = logged(changes, SpillLimits(changes=7))
    assert log.spilled
    assert [image(c) for c in log.folded()] == [image(c) for c in fold(changes)]


def test_a_log_reads_back_every_change_in_order() -> None:
    changes = random_changes(1, count=500, keys=50)
    log = logged(changes, SpillLimits(changes=10))
    assert log.spilled and len(log) == 500
    assert [image(c) for c in log] == [image(c) for c in changes]
    assert [image(c) for c in log] == [image(c) for c in log]  # a second pass reads the same
    assert image(log[123]) == image(changes[123]) and image(log[-1]) == image(changes[-1])
    assert [image(c) for c in log[3:6]] == [image(c) for c in changes[3:6]]
    assert log.tables() == {"public.t", "public.u"}
    assert log[0].after is not None and log[0].after.shape is SHAPE  # rows keep their relation's shape
    log.close()


def test_a_large_value_reads_back_whole() -> None:
    big = b"x" * (3 << 20)  # larger than one read-ahead
    changes = [
        RowChange("public.t", "insert", None, Row(SHAPE, (b"1", b"a", big)), 0),
        RowChange("public.t", "insert", None, Row(SHAPE, (b"2", b"b", None)), 1),
    ]
    log = logged(changes, SpillLimits(changes=1))
    assert [image(c) for c in log] == [image(c) for c in changes]


def test_the_memory_limit_spills_too() -> None:
    log = ChangeLog(SpillLimits(changes=10**6, memory_bytes=10_000))
    for change in random_changes(2, count=5, keys=5):
        log.append(change, size=1_000)
    assert not log.spilled
    log.append(random_changes(3, count=1, keys=1)[0], size=9_000)
    assert log.spilled


def test_windows_are_the_whole_fold_in_memory_and_slices_of_it_once_spilled() -> None:
    changes = random_changes(4, count=100, keys=1000)
    in_memory = logged(changes, SpillLimits())
    assert [len(w) for w in in_memory.windows(30)] == [len(fold(changes))]
    spilled = logged(changes, SpillLimits(changes=10))
    windows = list(spilled.windows(30))
    assert all(len(w) <= 30 for w in windows)
    assert [image(c) for w in windows for c in w] == [image(c) for c in fold(changes)]


def test_the_assembler_spills_a_large_transaction() -> None:
    asm = Assembler({"public.t": ("id",)}, spill=SpillLimits(changes=100))
    asm.feed(REL)
    asm.feed(Begin(10, 0, 7))
    for i in range(250):
        asm.feed(Insert(100, TupleData((str(i).encode(), b"a", None))))
    asm.feed(Update(100, "O", TupleData((b"5", b"a", b"old")), TupleData((b"5", b"b", UNCHANGED_TOAST))))
    asm.feed(Truncate(0, (100,)))
    tx = asm.feed(Commit(0, 10, 20, 0))
    assert isinstance(tx, Transaction) and tx.changes.spilled and len(tx.changes) == 252
    folded = list(tx.folded())
    assert len(folded) == 251  # the update folds into the insert of key 5
    five = folded[5]
    assert five.op == "insert" and five.after is not None
    assert (five.after["v"], five.after["big"], five.unknown) == ("b", "old", ())  # TOAST filled as in memory
    assert folded[-1].op == "truncate" and tx.truncated == ("public.t",)
    tx.close()
