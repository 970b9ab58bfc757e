"""`cdc backfill`: the journal replayed through the derivers gives the live run's envelopes, byte
for byte, into a new sink; nothing new into the sink that has them; only what is asked for."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import orjson
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from cdc import faults, queries
from cdc.backfill import BackfillOptions, BackfillResult, HistoryGone, NoHistory, RunConflict, run_backfill
from cdc.demo import FAMILY_STEPS, STEPS
from cdc.journal import prune
from cdc.sinks import open_sink
from cdc.watch import Watcher, WatchOptions
from derivers import default_derivers
from tests.pgharness import PgServer, drop_database

from .conftest import run_sql, setup_with_state

pytestmark = pytest.mark.integration

SLOT = "cdc_events"


@pytest.fixture
def other_db(pg_server: PgServer) -> Iterator[str]:
    """An empty database for a second outbox."""
    name = f"cdc_sink_{uuid.uuid4().hex[:10]}"
    pg_server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(pg_server.dsn(name))
    dbname = params.pop("dbname")
    yield f"postgresql:///{dbname}?{urlencode(params)}"  # --sink takes a URI
    drop_database(pg_server, name)


def prepare(dsn: str) -> None:
    """Both seeds (tickets and the families) and ``cdc setup`` of the slot."""
    run_sql(dsn, queries.raw("sample/workload", "seed"))
    run_sql(dsn, queries.raw("sample/families", "seed"))
    setup_with_state(dsn)


def workload(dsn: str) -> None:
    """Every family, and an SLA whose due time passes before the watcher runs."""
    prepare(dsn)
    for name in STEPS:
        sla = name == "sla_ticket"
        text = queries.raw("sample/workload", name)
        with psycopg.connect(dsn) as conn, conn.transaction():
            conn.execute(text.replace("interval '2 seconds'", "interval '1 second'") if sla else text)
    for name in FAMILY_STEPS:
        with psycopg.connect(dsn) as conn, conn.transaction():
            conn.execute(queries.raw("sample/families", name))
    time.sleep(1.2)  # the SLA's due time passes; the watcher's first heartbeat fires it


def watch_live(dsn: str, derivers: list[Any] | None = None) -> None:
    opts = WatchOptions(dsn, slot=SLOT, once=True, heartbeat_interval=0.5, status_interval=1.0)
    Watcher(opts, open_sink(None), derivers or default_derivers()).run()


def outbox(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT envelope::text FROM cdc.outbox ORDER BY seq")]


def backfill(dsn: str, sink: str | None, **kw: Any) -> BackfillResult:
    opts = BackfillOptions(dsn, slot=SLOT, sink_label=sink or "postgres", progress=False, **kw)
    return run_backfill(opts, default_derivers(), lambda: open_sink(sink))


def types(envelopes: list[str]) -> list[str]:
    return [orjson.loads(e)["eventType"] for e in envelopes]


def test_a_backfill_into_a_new_sink_is_the_live_run_byte_for_byte(db_dsn: str, other_db: str) -> None:
    workload(db_dsn)
    watch_live(db_dsn)
    live = outbox(db_dsn)
    breaches = [orjson.loads(e) for e in live if orjson.loads(e)["eventType"] == "TICKET_SLA_STAGE_BREACHED"]
    assert breaches and all(b["source"]["timer"] for b in breaches)
    assert {"TICKET_CREATED", "APPOINTMENT_CREATED", "PROJECT_CREATED", "TIME_ENTRY_APPROVED"} <= set(
        types(live)
    )

    result = backfill(db_dsn, other_db)
    assert outbox(other_db) == live  # ids, keys, payloads, order: the same bytes
    assert result.events == len(live) and sum(result.by_type.values()) == len(live)

    again = backfill(db_dsn, None)  # into the outbox that has them
    assert again.events == len(live)
    assert outbox(db_dsn) == live  # nothing added


def test_a_deriver_added_later_emits_only_its_own_events_once(db_dsn: str, other_db: str) -> None:
    workload(db_dsn)
    watch_live(db_dsn, [d for d in default_derivers() if d.name != "capacity"])
    before = outbox(db_dsn)
    assert not [t for t in types(before) if t.startswith("CAPACITY")]

    backfill(db_dsn, None, derivers=("capacity",))
    added = outbox(db_dsn)[len(before) :]
    assert added and set(types(added)) == {"CAPACITY_THRESHOLD_REACHED"}
    everything = backfill(db_dsn, other_db)
    assert everything.by_type["CAPACITY_THRESHOLD_REACHED"] == len(added)
    assert sorted(added) == sorted(e for e in outbox(other_db) if "CAPACITY_THRESHOLD_REACHED" in e)
    backfill(db_dsn, None, derivers=("capacity",))
    assert outbox(db_dsn)[len(before) :] == added  # each once


def test_event_types_range_and_dry_run(db_dsn: str) -> None:
    workload(db_dsn)
    watch_live(db_dsn)
    live = [orjson.loads(e) for e in outbox(db_dsn)]
    dry = backfill(db_dsn, None, dry_run=True, event_types=("TICKET_CREATED", "TICKET_SLA_STAGE_BREACHED"))
    assert dry.run_id is None
    assert dry.by_type == {
        t: sum(1 for e in live if e["eventType"] == t)
        for t in ("TICKET_CREATED", "TICKET_SLA_STAGE_BREACHED")
    }
    # --since an LSN: what the transactions after it emitted (timer events name the change that
    # armed them, so they count where they come in the outbox)
    middle = live[len(live) // 2]["source"]["lsn"]
    last = max(i for i, e in enumerate(live) if not e["source"].get("timer") and e["source"]["lsn"] == middle)
    later = backfill(db_dsn, None, dry_run=True, since=middle)
    assert sum(later.by_type.values()) == len(live) - last - 1


def test_resume_after_a_crash_equals_an_uninterrupted_run(
    db_dsn: str, other_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload(db_dsn)
    watch_live(db_dsn)
    live = outbox(db_dsn)

    class Crash(Exception):
        pass

    seen = {"n": 0}

    def crash_on_second_batch(point: str) -> None:
        if point == "watch.after_checkpoint":
            seen["n"] += 1
            if seen["n"] == 2:
                raise Crash

    monkeypatch.setattr(faults, "reached", crash_on_second_batch)
    with pytest.raises(Crash):
        backfill(db_dsn, other_db, batch_max_transactions=5)
    partial = outbox(other_db)
    assert 0 < len(partial) < len(live)
    monkeypatch.setattr(faults, "reached", lambda point: None)
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT id, status FROM cdc.backfill_runs").fetchone()
    assert row is not None and row[1] == "failed"
    backfill(db_dsn, other_db, resume=row[0], batch_max_transactions=5)
    assert outbox(other_db) == live


def test_overlapping_runs_into_one_sink_are_refused(db_dsn: str) -> None:
    workload(db_dsn)
    watch_live(db_dsn)
    holder = psycopg.connect(db_dsn, autocommit=True)
    try:
        from cdc.backfill import resolve_range, start_run

        opts = BackfillOptions(db_dsn, slot=SLOT, sink_label="jsonl:/dev/null")
        since, until = resolve_range(holder, opts)
        start_run(holder, opts, since, until)  # a run holds its lock in this session
        with pytest.raises(RunConflict, match="overlaps"):
            backfill(db_dsn, "jsonl:/dev/null")
        backfill(db_dsn, None, dry_run=True)  # a dry run registers nothing and delivers nothing
    finally:
        holder.close()
    backfill(db_dsn, "jsonl:/dev/null")  # its session ended: that run is not running any more


def test_without_history_backfill_says_so(db_dsn: str) -> None:
    workload(db_dsn)
    opts = WatchOptions(db_dsn, slot=SLOT, once=True, heartbeat_interval=0.5, journal=False)
    Watcher(opts, open_sink(None), default_derivers()).run()
    with pytest.raises(NoHistory, match="--no-journal"):
        backfill(db_dsn, None)


def test_pruned_history_is_named(db_dsn: str) -> None:
    workload(db_dsn)
    watch_live(db_dsn)
    from datetime import UTC, datetime, timedelta

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert prune(conn, "cdc", 1, datetime.now(UTC) + timedelta(days=2))
    with pytest.raises(HistoryGone, match=r"journal from \S+ to \S+ \(committed .* was pruned"):
        backfill(db_dsn, None)


def test_after_a_prune_a_backfill_starts_at_the_state_snapshot(db_dsn: str, other_db: str) -> None:
    from datetime import UTC, datetime, timedelta

    from cdc.backfill import take_snapshot
    from cdc.journal import create_partition

    workload(db_dsn)
    watch_live(db_dsn)
    live = outbox(db_dsn)
    envs = [orjson.loads(e) for e in live]
    # the cut: the ticket workload's last transaction before the SLA ticket, three days ago
    cut = next(e["source"]["lsn"] for e in envs if e["eventType"] == "TICKET_REOPENED")
    last = max(i for i, e in enumerate(envs) if not e["source"].get("timer") and e["source"]["lsn"] == cut)
    now = datetime.now(UTC)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create_partition(conn, "cdc", (now - timedelta(days=3)).date())
        conn.execute(
            "UPDATE cdc.change_log SET commit_time = commit_time - interval '3 days' WHERE end_lsn <= %s::pg_lsn",
            (cut,),
        )
        registry = default_derivers()
        opts = BackfillOptions(db_dsn, slot=SLOT)
        dropped = prune(conn, "cdc", 2, now, lambda slot, lsn: take_snapshot(opts, registry, lsn) and None)
    assert len(dropped) == 1

    result = backfill(db_dsn, other_db, since=cut)
    assert outbox(other_db) == live[last + 1 :]  # the same bytes, from the snapshot on
    assert result.events == len(live) - last - 1
    # a time on the first day kept: before it, the pruned days (no journal row), which end at the
    # snapshot: the range starts there
    today = datetime(now.year, now.month, now.day, tzinfo=UTC).isoformat()
    by_time = backfill(db_dsn, None, dry_run=True, since=today)
    assert (by_time.from_lsn, sum(by_time.by_type.values())) == (result.from_lsn, result.events)
    with pytest.raises(HistoryGone, match=f"a backfill can start after {cut} "):
        backfill(db_dsn, None)  # from the beginning: that history is gone
