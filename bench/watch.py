"""Full-path benchmark: decode → fold → state → derivers → catalog → envelope → discarding sink.

200 transactions × 1,000 updates of the application's ``tickets`` rows, each changing the
status and the assignee (≈ 400,000 events), drained by ``cdc watch --once --sink discard``
(the command itself, start-up included; the sink serialises every envelope and discards
it) and by pg_recvlogical from a slot created at the same position over the same
publication — side by side, medians of ``--reps``.
Each consumer's own CPU time (rusage) and that of the walsender serving it (sampled from
/proc) are reported too: the walsender's output-plugin work is the floor of any consumer's
wall time. ``--profile`` adds one cProfile run of the watcher and prints where the time goes
(``PROFILE_SORT=cumulative``, ``PROFILE_LINES=40`` to change the listing).

    python -m bench.watch --reps 3 [--profile]
"""

from __future__ import annotations

import argparse
import compileall
import cProfile
import io
import os
import pstats
import re
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
from cdc.localpg import LocalPostgres
from cdc.provision import setup
from cdc.sample import schema_sql
from cdc.state import bootstrap_hook

from .run import RESULTS, SETUP_SQL, recvlogical_argv


class WalsenderCpu(threading.Thread):
    """Samples the CPU time of the walsender serving ``slot`` until stopped (it exits with its
    client, so the last sample is its total)."""

    def __init__(self, dsn: str, slot: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.slot = dsn, slot
        self.seconds = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._done.wait(0.05):
                row = conn.execute(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
                ).fetchone()
                if not row or row[0] is None:
                    continue
                try:
                    with open(f"/proc/{row[0]}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                self.seconds = max(self.seconds, (int(fields[11]) + int(fields[12])) / tick)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.seconds


def timed(argv: list[str], dsn: str, slot: str) -> tuple[float, float, bytes, float, float]:
    """Wall seconds, peak RSS MB, stderr, the child's CPU seconds and its walsender's."""
    sampler = WalsenderCpu(dsn, slot)
    sampler.start()
    with tempfile.TemporaryFile() as errors:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, rusage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        walsender = sampler.stop()
        errors.seek(0)
        out = errors.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(out.decode(errors="replace")[-800:])
    return elapsed, rusage.ru_maxrss / 1024.0, out, rusage.ru_utime + rusage.ru_stime, walsender


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ntx", type=int, default=200)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    console = Console()
    # The command as installed: with byte-code compiled (an editable checkout under
    # PYTHONDONTWRITEBYTECODE would otherwise compile every module at every start, ~70 ms).
    root = Path(__file__).resolve().parent.parent
    for package in ("cdc", "catalog", "derivers"):
        compileall.compile_dir(root / package, quiet=1)
    samples: dict[str, list[tuple[float, float, float, float]]] = {
        "pg_recvlogical": [],
        "cdc watch (discard)": [],
    }
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
                from cdc.watch import WatchOptions, run_watch

                prof = cProfile.Profile()
                prof.runcall(
                    run_watch,
                    WatchOptions(dsn, slot=slot, once=True, heartbeat_interval=60, batch_max_events=20000),
                    DiscardSink(),
                )
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats(
                    os.environ.get("PROFILE_SORT", "tottime")
                ).print_stats(int(os.environ.get("PROFILE_LINES", "25")))
                console.print(buf.getvalue())
                continue
            r_s, r_rss, _, r_cpu, r_ws = timed(
                recvlogical_argv(dsn, rslot, endpos),
                dsn,
                rslot,
            )
            w_s, w_rss, out, w_cpu, w_ws = timed(
                [
                    str(Path(sys.executable).with_name("cdc")),
                    "watch",
                    "--dsn",
                    dsn,
                    "--slot",
                    slot,
                    "--once",
                    "--sink",
                    "discard",
                    "--heartbeat-interval",
                    "60",
                    "--batch-events",
                    "20000",
                ],
                dsn,
                slot,
            )
            delivered = re.search(rb"delivered (\d+) events", out)
            assert delivered is not None, out[-400:]
            events = int(delivered.group(1))
            samples["pg_recvlogical"].append((r_s, r_rss, r_cpu, r_ws))
            samples["cdc watch (discard)"].append((w_s, w_rss, w_cpu, w_ws))
            console.print(
                f"rep {rep + 1}: recvlogical {r_s:.2f} s (its walsender {r_ws:.2f} s CPU), "
                f"watch {w_s:.2f} s ({w_cpu:.2f} s CPU, its walsender {w_ws:.2f} s CPU), {events} events"
            )
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (rslot,))
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                conn.execute("CHECKPOINT")
    base = statistics.median(s[0] for s in samples["pg_recvlogical"])
    table = Table(title=f"{args.ntx} × {args.per} tickets updates, median of {args.reps}")
    for col in ("consumer", "median s", "ratio", "events/s", "CPU s", "walsender CPU s", "peak RSS MB"):
        table.add_column(col)
    out_rows = []
    for name, ss in samples.items():
        med = statistics.median(s[0] for s in ss)
        cpu = statistics.median(s[2] for s in ss)
        ws = statistics.median(s[3] for s in ss)
        eps = events / med if name != "pg_recvlogical" else 0
        table.add_row(
            name,
            f"{med:.2f}",
            f"{med / base:.2f}x",
            f"{eps:,.0f}" if eps else "-",
            f"{cpu:.2f}",
            f"{ws:.2f}",
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
                "samples_s": [s[0] for s in ss],
            }
        )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "watch.json").write_bytes(orjson.dumps(out_rows, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
