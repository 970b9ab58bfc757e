"""The change journal: what `cdc watch` records replays into the very row changes it consumed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cdc import queries
from cdc.assembler import Transaction
from cdc.journal import SNAPSHOT_BASE, create_partition, history, partitions, prune, replay
from cdc.sinks.memory import MemorySink
from cdc.watch import Watcher, WatchOptions
from derivers import default_derivers

from .conftest import run_sql
from .test_backfill import prepare

pytestmark = pytest.mark.integration

SLOT = "cdc_events"


def _image(row: Any) -> tuple[Any, ...] | None:
    return None if row is None else (row.shape.names, row.shape.type_oids, tuple(row.data))


def fingerprint(tx: Transaction) -> tuple[Any, ...]:
    """Everything the engine reads of a transaction."""
    return (
        tx.xid,
        tx.end_lsn,
        tx.commit_ts,
        tuple((c.table, c.op, c.position, c.unknown, _image(c.before), _image(c.after)) for c in tx.changes),
        tuple((m.prefix, bytes(m.content)) for m in tx.messages),
        tx.truncated,
    )


class RecordingWatcher(Watcher):
    """The watcher, remembering every transaction it processed."""

    seen: list[tuple[Any, ...]]

    def process(self, tx: Transaction) -> None:
        self.seen.append(fingerprint(tx))
        super().process(tx)


def step(dsn: str, name: str, file: str = "sample/workload") -> None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(queries.raw(file, name))


def watch_once(dsn: str, **kw: Any) -> RecordingWatcher:
    opts = WatchOptions(dsn, slot=SLOT, once=True, heartbeat_interval=0.5, status_interval=1.0, **kw)
    watcher = RecordingWatcher(opts, MemorySink(), default_derivers())
    watcher.seen = []
    watcher.run()
    return watcher


def replayed(dsn: str) -> list[Transaction]:
    with psycopg.connect(dsn) as conn:
        return list(replay(conn, SLOT, "cdc", 0, 2**64 - 1))


def test_the_journal_replays_the_row_changes_the_watcher_consumed(db_dsn: str) -> None:
    prepare(db_dsn)
    for name in ("create_ticket", "assign", "status_in_progress", "internal_note", "close"):
        step(db_dsn, name)
    # a huge transaction spills (to its temporary file) live and in the replay alike
    run_sql(db_dsn, "UPDATE statuses SET name = name || '' WHERE true")
    watcher = watch_once(db_dsn, spill_changes=2)
    txs = replayed(db_dsn)
    snapshot, rest = txs[0], txs[1:]
    assert snapshot.xid == 0 and all(c.position >= SNAPSHOT_BASE for c in snapshot.changes)
    assert {c.table for c in snapshot.changes} >= {"public.statuses", "public.users"}
    assert [fingerprint(tx) for tx in rest] == watcher.seen
    with psycopg.connect(db_dsn) as conn:
        kinds = [h.kind for h in history(conn, SLOT, "cdc")]
        # for operators: the images as objects keyed by column, an update's after-image whole
        before, after = conn.execute(
            "SELECT before, after FROM cdc.change_log_rows WHERE table_name = 'public.tickets' AND op = 'update'"
            " ORDER BY end_lsn LIMIT 1"
        ).fetchone()  # type: ignore[misc]
    assert kinds == ["bootstrap"]
    assert before.keys() == after.keys() and "status_id" in after and before != after


def test_no_journal_records_nothing_and_says_where(db_dsn: str) -> None:
    prepare(db_dsn)
    step(db_dsn, "create_ticket")
    watch_once(db_dsn, journal=False)
    assert [tx.xid for tx in replayed(db_dsn)] == [0]  # the snapshot entry alone
    with psycopg.connect(db_dsn) as conn:
        kinds = [h.kind for h in history(conn, SLOT, "cdc")]
    assert kinds == ["bootstrap", "off"]


def test_prune_drops_whole_days_past_the_horizon_and_records_them(db_dsn: str) -> None:
    prepare(db_dsn)
    step(db_dsn, "create_ticket")
    watch_once(db_dsn)
    now = datetime.now(UTC)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        # history of three days ago: a copy of today's rows, in a day partition of its own
        old = (now - timedelta(days=3)).date()
        create_partition(conn, "cdc", old)
        conn.execute(
            "INSERT INTO cdc.change_log SELECT slot_name, end_lsn - 1000000, xid, commit_time - interval '3 days', "
            "position, table_name, op, shape_id, before, after, unknown, message FROM cdc.change_log WHERE xid <> 0"
        )
        today = now.date()
        assert [d for d, _ in partitions(conn, "cdc")] == [old, today]
        assert prune(conn, "cdc", 14, now) == []  # nothing is older than 14 days
        dropped = prune(conn, "cdc", 2, now)  # three days ago ended more than two days ago
        assert [p.day for p in dropped] == [old]
        assert [d for d, _ in partitions(conn, "cdc")] == [today]
        gone = [h for h in history(conn, SLOT, "cdc") if h.kind == "pruned"]
        kept = conn.execute("SELECT min(commit_time) FROM cdc.change_log").fetchone()
    assert len(gone) == 1 and gone[0].to_time is not None and kept is not None
    assert gone[0].to_time < kept[0] and gone[0].to_time.date() == old


def test_a_table_copied_before_the_first_delivery_is_replayed_with_the_bootstrap(db_dsn: str) -> None:
    """bootstrap_late with nothing delivered yet (checkpoint 0): the copy is recorded at the
    slot's consistent point, where a replay begins, not at 0/0 before it."""
    from cdc.state import bootstrap_late

    prepare(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        first = next(h.from_lsn for h in history(conn, SLOT, "cdc") if h.kind == "bootstrap")
        copied = bootstrap_late(db_dsn, conn, SLOT, "cdc", "public.statuses")
    with psycopg.connect(db_dsn) as conn:
        txs = list(replay(conn, SLOT, "cdc", first, 2**64 - 1))
    assert copied > 0 and all(tx.xid == 0 and tx.end_lsn == first for tx in txs)
    late = [c for tx in txs for c in tx.changes if c.table == "public.statuses"]
    # the bootstrap's copy and the late one, each a truncate then its rows
    assert [c.op for c in late].count("truncate") == 2 and len(late) == 2 * (copied + 1)


def test_prune_gives_up_a_day_a_backfill_is_reading(db_dsn: str) -> None:
    """A drop waits for its lock at most lock_timeout (the live watcher's writes would queue
    behind it): a reader of the journal makes prune stop with one line, nothing dropped."""
    from cdc.journal import JournalBusy

    prepare(db_dsn)
    step(db_dsn, "create_ticket")
    watch_once(db_dsn)
    now = datetime.now(UTC)
    reader = psycopg.connect(db_dsn)  # a backfill's replay: a read in an open transaction
    try:
        reader.execute("SELECT count(*) FROM cdc.change_log")
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            with pytest.raises(JournalBusy) as caught:
                prune(conn, "cdc", 1, now + timedelta(days=3), lock_timeout="50ms")
            assert caught.value.one_line().endswith("— a backfill is reading the journal; try again later")
            assert len(partitions(conn, "cdc")) == 1
            assert [h.kind for h in history(conn, SLOT, "cdc")] == ["bootstrap"]
    finally:
        reader.close()
