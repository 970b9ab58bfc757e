"""What the watcher does when a watched table changes shape (cdc.relations), the derivers'
declarations of what they read, and what a TRUNCATE does to timers and reference state."""

from __future__ import annotations

import ast
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

import derivers
from catalog.registry import REGISTRY
from cdc.assembler import RowChange
from cdc.errors import ReplicaIdentityNotFull
from cdc.pgoutput.messages import Column, Relation
from cdc.relations import RelationGuard, TableShape, merge_reads, missing_reads, require_full_identity
from cdc.state import StateStore
from cdc.timers import TimerStore
from cdc.values import Row, RowShape
from derivers import default_derivers
from derivers.base import declare_reads
from derivers.testing import FakeChange, make_tx
from derivers.tickets import TicketDeriver

TICKETS = "public.tickets"
TICKET_COLUMNS = ("tenant", "ticket_id", "status_id", "priority_id", "title", "is_closed", "updated_by")
TEXT = 25


def relation(columns: tuple[str, ...], identity: str = "f", table: str = "tickets") -> Relation:
    return Relation(16384, "public", table, identity, tuple(Column(0, c, TEXT, -1) for c in columns))


def full_ticket_columns() -> tuple[str, ...]:
    return tuple(TicketDeriver.reads[TICKETS])


# -- the column check ---------------------------------------------------------------------------


def test_missing_reads_names_each_missing_column_with_the_event_types_it_feeds() -> None:
    reads = declare_reads(
        (TICKETS, ("tenant", "ticket_id"), ("A", "B")),
        (TICKETS, ("status_id",), ("A",)),
        (TICKETS, ("priority_id",), ("B",)),
    )
    renamed = ("tenant", "ticket_id", "status_ref", "priority_id")
    assert missing_reads(reads, TICKETS, renamed) == {"status_id": frozenset({"A"})}
    assert missing_reads(reads, TICKETS, ("tenant", "ticket_id", "status_id", "priority_id", "x")) == {}
    assert missing_reads(reads, "public.other", ()) == {}  # no rule reads it


def test_declarations_of_several_derivers_add_up() -> None:
    one = declare_reads((TICKETS, ("status_id",), ("A",)))
    two = declare_reads((TICKETS, ("status_id", "title"), ("B",)))
    assert merge_reads([one, two]) == {
        TICKETS: {"status_id": frozenset({"A", "B"}), "title": frozenset({"B"})}
    }


def test_declare_reads_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError):
        declare_reads((TICKETS, "status_id", ("A",)))


def test_a_renamed_column_opens_one_gap_and_blocks_only_the_event_types_that_read_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = RelationGuard("s", "cdc", TicketDeriver.reads)
    columns = full_ticket_columns()
    guard.observe(relation(columns), 0x100, _never)
    assert guard.open == {} and guard.blocked == frozenset()

    renamed = tuple("status_ref" if c == "status_id" else c for c in columns)
    with caplog.at_level(logging.WARNING, logger="cdc.relations"):
        guard.observe(relation(renamed), 0x200, _never)
        guard.observe(relation(renamed), 0x300, _never)  # announced again: same relation version
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    line = errors[0].getMessage()
    assert "public.tickets" in line and "status_id" in line and "TICKET_STATUS_CHANGED" in line
    assert "0/200" in line

    gap = guard.open[(TICKETS, "columns_missing")]
    assert gap.missing_columns == ("status_id",) and gap.from_lsn == 0x200 and gap.to_lsn is None
    assert "TICKET_STATUS_CHANGED" in guard.blocked and "TICKET_CLOSED" in guard.blocked
    assert "TICKET_PRIORITY_CHANGED" not in guard.blocked
    assert "TICKET_CREATED" not in guard.blocked
    assert guard.withheld == frozenset()

    guard.observe(relation(columns), 0x400, _never)  # renamed back
    assert guard.open == {} and guard.blocked == frozenset()
    assert gap.to_lsn == 0x400
    assert [g.to_lsn for g in guard._closed] == [0x400]


def test_another_column_going_missing_closes_the_gap_and_opens_a_wider_one() -> None:
    guard = RelationGuard("s", "cdc", TicketDeriver.reads)
    columns = full_ticket_columns()
    guard.observe(relation(tuple(c for c in columns if c != "status_id")), 0x200, _never)
    guard.observe(relation(tuple(c for c in columns if c not in ("status_id", "priority_id"))), 0x300, _never)
    gap = guard.open[(TICKETS, "columns_missing")]
    assert gap.missing_columns == ("priority_id", "status_id") and gap.from_lsn == 0x300
    assert "TICKET_PRIORITY_CHANGED" in guard.blocked


def test_gaps_opened_or_closed_while_a_checkpoint_is_in_flight_stay_pending() -> None:
    # cdc.batch: a batch's gaps are taken when it is sent and written by the committer while the
    # watcher goes on; the next take may come before that commit is known to have happened.
    guard = RelationGuard("s", "cdc", TicketDeriver.reads)
    columns = full_ticket_columns()
    without = tuple(c for c in columns if c != "status_id")
    guard.observe(relation(without), 0x200, _never)  # opens a gap (batch N)
    first = guard.take_flush(0x200)
    guard.observe(relation(columns), 0x300, _never)  # closes it (batch N + 1)
    second = guard.take_flush(0x300)
    guard.observe(relation(without), 0x400, _never)  # opens another (batch N + 2)
    guard.committed(first)
    guard.committed(second)
    (pending,) = guard._opened
    assert pending.from_lsn == 0x400 and pending.to_lsn is None  # still to be written
    assert guard._closed == []
    opened, closed = guard.take_flush(0x400).taken
    assert opened == [pending] and closed == []


def test_a_table_not_full_now_stops_the_watcher_with_a_hint_to_run_setup() -> None:
    guard = RelationGuard("s", "cdc", TicketDeriver.reads)
    with pytest.raises(ReplicaIdentityNotFull) as err:
        guard.observe(relation(full_ticket_columns(), "d"), 0x200, lambda table: "d")
    line = err.value.one_line()
    assert "public.tickets" in line and "REPLICA IDENTITY DEFAULT" in line and "`cdc setup`" in line
    assert "\n" not in line
    with pytest.raises(ReplicaIdentityNotFull):
        require_full_identity([TableShape(TICKETS, "f", ()), TableShape("public.comments", "i", ())])
    require_full_identity([TableShape(TICKETS, "f", ())])


def test_changes_written_while_not_full_are_withheld_once_the_table_is_full_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = RelationGuard("s", "cdc", TicketDeriver.reads)
    columns = full_ticket_columns()
    with caplog.at_level(logging.WARNING, logger="cdc.relations"):
        guard.observe(relation(columns, "d"), 0x200, lambda table: "f")  # `cdc setup` ran since
        guard.observe(relation(columns, "d"), 0x280, _never)  # the same stretch: no second look
    assert guard.withheld == {TICKETS} and guard.blocked == frozenset()
    gap = guard.open[(TICKETS, "replica_identity")]
    assert "TICKET_STATUS_CHANGED" in gap.event_types and gap.missing_columns == ()
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    guard.observe(relation(columns, "f"), 0x300, _never)
    assert guard.withheld == frozenset() and gap.to_lsn == 0x300


def _never(table: str) -> str:
    raise AssertionError("the catalog is only asked about a relation that is not FULL")


# -- the derivers' declarations are true ---------------------------------------------------------

DERIVERS_DIR = Path(derivers.__file__).parent
_COLUMN = re.compile(r"[a-z][a-z0-9_]*")
#: Every catalogued event type: a string literal in a deriver module equal to one is a type it emits.
_CATALOG_TYPES = frozenset(REGISTRY)


def _literals_read(tree: ast.AST) -> set[str]:
    """String literals a module reads as a key: ``x.get("k")``, ``x.changed("k")``, ``x["k"]``,
    and the column of the toolkit's readers ``written_actor(change, "k")``,
    ``ctx.written_time(change, "k")``."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "changed")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.add(node.args[0].value)
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in ("written_actor", "written_time")
            and len(node.args) == 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            out.add(node.args[1].value)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            out.add(node.slice.value)
    return out


#: Modules of derivers/ that no live deriver runs: the audit history maps rows of the application's
#: audit log that ``cdc backfill --from-audit-log`` reads with its own query, not replicated changes
#: (no relation guard watches them, and it names the ticket types it cannot reconstruct).
NOT_LIVE = ("audit_history.py",)


def test_every_column_a_ticket_rule_reads_is_declared() -> None:
    registered = merge_reads(d.reads for d in default_derivers())  # the toolkit reads for them all
    declared = {column for columns in registered.values() for column in columns}
    for path in sorted(DERIVERS_DIR.glob("*.py")):
        if path.name in ("testing.py", "base.py", *NOT_LIVE):
            continue
        read = {k for k in _literals_read(ast.parse(path.read_text())) if _COLUMN.fullmatch(k)}
        assert read <= declared, f"{path.name} reads undeclared columns {sorted(read - declared)}"
    from derivers import ticket_sla, tickets

    by_constant = {
        *tickets.TRACKED_COLUMNS,
        *tickets.SYNC_COLUMNS,
        *(column for column, _ in tickets.ASSIGNEE_COLUMNS),
        *(column for _, *columns in ticket_sla.POLICY_STAGES for column in columns),
    }
    assert by_constant <= set(TicketDeriver.reads[TICKETS])


def test_every_event_type_a_rule_emits_is_declared() -> None:
    registered = merge_reads(d.reads for d in default_derivers())
    declared = {t for columns in registered.values() for types in columns.values() for t in types}
    emitted: set[str] = set()
    for path in DERIVERS_DIR.glob("*.py"):
        if path.name == "not_derived.py" or path.name in NOT_LIVE:  # not_derived: the types no rule emits
            continue
        emitted |= {
            node.value
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in _CATALOG_TYPES
        }
    assert emitted and emitted == declared


def test_every_registered_deriver_declares_what_it_reads() -> None:
    for d in default_derivers():
        assert d.reads, d.name
        assert set(d.reads) >= d.tables | d.state_tables, d.name


# -- TRUNCATE: timers and reference state ---------------------------------------------------------

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_a_truncate_forgets_every_timer_the_rows_of_that_table_armed() -> None:
    store = TimerStore("s", "cdc")
    changes = [
        FakeChange(TICKETS, "update"),
        FakeChange(TICKETS, "update"),
        FakeChange("public.projects", "insert"),
    ]
    tx = make_tx(changes, commit_time=AT, end_lsn=0x100, xid=7)
    timers = store.bound("tickets", tx)
    for key, change in zip(("t1", "t2", "p1"), tx.changes, strict=True):
        timers.arm(key, change, tenant="x", subject_id=key, stage="resolution", due_at=AT)
    timers.settle("t2")  # settled or fired: the record of the verdict goes with the row too
    assert store.armed_by["t1"].table == TICKETS  # the table of the change that armed it
    assert store.forget_table(TICKETS) == 2
    assert set(store.timers) == {"p1"}
    assert store.due(datetime(2027, 1, 1, tzinfo=UTC)) == [store.timers["p1"]]
    assert store._deleted == {"t1", "t2"}  # deleted from the table at the next flush


def test_a_truncate_empties_a_reference_table_in_the_state_store() -> None:
    shape = RowShape(relation(("tenant", "status_id", "name"), table="statuses"), ("tenant", "status_id"))
    store = StateStore("s", "cdc", {"public.statuses": ("tenant", "status_id")})
    for status in (b"s1", b"s2"):
        store.apply(RowChange("public.statuses", "insert", None, Row(shape, (b"t", status, b"Open"))))
    store.committed()
    assert len(store.rows["public.statuses"]) == 2
    store.apply(RowChange("public.statuses", "truncate", None, None))
    assert store.rows["public.statuses"] == {}
    assert store.get("public.statuses", ("t", "s1")) is None
    assert store.find("public.statuses", "name", "Open") == []
    assert store._dirty == {("public.statuses", ("t", "s1")): None, ("public.statuses", ("t", "s2")): None}
