"""Full-path benchmark: decode → fold → state → derivers → catalog → envelope → discarding sink.

200 transactions × 1,000 updates of the application's ``tickets`` rows, each changing the
status and the assignee (≈ 400,000 events), drained by ``cdc watch --once`` into a sink
that serialises every envelope and discards it, and by pg_recvlogical from a slot created
at the same position over the same publication — side by side, medians of ``--reps``.
``--profile`` adds one cProfile run of the watcher and prints where the time goes.

    python -m bench.watch --reps 3 [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time

import orjson
import psycopg
from rich.console import Console
from rich.table import Table

from cdc.config import DEFAULT_TABLES
from cdc.localpg import LocalPostgres, find_bindir
from cdc.provision import setup
from cdc.sample import schema_sql
from cdc.state import bootstrap_hook

from .run import RESULTS, SETUP_SQL

WORKER = """
import sys, time, orjson
from cdc.sinks.memory import DiscardSink
from cdc.watch import WatchOptions, Watcher
dsn, slot = sys.argv[1], sys.argv[2]
sink = DiscardSink()
t0 = time.perf_counter()
stats = Watcher(WatchOptions(dsn, slot=slot, once=True, heartbeat_interval=60, batch_max_events=20000), sink).run()
status = open('/proc/self/status').read()
hwm = int(next(l for l in status.splitlines() if l.startswith('VmHWM')).split()[1])
print(orjson.dumps({"events": sink.count, "transactions": stats.transactions, "seconds": time.perf_counter() - t0,
                    "peak_rss_kb": hwm, "by_type": stats.by_type}).decode())
"""


def timed(argv: list[str], capture: bool) -> tuple[float, float, bytes]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    out = proc.stdout.read() if proc.stdout else b""
    _, status, rusage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError((proc.stderr.read() if proc.stderr else b"").decode(errors="replace")[-800:])
    return elapsed, rusage.ru_maxrss / 1024.0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ntx", type=int, default=200)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    console = Console()
    recv = shutil.which("pg_recvlogical") or str(find_bindir() / "pg_recvlogical")
    samples: dict[str, list[tuple[float, float]]] = {"pg_recvlogical": [], "cdc watch (discard)": []}
    events = 0
    with LocalPostgres(settings={"wal_sender_timeout": "60s", "max_wal_size": "4GB"}) as pg:
        dsn = pg.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_sql())  # type: ignore[call-overload]
            conn.execute(SETUP_SQL)  # type: ignore[call-overload]
        for rep in range(args.reps + (1 if args.profile else 0)):
            slot, rslot = f"w{rep}", f"r{rep}"
            setup(dsn, slot=slot, publication="cdc_events", tables=DEFAULT_TABLES, bootstrap=bootstrap_hook)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (rslot,))
                conn.execute(f"CALL bench_tickets({args.ntx}, {args.per})")  # type: ignore[call-overload]
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                assert row is not None
                endpos = str(row[0])
            if args.profile and rep == args.reps:
                from cdc.sinks.memory import DiscardSink
                from cdc.watch import Watcher, WatchOptions

                prof = cProfile.Profile()
                w = Watcher(
                    WatchOptions(dsn, slot=slot, once=True, heartbeat_interval=60, batch_max_events=20000),
                    DiscardSink(),
                )
                prof.runcall(w.run)
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats(
                    os.environ.get("PROFILE_SORT", "tottime")
                ).print_stats(int(os.environ.get("PROFILE_LINES", "25")))
                console.print(buf.getvalue())
                continue
            r_s, r_rss, _ = timed(
                [
                    recv,
                    "-d",
                    dsn,
                    "--slot",
                    rslot,
                    "--start",
                    "--no-loop",
                    "-o",
                    "proto_version=1",
                    "-o",
                    "publication_names=cdc_events",
                    "-f",
                    "/dev/null",
                    "-E",
                    endpos,
                ],
                False,
            )
            w_s, w_rss, out = timed([sys.executable, "-c", WORKER, dsn, slot], True)
            result = orjson.loads(out.splitlines()[-1])
            events = result["events"]
            samples["pg_recvlogical"].append((r_s, r_rss))
            samples["cdc watch (discard)"].append((w_s, w_rss))
            console.print(
                f"rep {rep + 1}: recvlogical {r_s:.2f} s, watch {w_s:.2f} s, {events} events "
                f"{result['by_type']}"
            )
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (rslot,))
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                conn.execute("CHECKPOINT")
    base = statistics.median(s for s, _ in samples["pg_recvlogical"])
    table = Table(title=f"{args.ntx} × {args.per} tickets updates, median of {args.reps}")
    for col in ("consumer", "median s", "ratio", "events/s", "peak RSS MB"):
        table.add_column(col)
    out_rows = []
    for name, ss in samples.items():
        med = statistics.median(s for s, _ in ss)
        eps = events / med if name != "pg_recvlogical" else 0
        table.add_row(
            name,
            f"{med:.2f}",
            f"{med / base:.2f}x",
            f"{eps:,.0f}" if eps else "-",
            f"{max(r for _, r in ss):.0f}",
        )
        out_rows.append(
            {
                "consumer": name,
                "median_s": med,
                "ratio": med / base,
                "events": events,
                "events_per_s": eps,
                "samples_s": [s for s, _ in ss],
            }
        )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "watch.json").write_bytes(orjson.dumps(out_rows, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
