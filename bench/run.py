"""Decode benchmark: the project's typed path and `cdc tail` against pg_recvlogical.

For each scenario and repetition, one logical slot per consumer is created at the same
position, the workload runs once (server-side loops of single-row UPDATEs on a table
with REPLICA IDENTITY FULL), and then each consumer drains its own slot — so every
consumer sees byte-identical content — up to the WAL position read after the workload.
Wall time is measured from process start to exit for every consumer alike (startup
included), peak RSS with ``wait4``'s rusage of that very child.  Consumers run in a
rotating order.  Medians and ratios to pg_recvlogical are printed and written to
``bench/results/decode.json``.

    make bench                    # defaults: 5 repetitions
    python -m bench.run --reps 7 --only narrow-200x1000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import psycopg
from rich.console import Console
from rich.table import Table

from cdc.localpg import LocalPostgres, find_bindir
from cdc.sample import schema_sql

if TYPE_CHECKING:
    from cdc.watch import WatchOptions

RESULTS = Path(__file__).parent / "results"

SETUP_SQL = """
CREATE TABLE bench6 (id int PRIMARY KEY, a int NOT NULL, b text, c uuid, d timestamptz, e numeric);
ALTER TABLE bench6 REPLICA IDENTITY FULL;
INSERT INTO bench6 SELECT g, 0, 'row ' || g, gen_random_uuid(), now(), g * 1.5 FROM generate_series(1, 1000) g;
ALTER TABLE tickets REPLICA IDENTITY FULL;
CREATE PUBLICATION bench_narrow FOR TABLE bench6;
CREATE PUBLICATION bench_tickets FOR TABLE tickets;

INSERT INTO tenants (tenant, client_name, email) VALUES ('11111111-1111-4111-8111-111111111111', 'Bench', 'b@b.test');
INSERT INTO clients (tenant, client_id, client_name)
  VALUES ('11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222', 'C');
INSERT INTO statuses (tenant, status_id, name, status_type, order_number, is_closed) VALUES
  ('11111111-1111-4111-8111-111111111111', '66666666-6666-4666-8666-666666666661', 'Open', 'ticket', 1, false),
  ('11111111-1111-4111-8111-111111111111', '66666666-6666-4666-8666-666666666662', 'Working', 'ticket', 2, false);
INSERT INTO tickets (tenant, ticket_number, title, url, status_id, client_id, entered_by, entered_at, updated_at,
                     attributes, email_metadata, itil_priority_level, board_id, priority_id, source)
SELECT '11111111-1111-4111-8111-111111111111', 'B' || g, 'Ticket number ' || g || ' about a printer',
       'https://psa.example/t/' || g, '66666666-6666-4666-8666-666666666661',
       '22222222-2222-4222-8222-222222222222', gen_random_uuid(), now(), now(),
       '{"sla": {"tier": "gold"}, "tags": ["a", "b"]}', '{"messageId": "<x@y>"}', 3,
       gen_random_uuid(), gen_random_uuid(), 'email'
  FROM generate_series(1, 1000) g;

CREATE PROCEDURE bench_narrow(ntx int, per int) LANGUAGE plpgsql AS $$
DECLARE i int; j int;
BEGIN
  FOR i IN 0..ntx - 1 LOOP
    FOR j IN 1..per LOOP
      UPDATE bench6 SET a = a + 1, d = now() WHERE id = ((i * per + j - 1) % 1000) + 1;
    END LOOP;
    COMMIT;
  END LOOP;
END $$;

CREATE PROCEDURE bench_tickets(ntx int, per int) LANGUAGE plpgsql AS $$
DECLARE i int; j int;
BEGIN
  FOR i IN 0..ntx - 1 LOOP
    FOR j IN 1..per LOOP
      UPDATE tickets
         SET status_id = CASE WHEN status_id = '66666666-6666-4666-8666-666666666661'
                              THEN '66666666-6666-4666-8666-666666666662'::uuid
                              ELSE '66666666-6666-4666-8666-666666666661'::uuid END,
             assigned_to = gen_random_uuid(), updated_at = now()
       WHERE ticket_number = 'B' || (((i * per + j - 1) % 1000) + 1);
    END LOOP;
    COMMIT;
  END LOOP;
END $$;
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    procedure: str
    publication: str
    ntx: int
    per: int
    read_cols: str


SCENARIOS = [
    Scenario("narrow-200x1000", "bench_narrow", "bench_narrow", 200, 1000, "a,d"),
    Scenario("narrow-20000x10", "bench_narrow", "bench_narrow", 20000, 10, "a,d"),
    Scenario("tickets-200x1000", "bench_tickets", "bench_tickets", 200, 1000, "status_id,assigned_to"),
]


@dataclass
class Consumer:
    name: str
    argv: list[str]
    stdout_json: bool = False  # the consumer prints its own counts


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float
    changes: int | None = None


@dataclass
class Results:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)


def watcher_env() -> dict[str, str]:
    """This process's environment without the watcher's configuration (``CDC_*`` but
    ``CDC_IMPL``, the decoder's switch): a shell's ``CDC_BATCH_EVENTS`` or ``CDC_CONFIG`` must not
    change what a benchmark measures."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CDC_") or k == "CDC_IMPL"}


def batch_flag(events: int | None) -> list[str]:
    """The watcher's ``--batch-events`` when a benchmark is asked for one; none by default, so
    that the installed command runs with its own batch limits (what users run)."""
    return [] if events is None else ["--batch-events", str(events)]


def batch_option(events: int | None) -> dict[str, int]:
    """:func:`batch_flag` for an in-process ``WatchOptions``."""
    return {} if events is None else {"batch_max_events": events}


def profiled_options(dsn: str, slot: str, *, journal: bool, batch_events: int | None) -> WatchOptions:
    """The in-process watcher of a benchmark's ``--profile`` run: the options its ``cdc watch
    --once`` subprocesses get as flags."""
    from cdc.watch import WatchOptions

    return WatchOptions(
        dsn, slot=slot, once=True, heartbeat_interval=60, journal=journal, **batch_option(batch_events)
    )


def recvlogical_argv(dsn: str, slot: str, endpos: str, publication: str = "cdc_events") -> list[str]:
    """pg_recvlogical draining ``slot`` to /dev/null up to ``endpos`` (proto 1, the publication)."""
    recv = shutil.which("pg_recvlogical") or str(find_bindir() / "pg_recvlogical")
    head = [recv, "-d", dsn, "--slot", slot, "--start", "--no-loop", "-o", "proto_version=1"]
    return [*head, "-o", f"publication_names={publication}", "-f", "/dev/null", "-E", endpos]


def consumers(dsn: str, slot_prefix: str, sc: Scenario, endpos: str) -> list[Consumer]:
    py = sys.executable
    drain = [py, "-m", "bench.drain", dsn]
    return [
        Consumer(
            "pg_recvlogical",
            [*recvlogical_argv(dsn, f"{slot_prefix}_recv", endpos, sc.publication), "-s", "10"],
        ),
        Consumer("typed text", [*drain, f"{slot_prefix}_tt", sc.publication, endpos, "typed"], True),
        Consumer(
            "typed binary", [*drain, f"{slot_prefix}_tb", sc.publication, endpos, "typed", "--binary"], True
        ),
        Consumer(
            "typed text + read 2 cols",
            [*drain, f"{slot_prefix}_tr", sc.publication, endpos, "read2", "--cols", sc.read_cols],
            True,
        ),
        Consumer(
            "typed text, eager convert", [*drain, f"{slot_prefix}_te", sc.publication, endpos, "eager"], True
        ),
        Consumer(
            "cdc tail (JSON)",
            [
                py,
                "-m",
                "cdc.cli",
                "tail",
                "--dsn",
                dsn,
                "--slot",
                f"{slot_prefix}_tail",
                "--publication",
                sc.publication,
                "--endpos",
                endpos,
            ],
        ),
    ]


def slot_names(c: list[Consumer]) -> list[str]:
    return [x.argv[x.argv.index("--slot") + 1] if "--slot" in x.argv else x.argv[4] for x in c]


def run_one(c: Consumer) -> Sample:
    started = time.perf_counter()
    proc = subprocess.Popen(
        c.argv, stdout=subprocess.PIPE if c.stdout_json else subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    out = proc.stdout.read() if proc.stdout else b""
    _, status, rusage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode != 0:
        raise RuntimeError(f"{c.name} failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")
    changes = orjson.loads(out.splitlines()[-1])["changes"] if c.stdout_json else None
    return Sample(elapsed, rusage.ru_maxrss / 1024.0, changes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", action="append", default=[])
    args = ap.parse_args()
    console = Console()
    res = Results()
    with LocalPostgres(
        settings={"wal_sender_timeout": "60s", "max_wal_size": "4GB", "checkpoint_timeout": "30min"}
    ) as pg:
        dsn = pg.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_sql())  # type: ignore[call-overload]
            conn.execute(SETUP_SQL)  # type: ignore[call-overload]
        for sc in SCENARIOS:
            if args.only and sc.name not in args.only:
                continue
            for rep in range(args.reps):
                prefix = f"b{rep}"
                cons = consumers(dsn, prefix, sc, "0/0")
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for s in slot_names(cons):
                        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (s,))
                    t0 = time.perf_counter()
                    conn.execute(f"CALL {sc.procedure}({sc.ntx}, {sc.per})")  # type: ignore[call-overload]
                    load_s = time.perf_counter() - t0
                    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                    assert row is not None
                    endpos = str(row[0])
                cons = consumers(dsn, prefix, sc, endpos)
                order = cons[rep % len(cons) :] + cons[: rep % len(cons)]
                for c in order:
                    sample = run_one(c)
                    if sample.changes is not None and sample.changes != sc.ntx * sc.per:
                        raise RuntimeError(
                            f"{c.name} saw {sample.changes} changes, expected {sc.ntx * sc.per}"
                        )
                    res.samples.setdefault((sc.name, c.name), []).append(sample)
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for s in slot_names(cons):
                        conn.execute("SELECT pg_drop_replication_slot(%s)", (s,))
                    conn.execute("CHECKPOINT")
                console.print(f"{sc.name} rep {rep + 1}/{args.reps} done (workload {load_s:.1f} s)")
    report(console, res, args.reps)


def report(console: Console, res: Results, reps: int) -> None:
    table = Table(title=f"drain wall time, median of {reps} (ratio to pg_recvlogical)")
    for col in ("scenario", "consumer", "median s", "min s", "ratio", "rows/s", "peak RSS MB"):
        table.add_column(col)
    out: list[dict[str, object]] = []
    scen = {s.name: s for s in SCENARIOS}
    for (sname, cname), samples in res.samples.items():
        med = statistics.median(x.seconds for x in samples)
        base = statistics.median(x.seconds for x in res.samples[(sname, "pg_recvlogical")])
        rss = max(x.peak_rss_mb for x in samples)
        rows = scen[sname].ntx * scen[sname].per
        ratio = med / base
        table.add_row(
            sname,
            cname,
            f"{med:.2f}",
            f"{min(x.seconds for x in samples):.2f}",
            f"{ratio:.2f}x",
            f"{rows / med:,.0f}",
            f"{rss:.0f}",
        )
        out.append(
            {
                "scenario": sname,
                "consumer": cname,
                "median_s": med,
                "ratio": ratio,
                "rows_per_s": rows / med,
                "peak_rss_mb": rss,
                "samples_s": [x.seconds for x in samples],
            }
        )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decode.json").write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
