"""Mixed-workload benchmark (issue 13): tickets, schedule entries with assignees and project tasks
through the full path of the installed ``cdc watch --once``, against pg_recvlogical on identical
slot content.

The application-shaped history is written before any slot exists, so it reaches the derivers
through the state bootstrap: 20 technicians in 4 teams of 5, each with a ``resources`` row of
``max_daily_capacity = 8`` (a team's limit is 40 h a day, so capacity is checked on every
booking); ``--entries`` schedule entries (default 3,000; 1–2 assignees of one team, 1–3 h, spread
over 61 UTC days so that a team-day holds ~37 h, just under its limit) and ``--tasks`` project
tasks (default 3,000) in 20 projects, each with a phase and a board of four status columns (the
last one closed). Then the server-side procedure ``bench_mixed`` runs ``--ntx`` transactions of
``--per`` application writes each, cycling through ten writes:

* 3 × a ticket's status and assignee changed (``updateTicket``: one row);
* 2 × a schedule entry booked (``addScheduleEntry``: the entry, then 1 or 2 assignee rows; every
  other one an appointment on a ticket, the rest ad hoc);
* 2 × the oldest entry deleted (its assignee rows cascade), so the booking history stays at
  ``--entries`` and bookings keep crossing and leaving the daily limits;
* 1 × an entry rescheduled (``updateScheduleEntry``: start and end moved by 1–2 days);
* 2 × a task dragged into the board's next column (``updateTaskStatus``).

That is 1.6 row changes per write on average (16 per cycle of ten): the defaults 2,500 × 50
give 200,000 row changes. Every other transaction carries a ``cdc.context`` message (the
writer's opt-in actor). Consumers, timing and the table are those of :mod:`bench.watch`: one
slot per consumer created at the same position, ``cdc watch --once --sink X`` (default
``discard`` and the default Postgres outbox, which goes last and is emptied before every
repetition) and pg_recvlogical over the same publication, wall time from process start to exit,
medians of ``--reps``, the consumer's and its walsender's CPU, peak RSS from ``wait4``.
``--profile`` adds one cProfile run of an in-process ``run_watch`` (into the last ``--sink``).
Results go to ``bench/results/mixed-<ntx>x<per>.json``.

Where the time goes (2026-12-06, py-spy of the installed command through ``BENCH_WRAP``, the
loop's thread, ``--batch-events 20000``, after the row images got cheaper): the derivers ~35 %
(capacity ~17 %, scheduling ~9 %), building and validating envelopes ~24 % (pydantic ~8.5 %),
applying the reference state ~13 %, recording the journal ~7 %, serialising and handing over
batches ~7 %, reading, decoding and assembling the rest. Flat: no one part holds the factor the
ratio targets need. The loop also waited ~60 ms a batch for the batch in flight, whose commit
waited for the interpreter's lock after each round trip; since the watcher lowered the switch
interval (cdc.watch ``SWITCH_INTERVAL_S``) it hardly waits: its wall time is within ~10 % of its
CPU time (9.27 s of CPU in 10.04 s into discard, 9.90 s in 10.60 s into the outbox, ``make bench``
of 2026-12-06).

    python -m bench.mixed --reps 3 [--ntx 2500 --per 50] [--sink discard --sink postgres] [--profile] [--no-journal]
                          [--batch-events N]
    BENCH_WRAP="py-spy record --idle --format raw -o /tmp/watch.raw --" python -m bench.mixed --reps 1
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
import sys
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
from cdc.state import make_bootstrap_hook
from derivers import default_derivers

from .run import RESULTS, SETUP_SQL, batch_flag, profiled_options, recvlogical_argv
from .watch import timed

#: Row changes per cycle of ten writes (3 tickets, 2 × (1 entry + 1.5 assignees) booked,
#: 2 × (1 entry + 1.5 assignees) deleted, 1 reschedule, 2 tasks).
ROWS_PER_CYCLE = 16

MIXED_SQL = """
-- a UUID (version 4 shaped) from a name and a number, so every row's id is known to the procedure
CREATE FUNCTION bench_uuid(kind text, n bigint) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
  SELECT (substr(h, 1, 12) || '4' || substr(h, 14, 3) || '8' || substr(h, 18, 15))::uuid
    FROM md5(kind || ':' || n) AS h
$$;

CREATE FUNCTION bench_tech(n bigint) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
  SELECT bench_uuid('user', n % 20)
$$;

INSERT INTO users (tenant, user_id, username, hashed_password, email, user_type, first_name, last_name)
SELECT '11111111-1111-4111-8111-111111111111', bench_uuid('user', u), 'tech' || u, 'x',
       'tech' || u || '@msp.test', 'internal', 'Tech', 'No. ' || u
  FROM generate_series(0, 19) u;
INSERT INTO teams (tenant, team_id, team_name, manager_id)
SELECT '11111111-1111-4111-8111-111111111111', bench_uuid('team', t), 'Team ' || t, bench_uuid('user', t * 5)
  FROM generate_series(0, 3) t;
INSERT INTO team_members (tenant, team_id, user_id)
SELECT '11111111-1111-4111-8111-111111111111', bench_uuid('team', u / 5), bench_uuid('user', u)
  FROM generate_series(0, 19) u;
INSERT INTO resources (tenant, user_id, max_daily_capacity, max_weekly_capacity)
SELECT '11111111-1111-4111-8111-111111111111', bench_uuid('user', u), 8, 40 FROM generate_series(0, 19) u;

INSERT INTO statuses (tenant, status_id, name, status_type, item_type, order_number, is_closed) VALUES
  ('11111111-1111-4111-8111-111111111111', bench_uuid('pstatus', 1), 'Active', 'project', 'project', 1, false),
  ('11111111-1111-4111-8111-111111111111', bench_uuid('tstatus', 1), 'To Do', 'project_task', 'project_task', 1, false),
  ('11111111-1111-4111-8111-111111111111', bench_uuid('tstatus', 2), 'Doing', 'project_task', 'project_task', 2, false),
  ('11111111-1111-4111-8111-111111111111', bench_uuid('tstatus', 3), 'Review', 'project_task', 'project_task', 3, false);
INSERT INTO standard_statuses (standard_status_id, name, item_type, display_order, is_closed)
  VALUES (bench_uuid('sstatus', 1), 'Done', 'project_task', 9, true);
INSERT INTO projects (tenant, project_id, project_name, status, wbs_code, client_id, project_number)
SELECT '11111111-1111-4111-8111-111111111111', bench_uuid('project', p), 'Project ' || p,
       bench_uuid('pstatus', 1), p::text, '22222222-2222-4222-8222-222222222222', 'PRJ-' || p
  FROM generate_series(0, 19) p;
INSERT INTO project_phases (tenant, phase_id, project_id, phase_name, status, order_number, wbs_code)
SELECT '11111111-1111-4111-8111-111111111111', bench_uuid('phase', p), bench_uuid('project', p), 'Build',
       'active', 1, p || '.1'
  FROM generate_series(0, 19) p;
-- column k (1..4) of project p: bench_uuid('map', p * 4 + k); the fourth is the closed "Done"
INSERT INTO project_status_mappings (tenant, project_id, status_id, standard_status_id,
                                     project_status_mapping_id, custom_name, display_order, is_standard)
SELECT '11111111-1111-4111-8111-111111111111', bench_uuid('project', p),
       CASE WHEN k < 4 THEN bench_uuid('tstatus', k) END, CASE WHEN k = 4 THEN bench_uuid('sstatus', 1) END,
       bench_uuid('map', p * 4 + k), NULL, k, k = 4
  FROM generate_series(0, 19) p, generate_series(1, 4) k;

-- entry n: team n % 4, day (7n) % 61 from 2026-03-02, 08:00 + n % 9 h, 1–3 h, 1 + n % 2 assignees
CREATE PROCEDURE bench_book(n bigint) LANGUAGE plpgsql AS $$
DECLARE
  t int := n % 4;
  at0 timestamptz := timestamptz '2026-03-02 08:00Z' + make_interval(days => ((7 * n) % 61)::int, hours => (n % 9)::int);
BEGIN
  INSERT INTO schedule_entries (tenant, entry_id, title, work_item_id, scheduled_start, scheduled_end, status,
                                work_item_type)
  VALUES ('11111111-1111-4111-8111-111111111111', bench_uuid('entry', n), 'Onsite visit ' || n,
          CASE WHEN n % 2 = 0 THEN (SELECT ticket_id FROM tickets WHERE ticket_number = 'B' || (n % 1000 + 1)) END,
          at0, at0 + make_interval(hours => (1 + n % 3)::int), 'scheduled',
          CASE WHEN n % 2 = 0 THEN 'ticket' ELSE 'ad_hoc' END);
  INSERT INTO schedule_entry_assignees (tenant, entry_id, user_id)
  SELECT '11111111-1111-4111-8111-111111111111', bench_uuid('entry', n), bench_uuid('user', t * 5 + (n + a) % 5)
    FROM generate_series(0, (n % 2)::int) a;
END $$;

CREATE PROCEDURE bench_history(entries int, tasks int) LANGUAGE plpgsql AS $$
DECLARE n int;
BEGIN
  FOR n IN 1..entries LOOP
    CALL bench_book(n);
  END LOOP;
  INSERT INTO project_tasks (tenant, task_id, phase_id, task_name, assigned_to, wbs_code,
                             project_status_mapping_id, order_key)
  SELECT '11111111-1111-4111-8111-111111111111', bench_uuid('task', m), bench_uuid('phase', m % 20),
         'Task ' || m, bench_tech(m), (m % 20) || '.1.' || m, bench_uuid('map', (m % 20) * 4 + 1 + m % 3), 'a' || m
    FROM generate_series(1, tasks) m;
END $$;

-- ntx transactions of per writes; write u (counted across calls from start0) is of kind u % 10
CREATE PROCEDURE bench_mixed(ntx int, per int, start0 bigint, entries int, tasks int) LANGUAGE plpgsql AS $$
DECLARE
  i int; j int; u bigint; kind int; q bigint; n bigint; m bigint; p int;
BEGIN
  FOR i IN 0..ntx - 1 LOOP
    IF i % 2 = 1 THEN
      PERFORM pg_logical_emit_message(true, 'cdc.context',
                                      '{"actorUserId": "' || bench_tech(i) || '"}');
    END IF;
    FOR j IN 0..per - 1 LOOP
      u := start0 + i::bigint * per + j;
      kind := u % 10;
      q := (u / 10) * 2 + (kind % 2);  -- the cycle's first or second booking / deletion
      IF kind IN (0, 5, 8) THEN  -- a ticket: the other status, another technician
        UPDATE tickets
           SET status_id = CASE WHEN status_id = '66666666-6666-4666-8666-666666666661'
                                THEN '66666666-6666-4666-8666-666666666662'::uuid
                                ELSE '66666666-6666-4666-8666-666666666661'::uuid END,
               assigned_to = bench_tech(u + u / 1000), updated_at = now()
         WHERE tenant = '11111111-1111-4111-8111-111111111111' AND ticket_number = 'B' || (u % 1000 + 1);
      ELSIF kind IN (1, 2) THEN  -- a booking: entries + q + 1 (1..entries are the history)
        CALL bench_book(entries + q + 1);
      ELSIF kind IN (3, 4) THEN  -- the oldest entry goes, its assignees cascade
        DELETE FROM schedule_entries
         WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = bench_uuid('entry', q + 1);
      ELSIF kind = 6 THEN  -- a live entry moved by -2, -1, +1 or +2 days
        n := (u / 10) * 2 + 3 + ((u / 10) * 7919) % entries;
        UPDATE schedule_entries
           SET scheduled_start = scheduled_start + make_interval(days => (ARRAY[-2, -1, 1, 2])[(u % 4)::int + 1]),
               scheduled_end = scheduled_end + make_interval(days => (ARRAY[-2, -1, 1, 2])[(u % 4)::int + 1]),
               updated_at = now()
         WHERE tenant = '11111111-1111-4111-8111-111111111111' AND entry_id = bench_uuid('entry', n);
      ELSE  -- kinds 7, 9: a task dragged into its board's next column (Done → To Do again)
        m := (u * 31) % tasks + 1;
        p := m % 20;
        UPDATE project_tasks
           SET project_status_mapping_id = CASE project_status_mapping_id
                 WHEN bench_uuid('map', p * 4 + 1) THEN bench_uuid('map', p * 4 + 2)
                 WHEN bench_uuid('map', p * 4 + 2) THEN bench_uuid('map', p * 4 + 3)
                 WHEN bench_uuid('map', p * 4 + 3) THEN bench_uuid('map', p * 4 + 4)
                 ELSE bench_uuid('map', p * 4 + 1) END,
               order_key = 'b' || u, updated_at = now()
         WHERE tenant = '11111111-1111-4111-8111-111111111111' AND task_id = bench_uuid('task', m);
      END IF;
    END LOOP;
    COMMIT;
  END LOOP;
END $$;
"""


def row_changes(first: int, count: int) -> int:
    """The row changes of writes ``first`` .. ``first + count - 1`` (an entry booked or deleted is
    its row and its 1 + n % 2 assignee rows)."""
    total = 0
    for u in range(first, first + count):
        kind, q = u % 10, (u // 10) * 2 + (u % 10) % 2
        if kind in (1, 2, 3, 4):
            n = q + 1  # the deleted entry; a booked one is entries + q + 1, of the same parity
            total += 2 + n % 2
        else:
            total += 1
    return total


def cdc_watch_argv(
    dsn: str, slot: str, sink: str, journal: bool = True, batch_events: int | None = None
) -> list[str]:
    # BENCH_WRAP runs the installed command under a profiler, e.g.
    # BENCH_WRAP="py-spy record --format raw -o /tmp/watch.raw --"
    return [
        *shlex.split(os.environ.get("BENCH_WRAP", "")),
        str(Path(sys.executable).with_name("cdc")),
        "watch",
        "--dsn",
        dsn,
        "--slot",
        slot,
        "--once",
        "--sink",
        sink,
        "--heartbeat-interval",
        "60",
        *batch_flag(batch_events),
        *([] if journal else ["--no-journal"]),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ntx", type=int, default=2500)
    ap.add_argument("--per", type=int, default=50, help="application writes per transaction")
    ap.add_argument("--entries", type=int, default=3000, help="schedule entries of history")
    ap.add_argument("--tasks", type=int, default=3000, help="project tasks of history")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--batch-events",
        type=int,
        default=None,
        help="the watchers' --batch-events [default: the watcher's own, as installed]",
    )
    ap.add_argument("--no-journal", action="store_true", help="the watchers with the change journal off")
    ap.add_argument(
        "--sink",
        action="append",
        help="a `cdc watch --sink` spec to time (repeatable; default: discard and postgres)",
    )
    args = ap.parse_args()
    if args.entries % 2:
        ap.error("--entries must be even (a booking and the deletion it pairs with share a parity)")
    sinks: list[str] = sorted(
        dict.fromkeys(args.sink or ["discard", "postgres"]), key=lambda s: s == "postgres"
    )
    console = Console(width=130)
    root = Path(__file__).resolve().parent.parent
    for package in ("cdc", "catalog", "derivers"):
        compileall.compile_dir(root / package, quiet=1)
    writes = args.ntx * args.per
    samples: dict[str, list[tuple[float, float, float, float, float]]] = {"pg_recvlogical": []}
    off = ", journal off" if args.no_journal else ""
    samples.update({f"cdc watch ({sink}{off})": [] for sink in sinks})
    delivered: dict[str, list[int]] = {f"cdc watch ({sink}{off})": [] for sink in sinks}
    rows = 0
    with LocalPostgres(settings={"wal_sender_timeout": "60s", "max_wal_size": "4GB"}) as pg:
        dsn = pg.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_sql())
            conn.execute(SETUP_SQL)
            conn.execute(MIXED_SQL)
            conn.execute("CALL bench_history(%s, %s)", (args.entries, args.tasks))
        for rep in range(args.reps + (1 if args.profile else 0)):
            profiling = args.profile and rep == args.reps
            slot, rslot = f"m{rep}", f"r{rep}"
            wslots = {} if profiling else {sink: f"m{rep}_{i}" for i, sink in enumerate(sinks)}
            t0 = time.perf_counter()
            for s in [slot] if profiling else wslots.values():
                setup(
                    dsn,
                    slot=s,
                    publication="cdc_events",
                    tables=DEFAULT_TABLES,
                    bootstrap=make_bootstrap_hook(default_derivers()),
                )
            setup_s = time.perf_counter() - t0
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (rslot,))
                if conn.execute("SELECT to_regclass('cdc.outbox')").fetchone() != (None,):
                    conn.execute("TRUNCATE cdc.outbox")  # every repetition starts from an empty one
                t0 = time.perf_counter()
                conn.execute(
                    "CALL bench_mixed(%s, %s, %s, %s, %s)",
                    (args.ntx, args.per, rep * writes, args.entries, args.tasks),
                )
                load_s = time.perf_counter() - t0
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                assert row is not None
                endpos = str(row[0])
            rows = row_changes(rep * writes, writes)
            if profiling:
                from cdc.sinks import open_sink
                from cdc.watch import run_watch

                prof = cProfile.Profile()
                t0 = time.perf_counter()
                prof.runcall(
                    run_watch,
                    profiled_options(dsn, slot, journal=not args.no_journal, batch_events=args.batch_events),
                    open_sink(sinks[-1]),  # the last --sink given
                    default_derivers(),
                )
                console.print(f"profiled run into {sinks[-1]}: {time.perf_counter() - t0:.2f} s")
                if os.environ.get("PROFILE_OUT"):  # the raw profile, for pstats or snakeviz
                    prof.dump_stats(os.environ["PROFILE_OUT"])
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats(
                    os.environ.get("PROFILE_SORT", "tottime")
                ).print_stats(int(os.environ.get("PROFILE_LINES", "25")))
                console.print(buf.getvalue())
                continue
            r_s, r_rss, _, r_cpu, r_ws, _ = timed(recvlogical_argv(dsn, rslot, endpos), dsn, rslot)
            samples["pg_recvlogical"].append((r_s, r_rss, r_cpu, r_ws, 0.0))
            line = (
                f"rep {rep + 1}: {rows:,} row changes written in {load_s:.1f} s (slots {setup_s:.1f} s); "
                f"recvlogical {r_s:.2f} s (its walsender {r_ws:.2f} s CPU)"
            )
            for sink, wslot in wslots.items():
                argv = cdc_watch_argv(
                    dsn, wslot, sink, journal=not args.no_journal, batch_events=args.batch_events
                )
                w_s, w_rss, out, w_cpu, w_ws, w_store = timed(argv, dsn, wslot)
                found = re.search(rb"delivered (\d+) events", out)
                assert found is not None, out[-400:]
                name = f"cdc watch ({sink}{off})"
                delivered[name].append(int(found.group(1)))
                samples[name].append((w_s, w_rss, w_cpu, w_ws, w_store))
                line += (
                    f"; {sink} {w_s:.2f} s, {int(found.group(1)):,} events ({w_cpu:.2f} s CPU, "
                    f"its walsender {w_ws:.2f} s, its store backend {w_store:.2f} s CPU)"
                )
            console.print(line)
            with psycopg.connect(dsn, autocommit=True) as conn:
                for s in [rslot, *wslots.values()]:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (s,))
                conn.execute("CHECKPOINT")
    if not args.reps:
        return
    report(console, args, samples, delivered, rows)


def report(
    console: Console,
    args: argparse.Namespace,
    samples: dict[str, list[tuple[float, float, float, float, float]]],
    delivered: dict[str, list[int]],
    rows: int,
) -> None:
    base = statistics.median(s[0] for s in samples["pg_recvlogical"])
    table = Table(
        title=(
            f"mixed workload: {args.ntx} × {args.per} writes ({rows:,} row changes per repetition; "
            f"history {args.entries} entries, {args.tasks} tasks), median of {args.reps}"
        )
    )
    columns = (
        "consumer",
        "median s",
        "ratio",
        "events",
        "events/s",
        "rows/s",
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
        events = delivered[name][-1] if name in delivered else 0
        eps = events / med if events else 0
        rss = max(s[1] for s in ss)
        table.add_row(
            name,
            f"{med:.2f}",
            f"{med / base:.2f}x",
            f"{events:,}" if events else "-",
            f"{eps:,.0f}" if eps else "-",
            f"{rows / med:,.0f}",
            f"{cpu:.2f}",
            f"{ws:.2f}",
            f"{store:.2f}" if store else "-",
            f"{rss:.0f}",
        )
        out_rows.append(
            {
                "consumer": name,
                "median_s": med,
                "ratio": med / base,
                "row_changes": rows,
                "events": delivered.get(name, []),
                "events_per_s": eps,
                "rows_per_s": rows / med,
                "cpu_s": cpu,
                "walsender_cpu_s": ws,
                "store_backend_cpu_s": store,
                "peak_rss_mb": rss,
                "samples_s": [s[0] for s in ss],
                "batch_events": args.batch_events,  # None: the watcher's own
            }
        )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"mixed-{args.ntx}x{args.per}{'-nojournal' if args.no_journal else ''}.json").write_bytes(
        orjson.dumps(out_rows, option=orjson.OPT_INDENT_2)
    )


if __name__ == "__main__":
    main()
