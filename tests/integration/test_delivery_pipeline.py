"""One batch in flight (cdc.batch): the watcher derives the next batch while the store
transaction of the one before commits on the committer thread — through a real Postgres, the
default outbox and the real watch loop. What is asserted is what an operator relies on: the
overlap happens, a commit that fails is never confirmed nor half-kept, and every event ends up
in the outbox once."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import psycopg
import pytest

from cdc import batch
from cdc.metrics import Metrics
from cdc.pgoutput import Insert, Update
from cdc.schema import create_tables
from cdc.sinks import open_sink
from cdc.sinks.memory import MemorySink
from cdc.stream import FlushPosition
from cdc.watch import SWITCH_INTERVAL_S, Watcher, WatchOptions, run_watch
from derivers import default_derivers
from tests.unit.test_watch_steps import NEW, OPEN, T0, row, transaction, updates
from tests.unit.test_watch_steps import watcher as stepped_watcher

from .conftest import run_sql, wait_for
from .test_watch_tickets import WORKLOAD, by_key, drain, prepare, step

pytestmark = pytest.mark.integration


def outbox_keys(dsn: str) -> dict[str, bytes]:
    """The outbox's envelopes by idempotency key, in the form ``by_key`` compares."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT envelope::text FROM cdc.outbox ORDER BY seq").fetchall()
    out: dict[str, bytes] = {}
    for (text,) in rows:
        d = orjson.loads(text)
        assert d["idempotencyKey"] not in out, "an event in the outbox twice"
        d["source"] = {k: v for k, v in d["source"].items() if k != "slot"}
        out[d["idempotencyKey"]] = orjson.dumps(d, option=orjson.OPT_SORT_KEYS)
    return out


def checkpoint(dsn: str, slot: str) -> str | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT lsn::text FROM cdc.checkpoints WHERE slot_name = %s", (slot,)).fetchone()
    return None if row is None else str(row[0])


def watcher(dsn: str, slot: str, **kw: Any) -> Watcher:
    opts = WatchOptions(dsn, slot=slot, once=True, heartbeat_interval=0.5, status_interval=1.0, **kw)
    return Watcher(opts, open_sink(None), default_derivers())


def started(w: Watcher) -> tuple[threading.Thread, list[BaseException]]:
    """``w.run()`` on a thread of its own; what it raises goes into the list."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            w.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_the_next_batch_is_derived_while_a_batch_commits(db_dsn: str) -> None:
    prepare(db_dsn, "straight", "piped")
    for name in WORKLOAD:
        step(db_dsn, name)
    straight = by_key(drain(db_dsn, "straight"))
    metrics = Metrics()
    piped = watcher(db_dsn, "piped", batch_max_transactions=3, metrics=metrics)

    def counted(name: str) -> float:
        return sum(s.value for family in metrics.registry.collect() for s in family.samples if s.name == name)

    # The first batch's checkpoint cannot commit while this session holds the table in SHARE
    # mode (the watcher's start only reads it).
    with psycopg.connect(db_dsn) as holder:
        holder.execute("LOCK TABLE cdc.checkpoints IN SHARE MODE")
        thread, errors = started(piped)
        # A watcher waiting for its commit would stop at 3 transactions at most; this one
        # derives the next batch meanwhile (and then waits: one batch in flight at most).
        assert wait_for(lambda: piped.stats.transactions >= 4, timeout=30), piped.stats
        assert piped.stats.transactions <= 6
        assert piped.stats.events == 0 and piped.stats.batches == 0  # nothing is durable yet
        assert checkpoint(db_dsn, "piped") is None
        # the counters move when a batch is durable, not when it is derived
        assert counted("cdc_transactions_total") == counted("cdc_changes_total") == 0
        assert counted("cdc_events_total") == 0
        holder.rollback()
    thread.join(60)
    assert not thread.is_alive() and not errors
    assert piped.stats.events == len(straight)
    assert outbox_keys(db_dsn) == straight  # every event once, as an uninterrupted run has it
    assert counted("cdc_events_total") == len(straight)
    assert counted("cdc_transactions_total") == piped.stats.transactions
    assert counted("cdc_changes_total") == piped.stats.changes


def test_a_transaction_that_fills_the_batch_is_sent_beside_the_next_one(db_dsn: str) -> None:
    """A transaction whose events reach ``batch_max_events`` ends the batch like any other: its
    store transaction commits on the committer while the next is derived. (It was taken for a
    huge transaction's chunk and committed on the loop's thread: no overlap at all when the
    batch filled at a transaction's end, as it does for equal transactions.)"""
    prepare(db_dsn, "straight", "piped")
    for name in WORKLOAD:
        step(db_dsn, name)
    straight = by_key(drain(db_dsn, "straight"))
    piped = watcher(db_dsn, "piped", batch_max_events=1)  # every transaction with an event fills it
    with psycopg.connect(db_dsn) as holder:
        holder.execute("LOCK TABLE cdc.checkpoints IN SHARE MODE")
        thread, errors = started(piped)
        # the first batch waits for the lock on the committer; the next transaction is derived
        assert wait_for(lambda: piped.stats.transactions >= 2, timeout=30), piped.stats
        assert piped.stats.batches == 0 and checkpoint(db_dsn, "piped") is None
        holder.rollback()
    thread.join(60)
    assert not thread.is_alive() and not errors
    assert outbox_keys(db_dsn) == straight  # every event once, as an uninterrupted run has it


class SwitchIntervalSink(MemorySink):
    """Notes the interpreter's switch interval whenever a batch is written; ``fail``: then
    refuses the batch."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.intervals: set[float] = set()
        self.fail = fail

    def write(self, batch: Any) -> None:
        self.intervals.add(sys.getswitchinterval())
        if self.fail:
            raise RuntimeError("the sink refuses the batch")
        super().write(batch)


#: A switch interval of the caller's, neither CPython's default nor the watcher's.
CALLERS_INTERVAL = 0.003


@pytest.mark.parametrize("fail", [False, True], ids=["returns", "raises"])
def test_the_watcher_runs_at_its_switch_interval_and_gives_the_callers_back(db_dsn: str, fail: bool) -> None:
    """While ``run_watch`` runs, the loop's thread is asked for the interpreter's lock after
    ``SWITCH_INTERVAL_S`` (the commit in flight's round trips no longer wait CPython's 5 ms
    each); the caller's own setting is back when it returns, and when it raises."""
    prepare(db_dsn, "switch")
    for name in WORKLOAD[:3]:
        step(db_dsn, name)
    sink = SwitchIntervalSink(fail=fail)
    opts = WatchOptions(db_dsn, slot="switch", once=True, heartbeat_interval=0.5, status_interval=1.0)
    own = sys.getswitchinterval()
    sys.setswitchinterval(CALLERS_INTERVAL)
    try:
        if fail:
            with pytest.raises(RuntimeError, match="refuses the batch"):
                run_watch(opts, sink, default_derivers())
        else:
            assert run_watch(opts, sink, default_derivers()).events > 0
        assert sink.intervals == {SWITCH_INTERVAL_S}
        assert sys.getswitchinterval() == CALLERS_INTERVAL
    finally:
        sys.setswitchinterval(own)


def test_a_commit_that_fails_while_the_next_batch_is_derived_loses_nothing(db_dsn: str) -> None:
    prepare(db_dsn, "straight", "failing")
    for name in WORKLOAD:
        step(db_dsn, name)
    straight = by_key(drain(db_dsn, "straight"))
    # The outbox refuses its second COPY (a sequence: its count survives the rollback), so the
    # second batch's commit fails while the watcher has the third derived in memory.
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        open_sink(None).prepare(conn)  # the outbox, as a watcher's start creates it
    run_sql(
        db_dsn,
        "CREATE SEQUENCE outbox_copies",
        """CREATE FUNCTION refuse_second_copy() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF nextval('outbox_copies') = 2 THEN RAISE EXCEPTION 'the outbox refused this batch'; END IF;
             RETURN NULL;
           END $$""",
        """CREATE TRIGGER refuse_second_copy AFTER INSERT ON cdc.outbox
           FOR EACH STATEMENT EXECUTE FUNCTION refuse_second_copy()""",
    )
    first = watcher(db_dsn, "failing", batch_max_transactions=3)
    with pytest.raises(Exception, match="refused this batch"):
        first.run()
    assert first.stats.batches >= 1  # those before the failed one (a heartbeat's may come first)
    kept = outbox_keys(db_dsn)
    assert 0 < len(kept) < len(straight)
    # the checkpoint is the first batch's: what the second and third brought comes again
    again = watcher(db_dsn, "failing", batch_max_transactions=3)
    again.run()
    assert outbox_keys(db_dsn) == straight
    assert again.stats.events == len(straight) - len(kept)


# -- the loop's steps, one at a time, over a real store connection -----------------------------


class RecordedStream:
    """The replication stream's side of the watcher: the real FlushPosition, and every status
    update it would send with the checkpoint that was durable at that moment."""

    def __init__(self, w: Watcher) -> None:
        self.position = FlushPosition()
        self.conn = object()  # open
        self.watcher = w
        self.sent: list[tuple[int, int]] = []  # (flush reported, durable checkpoint)

    def confirm(self, lsn: int, *, caught_up: bool = True) -> None:
        self.position.confirm(lsn, caught_up=caught_up)

    def send_status(self) -> None:
        assert self.watcher.parts is not None
        self.sent.append((self.position.flush, self.watcher.parts.checkpoints.read(None)))  # type: ignore[arg-type]

    def keepalive(self) -> None:
        pass


@pytest.fixture
def store(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create_tables(conn, "cdc")
        yield conn


def stepped(store: psycopg.Connection[Any], **options: Any) -> tuple[Watcher, RecordedStream]:
    w = stepped_watcher(MemorySink(), journal=False, **options)
    w.delivery.store = store  # the committer's transaction is a real one
    stream = RecordedStream(w)
    w.stream = stream  # type: ignore[assignment]
    return w, stream


def test_a_batch_confirmed_from_inside_the_next_one_never_lets_a_keepalive_pass_it(
    store: psycopg.Connection[Any],
) -> None:
    # C is sent by the idle path (caught up then); the next read hands out a huge transaction H
    # and a small one E. H's first full chunk waits for C: C is durable, but H and E are handed
    # out and not — a keepalive must not move the flush position past them.
    w, stream = stepped(store, batch_max_events=50, spill_changes=20)  # H spills: it has windows
    stream.position.handed_out()
    w.process(transaction(w, 1, T0, Insert(1, row(900, OPEN))))
    w.deliver(caught_up=True, wait=False)
    assert w.delivery.in_flight
    stream.position.handed_out()
    huge = updates(w, 230)
    small = transaction(w, 4, T0 + timedelta(seconds=1), Update(1, "O", row(901, OPEN), row(901, NEW)))
    w.process(huge)  # its chunks: the first waits for C
    assert stream.sent and stream.sent[-1] == (108, 108)
    w.deliver(caught_up=False, wait=False)
    w.process(small)
    stream.position.keepalive(small.end_lsn + 100)  # the server's keepalive, past everything
    w.deliver(caught_up=True)
    assert stream.sent[-1] == (small.end_lsn, small.end_lsn)
    for flush, durable in stream.sent:
        assert flush <= durable, stream.sent  # never past what is durable


def test_the_standby_lease_is_kept_once_the_batch_in_flight_has_committed(
    store: psycopg.Connection[Any],
) -> None:
    class Lease:
        touches = 0

        def touch(self) -> None:
            self.touches += 1

    w, _ = stepped(store)
    lease = Lease()
    w.leadership = lease  # type: ignore[assignment]
    w.process(transaction(w, 1, T0, Insert(1, row(900, OPEN))))
    w.deliver(caught_up=True, wait=False)
    assert wait_for(lambda: not w.delivery.committing, timeout=10)
    assert w.delivery.in_flight  # committed, not yet waited for
    touched = lease.touches
    w.keepalive()  # a long transaction streams in: the loop does not wait, the lease is touched
    assert lease.touches == touched + 1
    w.delivery.wait()


def test_a_second_signal_cancels_the_commit_in_flight_before_its_connection_closes(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop waits for a commit held up by a lock when the operator's second Ctrl-C comes:
    # the commit is cancelled, and its connection is closed only once the committer let go of
    # it (libpq allows one thread per connection at a time).
    prepare(db_dsn, "piped")
    for name in WORKLOAD:
        step(db_dsn, name)
    ended: list[tuple[bool, BaseException | None]] = []  # (connection closed by then, its error)
    run_catching = batch._InFlight._run_catching

    def observed(flight: batch._InFlight) -> None:
        run_catching(flight)
        ended.append((flight.store.closed, flight._error))

    monkeypatch.setattr(batch._InFlight, "_run_catching", observed)
    w = watcher(db_dsn, "piped", batch_max_transactions=3)
    with psycopg.connect(db_dsn) as holder:
        holder.execute("LOCK TABLE cdc.checkpoints IN SHARE MODE")

        def interrupt() -> None:
            wait_for(lambda: w.stats.transactions >= 4 and w.delivery.committing, timeout=30)
            time.sleep(0.5)  # the loop waits for the commit now
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            w.run()
        ((closed, error),) = ended
        assert not closed and isinstance(error, psycopg.errors.QueryCanceled), (closed, error)
        holder.rollback()
    assert checkpoint(db_dsn, "piped") is None  # nothing committed, nothing confirmed
