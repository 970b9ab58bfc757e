"""CPU cost of the watcher's per-event path, without the server in the loop.

Runs the full-path workload of :mod:`bench.watch` once, captures the raw pgoutput messages
of the slot into memory, then replays them through exactly what ``cdc watch`` runs per
message — decode, assemble, fold, state, derivers, catalog validation, envelope, a sink that
serialises and discards — and reports microseconds per row change and per event (median of
``--reps``).  ``--profile`` adds one cProfile run.  This is where the time goes when the
server is not the bottleneck; :mod:`bench.watch` is the end-to-end comparison.

    python -m bench.replay --ntx 50 --per 1000 --reps 3 [--profile] [--gc default|off]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import statistics
import time

import psycopg
from rich.console import Console

from cdc.config import DEFAULT_TABLES
from cdc.localpg import LocalPostgres
from cdc.lsn import parse_lsn
from cdc.pgoutput import Decoder
from cdc.provision import setup
from cdc.sample import schema_sql
from cdc.sinks.memory import DiscardSink
from cdc.state import make_bootstrap_hook
from cdc.stream import ReplicationStream
from cdc.watch import GC_THRESHOLD, Watcher, WatchOptions
from derivers import default_derivers

from .run import SETUP_SQL


def capture(dsn: str, slot: str, endpos: int) -> list[bytes]:
    out: list[bytes] = []
    with ReplicationStream(dsn, slot, "cdc_events", status_interval=10.0) as stream:
        while True:
            data = stream.read(5.0)
            if data is None:
                if stream.server_wal_end >= endpos:
                    break
                continue
            out.append(bytes(data))
            if data[:1] == b"C" and int.from_bytes(data[10:18], "big") >= endpos:
                break
    return out


#: Server settings of the benchmarks' throwaway cluster.
SETTINGS = {"wal_sender_timeout": "60s", "max_wal_size": "4GB"}


def tickets_workload(pg: LocalPostgres, slot: str, ntx: int, per: int) -> tuple[str, int]:
    """The schema, ``cdc setup`` of ``slot`` and ``ntx`` × ``per`` tickets updates on ``pg``'s
    database ``postgres``: its DSN and the WAL position after the workload."""
    dsn = pg.dsn("postgres")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_sql())  # type: ignore[call-overload]
        conn.execute(SETUP_SQL)  # type: ignore[call-overload]
    setup(
        dsn,
        slot=slot,
        publication="cdc_events",
        tables=DEFAULT_TABLES,
        bootstrap=make_bootstrap_hook(default_derivers()),
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CALL bench_tickets({ntx}, {per})")  # type: ignore[call-overload]
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
    return dsn, parse_lsn(str(row[0]))


def capture_workload(pg: LocalPostgres, ntx: int, per: int) -> tuple[str, list[bytes]]:
    """The full-path workload (``ntx`` × ``per`` tickets updates) on ``pg``, captured from the
    slot ``replay``: the DSN and the raw pgoutput messages."""
    dsn, end = tickets_workload(pg, "replay", ntx, per)
    return dsn, capture(dsn, "replay", end)


def replay(watcher: Watcher, messages: list[bytes]) -> tuple[float, int, int]:
    decoder = Decoder()
    assembler = watcher.assembler()
    sink = watcher.sink  # a full chunk goes to it after each transaction (as a batch's send would)
    assert isinstance(sink, DiscardSink)
    sink.count = 0
    watcher.delivery.chunk.envelopes.clear()
    changes = 0
    gc.collect()
    t0 = time.perf_counter()
    for data in messages:
        tx = assembler.feed(decoder.decode(data))
        if tx is None:
            continue
        changes += len(tx.changes)
        watcher.process(tx)
        watcher.delivery.write_full_chunk()
    sink.write(watcher.delivery.chunk)
    watcher.delivery.chunk.envelopes.clear()
    return time.perf_counter() - t0, changes, sink.count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ntx", type=int, default=50)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    # freeze: what `cdc watch` does (run_watch: freeze and GC_THRESHOLD); default: the interpreter's settings
    ap.add_argument("--gc", choices=["freeze", "default", "off"], default="freeze")
    args = ap.parse_args()
    console = Console()
    with LocalPostgres(settings=SETTINGS) as pg:
        dsn, messages = capture_workload(pg, args.ntx, args.per)
        watcher = Watcher(WatchOptions(dsn, slot="replay"), DiscardSink(), default_derivers())
        watcher.prepare()
    if args.gc == "freeze":
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)
    elif args.gc == "off":
        gc.disable()
    console.print(f"captured {len(messages):,} messages, {sum(map(len, messages)) / 1e6:.0f} MB")
    times = []
    changes = events = 0
    for rep in range(args.reps):
        seconds, changes, events = replay(watcher, messages)
        times.append(seconds)
        console.print(f"rep {rep + 1}: {seconds:.2f} s")
    med = statistics.median(times)
    console.print(
        f"median {med:.2f} s: {changes:,} row changes, {events:,} events; "
        f"{med / changes * 1e6:.1f} µs per change, {med / events * 1e6:.1f} µs per event, "
        f"{events / med:,.0f} events/s"
    )
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(replay, watcher, messages)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
        console.print(buf.getvalue())


if __name__ == "__main__":
    main()
