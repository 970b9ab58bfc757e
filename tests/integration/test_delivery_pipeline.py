"""One batch in flight (cdc.batch): the watcher derives the next batch while the store
transaction of the one before commits on the committer thread — through a real Postgres, the
default outbox and the real watch loop. What is asserted is what an operator relies on: the
overlap happens, a commit that fails is never confirmed nor half-kept, and every event ends up
in the outbox once."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import psycopg
import pytest

from cdc.metrics import Metrics
from cdc.sinks import open_sink
from cdc.watch import Watcher, WatchOptions
from derivers import default_derivers

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


def test_the_next_batch_is_derived_while_a_batch_commits(db_dsn: str) -> None:
    prepare(db_dsn, "straight", "piped")
    for name in WORKLOAD:
        step(db_dsn, name)
    straight = by_key(drain(db_dsn, "straight"))
    metrics = Metrics()
    piped = watcher(db_dsn, "piped", batch_max_transactions=3, metrics=metrics)
    errors: list[BaseException] = []

    def counted(name: str) -> float:
        return sum(s.value for family in metrics.registry.collect() for s in family.samples if s.name == name)

    def run() -> None:
        try:
            piped.run()
        except BaseException as exc:
            errors.append(exc)

    # The first batch's checkpoint cannot commit while this session holds the table in SHARE
    # mode (the watcher's start only reads it).
    with psycopg.connect(db_dsn) as holder:
        holder.execute("LOCK TABLE cdc.checkpoints IN SHARE MODE")
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
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
    assert first.stats.batches == 1  # the first batch only: the failed one was never confirmed
    kept = outbox_keys(db_dsn)
    assert 0 < len(kept) < len(straight)
    # the checkpoint is the first batch's: what the second and third brought comes again
    again = watcher(db_dsn, "failing", batch_max_transactions=3)
    again.run()
    assert outbox_keys(db_dsn) == straight
    assert again.stats.events == len(straight) - len(kept)
