"""What ``--metrics-addr`` costs on the full path (issue 14: no more than 5 % above metrics off).

Per repetition, :mod:`bench.watch` runs twice — once as is, once with ``--metrics`` (the watchers
get ``--metrics-addr 127.0.0.1:<free port>``: the registry, the per-batch counters and histogram,
the slot poll every 5 s and the HTTP server; nothing scrapes it) — in alternating order (off
first in odd repetitions, on first in even ones). Each run is a child process with its own
throwaway cluster: the tickets workload (``--ntx`` × ``--per`` updates), pg_recvlogical over the
same slot content and ``cdc watch --once`` into each ``--sink`` (default ``discard`` and the
outbox, ``postgres``). Two runs, not two watchers in one run: a second outbox watcher would read
through the first one's outbox rows in the WAL, and its events would already be there.

Each watcher is compared with the pg_recvlogical of its own run (which takes out most of what
differs between two clusters on a busy machine), and each metrics-on run with the metrics-off run
of the same repetition: "vs off" is the median over repetitions of that pair's ratio of ratios —
for wall time, and for the watcher's own CPU time (rusage), which the machine's other load
disturbs less. Results go to ``bench/results/metrics-cost-<ntx>x<per>.json``.

    python -m bench.metrics_cost --reps 3 [--ntx 200 --per 1000] [--sink discard --sink postgres]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from .run import RESULTS

#: The issue's bound on what metrics may add.
MAX_COST = 0.05
RECV = "pg_recvlogical"


def one_run(ntx: int, per: int, sinks: list[str], metrics: bool) -> dict[str, dict[str, Any]]:
    """One :mod:`bench.watch` run (a child process, one repetition): its rows by consumer."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "watch.json"
        argv = [sys.executable, "-m", "bench.watch", "--reps", "1", "--ntx", str(ntx), "--per", str(per)]
        argv += [arg for sink in sinks for arg in ("--sink", sink)]
        argv += ["--json", str(out), *(["--metrics"] if metrics else [])]
        subprocess.run(argv, check=True)
        return {row["consumer"]: row for row in orjson.loads(out.read_bytes())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ntx", type=int, default=200)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--sink", action="append", help="a `cdc watch --sink` spec (default: discard, postgres)")
    args = ap.parse_args()
    sinks: list[str] = args.sink or ["discard", "postgres"]
    console = Console(width=120)
    runs: list[dict[bool, dict[str, dict[str, Any]]]] = []
    for rep in range(args.reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        pair: dict[bool, dict[str, dict[str, Any]]] = {}
        for metrics in order:
            console.print(f"rep {rep + 1}/{args.reps}: metrics {'on' if metrics else 'off'}")
            pair[metrics] = one_run(args.ntx, args.per, sinks, metrics)
        runs.append(pair)
    report(console, runs, sinks, args)


def report(
    console: Console,
    runs: list[dict[bool, dict[str, dict[str, Any]]]],
    sinks: list[str],
    args: argparse.Namespace,
) -> None:
    table = Table(
        title=f"{args.ntx} × {args.per} tickets updates, metrics off against on, "
        f"median of {len(runs)} pair(s) of runs"
    )
    columns = ("consumer", "median s", "ratio", "vs off (wall)", "CPU s", "vs off (CPU)", "events/s")
    for col in columns:
        table.add_column(col)
    out: list[dict[str, Any]] = []
    verdicts: list[str] = []

    def add(name: str, key: str, metrics: bool | None, sink: str | None = None) -> None:
        # metrics None: pg_recvlogical, from every run
        rows = [run[m][key] for run in runs for m in ((False, True) if metrics is None else (metrics,))]
        med = statistics.median(r["median_s"] for r in rows)
        cpu = statistics.median(r["cpu_s"] for r in rows)
        ratio = statistics.median(r["ratio"] for r in rows)
        vs_wall = vs_cpu = None
        if metrics:
            off = f"cdc watch ({sink})"
            vs_wall = statistics.median(run[True][key]["ratio"] / run[False][off]["ratio"] for run in runs)
            vs_cpu = statistics.median(run[True][key]["cpu_s"] / run[False][off]["cpu_s"] for run in runs)
            verdicts.append(
                f"{sink}: metrics add {(vs_wall - 1) * 100:+.1f} % wall, {(vs_cpu - 1) * 100:+.1f} % CPU "
                f"({'within' if vs_wall <= 1 + MAX_COST else 'ABOVE'} the {MAX_COST * 100:.0f} % bound)"
            )
        eps = statistics.median(r["events_per_s"] for r in rows)
        table.add_row(
            name,
            f"{med:.2f}",
            f"{ratio:.2f}x",
            f"{vs_wall:.3f}x" if vs_wall else "-",
            f"{cpu:.2f}",
            f"{vs_cpu:.3f}x" if vs_cpu else "-",
            f"{eps:,.0f}" if eps else "-",
        )
        out.append(
            {
                "consumer": name,
                "median_s": med,
                "ratio": ratio,
                "cpu_s": cpu,
                "vs_off_wall": vs_wall,
                "vs_off_cpu": vs_cpu,
                "events_per_s": eps,
                "samples_s": [r["median_s"] for r in rows],
            }
        )

    for sink in sinks:
        add(sink, f"cdc watch ({sink})", False)
        add(f"{sink} + metrics", f"cdc watch ({sink} + metrics)", True, sink)
    add(RECV, RECV, None)
    console.print(table)
    for line in verdicts:
        console.print(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"metrics-cost-{args.ntx}x{args.per}.json").write_bytes(
        orjson.dumps(out, option=orjson.OPT_INDENT_2)
    )


if __name__ == "__main__":
    main()
