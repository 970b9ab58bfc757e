"""Outbox micro-benchmark: the bench's envelopes written straight into outbox table shapes.

The envelopes are the real ones: ``--ntx`` × ``--per`` ``tickets`` updates (bench/run.py's
workload) drained by ``cdc watch --once --sink jsonl:…`` (≈ 400,000 envelopes of ≈ 900 bytes).
Each (shape, write path) pair then writes all of them into a freshly created table in
batches of ``--batch`` (default 5,000, the watcher's own batch), one transaction per batch (what
the watcher does), and is timed:
wall seconds, and the CPU seconds of the server backend that did the inserting (sampled from
/proc; wall time on a shared machine carries other people's load, the backend's CPU does not).
Medians of ``--reps``; docs/sinks.md § Postgres outbox quotes the results.

    python -m bench.outbox --reps 3 [--batch 5000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format
from rich.console import Console
from rich.table import Table

from catalog.envelope import Envelope
from cdc.config import DEFAULT_TABLES
from cdc.localpg import LocalPostgres
from cdc.provision import setup
from cdc.sample import schema_sql
from cdc.sinks.base import Batch
from cdc.sinks.outbox import OutboxSink
from cdc.state import make_bootstrap_hook
from derivers import default_derivers

from .run import SETUP_SQL, watcher_env

LEASE = """created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz, claimed_by text,
    claimed_until timestamptz, publish_attempts integer NOT NULL DEFAULT 0"""
UNPUBLISHED = "CREATE INDEX ON cdc.outbox (seq) WHERE published_at IS NULL"

# The first shape (sql/outbox.sql before issue 12), and variations of today's (create_outbox).
FIRST = f"""CREATE TABLE cdc.outbox (seq bigint GENERATED ALWAYS AS IDENTITY, id uuid NOT NULL PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE, event_type text NOT NULL, tenant uuid NOT NULL, envelope jsonb NOT NULL,
    payload jsonb GENERATED ALWAYS AS (envelope -> 'payload') STORED, source_lsn pg_lsn NOT NULL,
    commit_time timestamptz NOT NULL, {LEASE});
    CREATE UNIQUE INDEX ON cdc.outbox (seq); {UNPUBLISHED}"""


def lean(
    envelope: str = "json", key_unique: bool = False, id_unique: bool = True, unpublished: bool = True
) -> str:
    return f"""CREATE TABLE cdc.outbox (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id uuid NOT NULL {"UNIQUE" if id_unique else ""}, idempotency_key text NOT NULL {"UNIQUE" if key_unique else ""},
        event_type text NOT NULL, tenant uuid NOT NULL, envelope {envelope} NOT NULL, {LEASE});
        {UNPUBLISHED if unpublished else ""}"""


class _Uuid(Dumper):
    format = Format.BINARY
    oid = postgres.types["uuid"].oid

    def dump(self, obj: str) -> bytes:
        return bytes.fromhex(obj.replace("-", ""))


class _Json(Dumper):
    format = Format.BINARY
    oid = postgres.types["json"].oid

    def dump(self, obj: bytes) -> bytes:
        return obj


class _Jsonb(_Json):
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: bytes) -> bytes:
        return b"\x01" + obj  # jsonb's binary form: a version byte, then the text


Writer = Callable[[psycopg.Connection[Any], Batch], None]


def rows(batch: Batch) -> zip[tuple[Envelope, bytes]]:
    return zip(batch.envelopes, batch.json(), strict=True)


def binary_copy(envelope: str) -> Writer:
    def write(conn: psycopg.Connection[Any], batch: Batch) -> None:
        with conn.cursor() as cur:
            for d in (_Uuid, _Json, _Jsonb):
                cur.adapters.register_dumper(None, d)
            cols = "id, idempotency_key, event_type, tenant, envelope"
            with cur.copy(f"COPY cdc.outbox ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["uuid", "text", "text", "uuid", envelope])
                for env, body in rows(batch):
                    copy.write_row((env.id, env.idempotency_key, env.event_type, env.tenant_id, body))

    return write


FIRST_COLS = "id, idempotency_key, event_type, tenant, envelope, source_lsn, commit_time"


def first_text_copy(conn: psycopg.Connection[Any], batch: Batch) -> None:
    """A bare text COPY into the first shape."""
    with conn.cursor() as cur, cur.copy(f"COPY cdc.outbox ({FIRST_COLS}) FROM STDIN") as copy:
        for env, body in rows(batch):
            src = env.source
            copy.write_row(
                (
                    env.id,
                    env.idempotency_key,
                    env.event_type,
                    env.tenant_id,
                    body.decode(),
                    src.lsn,
                    src.commit_time,
                )
            )


def first_write_path(conn: psycopg.Connection[Any], batch: Batch) -> None:
    """The write path before issue 12: text COPY into a session-local staging table, then
    INSERT … SELECT … ORDER BY ord ON CONFLICT (idempotency_key) DO NOTHING."""
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS load (ord int, id uuid, idempotency_key text, event_type text,"
        " tenant uuid, envelope jsonb, source_lsn pg_lsn, commit_time timestamptz) ON COMMIT DELETE ROWS"
    )
    with conn.cursor() as cur, cur.copy(f"COPY load (ord, {FIRST_COLS}) FROM STDIN") as copy:
        for i, (env, body) in enumerate(rows(batch)):
            src = env.source
            copy.write_row(
                (
                    i,
                    env.id,
                    env.idempotency_key,
                    env.event_type,
                    env.tenant_id,
                    body.decode(),
                    src.lsn,
                    src.commit_time,
                )
            )
    conn.execute(
        f"INSERT INTO cdc.outbox ({FIRST_COLS}) SELECT {FIRST_COLS} FROM load ORDER BY ord"
        " ON CONFLICT (idempotency_key) DO NOTHING"
    )


def staged_on_conflict(conn: psycopg.Connection[Any], batch: Batch) -> None:
    """Today's shape through a binary-COPYed staging table and INSERT … ON CONFLICT (id)."""
    cols = "id, idempotency_key, event_type, tenant, envelope"
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS load_json (ord int, id uuid, idempotency_key text, event_type text,"
        " tenant uuid, envelope json) ON COMMIT DELETE ROWS"
    )
    with conn.cursor() as cur:
        for d in (_Uuid, _Json):
            cur.adapters.register_dumper(None, d)
        with cur.copy(f"COPY load_json (ord, {cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "uuid", "text", "text", "uuid", "json"])
            for i, (env, body) in enumerate(rows(batch)):
                copy.write_row((i, env.id, env.idempotency_key, env.event_type, env.tenant_id, body))
    conn.execute(
        f"INSERT INTO cdc.outbox ({cols}) SELECT {cols} FROM load_json ORDER BY ord ON CONFLICT (id) DO NOTHING"
    )


def the_sink(conn: psycopg.Connection[Any], batch: Batch) -> None:
    """OutboxSink.write_in as the watcher calls it with a batch: the first write of its
    transaction, so a binary COPY in a savepoint."""
    OutboxSink().write_in(conn, batch)


def the_sink_later_chunk(conn: psycopg.Connection[Any], batch: Batch) -> None:
    """OutboxSink.write_in for a later chunk of a huge transaction (the transaction has an xid
    already): the probe for replays, then binary COPY."""
    conn.execute("SELECT pg_current_xact_id()")  # what the chunks before it did: assign an xid
    OutboxSink().write_in(conn, batch)


CASES: list[tuple[str, str, str | None, Writer]] = [
    # (shape, write path, DDL (None: the sink's own create_outbox), writer)
    ("first shape", "bare text COPY", FIRST, first_text_copy),
    ("first shape", "its write path: staging + ON CONFLICT", FIRST, first_write_path),
    ("lean, jsonb envelope", "binary COPY", lean(envelope="jsonb"), binary_copy("jsonb")),
    ("lean + unique key text", "binary COPY", lean(key_unique=True), binary_copy("json")),
    (
        "lean, unique key text instead of id",
        "binary COPY",
        lean(key_unique=True, id_unique=False),
        binary_copy("json"),
    ),
    ("lean, no unpublished index", "binary COPY", lean(unpublished=False), binary_copy("json")),
    ("lean (today)", "binary COPY", lean(), binary_copy("json")),
    ("lean (today)", "the sink: savepoint + binary COPY", None, the_sink),
    ("lean (today)", "the sink, a later chunk: probe + binary COPY", None, the_sink_later_chunk),
    ("lean (today)", "staging + ON CONFLICT (id)", lean(), staged_on_conflict),
    (
        "heap only: json, no index",
        "binary COPY",
        lean(id_unique=False, unpublished=False).replace("PRIMARY KEY", ""),
        binary_copy("json"),
    ),
]


def envelopes(dsn: str, ntx: int, per: int) -> list[Envelope]:
    """The workload's envelopes, as ``cdc watch`` delivers them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_sql())  # type: ignore[call-overload]
        conn.execute(SETUP_SQL)  # type: ignore[call-overload]
    setup(
        dsn,
        slot="outbox_bench",
        publication="cdc_events",
        tables=DEFAULT_TABLES,
        bootstrap=make_bootstrap_hook(default_derivers()),
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CALL bench_tickets({ntx}, {per})")  # type: ignore[call-overload]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        cdc = str(Path(sys.executable).with_name("cdc"))
        subprocess.run(
            [cdc, "watch", "--dsn", dsn, "--slot", "outbox_bench", "--once", "--sink", f"jsonl:{path}"],
            check=True,
            capture_output=True,
            env=watcher_env(),
        )
        lines = path.read_bytes().splitlines()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot('outbox_bench')")
        conn.execute("DROP SCHEMA cdc CASCADE")
        conn.execute("CREATE SCHEMA cdc")
    return [Envelope.from_dict(orjson.loads(line)) for line in lines]


def backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def run(dsn: str, ddl: str | None, write: Writer, batches: list[Batch]) -> tuple[float, float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS cdc.outbox")
        if ddl is None:
            OutboxSink().prepare(conn)
        else:
            conn.execute(ddl)  # type: ignore[call-overload]
        conn.execute("CHECKPOINT")
        pid = conn.info.backend_pid
        cpu0, t0 = backend_cpu(pid), time.perf_counter()
        for batch in batches:
            with conn.transaction():
                write(conn, batch)
        elapsed, cpu = time.perf_counter() - t0, backend_cpu(pid) - cpu0
        row = conn.execute("SELECT count(*) FROM cdc.outbox").fetchone()
        assert row == (sum(len(b.envelopes) for b in batches),), row
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ntx", type=int, default=200)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()
    console = Console(width=120)
    with LocalPostgres(settings={"wal_sender_timeout": "60s", "max_wal_size": "4GB"}) as pg:
        dsn = pg.dsn("postgres")
        events = envelopes(dsn, args.ntx, args.per)
        batches = [Batch(events[i : i + args.batch], 1, 1) for i in range(0, len(events), args.batch)]
        size = statistics.mean(len(body) for b in batches for body in b.json())  # serialised here, untimed
        console.print(f"{len(events)} envelopes of {size:.0f} bytes on average, batches of {args.batch}")
        samples: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(CASES))}
        for rep in range(args.reps):
            for i, (shape, path, ddl, write) in enumerate(CASES):
                elapsed, cpu = run(dsn, ddl, write, batches)
                samples[i].append((elapsed, cpu))
                console.print(f"rep {rep + 1} {shape} / {path}: {elapsed:.2f} s, backend {cpu:.2f} s CPU")
    n = len(events)
    table = Table(title=f"{n} envelopes into the outbox, median of {args.reps}")
    for col in ("shape", "write path", "wall s", "rows/s", "backend CPU s", "rows per backend CPU s"):
        table.add_column(col)
    for i, (shape, path, _, _) in enumerate(CASES):
        wall = statistics.median(s[0] for s in samples[i])
        cpu = statistics.median(s[1] for s in samples[i])
        table.add_row(shape, path, f"{wall:.2f}", f"{n / wall:,.0f}", f"{cpu:.2f}", f"{n / cpu:,.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
