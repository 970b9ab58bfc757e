"""``make bench``: the shapes the project is judged on, each against pg_recvlogical on identical
slot content in the same run (medians of ``--reps``), then the memory bound.

1. 200 × 1,000 ``tickets`` updates (status + assignee + ``updated_at``) through the installed
   ``cdc watch --once`` to (a) ``--sink discard``, (b) ``--sink -`` with stdout to /dev/null,
   (c) the default Postgres outbox (:mod:`bench.watch`);
2. (d) the same 200,000 updates as 20,000 transactions of 10 rows, to ``discard``;
3. the mixed workload of every family (tickets, schedule entries with assignees and capacity,
   project tasks; 200,000 row changes) to ``discard`` and to the outbox (:mod:`bench.mixed`);
4. peak RSS of ``cdc watch --once`` through one 1,000,000-row transaction (:mod:`bench.memory`);
5. commit-to-delivered latency of a running ``cdc watch`` into the outbox at 500 ticket
   transactions per second for 60 s (:mod:`bench.latency`, ~1.5 min);
6. what ``--metrics-addr`` costs on the path of 1.: runs of (a) and (c) with metrics off and on,
   alternating (:mod:`bench.metrics_cost`, two runs of 1. per repetition, 1–2 min each);
7. the change journal's cost: (c) again with ``cdc watch --no-journal`` (1.'s (c) has it on, the
   default), and ``cdc backfill --sink discard`` replaying a journal of 1,000,000 changes
   (:mod:`bench.backfill`: changes/s and peak RSS).

Each part is its own child process, so one part's memory or caches do not colour the next.

    make bench                      # python -m bench.suite
    python -m bench.suite --reps 5 --rows 1000000
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the memory run's transaction")
    args = ap.parse_args()
    reps = str(args.reps)
    parts = [
        ["bench.watch", "--reps", reps, "--sink", "discard", "--sink", "-", "--sink", "postgres"],
        ["bench.watch", "--reps", reps, "--ntx", "20000", "--per", "10", "--sink", "discard"],
        ["bench.mixed", "--reps", reps, "--sink", "discard", "--sink", "postgres"],
        ["bench.memory", "--rows", str(args.rows)],
        ["bench.latency"],
        ["bench.metrics_cost", "--reps", reps],
        ["bench.watch", "--reps", reps, "--sink", "postgres", "--no-journal"],
        ["bench.backfill"],
    ]
    for part in parts:
        print(f"$ python -m {' '.join(part)}", flush=True)
        subprocess.run([sys.executable, "-m", *part], check=True)


if __name__ == "__main__":
    main()
