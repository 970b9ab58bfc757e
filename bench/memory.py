"""Peak resident memory of ``cdc watch --once --sink discard`` through ONE huge transaction.

A throwaway Postgres gets ``--rows`` tickets, the slot is made (``cdc setup``), then one
``UPDATE`` changes the status of every ticket in a single transaction, and the watcher goes
through it as a subprocess; its peak RSS comes from ``wait4`` (the kernel's ``ru_maxrss``).
``--as-limit-mb`` runs it under an address-space limit as well (``RLIMIT_AS``).

    python -m bench.memory --rows 1000000
    python -m bench.memory --rows 200000 --as-limit-mb 768
    CDC_IMPL=python python -m bench.memory --rows 200000      # the pure-Python decoder
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time

import psycopg
from rich.console import Console

from cdc.localpg import LocalPostgres
from cdc.sample import schema_sql

from .run import watcher_env

T = "11111111-1111-4111-8111-111111111111"
OPEN = "66666666-6666-4666-8666-666666666661"
WORKING = "66666666-6666-4666-8666-666666666662"
SEED = f"""
INSERT INTO tenants (tenant, client_name, email) VALUES ('{T}', 'Memory', 'm@m.test');
INSERT INTO clients (tenant, client_id, client_name) VALUES ('{T}', '22222222-2222-4222-8222-222222222222', 'C');
INSERT INTO statuses (tenant, status_id, name, status_type, order_number, is_closed) VALUES
  ('{T}', '{OPEN}', 'Open', 'ticket', 1, false), ('{T}', '{WORKING}', 'Working', 'ticket', 2, false);
INSERT INTO tickets (tenant, ticket_number, title, status_id, client_id, entered_by, entered_at, updated_at,
                     itil_priority_level, board_id, priority_id, source)
SELECT '{T}', 'M' || g, 'Ticket ' || g, '{OPEN}', '22222222-2222-4222-8222-222222222222', gen_random_uuid(),
       now(), now(), 3, gen_random_uuid(), gen_random_uuid(), 'email'
  FROM generate_series(1, {{rows}}) g
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--as-limit-mb", type=int, default=0, help="RLIMIT_AS of the watcher (0: none)")
    args = ap.parse_args()
    console = Console()
    cdc = [sys.executable, "-m", "cdc.cli"]
    with LocalPostgres() as pg:
        dsn = pg.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_sql())  # type: ignore[call-overload]
            conn.execute(SEED.format(rows=int(args.rows)))  # type: ignore[call-overload]
        subprocess.run([*cdc, "setup", "--dsn", dsn], check=True, capture_output=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"UPDATE tickets SET status_id = '{WORKING}', updated_at = now()")  # type: ignore[call-overload]

        def limit() -> None:
            if args.as_limit_mb:
                cap = args.as_limit_mb << 20
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

        with tempfile.TemporaryFile() as err:
            started = time.monotonic()
            proc = subprocess.Popen(
                # BENCH_WRAP: a profiler, as in bench.mixed (its RSS is then not the watcher's)
                [
                    *shlex.split(os.environ.get("BENCH_WRAP", "")),
                    *cdc,
                    "watch",
                    "--once",
                    "--sink",
                    "discard",
                    "--dsn",
                    dsn,
                ],
                env=watcher_env(),
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=limit,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.monotonic() - started
            err.seek(0)
            text = err.read().decode(errors="replace")
    found = re.search(r"delivered (\d+) events", text)
    console.print(
        f"{args.rows:,}-row transaction (CDC_IMPL={os.environ.get('CDC_IMPL', '') or 'default'}"
        f"{f', RLIMIT_AS {args.as_limit_mb} MB' if args.as_limit_mb else ''}): "
        f"exit {os.waitstatus_to_exitcode(status)}, {found.group(1) if found else '?'} events, "
        f"{seconds:.0f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MB"
    )
    if os.waitstatus_to_exitcode(status) != 0:
        console.print(text[-2000:], markup=False)


if __name__ == "__main__":
    main()
