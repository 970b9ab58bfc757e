"""One contract, two implementations: the in-memory twins that deriver tests use
(``derivers.testing.FakeChange``, ``FakeState``, ``FakeTimers``) pass the same assertions as the
real ``Change`` (``cdc.derive.DeriverChange`` over a row change the assembler built from pgoutput
messages), the real ``StateView`` (``cdc.state.StateStore`` fed by the same messages) and the real
``TimerOps`` (``cdc.timers.TimerStore`` bound to a deriver and a transaction). The ``Sink`` twin
(``cdc.sinks.memory.MemorySink``) has its contract in ``tests/integration/sinks/test_sink_contract.py``.

Each case is written as Postgres sends it (text-format column values); the twin is given the
images a deriver sees — the canonical JSON forms (``cdc.values``) — and is then asked the same
questions. A twin that answers differently from the real one lets a deriver test pass that
production would fail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from cdc.assembler import Assembler, Transaction
from cdc.derive import DeriverChange
from cdc.pgoutput import UNCHANGED_TOAST, Begin, Column, Commit, Delete, Insert, Relation, TupleData, Update
from cdc.pgoutput.messages import RawValue
from cdc.state import StateStore
from cdc.timers import TimerStore
from cdc.values import JsonRowView, Row, RowShape
from derivers.base import Change, Image, Op, StateIndex, StateTotal, StateView, TimerOps
from derivers.testing import FakeChange, FakeState, FakeTimers, make_tx

UUID, BOOL, INT4, TEXT, NUMERIC, TIMESTAMPTZ, JSONB = 2950, 16, 23, 25, 1700, 1184, 3802

TABLE = "public.things"
PRIMARY_KEY = ("tenant", "thing_id")
COLUMNS = (
    ("tenant", UUID),
    ("thing_id", UUID),
    ("title", TEXT),
    ("count", INT4),
    ("flag", BOOL),
    ("amount", NUMERIC),
    ("at", TIMESTAMPTZ),
    ("doc", JSONB),
    ("note", TEXT),
)
RELATION = Relation(16400, "public", "things", "f", tuple(Column(1, name, oid, -1) for name, oid in COLUMNS))
SHAPE = RowShape(RELATION, PRIMARY_KEY)

TENANT = "00000000-0000-4000-8000-000000000001"
THING1 = "00000000-0000-4000-8000-000000000101"
THING2 = "00000000-0000-4000-8000-000000000102"
THING3 = "00000000-0000-4000-8000-000000000103"

# A row as the server sends it (text format; None is SQL NULL).
BASE: dict[str, RawValue] = {
    "tenant": TENANT.encode(),
    "thing_id": THING1.encode(),
    "title": b"Printer",
    "count": b"1",
    "flag": b"f",
    "amount": b"1.50",
    "at": b"2026-01-02 03:04:05.678+00",
    "doc": b'{"a": 1, "b": [true]}',
    "note": None,
}
# The same row in the canonical JSON forms derivers see (derivers.base).
BASE_IMAGE: dict[str, Any] = {
    "tenant": TENANT,
    "thing_id": THING1,
    "title": "Printer",
    "count": 1,
    "flag": False,
    "amount": "1.50",
    "at": "2026-01-02T03:04:05.678Z",
    "doc": {"a": 1, "b": [True]},
    "note": None,
}

Raw = Mapping[str, RawValue]


def raw(**values: RawValue) -> dict[str, RawValue]:
    return {**BASE, **values}


def tuple_data(values: Raw) -> TupleData:
    return TupleData(tuple(values[name] for name, _ in COLUMNS))


def transaction(*changes: tuple[Op, Raw | None, Raw | None]) -> Transaction:
    """The assembled transaction of these row changes, fed as pgoutput messages."""
    assembler = Assembler({TABLE: PRIMARY_KEY})
    assembler.feed(RELATION)
    assembler.feed(Begin(0x100, 0, 7))
    for op, before, after in changes:
        if op == "insert":
            assert after is not None
            assembler.feed(Insert(RELATION.oid, tuple_data(after)))
        elif op == "update":
            assert after is not None
            old = tuple_data(before) if before is not None else None
            assembler.feed(Update(RELATION.oid, "O" if old is not None else None, old, tuple_data(after)))
        else:
            assert before is not None
            assembler.feed(Delete(RELATION.oid, "O", tuple_data(before)))
    tx = assembler.feed(Commit(0, 0x100, 0x128, 0))
    assert tx is not None
    return tx


def image(values: Raw) -> dict[str, Any]:
    """What a deriver sees of a row: its canonical JSON forms, unknown columns left out."""
    return JsonRowView(Row(SHAPE, tuple_data(values).values)).to_dict()


# --- Change ----------------------------------------------------------------------------------------

MakeChange = Callable[[Op, Raw | None, Raw | None], Change]


def real_change(op: Op, before: Raw | None, after: Raw | None) -> Change:
    (change,) = transaction((op, before, after)).folded()
    return DeriverChange(change)


def twin_change(op: Op, before: Raw | None, after: Raw | None) -> Change:
    return FakeChange(
        TABLE,
        op,
        image(before) if before is not None else None,
        image(after) if after is not None else None,
        position=0,
    )


@pytest.fixture(params=[real_change, twin_change], ids=["real", "twin"])
def make_change(request: pytest.FixtureRequest) -> MakeChange:
    return request.param  # type: ignore[no-any-return]


CHANGED_CASES = [
    pytest.param({"title": b"Scanner"}, {"title"}, id="text"),
    pytest.param({}, set(), id="nothing"),
    pytest.param({"note": b"x"}, {"note"}, id="null-to-value"),
    pytest.param({"count": b"2"}, {"count"}, id="integer"),
    pytest.param({"flag": b"t"}, {"flag"}, id="boolean"),
    pytest.param({"amount": b"1.5"}, {"amount"}, id="numeric-scale"),
    pytest.param({"at": b"2026-01-02 03:04:05.679+00"}, {"at"}, id="timestamp"),
    pytest.param({"doc": b'{"a": true, "b": [true]}'}, {"doc"}, id="jsonb-true-is-not-1"),
    pytest.param({"doc": b'{"a": 1.0, "b": [true]}'}, {"doc"}, id="jsonb-1.0-is-not-1"),
    pytest.param({"doc": b'{"a": 1, "b": [1]}'}, {"doc"}, id="jsonb-nested-1-is-not-true"),
    pytest.param(
        {"title": b"Scanner", "count": b"2", "note": b"x"}, {"title", "count", "note"}, id="several"
    ),
]


@pytest.mark.parametrize(("after", "expected"), CHANGED_CASES)
def test_changed_compares_what_the_server_sent(
    make_change: MakeChange, after: dict[str, RawValue], expected: set[str]
) -> None:
    change = make_change("update", raw(), raw(**after))
    assert change.changed_columns() == expected
    for name, _ in COLUMNS:
        assert change.changed(name) is (name in expected), name
    assert change.changed("no_such_column") is False


@pytest.mark.parametrize("op", ["insert", "delete"])
def test_one_image_has_no_changed_columns(make_change: MakeChange, op: Op) -> None:
    change = make_change(op, raw() if op == "delete" else None, raw(title=b"x") if op == "insert" else None)
    assert change.op == op
    assert change.changed_columns() == frozenset()
    assert change.changed("title") is False


def test_an_update_without_a_before_image_has_no_changed_columns(make_change: MakeChange) -> None:
    change = make_change("update", None, raw(title=b"Scanner"))
    assert change.before is None
    assert change.changed_columns() == frozenset()
    assert change.changed("title") is False


def test_images_are_the_canonical_forms(make_change: MakeChange) -> None:
    change = make_change("update", raw(), raw(note=b"x"))
    assert (change.table, change.op, change.position) == (TABLE, "update", 0)
    assert change.before is not None and change.after is not None
    assert dict(change.before) == BASE_IMAGE
    assert dict(change.after) == {**BASE_IMAGE, "note": "x"}
    assert change.after["doc"] == {"a": 1, "b": [True]}
    assert change.after.get("no_such_column") is None
    assert "no_such_column" not in change.after
    assert "note" in change.before and change.before.get("note") is None


def test_an_unknown_value_is_absent_never_null(make_change: MakeChange) -> None:
    """An unchanged TOAST value without a before-image cannot be known: not in the image."""
    change = make_change("update", None, raw(doc=UNCHANGED_TOAST))
    assert change.after is not None
    assert "doc" not in change.after
    assert change.after.get("doc") is None
    assert "note" in change.after  # a NULL is a value


# --- StateView -------------------------------------------------------------------------------------

Write = tuple[Op, Raw | None, Raw | None]


class RealState:
    """``cdc.state.StateStore``, fed each transaction's row changes as the watcher feeds it."""

    def __init__(self) -> None:
        self.view = StateStore("contract", "cdc", {TABLE: PRIMARY_KEY})

    def write(self, *writes: Write) -> None:
        self.view.apply_all(transaction(*writes).changes)


class TwinState:
    """``derivers.testing.FakeState``, filled by ``put`` with the images a deriver sees."""

    def __init__(self) -> None:
        self.view = FakeState()

    def write(self, *writes: Write) -> None:
        for _op, _before, after in writes:
            assert after is not None, "the twin is filled by put: inserts and updates only"
            row = image(after)
            self.view.put(TABLE, (row["tenant"], row["thing_id"]), row)


StateUnderTest = RealState | TwinState


@pytest.fixture(params=[RealState, TwinState], ids=["real", "twin"])
def state(request: pytest.FixtureRequest) -> StateUnderTest:
    return request.param()  # type: ignore[no-any-return]


THING2_ROW = raw(thing_id=THING2.encode(), title=b"Scanner", doc=b'{"a": true}', note=b"n")
THING3_ROW = raw(thing_id=THING3.encode(), doc=b"[1, 2]")
ROWS: list[Write] = [("insert", None, raw()), ("insert", None, THING2_ROW), ("insert", None, THING3_ROW)]


def ids(rows: list[Mapping[str, Any]]) -> list[str]:
    return sorted(row["thing_id"] for row in rows)  # find() promises no order


def test_get_by_primary_key_in_canonical_forms(state: StateUnderTest) -> None:
    state.write(*ROWS)
    view: StateView = state.view
    assert view.get(TABLE, (TENANT, THING1)) == BASE_IMAGE
    assert view.get(TABLE, (TENANT, "00000000-0000-4000-8000-000000000999")) is None
    assert view.get("public.other", (TENANT, THING1)) is None


def test_find_by_column_value(state: StateUnderTest) -> None:
    state.write(*ROWS)
    view: StateView = state.view
    assert ids(view.find(TABLE, "title", "Printer")) == [THING1, THING3]
    assert ids(view.find(TABLE, "title", "Scanner")) == [THING2]
    assert ids(view.find(TABLE, "title", "Fax")) == []
    assert ids(view.find(TABLE, "note", None)) == [THING1, THING3]
    assert ids(view.find(TABLE, "count", 1)) == [THING1, THING2, THING3]
    assert view.find("public.other", "title", "Printer") == []


def test_find_compares_json_values_as_sent(state: StateUnderTest) -> None:
    state.write(*ROWS)
    view: StateView = state.view
    assert ids(view.find(TABLE, "doc", {"a": True})) == [THING2]
    assert ids(view.find(TABLE, "doc", {"a": 1})) == []  # jsonb true is not 1
    assert ids(view.find(TABLE, "doc", [1, 2])) == [THING3]
    assert ids(view.find(TABLE, "doc", [1.0, 2])) == []  # nor 1.0 the integer 1


def test_a_rewritten_row_is_found_by_its_new_values_only(state: StateUnderTest) -> None:
    state.write(*ROWS)
    view: StateView = state.view
    assert ids(view.find(TABLE, "title", "Scanner")) == [THING2]  # looked up before the rewrite
    state.write(("update", raw(), raw(title=b"Scanner", count=b"5")))
    assert view.get(TABLE, (TENANT, THING1)) == {**BASE_IMAGE, "title": "Scanner", "count": 5}
    assert ids(view.find(TABLE, "title", "Scanner")) == [THING1, THING2]
    assert ids(view.find(TABLE, "title", "Printer")) == [THING3]
    assert ids(view.find(TABLE, "count", 5)) == [THING1]


#: Things by the first letter of their title (a lookup no single column answers).
BY_INITIAL = StateIndex(TABLE, "by initial", lambda row: [row["title"][:1]] if row.get("title") else [])


def test_lookup_files_rows_under_the_keys_of_the_index(state: StateUnderTest) -> None:
    state.write(*ROWS)
    view: StateView = state.view
    assert ids(view.lookup(BY_INITIAL, "P")) == [THING1, THING3]
    assert ids(view.lookup(BY_INITIAL, "S")) == [THING2]
    assert view.lookup(BY_INITIAL, "F") == []


def test_a_rewritten_row_is_looked_up_by_its_new_keys_only(state: StateUnderTest) -> None:
    state.write(*ROWS)
    view: StateView = state.view
    assert ids(view.lookup(BY_INITIAL, "S")) == [THING2]  # built before the rewrite
    state.write(("update", raw(), raw(title=b"Scanner")))
    assert ids(view.lookup(BY_INITIAL, "S")) == [THING1, THING2]
    assert ids(view.lookup(BY_INITIAL, "P")) == [THING3]


def _count_by_title(view: StateView, table: str, row: Image) -> list[tuple[str, int]]:
    return [(row["title"], row["count"])] if row.get("title") and row.get("count") is not None else []


#: The counts of things summed by title (a total the state keeps current).
COUNT_BY_TITLE = StateTotal((TABLE,), "count by title", _count_by_title)


def test_total_sums_what_the_rows_contribute_under_a_key(state: StateUnderTest) -> None:
    state.write(*ROWS)
    view: StateView = state.view
    assert view.total(COUNT_BY_TITLE, "Printer") == 2
    assert view.total(COUNT_BY_TITLE, "Scanner") == 1
    assert view.total(COUNT_BY_TITLE, "Fax") == 0


def test_a_rewritten_row_moves_its_contribution(state: StateUnderTest) -> None:
    state.write(*ROWS)
    view: StateView = state.view
    assert view.total(COUNT_BY_TITLE, "Printer") == 2  # built before the rewrite
    state.write(("update", raw(), raw(title=b"Scanner", count=b"5")))
    assert view.total(COUNT_BY_TITLE, "Printer") == 1
    assert view.total(COUNT_BY_TITLE, "Scanner") == 6
    state.write(("update", raw(title=b"Scanner", count=b"5"), raw(title=b"Scanner", count=b"-1")))
    assert view.total(COUNT_BY_TITLE, "Scanner") == 0


# --- TimerOps --------------------------------------------------------------------------------------

DUE = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 1, 2, 13, 0, tzinfo=UTC)
TICKET_CHANGE = FakeChange("public.tickets", "update")
AUDIT_CHANGE = FakeChange("public.ticket_audit_logs", "insert")


class RealTimers:
    """``cdc.timers.TimerStore`` as a deriver sees it: bound to the deriver and a transaction."""

    def __init__(self) -> None:
        self.store = TimerStore("contract", "cdc")
        self.ops: TimerOps = self.store.bound(
            "tickets", make_tx([TICKET_CHANGE, AUDIT_CHANGE], commit_time=DUE)
        )

    def armed_table(self, key: str) -> str:
        return self.store.armed_by[key].table


class TwinTimers:
    """``derivers.testing.FakeTimers``."""

    def __init__(self) -> None:
        self.twin = FakeTimers(deriver="tickets")
        self.ops: TimerOps = self.twin

    def armed_table(self, key: str) -> str:
        return self.twin.armed_by[key].table


TimersUnderTest = RealTimers | TwinTimers


@pytest.fixture(params=[RealTimers, TwinTimers], ids=["real", "twin"])
def timers(request: pytest.FixtureRequest) -> TimersUnderTest:
    return request.param()  # type: ignore[no-any-return]


def arm(t: TimersUnderTest, due: datetime = DUE, change: Change = TICKET_CHANGE, **data: Any) -> None:
    t.ops.arm(
        "k", change, tenant=TENANT, subject_id=THING1, stage="resolution", due_at=due, data=data or None
    )


def test_arm_creates_an_armed_timer_of_the_bound_deriver(timers: TimersUnderTest) -> None:
    assert timers.ops.get("k") is None
    arm(timers, policy="p1")
    timer = timers.ops.get("k")
    assert timer is not None
    assert (timer.deriver, timer.tenant, timer.subject_id, timer.stage) == (
        "tickets",
        TENANT,
        THING1,
        "resolution",
    )
    assert (timer.due_at, timer.state, dict(timer.data)) == (DUE, "armed", {"policy": "p1"})
    assert timers.armed_table("k") == "public.tickets"


def test_arming_again_moves_the_timer_and_its_source(timers: TimersUnderTest) -> None:
    arm(timers, policy="p1")
    arm(timers, LATER, AUDIT_CHANGE)  # no data: the timer keeps what it carries
    timer = timers.ops.get("k")
    assert timer is not None and (timer.due_at, timer.state, dict(timer.data)) == (
        LATER,
        "armed",
        {"policy": "p1"},
    )
    assert timers.armed_table("k") == "public.ticket_audit_logs"


def test_arming_again_unchanged_keeps_the_change_that_armed_it(timers: TimersUnderTest) -> None:
    arm(timers, policy="p1")
    arm(timers, DUE, AUDIT_CHANGE, policy="p1")
    assert timers.armed_table("k") == "public.tickets"


def test_a_paused_timer_is_armed_again_by_arm(timers: TimersUnderTest) -> None:
    arm(timers)
    timers.ops.pause("k")
    assert (t := timers.ops.get("k")) is not None and t.state == "paused"
    arm(timers, LATER)
    assert (t := timers.ops.get("k")) is not None and (t.state, t.due_at) == ("armed", LATER)


def test_a_settled_timer_keeps_its_verdict(timers: TimersUnderTest) -> None:
    arm(timers)
    timers.ops.settle("k")
    arm(timers, LATER, AUDIT_CHANGE)
    timers.ops.pause("k")
    assert (t := timers.ops.get("k")) is not None and (t.state, t.due_at) == ("settled", DUE)
    assert timers.armed_table("k") == "public.tickets"


def test_a_forgotten_timer_is_gone_and_may_be_armed_anew(timers: TimersUnderTest) -> None:
    arm(timers)
    timers.ops.settle("k")
    timers.ops.forget("k")
    assert timers.ops.get("k") is None
    timers.ops.forget("k")  # forgetting nothing is no error
    arm(timers, LATER)
    assert (t := timers.ops.get("k")) is not None and (t.state, t.due_at) == ("armed", LATER)
