"""kill -9 between the sink write and the checkpoint, restart, and find every event exactly once.

The watcher runs as ``python -m cdc.cli watch --once`` with the default derivers, small
batches (so the crash falls between two batches' worth of work) and ``CDC_FAULT`` naming the
crash point:

* Redis and NATS: ``watch.after_sink`` — the batch is in the sink, the checkpoint has not
  moved; the restart sends the batch again and the sink's de-duplication swallows it;
* the outbox: ``outbox.after_insert`` (rows inserted, the transaction that also moves the
  checkpoint not committed) and ``watch.after_checkpoint`` (committed, not yet confirmed to
  the server), in the watched database and in another one.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import orjson
import psycopg
import pytest
from psycopg import sql

from tests.environ import command_env
from tests.pgharness import PgServer, drop_database

from .helpers import (
    as_uri,
    nats_spec,
    nats_subject_counts,
    read_nats,
    read_outbox,
    redis_spec,
    redis_type_streams,
    redis_workflow_entries,
)
from .services import Service
from .workload import checkpoint, lsn_int, seed, status_updates

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

TICKETS = 5
UPDATES = 24


def cdc(*args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = command_env()
    if fault:
        env["CDC_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, timeout=180, env=env
    )


def watch(dsn: str, sink: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    return cdc(
        "watch",
        "--once",
        "--dsn",
        dsn,
        "--sink",
        sink,
        "--batch-transactions",
        "4",
        "--heartbeat-interval",
        "0.5",
        fault=fault,
    )


def crash_and_restart(
    dsn: str, sink: str, fault: str, count: Callable[[], int], store: str | None = None
) -> tuple[int, int]:
    """Run the workload, crash at ``fault``, restart.  Returns how many events the sink held
    after the crash and how many the restart delivered (replays included)."""
    ids = seed(dsn, TICKETS)
    res = cdc("setup", "--dsn", dsn, *(("--sink", sink) if store else ()))
    assert res.returncode == 0, res.stderr
    status_updates(dsn, ids, UPDATES)
    crashed = watch(dsn, sink, fault)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    held = count()
    after_crash = lsn_int(checkpoint(store or dsn))
    assert after_crash > 0, "the first batch was checkpointed before the crash"
    done = watch(dsn, sink)
    assert done.returncode == 0, done.stderr
    assert lsn_int(checkpoint(store or dsn)) > after_crash
    m = re.search(r"delivered (\d+) events", done.stderr)
    assert m is not None, done.stderr
    return held, int(m.group(1))


def assert_exactly_once(keys: list[str], types: list[str]) -> None:
    dupes = [k for k, n in Counter(keys).items() if n > 1]
    assert not dupes, f"{len(dupes)} events delivered twice"
    assert Counter(types)["TICKET_STATUS_CHANGED"] == UPDATES


@pytest.fixture
def store_dsn(pg_server: PgServer) -> Iterator[str]:
    """An empty second database: the outbox and the watcher's own schema live there."""
    name = f"cdc_store_{uuid.uuid4().hex[:10]}"
    pg_server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.dsn(name)
    drop_database(pg_server, name)


@pytest.mark.parametrize("fault", ["outbox.after_insert:2", "watch.after_checkpoint:2"])
def test_outbox_in_the_watched_database(db_dsn: str, fault: str) -> None:
    held, redelivered = crash_and_restart(db_dsn, "postgres", fault, lambda: len(read_outbox(db_dsn)))
    events = read_outbox(db_dsn)
    assert_exactly_once([e.idempotency_key for e in events], [e.event_type for e in events])
    # the outbox holds exactly what the checkpoint covers: the restart adds the rest, no more
    assert 0 < held < len(events) and held + redelivered == len(events)
    lsns = [lsn_int(e.source.lsn) for e in events]
    assert lsns == sorted(lsns), "outbox order is commit order"


def test_outbox_in_another_database_holds_the_watchers_tables_too(db_dsn: str, store_dsn: str) -> None:
    held, redelivered = crash_and_restart(
        db_dsn,
        as_uri(store_dsn),
        "outbox.after_insert:2",
        lambda: len(read_outbox(store_dsn)),
        store=store_dsn,
    )
    events = read_outbox(store_dsn)
    assert_exactly_once([e.idempotency_key for e in events], [e.event_type for e in events])
    assert 0 < held < len(events) and held + redelivered == len(events)
    with psycopg.connect(db_dsn) as conn:
        watched_has = conn.execute(
            "SELECT to_regclass('cdc.outbox'), to_regclass('cdc.checkpoints')"
        ).fetchone()
    assert watched_has == (None, None), "the watched database keeps none of the watcher's tables"
    with psycopg.connect(store_dsn) as conn:
        slots = conn.execute("SELECT bootstrapped_at IS NOT NULL FROM cdc.slots").fetchall()
        state = conn.execute("SELECT count(*) FROM cdc.state_rows").fetchone()
    assert slots == [(True,)] and state is not None and state[0] > 0


def test_redis_after_sink_crash(db_dsn: str, redis_service: Service, redis_ns: str) -> None:
    spec = redis_spec(redis_service.url, redis_ns)
    held, redelivered = crash_and_restart(
        db_dsn, spec, "watch.after_sink:2", lambda: len(redis_workflow_entries(redis_service.url, redis_ns))
    )
    workflow = redis_workflow_entries(redis_service.url, redis_ns)
    per_type = redis_type_streams(redis_service.url, redis_ns)
    ids = [f["event_id"] for f in workflow]
    assert_exactly_once(ids, [f["event_type"] for f in workflow])
    type_ids = [orjson_id(f["event"]) for entries in per_type.values() for f in entries]
    assert sorted(type_ids) == sorted(ids), "each per-type stream holds each event once"
    assert len(per_type[f"{redis_ns}:event-stream:global:TICKET_STATUS_CHANGED"]) == UPDATES
    assert held + redelivered > len(ids), "the restart re-sent the crashed batch, and Redis dropped it"


def orjson_id(event_json: str) -> str:
    value: str = orjson.loads(event_json)["id"]
    return value


def test_nats_after_sink_crash(db_dsn: str, nats_service: Service, nats_ns: str) -> None:
    spec = nats_spec(nats_service.url, nats_ns)
    held, redelivered = crash_and_restart(
        db_dsn, spec, "watch.after_sink:2", lambda: len(read_nats(nats_service.url, nats_ns))
    )
    messages = read_nats(nats_service.url, nats_ns)
    assert_exactly_once([mid for _, _, mid in messages], [env.event_type for _, env, _ in messages])
    assert all(mid == env.idempotency_key for _, env, mid in messages)
    counts = nats_subject_counts(nats_service.url, nats_ns)
    assert counts[f"{nats_ns}.psa.events.tickets.TICKET_STATUS_CHANGED"] == UPDATES
    assert sum(counts.values()) == len(messages)
    assert held + redelivered > len(messages), (
        "the restart re-sent the crashed batch, and JetStream dropped it"
    )
