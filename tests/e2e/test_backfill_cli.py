"""`cdc backfill` and `cdc journal prune` as an operator runs them (the CLI as a subprocess).

* kill -9 in the middle of a backfill into a second outbox, a prune of the days up to its
  position, then `--resume ID`: the outbox holds exactly the live run's envelopes, in order
  (the batch the killed run had delivered but not recorded comes again and the outbox's unique
  ids absorb it); the summary table by event type is printed at the end; a resume with another
  sink, range or filter is refused;
* without history (the watcher ran with `--no-journal`): one line, exit 1;
* `cdc journal prune` with nothing past the horizon says so.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import orjson
import psycopg
import pytest

from cdc.journal import create_partition, partitions
from tests.environ import command_env
from tests.integration.test_backfill import other_db, outbox, watch_live, workload

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

__all__ = ["other_db"]  # the fixture, used below


def cdc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args],
        capture_output=True,
        text=True,
        env={**command_env(), **(env or {})},
        timeout=120,
    )


def test_kill_9_then_prune_then_resume_equals_an_uninterrupted_backfill(db_dsn: str, other_db: str) -> None:
    workload(db_dsn)
    watch_live(db_dsn)
    live = outbox(db_dsn)
    killed = cdc(
        "backfill",
        "--dsn",
        db_dsn,
        "--sink",
        other_db,
        env={"CDC_FAULT": "watch.after_checkpoint:2", "CDC_BATCH_TRANSACTIONS": "5"},
    )
    assert killed.returncode == -9, killed.stderr
    partial = outbox(other_db)
    assert 0 < len(partial) < len(live)
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT id, status, events FROM cdc.backfill_runs").fetchone()
        position = conn.execute("SELECT position::text FROM cdc.backfill_runs").fetchone()
    assert row is not None and row[1] == "running"  # killed outright: its lock went with it
    assert 0 < row[2] < len(partial)  # the second batch is in the sink, not in the run's position

    # the run goes on with its own range, filters and sink: other ones are refused
    for args, needle in (
        (("--sink", "jsonl:/dev/null"), f"backfill run {row[0]} delivers into "),
        (("--sink", other_db, "--since", "0/0"), "--since cannot change them"),
        (("--sink", other_db, "--event-type", "TICKET_CREATED"), "--event-type cannot change them"),
    ):
        refused = cdc("backfill", "--dsn", db_dsn, "--resume", str(row[0]), *args)
        assert refused.returncode == 1, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cdc: error: ") and needle in lines[0], lines

    # the days up to the run's position are pruned (a state snapshot there): it resumes all the same
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        create_partition(conn, "cdc", (datetime.now(UTC) - timedelta(days=3)).date())
        conn.execute(
            "UPDATE cdc.change_log SET commit_time = commit_time - interval '3 days' WHERE end_lsn <= %s::pg_lsn",
            position,
        )
    pruned = cdc("journal", "prune", "--dsn", db_dsn, "--retention-days", "2")
    assert pruned.returncode == 0 and pruned.stdout.startswith(
        f"slot cdc_events: state snapshot at {position[0]}"
    )

    resumed = cdc("backfill", "--dsn", db_dsn, "--sink", other_db, "--resume", str(row[0]))
    assert resumed.returncode == 0, resumed.stderr
    assert outbox(other_db) == live
    # the summary counts what the resumed run emitted: everything after the recorded position
    totals = [line.split() for line in resumed.stdout.splitlines() if "total" in line.split()]
    assert totals == [["│", "total", "│", str(len(live) - row[2]), "│"]]
    breached = sum(1 for e in live if orjson.loads(e)["eventType"] == "TICKET_SLA_STAGE_BREACHED")
    assert ["│", "TICKET_SLA_STAGE_BREACHED", "│", str(breached), "│"] in [
        line.split() for line in resumed.stdout.splitlines()
    ]
    assert f"run {row[0]}: replayed" in resumed.stdout
    with psycopg.connect(db_dsn) as conn:
        status = conn.execute("SELECT status FROM cdc.backfill_runs WHERE id = %s", (row[0],)).fetchone()
    assert status == ("done",)


def test_without_history_one_line_exit_1(db_dsn: str) -> None:
    workload(db_dsn)
    res = cdc("watch", "--dsn", db_dsn, "--once", "--no-journal")
    assert res.returncode == 0, res.stderr
    res = cdc("backfill", "--dsn", db_dsn, "--dry-run")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdc: error: slot cdc_events: the journal was off"), lines
    assert "—" in lines[0] and "Traceback" not in res.stderr


def test_journal_prune_says_when_nothing_is_past_the_horizon(db_dsn: str) -> None:
    workload(db_dsn)
    res = cdc("journal", "prune", "--dsn", db_dsn, "--retention-days", "3")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "nothing to prune: the journal holds no day older than 3 days"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--since", "yesterday"), "--since 'yesterday' is neither an LSN nor a timestamp"),
        (
            ("--until", "2026-01-02T03:04:05"),
            "--until '2026-01-02T03:04:05' is neither an LSN nor a timestamp",
        ),
        (("--deriver", "billing"), "unknown deriver billing"),
        (("--event-type", "TICKET_EXPLODED"), "unknown event type TICKET_EXPLODED"),
    ],
)
def test_bad_options_are_one_line_before_anything_connects(args: tuple[str, ...], needle: str) -> None:
    res = cdc("backfill", "--dsn", "host=/nonexistent-socket-dir", *args)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdc: error: ") and needle in lines[0], lines


def journal_three_days_old(dsn: str) -> date:
    """Every family's workload watched live, its journal rows then moved three days back (into
    a partition made for that day); returns the day."""
    workload(dsn)
    watch_live(dsn)
    old = (datetime.now(UTC) - timedelta(days=3)).date()
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_partition(conn, "cdc", old)
        conn.execute("UPDATE cdc.change_log SET commit_time = commit_time - interval '3 days'")
    return old


def test_journal_prune_takes_a_snapshot_then_drops_the_old_days(db_dsn: str) -> None:
    old = journal_three_days_old(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT max(end_lsn)::text FROM cdc.change_log").fetchone()
    assert row is not None
    res = cdc("journal", "prune", "--dsn", db_dsn, "--retention-days", "2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"slot cdc_events: state snapshot at {row[0]}",
        f"dropped {old.isoformat()} (slot cdc_events: "
        + res.stdout.split("(slot cdc_events: ", 1)[1].strip(),
    ]
    assert f" to {row[0]})" in res.stdout
    again = cdc("backfill", "--dsn", db_dsn, "--dry-run", "--since", row[0])
    assert again.returncode == 0, again.stderr  # from the snapshot: nothing after it, nothing emitted
    assert ["│", "total", "│", "0", "│"] in [line.split() for line in again.stdout.splitlines()], again.stdout


def test_journal_prune_while_a_backfill_reads_the_day_is_exit_3(db_dsn: str) -> None:
    """The drop waits for its lock 3 s at most (live journal writes would queue behind it); a
    reader holds it: one line, worth retrying, nothing dropped."""
    old = journal_three_days_old(db_dsn)
    with psycopg.connect(db_dsn) as reader:  # a backfill's replay: a read in an open transaction
        reader.execute("SELECT count(*) FROM cdc.change_log")
        res = cdc("journal", "prune", "--dsn", db_dsn, "--retention-days", "2")
        assert res.returncode == 3, res.stderr
        (line,) = res.stderr.strip().splitlines()
        assert line.startswith("cdc: error: ") and line.endswith(
            "— a backfill is reading the journal; try again later"
        )
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            assert old in [day for day, _ in partitions(conn, "cdc")]


def test_from_audit_log_stops_where_the_journal_begins_and_adds_nothing_on_a_rerun(
    db_dsn: str, other_db: str
) -> None:
    """History from before the watcher: the application's audit rows of March (the five rows of
    tests/integration/test_audit_history.py) go to a second outbox; the rows written after the
    slot's journal began (the workload's) are the live run's, and are not read by default."""
    from tests.integration.test_audit_history import EXPECTED, insert_rows

    workload(db_dsn)  # the slot, its journal and the application's rows of today
    insert_rows(db_dsn)  # audit rows of 2026-03-01, long before the journal began
    first = cdc("backfill", "--dsn", db_dsn, "--from-audit-log", "--sink", other_db)
    assert first.returncode == 0, first.stderr
    assert "where the journal of slot cdc_events begins" in first.stdout
    assert "what the application's audit log cannot give" in first.stdout
    assert "TICKET_MERGED" in first.stdout  # one of the types no audit row records
    assert [orjson.loads(e) for e in outbox(other_db)] == EXPECTED
    again = cdc("backfill", "--dsn", db_dsn, "--from-audit-log", "--sink", other_db)
    assert again.returncode == 0, again.stderr
    assert [orjson.loads(e) for e in outbox(other_db)] == EXPECTED  # the same keys: nothing added
    dry = cdc("backfill", "--dsn", db_dsn, "--from-audit-log", "--dry-run", "--event-type", "TICKET_CLOSED")
    assert dry.returncode == 0, dry.stderr
    assert ["│", "TICKET_CLOSED", "│", "1", "│"] in [line.split() for line in dry.stdout.splitlines()]
    assert "delivered nothing (dry run)" in dry.stdout
    past = cdc(
        "backfill", "--dsn", db_dsn, "--from-audit-log", "--dry-run", "--until", "2099-01-01T00:00:00Z"
    )
    assert past.returncode == 0, past.stderr
    assert "warning: --until is after" in past.stdout  # the audit rows of the live run's time


def test_from_audit_log_into_the_default_outbox(db_dsn: str) -> None:
    """The default sink, the outbox of the watched database, which only a store connection of the
    run's may write (as the journal's replay writes it)."""
    from tests.integration.test_audit_history import EXPECTED, insert_rows

    workload(db_dsn)
    insert_rows(db_dsn)
    res = cdc("backfill", "--dsn", db_dsn, "--from-audit-log")
    assert res.returncode == 0, res.stderr
    assert [orjson.loads(e) for e in outbox(db_dsn)] == EXPECTED


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--since", "0/16B3748"), "audit rows have no LSN"),
        (("--resume", "3"), "--from-audit-log reads no journal"),
    ],
)
def test_from_audit_log_refuses_what_only_a_journal_replay_takes(
    db_dsn: str, args: tuple[str, ...], needle: str
) -> None:
    res = cdc("backfill", "--dsn", db_dsn, "--from-audit-log", *args)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdc: error: ") and needle in lines[0], lines
    assert "--from-audit-log takes --since/--until as timestamps" in lines[0]  # the hint


def test_from_audit_log_without_a_journal_start_needs_until(db_dsn: str) -> None:
    """No journal in the database: nothing says where the live run began, so the audit rows up
    to now would duplicate its events under other keys."""
    res = cdc("backfill", "--dsn", db_dsn, "--from-audit-log", "--dry-run")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdc: error: slot cdc_events has no journal start"), lines
    assert "— give --until" in lines[0]


def test_a_journal_dsn_without_journal_tables_names_the_option(db_dsn: str, other_db: str) -> None:
    res = cdc("backfill", "--dsn", db_dsn, "--journal-dsn", other_db, "--dry-run")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no journal tables" in lines[0] and "point --journal-dsn at" in lines[0], (
        lines
    )


def test_event_type_deriver_max_rate_overlap_and_history_before_the_slot(db_dsn: str, other_db: str) -> None:
    """The options through the command line: --event-type and --deriver emit only what they name
    (the live run's bytes); --max-rate holds the run back (its closing log line says how often,
    never how long a test waited); a --since before the slot was created names the range it
    cannot replay; a second run into a sink over a range a running run covers is refused."""
    from cdc.backfill import BackfillOptions, resolve_range, start_run

    workload(db_dsn)
    watch_live(db_dsn)
    created = [e for e in outbox(db_dsn) if orjson.loads(e)["eventType"] == "TICKET_CREATED"]
    assert 2 <= len(created) <= 10  # --max-rate 5: a second or two
    res = cdc(
        "backfill",
        "--dsn",
        db_dsn,
        "--sink",
        other_db,
        "--event-type",
        "TICKET_CREATED",
        "--deriver",
        "tickets",
        "--max-rate",
        "5",
    )
    assert res.returncode == 0, res.stderr
    assert outbox(other_db) == created
    paced = [line for line in res.stderr.splitlines() if "--max-rate 5 events/s: held back" in line]
    assert len(paced) == 1 and int(paced[0].split("held back ")[1].split()[0]) >= 1, res.stderr
    dry = cdc("backfill", "--dsn", db_dsn, "--dry-run", "--deriver", "capacity")
    assert dry.returncode == 0, dry.stderr
    rows = [line.split() for line in dry.stdout.splitlines() if line.startswith("│")]
    assert {r[1] for r in rows} == {"CAPACITY_THRESHOLD_REACHED", "total"}

    with psycopg.connect(db_dsn) as conn:
        first = conn.execute(
            "SELECT from_lsn::text FROM cdc.journal_history WHERE kind = 'bootstrap'"
        ).fetchone()
    assert first is not None
    early = cdc("backfill", "--dsn", db_dsn, "--dry-run", "--since", "0/1")
    assert early.returncode == 1
    lines = early.stderr.strip().splitlines()
    assert len(lines) == 1 and f"the history from 0/1 to {first[0]} cannot be replayed" in lines[0], lines

    holder = psycopg.connect(db_dsn, autocommit=True)
    try:
        opts = BackfillOptions(db_dsn, slot="cdc_events", sink_label="jsonl:/dev/null")
        start_run(holder, opts, *resolve_range(holder, opts))  # a running run holds its lock here
        res = cdc("backfill", "--dsn", db_dsn, "--sink", "jsonl:/dev/null")
    finally:
        holder.close()
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "into the same sink is running over" in lines[0], lines
    assert "— wait for the other run to finish" in lines[0]
