"""`cdc watch` as an operator runs it: signals, reloads, the log lines, and no password anywhere.

Through the real CLI (a subprocess) and a real Postgres:

* SIGTERM in the middle of a ticket workload, with a batch pending: exit 0, that batch delivered,
  the checkpoint at the last delivered transaction's end LSN; a second `cdc watch --once` after
  the workload delivers the rest — one TICKET_CREATED per ticket written, no key twice;
* SIGHUP after the CDC_CONFIG file changed: the live settings are taken over and logged (a
  shorter progress interval shows at once), a setting that needs a restart is named, a broken
  file keeps the running configuration; `--log-format json` is one object per line throughout;
* the start, progress and exit-summary lines carry what an operator needs (text and json);
* a DSN with ``password=…`` and URIs with ``user:password@`` (the watched database and a sink
  that keeps failing, so retries and the final error are logged) never show the password, in
  either format.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from cdc.localpg import free_port
from tests.e2e.test_slot_safety import setup_ok, step
from tests.environ import command_env
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TENANT = "11111111-1111-4111-8111-111111111111"
TICKET_SQL = f"""
INSERT INTO tickets (tenant, ticket_id, ticket_number, title, status_id, board_id, client_id, priority_id,
                     entered_by, entered_at, itil_priority_level, source)
VALUES ('{TENANT}', %(id)s, %(number)s, 'Printer on fire',
        '66666666-6666-4666-8666-666666666661', '70707070-7070-4707-8707-707070707070',
        '22222222-2222-4222-8222-222222222222', '88888888-8888-4888-8888-888888888881',
        '33333333-3333-4333-8333-333333333333', now(), 3, 'ui');
INSERT INTO ticket_audit_logs (tenant, ticket_id, event_type, entity_type, actor_type, actor_user_id, source,
                               occurred_at)
VALUES ('{TENANT}', %(id)s, 'TICKET_CREATED', 'ticket', 'user', '33333333-3333-4333-8333-333333333333', 'ui',
        now());
"""
#: What one TICKET_SQL transaction derives (as the sample workload's create_ticket).
EVENTS_PER_TICKET = ("TICKET_CREATED", "TICKET_SLA_STAGE_ENTERED")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


class Watch:
    """`cdc watch` as a subprocess, its stderr read line by line as it comes."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdc.cli", "watch", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**command_env(), **(env or {})},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def records(self) -> list[dict[str, Any]]:
        """Every stderr line as a JSON object (each must be one)."""
        return [orjson.loads(line) for line in list(self.lines)]

    def wait_record(self, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            assert self.proc.poll() is None or found, "\n".join(self.lines)
            found[:] = [r for r in self.records() if predicate(r)][:1]
            return bool(found)

        assert wait_for(seen, timeout=timeout, interval=0.05), "\n".join(self.lines)
        return found[0]

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def seeded(db_dsn: str) -> str:
    step(db_dsn, "seed")
    setup_ok(db_dsn)
    return db_dsn


class Writer:
    """Tickets, one transaction each, until stopped; remembers their ids."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.ids: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    ticket = str(uuid.uuid4())
                    with conn.transaction():
                        for statement in TICKET_SQL.split(";")[:2]:
                            conn.execute(statement, {"id": ticket, "number": f"T-{len(self.ids) + 1}"})
                    self.ids.append(ticket)
                    time.sleep(0.005)
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert self.error is None, self.error


def outbox(dsn: str) -> list[tuple[str, str, str, str]]:
    """(idempotency key, event type, ticket id, source LSN) of every delivered event."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, event_type, envelope->'payload'->>'ticketId', envelope->'source'->>'lsn'"
            "  FROM cdc.outbox ORDER BY seq"
        ).fetchall()
    return [tuple(r) for r in rows]


def checkpoint_lsn(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT lsn::text FROM cdc.checkpoints WHERE slot_name = 'cdc_events'").fetchone()
    assert row is not None
    return str(row[0])


def one(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def lsn_value(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


# -- SIGTERM under load -----------------------------------------------------------------------------
BLOCKED_ON_OUTBOX = """
SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'cdc.outbox'::regclass"""


def test_sigterm_delivers_the_pending_batch_once_and_a_restart_delivers_the_rest(seeded: str) -> None:
    """The batch pending when SIGTERM arrives is the one the watcher is writing: the test holds
    a lock on the outbox until the signal is in, so that the signal lands mid-delivery."""
    dsn = seeded
    watch = Watch(
        *("--dsn", dsn, "--log-format", "json", "--progress-interval", "0.2", "--heartbeat-interval", "3600")
    )
    try:
        with Writer(dsn) as writer, psycopg.connect(dsn, autocommit=True) as locker:
            start = watch.wait_record(lambda r: r["msg"].startswith("watch started"))
            busy = watch.wait_record(
                lambda r: r["msg"].startswith("progress") and r["totals"]["transactions"] >= 10
            )
            with locker.transaction():
                locker.execute("LOCK TABLE cdc.outbox IN ACCESS EXCLUSIVE MODE")
                held = locker.execute("SELECT count(*) FROM cdc.outbox").fetchone()[0]  # type: ignore[index]
                assert wait_for(lambda: one(dsn, BLOCKED_ON_OUTBOX) == 1, timeout=20)
                watch.proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)  # the signal is in while the batch waits for the lock
            assert watch.finish() == 0, "\n".join(watch.lines)
            written_at_stop = len(writer.ids)
            wait_for(lambda: len(writer.ids) >= written_at_stop + 5, timeout=10)
        records = watch.records()  # every line an object
    finally:
        watch.kill()

    # the start line: version, slot, publication, sink, database (no password), resume position
    assert start["level"] == "INFO" and start["logger"] == "cdc.watch"
    assert {"ts", "slot", "lsn", "version", "publication", "sink", "database"} <= start.keys()
    assert start["slot"] == "cdc_events" and start["publication"] == "cdc_events"
    assert start["sink"].startswith("postgres")
    # a progress line: counts of the interval, rate and lag
    for key in ("transactions", "changes", "events", "events_per_s", "lag_bytes", "lsn", "slot", "totals"):
        assert key in busy, busy
    # two changes per ticket transaction (one more transaction: the start heartbeat's, no change)
    assert busy["transactions"] > 0 and busy["changes"] >= 2 * (busy["transactions"] - 1)

    stopping = [r for r in records if r["msg"].startswith("SIGTERM: stopping")]
    assert len(stopping) == 1, records
    summary = records[-1]
    assert summary["msg"].startswith("delivered ") and summary["reason"] == "stopped by SIGTERM", summary

    first = outbox(dsn)
    assert len(first) == summary["events"] > held > 0  # the batch that waited was delivered
    assert summary["transactions"] * len(EVENTS_PER_TICKET) >= len(first)
    # the checkpoint is the end LSN of the last delivered transaction, and nothing after it
    last_lsn = max(lsn_value(row[3]) for row in first)
    checkpoint_lsn_first = checkpoint_lsn(dsn)
    assert lsn_value(checkpoint_lsn_first) == last_lsn == lsn_value(summary["lsn"])
    # the last status update told the server (the slot may follow keepalives past the checkpoint)
    confirmed = one(
        dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cdc_events'"
    )
    assert lsn_value(confirmed) >= last_lsn

    again = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "watch", "--dsn", dsn, "--once", "--heartbeat-interval", "3600"],
        capture_output=True,
        text=True,
        timeout=120,
        env=command_env(),
    )
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines()[0].endswith(f"resuming after {checkpoint_lsn_first}"), again.stderr
    assert re.search(r"^delivered \d+ events from \d+ transactions", again.stderr.splitlines()[-1])
    both = outbox(dsn)
    assert both[: len(first)] == first and len(both) > len(first)  # the rest, after the first run's
    keys = [row[0] for row in both]
    assert len(set(keys)) == len(keys)  # none twice
    per_ticket: dict[str, list[str]] = {}
    for _, event_type, ticket, _ in both:
        per_ticket.setdefault(ticket, []).append(event_type)
    assert sorted(per_ticket) == sorted(writer.ids)  # every ticket written
    assert {tuple(types) for types in per_ticket.values()} == {tuple(EVENTS_PER_TICKET)}  # each once


def test_a_second_sigterm_exits_at_once_without_the_checkpoint(seeded: str) -> None:
    dsn = seeded
    watch = Watch("--dsn", dsn, "--heartbeat-interval", "3600")
    try:
        assert wait_for(lambda: any("watch started" in line for line in watch.lines), timeout=30)
        with psycopg.connect(dsn, autocommit=True) as locker, locker.transaction():
            locker.execute("LOCK TABLE cdc.outbox IN ACCESS EXCLUSIVE MODE")
            step(dsn, "create_ticket")
            assert wait_for(lambda: one(dsn, BLOCKED_ON_OUTBOX) == 1, timeout=20)
            watch.proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            watch.proc.send_signal(signal.SIGTERM)
            assert watch.finish(timeout=20) == 130, "\n".join(watch.lines)
    finally:
        watch.kill()
    assert watch.lines[-1].startswith("delivered 0 events from 2 transactions"), watch.lines
    assert watch.lines[-1].endswith("stopped at once by a second signal (no final checkpoint)")
    assert outbox(dsn) == []  # the batch that waited for the lock never committed
    again = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "watch", "--dsn", dsn, "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env=command_env(),
    )
    assert again.returncode == 0, again.stderr
    assert [row[1] for row in outbox(dsn)] == list(EVENTS_PER_TICKET)


# -- SIGHUP -----------------------------------------------------------------------------------------
def test_sighup_reloads_the_live_settings_from_the_config_file(seeded: str, tmp_path: Path) -> None:
    dsn = seeded
    config = tmp_path / "cdc.toml"
    config.write_text('progress_interval_s = 3600\nlog_level = "info"\n')
    watch = Watch("--dsn", dsn, "--log-format", "json", env={"CDC_CONFIG": str(config)})
    try:
        watch.wait_record(lambda r: r["msg"].startswith("watch started"))
        # an hour between progress lines: a ticket now shows no progress line
        config.write_text(
            'progress_interval_s = 0.2\nlog_level = "debug"\nbatch_events = 7\nslot = "elsewhere"\n'
        )
        watch.proc.send_signal(signal.SIGHUP)
        reloaded = watch.wait_record(lambda r: r["msg"].startswith("configuration reloaded"))
        assert reloaded["changed"] == {
            "log_level": ["info", "debug"],
            "progress_interval_s": [3600.0, 0.2],
            "batch_events": [5000, 7],
        }, reloaded
        assert "log_level info -> debug" in reloaded["msg"] and "batch_events 5000 -> 7" in reloaded["msg"]
        restart = watch.wait_record(lambda r: "only after a restart" in r["msg"])
        assert restart["level"] == "WARNING" and restart["restart_needed"] == ["slot"]
        step(dsn, "create_ticket")
        progress = watch.wait_record(lambda r: r["msg"].startswith("progress"), timeout=20)
        assert progress["transactions"] >= 1

        config.write_text("progress_interval_s = [\n")  # broken: the running configuration stays
        watch.proc.send_signal(signal.SIGHUP)
        failed = watch.wait_record(lambda r: r["msg"].startswith("configuration reload failed"))
        assert failed["level"] == "ERROR" and "cdc.toml is not valid TOML" in failed["msg"]
        assert watch.proc.poll() is None  # still running

        watch.proc.send_signal(signal.SIGINT)
        assert watch.finish() == 0, "\n".join(watch.lines)
    finally:
        watch.kill()
    records = watch.records()
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    assert records[-1]["reason"] == "stopped by SIGINT" and records[-1]["events"] >= 1


# -- the text format ----------------------------------------------------------------------------------
def test_text_lines_start_progress_and_summary(seeded: str) -> None:
    dsn = seeded
    step(seeded, "create_ticket")
    res = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "watch", "--dsn", dsn, "--once", "--progress-interval", "0.1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=command_env(),
    )
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert TS.match(lines[0]) and " INFO cdc.watch: watch started: cdc " in lines[0], lines
    assert "slot cdc_events, publication cdc_events, sink postgres" in lines[0]
    assert lines[0].endswith("resuming at the slot's position (no checkpoint yet)")
    assert all(TS.match(line) for line in lines[:-1]), lines
    summary = lines[-1]  # bare, for grep
    assert re.match(
        r"delivered 2 events from \d+ transactions \(0 timers fired, 0 dead letters\) in [\d.]+ s; "
        r"checkpoint [0-9A-F]+/[0-9A-F]+; --once: caught up to [0-9A-F]+/[0-9A-F]+$",
        summary,
    ), summary


# -- passwords ---------------------------------------------------------------------------------------
@pytest.fixture
def sink_down() -> Iterator[str]:
    """A Redis sink URI with a password, at a port nothing listens on: every write fails."""
    yield f"redis://watcher:sink-Secret-2@127.0.0.1:{free_port()}/0?retry_give_up=1&retry_initial=0.2"


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("form", ["keyword", "uri"])
def test_no_password_in_any_line(seeded: str, sink_down: str, fmt: str, form: str) -> None:
    params = conninfo_to_dict(seeded)
    if form == "keyword":
        dsn = f"{seeded} password='dsn Secret-1'"
    else:
        dsn = (
            f"postgresql://{params['user']}:dsn-Secret-1@{params['host']}:{params['port']}/{params['dbname']}"
        )
    step(seeded, "create_ticket")
    res = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "watch", "--dsn", dsn, "--once", "--sink", sink_down],
        capture_output=True,
        text=True,
        timeout=120,
        env={**command_env(), "CDC_LOG_FORMAT": fmt, "CDC_LOG_LEVEL": "debug"},
    )
    out = res.stdout + res.stderr
    assert res.returncode == 3, out  # the sink kept failing
    assert "Secret" not in out
    lines = res.stderr.strip().splitlines()
    if fmt == "json":
        records = [orjson.loads(line) for line in lines]
        start = next(r for r in records if r["msg"].startswith("watch started"))
        assert start["sink"].startswith("redis://watcher:***@127.0.0.1:")
        assert any(r["level"] == "WARNING" and "retrying" in r["msg"] for r in records)
        assert records[-1]["level"] == "ERROR" and records[-1]["msg"].startswith("cdc: error: sink redis")
        assert records[-1]["exit_status"] == 3
    else:
        (start_line,) = [line for line in lines if " INFO cdc.watch: watch started" in line]
        assert "sink redis://watcher:***@127.0.0.1:" in start_line
        assert any(" WARNING cdc.sinks: sink redis failed" in line for line in lines), lines
        assert lines[-1].startswith("cdc: error: sink redis")
