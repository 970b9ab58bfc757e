"""A/B of the full path: the real ``cdc watch --once`` of two source trees into ``--sink``
(``discard``, or ``postgres``: the default outbox, emptied before each run), and pg_recvlogical,
on identical slot content, repetitions alternated. ``--workload tickets`` (default: ``--ntx`` ×
``--per`` ``tickets`` updates) or ``mixed`` (:mod:`bench.mixed`'s workload of every family, its
history written once, then ``--ntx`` × ``--per`` application writes per repetition).

This machine's speed drifts by ±20 % within minutes, so a change is judged by running the
code before and after it side by side in one run, not by comparing two runs of
:mod:`bench.watch`. Each tree is a checkout of this repository whose C extensions are built
in place (the ``.so`` files of a build copied beside their sources, as below); both run under
this interpreter and its installed dependencies. :mod:`bench.instructions` counts instructions
instead, a measure that does not drift.

    git worktree add ../before HEAD~1 && cd ../before
    rm -rf /tmp/before-build && python -m pip install --no-deps --target /tmp/before-build .
    (cd /tmp/before-build && find cdc catalog derivers -name '*.so' -exec cp --parents -t "$OLDPWD" {} +)
    cd - && python -m bench.ab ../before . --reps 3 [--sink postgres] [--workload mixed] [--batch-events N]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from cdc.config import DEFAULT_TABLES
from cdc.localpg import LocalPostgres
from cdc.provision import setup
from cdc.sample import schema_sql
from cdc.state import make_bootstrap_hook
from derivers import default_derivers

from .mixed import MIXED_SQL
from .run import SETUP_SQL, batch_flag, recvlogical_argv, watcher_env


def _timed(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float]:
    """Wall seconds and the child's CPU seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"{' '.join(argv[:4])} failed: {err[-400:]}")
    return wall, rusage.ru_utime + rusage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs=2, type=Path, help="two source trees (A and B)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ntx", type=int, default=200)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--sink", choices=("discard", "postgres"), default="discard")
    ap.add_argument("--workload", choices=("tickets", "mixed"), default="tickets")
    ap.add_argument(
        "--batch-events",
        type=int,
        default=None,
        help="the watchers' --batch-events [default: the watcher's own, as installed]",
    )
    ap.add_argument("--entries", type=int, default=3000, help="mixed: schedule entries of history")
    ap.add_argument("--tasks", type=int, default=3000, help="mixed: project tasks of history")
    args = ap.parse_args()
    mixed = args.workload == "mixed"
    if mixed and args.entries % 2:
        ap.error("--entries must be even (see bench.mixed)")
    trees = [t.resolve() for t in args.trees]
    for tree in trees:
        if not (tree / "cdc" / "watch.py").is_file():
            raise SystemExit(f"{tree}: not a checkout of this repository")
        for package in ("cdc", "catalog", "derivers"):
            compileall.compile_dir(tree / package, quiet=1)
    console = Console()
    results: dict[str, list[tuple[float, float]]] = {"pg_recvlogical": [], "A": [], "B": []}
    with LocalPostgres(settings={"wal_sender_timeout": "60s", "max_wal_size": "4GB"}) as pg:
        dsn = pg.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_sql())  # type: ignore[call-overload]
            conn.execute(SETUP_SQL)  # type: ignore[call-overload]
            if mixed:
                conn.execute(MIXED_SQL)  # type: ignore[call-overload]
                conn.execute("CALL bench_history(%s, %s)", (args.entries, args.tasks))
        for rep in range(args.reps):
            slots = {"A": f"a{rep}", "B": f"b{rep}"}
            for slot in slots.values():
                setup(
                    dsn,
                    slot=slot,
                    publication="cdc_events",
                    tables=DEFAULT_TABLES,
                    bootstrap=make_bootstrap_hook(default_derivers()),
                )
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (f"r{rep}",))
                if mixed:
                    conn.execute(
                        "CALL bench_mixed(%s, %s, %s, %s, %s)",
                        (args.ntx, args.per, rep * args.ntx * args.per, args.entries, args.tasks),
                    )
                else:
                    conn.execute(f"CALL bench_tickets({args.ntx}, {args.per})")  # type: ignore[call-overload]
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                assert row is not None
                endpos = str(row[0])
            results["pg_recvlogical"].append(_timed(recvlogical_argv(dsn, f"r{rep}", endpos)))
            order = ["A", "B"] if rep % 2 == 0 else ["B", "A"]
            for name in order:
                tree = trees[0] if name == "A" else trees[1]
                if args.sink == "postgres":
                    with psycopg.connect(dsn, autocommit=True) as conn:
                        if conn.execute("SELECT to_regclass('cdc.outbox')").fetchone() != (None,):
                            conn.execute("TRUNCATE cdc.outbox")  # each run writes every event
                argv = [sys.executable, "-m", "cdc.cli", "watch", "--dsn", dsn, "--slot", slots[name]]
                argv += [
                    "--once",
                    "--sink",
                    args.sink,
                    "--heartbeat-interval",
                    "60",
                    *batch_flag(args.batch_events),
                ]
                results[name].append(_timed(argv, {**watcher_env(), "PYTHONPATH": str(tree)}, tree))
            console.print(
                f"rep {rep + 1}: "
                + ", ".join(f"{k} {v[-1][0]:.2f} s ({v[-1][1]:.2f} s CPU)" for k, v in results.items())
            )
    base = statistics.median(w for w, _ in results["pg_recvlogical"])
    what = "application writes (mixed)" if mixed else "tickets updates"
    table = Table(title=f"{args.ntx} × {args.per} {what} into {args.sink}, medians of {args.reps}")
    for col in ("consumer", "median s", "ratio", "CPU s"):
        table.add_column(col)
    for name, samples in results.items():
        wall = statistics.median(w for w, _ in samples)
        label = name if name == "pg_recvlogical" else f"{name}: {trees[0] if name == 'A' else trees[1]}"
        table.add_row(
            label, f"{wall:.2f}", f"{wall / base:.2f}x", f"{statistics.median(c for _, c in samples):.2f}"
        )
    console.print(table)


if __name__ == "__main__":
    main()
