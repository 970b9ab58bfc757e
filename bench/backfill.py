"""Backfill benchmark: ``cdc backfill --sink discard`` over a journal of ≥ 1,000,000 changes.

A throwaway server gets the sample schema and 1,000 ``tickets`` rows; ``cdc setup`` makes the
slot (the journal's first entry: the reference tables), ``--seed-tx`` transactions of ``--per``
ticket updates (status and assignee, as ``bench.watch``) are drained by ``cdc watch --once
--sink discard`` with the journal on, and their journal rows are then copied ``--copies`` times
with later LSNs and commit times (the same images, so the derivers emit the same number of
events per change) until the journal holds ``seed × copies`` changes. The command itself
(``python -m cdc.cli backfill --sink discard``, start-up included) is then timed: wall seconds,
journal changes per second, events per second and peak RSS (``wait4``'s rusage of that child
— bounded by a batch and a transaction's spill limit, not by the range). Written to
``bench/results/backfill.json``.

    python -m bench.backfill [--seed-tx 10 --per 1000 --copies 100] [--reps 1]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import orjson
import psycopg
from rich.console import Console

from cdc.localpg import LocalPostgres

from .replay import tickets_workload
from .run import RESULTS, watcher_env

#: Copies of the seed's update rows, each LSN-shifted past the previous copy (one statement).
MULTIPLY_SQL = """
WITH seed AS (
    SELECT * FROM cdc.change_log WHERE slot_name = 'cdc_events' AND table_name = 'public.tickets'
), span AS (
    SELECT max(end_lsn) - min(end_lsn) + 1 AS lsn, max(commit_time) - min(commit_time) AS time FROM seed
)
INSERT INTO cdc.change_log
SELECT s.slot_name, s.end_lsn + k * span.lsn, s.xid + k * 1000000, s.commit_time + k * (span.time / %(copies)s),
       s.position, s.table_name, s.op, s.shape_id, s.before, s.after, s.unknown, s.message
  FROM seed s, span, generate_series(1, %(copies)s - 1) AS k
"""


def timed(argv: list[str]) -> tuple[float, float, str, str]:
    """Wall seconds, peak RSS MB, stdout and stderr of one child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, rusage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(stderr[-800:])
    return elapsed, rusage.ru_maxrss / 1024.0, stdout, stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed-tx", type=int, default=10)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    console = Console(width=120)
    env = {k: v for k, v in watcher_env().items() if not k.startswith("PG")}
    with LocalPostgres(settings={"wal_sender_timeout": "60s", "max_wal_size": "4GB"}) as pg:
        dsn, _ = tickets_workload(pg, "cdc_events", args.seed_tx, args.per)
        cdc = [sys.executable, "-m", "cdc.cli"]
        subprocess.run(
            [*cdc, "watch", "--dsn", dsn, "--once", "--sink", "discard", "--heartbeat-interval", "60"],
            check=True,
            env=env,
            capture_output=True,
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(MULTIPLY_SQL, {"copies": args.copies})
            conn.execute("VACUUM ANALYZE cdc.change_log")
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE op IN ('insert', 'update', 'delete')), count(*) FROM cdc.change_log"
            ).fetchone()
            assert row is not None
            changes, rows = int(row[0]), int(row[1])
        console.print(f"journal: {changes:,} row changes ({rows:,} rows with the snapshot and messages)")
        samples = []
        for rep in range(args.reps):
            seconds, rss, out, _err = timed([*cdc, "backfill", "--dsn", dsn, "--sink", "discard"])
            total = re.search(r"│ total\s+│\s+([\d,]+) │", out)
            events = int(total.group(1).replace(",", "")) if total else 0
            samples.append((seconds, rss, events))
            console.print(
                f"rep {rep + 1}: {seconds:.1f} s, {changes / seconds:,.0f} changes/s, "
                f"{events / seconds:,.0f} events/s ({events:,} events), peak RSS {rss:.0f} MB"
            )
    med = statistics.median(s[0] for s in samples)
    result = {
        "changes": changes,
        "events": samples[0][2],
        "median_s": med,
        "changes_per_s": changes / med,
        "events_per_s": samples[0][2] / med,
        "peak_rss_mb": max(s[1] for s in samples),
        "samples_s": [s[0] for s in samples],
    }
    console.print(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backfill.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
