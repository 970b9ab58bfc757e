"""Sink benchmark: events per second delivered by each sink, and the ratio to the discarding one.

Two parts, in one run:

1. **Full watch path** (the number that matters): ``--ntx`` transactions × ``--per`` updates of
   the application's ``tickets`` rows, each changing the status and the assignee (the
   ``bench_tickets`` workload of bench/run.py), drained by the watcher (``--once``, default
   batching: 5000 events / 1000 transactions / 0.5 s; heartbeats every 60 s rather than 5 s, so
   that the watcher writes nothing into the watched database that pg_recvlogical's side lacks)
   with the default derivers into each sink
   in turn.  Every sink has its own slot created at the same position before the workload, so
   each reads byte-identical slot content; the outbox (which writes into the watched cluster)
   goes last.  Wall time from process start to exit.
2. **Write path only**: ``--envelopes`` envelopes built from the catalog's example payloads,
   written in batches of ``--batch`` straight into each sink's ``write`` — what the sink
   itself costs — plus the alternative measured while choosing the implementation: NATS
   with an ``asyncio.run`` (and a fresh connection) per batch against the private loop
   thread.  (The outbox's table shapes and write paths are compared by bench/outbox.py.)

Redis and NATS are the local servers when they answer, otherwise throwaway ones started here;
each run writes under its own prefix/stream and removes it afterwards.  Results: a table on
stdout and ``bench/results/sinks.json``.

    python -m bench.sinks                         # 200 × 1000, 3 repetitions
    python -m bench.sinks --ntx 20 --reps 1       # quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from rich.console import Console
from rich.table import Table

from cdc.config import DEFAULT_TABLES
from cdc.localpg import LocalPostgres
from cdc.provision import setup
from cdc.sample import schema_sql
from cdc.sinks import open_sink
from cdc.sinks.base import Batch, Sink
from cdc.sinks.memory import DiscardSink
from cdc.sinks.nats_jetstream import NatsConfig, NatsJetStreamSink
from cdc.sinks.outbox import OutboxSink
from cdc.state import make_bootstrap_hook
from derivers import default_derivers
from tests.integration.sinks import helpers
from tests.integration.sinks.helpers import make_envelopes, nats_cleanup, redis_cleanup
from tests.integration.sinks.services import Service, find_or_start_nats, find_or_start_redis

from .run import RESULTS, SETUP_SQL, watcher_env

WORKER = """
import sys, time, orjson
t0 = time.perf_counter()
from cdc.sinks import open_sink
from cdc.watch import WatchOptions, run_watch
from derivers import default_derivers
dsn, slot, spec = sys.argv[1], sys.argv[2], sys.argv[3]
sink = open_sink(spec)
stats = run_watch(WatchOptions(dsn, slot=slot, once=True, heartbeat_interval=60), sink, default_derivers())
print(orjson.dumps({"events": stats.events, "transactions": stats.transactions, "batches": stats.batches,
                    "seconds": time.perf_counter() - t0}).decode())
"""


@dataclass
class Row:
    part: str
    sink: str
    samples: list[float] = field(default_factory=list)  # seconds
    events: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def redis_spec(svc: Service, ns: str) -> str:
    return helpers.redis_spec(svc.url, ns, dedup_ttl=3600, retry_give_up=30)


def nats_spec(svc: Service, ns: str, **extra: Any) -> str:
    return helpers.nats_spec(svc.url, ns, storage="file", duplicate_window=600, timeout=30, **extra)


def full_path(
    console: Console, args: argparse.Namespace, redis: Service, nats: Service, rows: dict[str, Row]
) -> None:
    with LocalPostgres(
        settings={"wal_sender_timeout": "60s", "max_wal_size": "4GB", "checkpoint_timeout": "30min"}
    ) as pg:
        dsn = pg.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_sql())
            conn.execute(SETUP_SQL)
        for rep in range(args.reps):
            ns = f"bench{uuid.uuid4().hex[:8]}"
            tmp = tempfile.mkdtemp(prefix="cdc-bench-")
            sinks = [
                ("discard", "null:"),
                ("jsonl (temp file)", f"jsonl:{tmp}/events.jsonl"),
                ("redis streams", redis_spec(redis, ns)),
                ("nats jetstream", nats_spec(nats, ns, retry_give_up=30)),
                ("postgres outbox", "postgres"),  # last: it writes WAL into the watched cluster
            ]
            for i, _ in enumerate(sinks):
                setup(
                    dsn,
                    slot=f"s{rep}_{i}",
                    publication="cdc_events",
                    tables=DEFAULT_TABLES,
                    bootstrap=make_bootstrap_hook(default_derivers()),
                )
            with psycopg.connect(dsn, autocommit=True) as conn:
                t0 = time.perf_counter()
                conn.execute(f"CALL bench_tickets({args.ntx}, {args.per})")
                load_s = time.perf_counter() - t0
            try:
                for i, (name, spec) in enumerate(sinks):
                    t0 = time.perf_counter()
                    proc = subprocess.run(
                        [sys.executable, "-c", WORKER, dsn, f"s{rep}_{i}", spec],
                        capture_output=True,
                        env={**watcher_env(), "PYTHONPATH": os.getcwd()},
                    )
                    elapsed = time.perf_counter() - t0
                    if proc.returncode != 0:
                        raise RuntimeError(f"{name}: {proc.stderr.decode(errors='replace')[-800:]}")
                    result = orjson.loads(proc.stdout.splitlines()[-1])
                    row = rows.setdefault(name, Row("watch", name))
                    row.samples.append(elapsed)
                    if row.events and row.events != result["events"]:
                        raise RuntimeError(
                            f"{name} delivered {result['events']} events, expected {row.events}"
                        )
                    row.events = result["events"]
                    console.print(f"rep {rep + 1} {name}: {result['events']} events in {elapsed:.2f} s")
            finally:
                redis_cleanup(redis.url, ns)
                nats_cleanup(nats.url, ns)
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for i in range(len(sinks)):
                        conn.execute("SELECT pg_drop_replication_slot(%s)", (f"s{rep}_{i}",))
                    conn.execute("TRUNCATE cdc.outbox")
                    conn.execute("CHECKPOINT")
                for f in os.listdir(tmp):
                    os.unlink(os.path.join(tmp, f))
                os.rmdir(tmp)
            console.print(f"rep {rep + 1}/{args.reps} done (workload {load_s:.1f} s)")


class NatsPerBatch:
    """The alternative to the loop thread: ``asyncio.run`` per batch, so a connection per batch."""

    name = "nats-run-per-batch"

    def __init__(self, url: str) -> None:
        self.url = url

    def write(self, batch: Batch) -> None:
        async def once() -> None:
            sink = NatsJetStreamSink(NatsConfig.from_url(self.url))
            try:
                await sink._publish(
                    [
                        (sink._subject(e.event_type), e.to_json_bytes(), e.idempotency_key)
                        for e in batch.envelopes
                    ]
                )
            finally:
                await sink._close_nc()

        asyncio.run(once())

    def close(self) -> None:
        pass


def write_path(
    console: Console, args: argparse.Namespace, redis: Service, nats: Service, rows: dict[str, Row]
) -> None:
    envelopes = make_envelopes(args.envelopes)
    batches = [envelopes[i : i + args.batch] for i in range(0, len(envelopes), args.batch)]
    with LocalPostgres(settings={"max_wal_size": "4GB"}) as pg:
        dsn = pg.dsn("postgres")
        for rep in range(args.reps):
            ns = f"bench{uuid.uuid4().hex[:8]}"
            tmp = tempfile.mkdtemp(prefix="cdc-bench-")
            makers: list[tuple[str, Callable[[], Sink]]] = [
                ("discard", DiscardSink),
                ("jsonl (temp file)", lambda: open_sink(f"jsonl:{tmp}/events.jsonl")),  # noqa: B023
                ("redis streams", lambda: open_sink(redis_spec(redis, ns))),  # noqa: B023
                ("nats jetstream", lambda: open_sink(nats_spec(nats, ns, retry_give_up=30))),  # noqa: B023
                ("nats: asyncio.run per batch", lambda: NatsPerBatch(nats_spec(nats, ns + "b"))),  # noqa: B023
                ("postgres outbox", lambda: OutboxSink(dsn)),
            ]
            try:
                for name, make in makers:
                    sink = make()
                    sink.write(Batch(envelopes[:1], 1, 1))  # connect, create streams and tables
                    t0 = time.perf_counter()
                    for b in batches:
                        sink.write(Batch(b, 1, 1))
                    elapsed = time.perf_counter() - t0
                    sink.close()
                    row = rows.setdefault(name, Row("write", name))
                    row.samples.append(elapsed)
                    row.events = len(envelopes)
                    console.print(f"rep {rep + 1} write {name}: {len(envelopes) / elapsed:,.0f} events/s")
            finally:
                redis_cleanup(redis.url, ns)
                nats_cleanup(nats.url, ns)
                nats_cleanup(nats.url, ns + "b")
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("DROP SCHEMA IF EXISTS cdc CASCADE")
                    conn.execute("DROP SCHEMA IF EXISTS cdc_unnest CASCADE")
                for f in os.listdir(tmp):
                    os.unlink(os.path.join(tmp, f))
                os.rmdir(tmp)


def report(console: Console, args: argparse.Namespace, watch: dict[str, Row], write: dict[str, Row]) -> None:
    out: list[dict[str, Any]] = []
    for title, rows in (
        (f"full watch path: {args.ntx} × {args.per} ticket updates, median of {args.reps}", watch),
        (f"write path only: {args.envelopes} catalog-example envelopes in batches of {args.batch}", write),
    ):
        if not rows:
            continue
        base = rows["discard"].median
        table = Table(title=title)
        for col in ("sink", "events", "median s", "events/s", "vs discard"):
            table.add_column(col)
        for row in rows.values():
            eps = row.events / row.median
            table.add_row(
                row.sink, f"{row.events:,}", f"{row.median:.2f}", f"{eps:,.0f}", f"{base / row.median:.2f}"
            )
            out.append(
                {
                    "part": row.part,
                    "sink": row.sink,
                    "events": row.events,
                    "median_s": row.median,
                    "events_per_s": eps,
                    "throughput_vs_discard": base / row.median,
                    "samples_s": row.samples,
                }
            )
        console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sinks.json").write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ntx", type=int, default=200)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--envelopes", type=int, default=50000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--skip-watch", action="store_true")
    ap.add_argument("--skip-write", action="store_true")
    args = ap.parse_args()
    console = Console()
    redis = find_or_start_redis()
    nats = find_or_start_nats()
    console.print(
        f"redis: {redis.url} ({'ours' if redis.owned else 'local'}), nats: {nats.url} ({'ours' if nats.owned else 'local'})"
    )
    watch: dict[str, Row] = {}
    write: dict[str, Row] = {}
    try:
        if not args.skip_watch:
            full_path(console, args, redis, nats, watch)
        if not args.skip_write:
            write_path(console, args, redis, nats, write)
    finally:
        for svc in (redis, nats):
            if svc.owned:
                svc.close()
    report(console, args, watch, write)


if __name__ == "__main__":
    main()
