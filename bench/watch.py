"""Full-path benchmark: decode → fold → state → derivers → catalog → envelope → sink.

200 transactions × 1,000 updates of the application's ``tickets`` rows, each changing the
status and the assignee (≈ 400,000 events), drained by ``cdc watch --once --sink SPEC`` for
each ``--sink`` given (the command itself, start-up included; default ``discard``, which
serialises every envelope and drops it; ``postgres`` is the default outbox in the watched
database, emptied before every repetition) and by pg_recvlogical from a slot created at the
same position over the same publication — side by side, medians of ``--reps``.  The outbox
consumer runs last: its rows are WAL that the other watchers' walsenders would read through.
Each consumer's own CPU time (rusage) and that of the walsender serving it (sampled from
/proc) are reported too: the walsender's output-plugin work is the floor of any consumer's
wall time. ``--profile`` adds one cProfile run of the watcher (into the last ``--sink``) and
prints where the time goes (``PROFILE_SORT=cumulative``, ``PROFILE_LINES=40`` to change the
listing).

    python -m bench.watch --reps 3 [--sink discard --sink postgres] [--profile] [--no-journal] [--batch-events N]

``--no-journal`` runs the watchers with the change journal off (it is on by default), for the
journal's share of the live path. ``--metrics`` runs them with ``--metrics-addr`` on a free local
port (rows "SINK + metrics"), for the metrics' share (:mod:`bench.metrics_cost` alternates runs
with and without). The results go to ``bench/results/watch-<ntx>x<per>.json`` (``-nojournal``
before ``.json`` for a run without the journal, so that ``make bench`` keeps both); ``--json
PATH`` writes them there instead.
"""

from __future__ import annotations

import argparse
import compileall
import cProfile
import io
import os
import pstats
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psycopg
from rich.console import Console
from rich.table import Table

from cdc.config import DEFAULT_TABLES
from cdc.localpg import LocalPostgres, free_port
from cdc.provision import setup
from cdc.sample import schema_sql
from cdc.state import make_bootstrap_hook
from derivers import default_derivers

from .run import RESULTS, SETUP_SQL, batch_flag, profiled_options, recvlogical_argv, watcher_env


class ServerCpu(threading.Thread):
    """Samples the CPU time of the walsender serving ``slot`` and of the watcher's store
    backend (``cdc watch <slot>: store``: the outbox's inserts, the checkpoint) until stopped;
    both exit with their client, so the last samples are their totals."""

    def __init__(self, dsn: str, slot: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.slot = dsn, slot
        self.walsender = 0.0
        self.store = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")

        def cpu(pid: int | None) -> float:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                return 0.0
            return (int(fields[11]) + int(fields[12])) / tick

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._done.wait(0.05):
                row = conn.execute(
                    "SELECT (SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s),"
                    " (SELECT pid FROM pg_stat_activity WHERE application_name = %s AND backend_type = 'client backend')",
                    (self.slot, f"cdc watch {self.slot}: store"),
                ).fetchone()
                if row is None:
                    continue
                self.walsender = max(self.walsender, cpu(row[0]))
                self.store = max(self.store, cpu(row[1]))

    def stop(self) -> tuple[float, float]:
        self._done.set()
        self.join()
        return self.walsender, self.store


def timed(argv: list[str], dsn: str, slot: str) -> tuple[float, float, bytes, float, float, float]:
    """Wall seconds, peak RSS MB, stderr, the child's CPU seconds, its walsender's and its
    store backend's."""
    sampler = ServerCpu(dsn, slot)
    sampler.start()
    with tempfile.TemporaryFile() as errors:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=watcher_env(), stdout=subprocess.DEVNULL, stderr=errors)
        _, status, rusage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        walsender, store = sampler.stop()
        errors.seek(0)
        out = errors.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(out.decode(errors="replace")[-800:])
    return elapsed, rusage.ru_maxrss / 1024.0, out, rusage.ru_utime + rusage.ru_stime, walsender, store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ntx", type=int, default=200)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--batch-events",
        type=int,
        default=None,
        help="the watchers' --batch-events [default: the watcher's own, as installed]",
    )
    ap.add_argument(
        "--no-journal",
        action="store_true",
        help="run `cdc watch --no-journal` (the change journal off) to compare with the default",
    )
    ap.add_argument(
        "--metrics",
        action="store_true",
        help="run `cdc watch --metrics-addr 127.0.0.1:<free port>` (rows 'SINK + metrics')",
    )
    ap.add_argument("--json", type=Path, help="write the results here [default: bench/results/]")
    ap.add_argument(
        "--sink",
        action="append",
        help="a `cdc watch --sink` spec to time (repeatable; default: discard)",
    )
    args = ap.parse_args()
    # the outbox in the watched database goes last (see the module docstring)
    sinks: list[str] = sorted(dict.fromkeys(args.sink or ["discard"]), key=lambda s: s == "postgres")
    console = Console(width=120)
    # The command as installed: with byte-code compiled (an editable checkout under
    # PYTHONDONTWRITEBYTECODE would otherwise compile every module at every start, ~70 ms).
    root = Path(__file__).resolve().parent.parent
    for package in ("cdc", "catalog", "derivers"):
        compileall.compile_dir(root / package, quiet=1)
    samples: dict[str, list[tuple[float, float, float, float, float]]] = {"pg_recvlogical": []}
    label = " + metrics" if args.metrics else ""
    samples.update({f"cdc watch ({sink}{label})": [] for sink in sinks})
    events = 0
    with LocalPostgres(settings={"wal_sender_timeout": "60s", "max_wal_size": "4GB"}) as pg:
        dsn = pg.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_sql())  # type: ignore[call-overload]
            conn.execute(SETUP_SQL)  # type: ignore[call-overload]
        for rep in range(args.reps + (1 if args.profile else 0)):
            profiling = args.profile and rep == args.reps
            slot, rslot = f"w{rep}", f"r{rep}"
            wslots = {} if profiling else {sink: f"w{rep}_{i}" for i, sink in enumerate(sinks)}
            for s in [slot] if profiling else wslots.values():
                setup(
                    dsn,
                    slot=s,
                    publication="cdc_events",
                    tables=DEFAULT_TABLES,
                    bootstrap=make_bootstrap_hook(default_derivers()),
                )
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (rslot,))
                if conn.execute("SELECT to_regclass('cdc.outbox')").fetchone() != (None,):
                    conn.execute("TRUNCATE cdc.outbox")  # every repetition starts from an empty one
                conn.execute(f"CALL bench_tickets({args.ntx}, {args.per})")  # type: ignore[call-overload]
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                assert row is not None
                endpos = str(row[0])
            if profiling:
                from cdc.sinks import open_sink
                from cdc.watch import run_watch

                prof = cProfile.Profile()
                prof.runcall(
                    run_watch,
                    profiled_options(dsn, slot, journal=not args.no_journal, batch_events=args.batch_events),
                    open_sink(sinks[-1]),  # the last --sink given
                    default_derivers(),
                )
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats(
                    os.environ.get("PROFILE_SORT", "tottime")
                ).print_stats(int(os.environ.get("PROFILE_LINES", "25")))
                console.print(buf.getvalue())
                continue
            r_s, r_rss, _, r_cpu, r_ws, _ = timed(
                recvlogical_argv(dsn, rslot, endpos),
                dsn,
                rslot,
            )
            samples["pg_recvlogical"].append((r_s, r_rss, r_cpu, r_ws, 0.0))
            line = f"rep {rep + 1}: recvlogical {r_s:.2f} s (its walsender {r_ws:.2f} s CPU)"
            for sink, wslot in wslots.items():
                w_s, w_rss, out, w_cpu, w_ws, w_store = timed(
                    [
                        *shlex.split(os.environ.get("BENCH_WRAP", "")),  # a profiler, as in bench.mixed
                        str(Path(sys.executable).with_name("cdc")),
                        "watch",
                        "--dsn",
                        dsn,
                        "--slot",
                        wslot,
                        "--once",
                        "--sink",
                        sink,
                        "--heartbeat-interval",
                        "60",
                        *batch_flag(args.batch_events),
                        *(["--no-journal"] if args.no_journal else []),
                        *(["--metrics-addr", f"127.0.0.1:{free_port()}"] if args.metrics else []),
                    ],
                    dsn,
                    wslot,
                )
                delivered = re.search(rb"delivered (\d+) events", out)
                assert delivered is not None, out[-400:]
                events = int(delivered.group(1))
                samples[f"cdc watch ({sink}{label})"].append((w_s, w_rss, w_cpu, w_ws, w_store))
                line += (
                    f"; {sink} {w_s:.2f} s ({w_cpu:.2f} s CPU, its walsender {w_ws:.2f} s, "
                    f"its store backend {w_store:.2f} s CPU)"
                )
            console.print(f"{line}, {events} events")
            with psycopg.connect(dsn, autocommit=True) as conn:
                for s in [rslot, *wslots.values()]:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (s,))
                conn.execute("CHECKPOINT")
    if not args.reps:  # --reps 0 --profile: the profile only
        return
    base = statistics.median(s[0] for s in samples["pg_recvlogical"])
    table = Table(title=f"{args.ntx} × {args.per} tickets updates, median of {args.reps}")
    columns = (
        "consumer",
        "median s",
        "ratio",
        "events/s",
        "CPU s",
        "walsender CPU s",
        "store CPU s",
        "peak RSS MB",
    )
    for col in columns:
        table.add_column(col)
    out_rows = []
    for name, ss in samples.items():
        med = statistics.median(s[0] for s in ss)
        cpu = statistics.median(s[2] for s in ss)
        ws = statistics.median(s[3] for s in ss)
        store = statistics.median(s[4] for s in ss)
        eps = events / med if name != "pg_recvlogical" else 0
        table.add_row(
            name,
            f"{med:.2f}",
            f"{med / base:.2f}x",
            f"{eps:,.0f}" if eps else "-",
            f"{cpu:.2f}",
            f"{ws:.2f}",
            f"{store:.2f}" if store else "-",
            f"{max(s[1] for s in ss):.0f}",
        )
        out_rows.append(
            {
                "consumer": name,
                "median_s": med,
                "ratio": med / base,
                "events": events,
                "events_per_s": eps,
                "cpu_s": cpu,
                "walsender_cpu_s": ws,
                "store_backend_cpu_s": store,
                "samples_s": [s[0] for s in ss],
                "batch_events": args.batch_events,  # None: the watcher's own
            }
        )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    name = f"watch-{args.ntx}x{args.per}{'-nojournal' if args.no_journal else ''}.json"  # as bench.mixed
    (args.json or RESULTS / name).write_bytes(orjson.dumps(out_rows, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
