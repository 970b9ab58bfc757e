"""The watcher's steps for one transaction (``Watcher.process``), where they are pure: timers
fire first, the state is applied before the derivers look, a spilled transaction yields what
the same transaction in memory yields, and a large one reaches the sink in chunks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from catalog.envelope import EventDraft
from cdc.assembler import Assembler, Transaction
from cdc.checkpoint import MemoryCheckpoints
from cdc.pgoutput import Begin, Column, Commit, Insert, Relation, TupleData, Update
from cdc.pgoutput.messages import POSTGRES_EPOCH
from cdc.relations import RelationGuard, merge_reads
from cdc.sinks.memory import MemorySink
from cdc.startup import Started
from cdc.state import StateStore
from cdc.timers import TimerStore
from cdc.watch import Watcher, WatchOptions
from derivers.base import (
    Derived,
    StateView,
    Timer,
    TimerOps,
    TxView,
    canonical_time,
    declare_reads,
    parse_time,
)

T = "11111111-1111-4111-8111-111111111111"
OPEN = "66666666-6666-4666-8666-666666666661"
NEW = "66666666-6666-4666-8666-666666666662"
UUID, TEXT, TIMESTAMPTZ, BOOL = 2950, 25, 1184, 16
TICKETS = Relation(
    1,
    "public",
    "tickets",
    "f",
    tuple(
        Column(1, n, o, -1)
        for n, o in (("tenant", UUID), ("ticket_id", UUID), ("status_id", UUID), ("due", TIMESTAMPTZ))
    ),
)
STATUSES = Relation(
    2,
    "public",
    "statuses",
    "f",
    tuple(Column(1, n, o, -1) for n, o in (("tenant", UUID), ("status_id", UUID))),
)
PKS = {"public.tickets": ("tenant", "ticket_id"), "public.statuses": ("tenant", "status_id")}
T0 = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)


class StatusDeriver:
    """TICKET_STATUS_CHANGED for a status the state must already know; a due date arms a timer."""

    name = "steps"
    tables = frozenset({"public.tickets"})
    state_tables = frozenset({"public.statuses"})
    reads = declare_reads(
        ("public.tickets", ("tenant", "ticket_id", "status_id", "due"), ("TICKET_STATUS_CHANGED",)),
        ("public.statuses", ("tenant", "status_id"), ("TICKET_STATUS_CHANGED",)),
    )

    def derive(self, tx: TxView, state: StateView, timers: TimerOps) -> list[Derived]:
        out = []
        for c in tx.of("public.tickets"):
            row = c.after
            assert row is not None
            if row["due"] is not None:
                timers.arm(
                    f"due:{row['ticket_id']}",
                    c,
                    tenant=row["tenant"],
                    subject_id=row["ticket_id"],
                    stage="resolution",
                    due_at=parse_time(row["due"]),
                )
            if c.op == "update" and c.changed("status_id"):
                assert state.get("public.statuses", (row["tenant"], row["status_id"])) is not None, (
                    "state first"
                )
                assert c.before is not None
                payload = {
                    "tenantId": row["tenant"],
                    "occurredAt": tx.occurred_at,
                    "ticketId": row["ticket_id"],
                    "previousStatusId": c.before["status_id"],
                    "newStatusId": row["status_id"],
                }
                draft = EventDraft("TICKET_STATUS_CHANGED", row["tenant"], row["ticket_id"], payload)
                out.append(Derived(draft, c.position, c.table))
        return out

    def fire(self, timer: Timer, state: StateView) -> list[EventDraft]:
        due = canonical_time(timer.due_at)
        payload = {
            "tenantId": timer.tenant,
            "occurredAt": due,
            "ticketId": timer.subject_id,
            "slaPolicyId": timer.tenant,
            "stage": timer.stage,
            "breachedAt": due,
            "targetAt": due,
            "overdueBySeconds": 0,
        }
        draft = EventDraft(
            "TICKET_SLA_STAGE_BREACHED",
            timer.tenant,
            timer.subject_id,
            payload,
            timer_stage=timer.stage,
            due_at=timer.due_at,
        )
        return [draft]


def watcher(sink: MemorySink, **options: Any) -> Watcher:
    w = Watcher(WatchOptions("", slot="s", **options), sink, [StatusDeriver()])
    state = StateStore("s", "cdc", {"public.statuses": PKS["public.statuses"]})
    relations = RelationGuard("s", "cdc", merge_reads([StatusDeriver.reads]))
    w.use(Started(None, PKS, state, TimerStore("s", "cdc"), relations, MemoryCheckpoints(), 0))  # type: ignore[arg-type]
    return w


def ticket(n: int) -> bytes:
    return f"99999999-9999-4999-8999-{n:012d}".encode()


def row(n: int, status: str, due: datetime | None = None) -> TupleData:
    stamp = due.strftime("%Y-%m-%d %H:%M:%S+00").encode() if due is not None else None
    return TupleData((T.encode(), ticket(n), status.encode(), stamp))


def transaction(w: Watcher, xid: int, at: datetime, *messages: Any) -> Transaction:
    ts = (at - POSTGRES_EPOCH) // timedelta(microseconds=1)
    assembler: Assembler = w.assembler()
    for m in (TICKETS, STATUSES, Begin(xid * 100, ts, xid), *messages):
        assert assembler.feed(m) is None
    tx = assembler.feed(Commit(0, xid * 100, xid * 100 + 8, ts))
    assert tx is not None
    return tx


def test_timers_fire_first_and_the_state_is_applied_before_the_derivers() -> None:
    sink = MemorySink()
    w = watcher(sink)
    w.process(transaction(w, 1, T0, Insert(1, row(1, OPEN, due=T0 + timedelta(seconds=1)))))
    # a later transaction creates a status and moves the ticket to it; its commit passes the due time
    later = T0 + timedelta(seconds=5)
    w.process(
        transaction(
            w,
            2,
            later,
            Insert(2, TupleData((T.encode(), NEW.encode()))),
            Update(1, "O", row(1, OPEN), row(1, NEW)),
        )
    )
    breach, changed = w.delivery.chunk.envelopes
    assert (breach.event_type, changed.event_type) == ("TICKET_SLA_STAGE_BREACHED", "TICKET_STATUS_CHANGED")
    assert breach.source.timer and breach.source.xid == 1 and breach.source.table == "public.tickets"
    assert changed.source.xid == 2 and not changed.source.timer
    assert w.stats.timers_fired == 1 and w.stats.transactions == 2
    assert w.delivery.position is not None and w.delivery.position.xid == 2


def updates(w: Watcher, count: int) -> Transaction:
    """One transaction updating ``count`` tickets, every tenth of them twice."""
    messages: list[Any] = [Insert(2, TupleData((T.encode(), NEW.encode())))]
    for n in range(count):
        messages.append(Update(1, "O", row(n, OPEN), row(n, NEW)))
        if n % 10 == 0:
            messages.append(Update(1, "O", row(n, NEW), row(n, OPEN)))
            messages.append(Update(1, "O", row(n, OPEN), row(n, NEW)))
    return transaction(w, 3, T0, *messages)


def test_a_spilled_transaction_yields_what_the_same_transaction_in_memory_yields() -> None:
    in_memory, spilled = MemorySink(), MemorySink()
    a, b = watcher(in_memory), watcher(spilled, spill_changes=7)
    tx_a, tx_b = updates(a, 300), updates(b, 300)
    assert not tx_a.changes.spilled and tx_b.changes.spilled
    a.process(tx_a)
    b.process(tx_b)
    assert len(a.delivery.chunk.envelopes) == 300  # the repeated updates fold into one each
    assert [e.to_dict() for e in b.delivery.chunk.envelopes] == [
        e.to_dict() for e in a.delivery.chunk.envelopes
    ]
    assert b.state.get("public.statuses", (T, NEW)) is not None  # applied from the file too


def test_a_large_transaction_reaches_the_sink_in_chunks_before_its_checkpoint() -> None:
    sink = MemorySink()
    w = watcher(sink, spill_changes=20, batch_max_events=50)
    w.process(updates(w, 230))
    # written while the transaction was derived, a window (50 folded changes) at a time
    assert sink.batches >= 3
    assert len(sink.envelopes) + len(w.delivery.chunk.envelopes) == 230
    assert len(w.delivery.chunk.envelopes) < 50  # the rest goes with the commit
    assert w.delivery.pending and w.delivery.full()
    assert w.parts is not None and w.parts.checkpoints.read(None) == 0  # type: ignore[arg-type]
