"""`cdc watch` survives its database: it reconnects by itself and resumes from its checkpoint.

Through the real CLI (a subprocess) against a cluster of this module's own (the tests restart
it), each under a steady ticket workload — a writer thread creating tickets and moving them
between two statuses, reconnecting itself when the server goes away:

* `pg_ctl restart -m fast`, `pg_ctl restart -m immediate` (with the server kept down long
  enough for /healthz to turn 503, and 200 again after) and `pg_terminate_backend` of the
  walsender: the watcher logs one `reconnecting …` line per attempt with the cause and a
  `reconnected` line, keeps running, and the outbox ends up with exactly one TICKET_CREATED per
  ticket row and one TICKET_STATUS_CHANGED per status-change audit row that committed (what the
  database says was written), no idempotency key twice, and no watcher logged the outbox's
  `… events were already there (replayed history)` (a batch delivered twice, which the outbox's
  unique id would otherwise absorb without a trace);
* the slot gone when it comes back (a failover-style loss): exit 1 with the `cdc setup` hint;
* SIGTERM while it waits to reconnect (the server down): exit 0 at once.

What still stops it, once connected, is in tests/e2e/test_connection_errors.py (a password that
changed: exit 1 on the reconnect).
"""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest

from cdc import queries
from cdc.localpg import LocalPostgres
from cdc.sample import schema_sql
from tests.e2e.test_metrics import get
from tests.e2e.test_slot_safety import setup_ok
from tests.e2e.test_watch_lifecycle import TICKET_SQL, Watch
from tests.integration.conftest import wait_for
from tests.pgharness import PgServer, drop_database

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

OPEN, IN_PROGRESS = "66666666-6666-4666-8666-666666666661", "66666666-6666-4666-8666-666666666662"
DANA = "33333333-3333-4333-8333-333333333333"
TENANT = "11111111-1111-4111-8111-111111111111"
STATUS_SQL = f"""
UPDATE tickets SET status_id = CASE WHEN status_id = '{OPEN}' THEN '{IN_PROGRESS}'::uuid ELSE '{OPEN}'::uuid END
 WHERE tenant = '{TENANT}' AND ticket_id = %(id)s;
INSERT INTO ticket_audit_logs (tenant, ticket_id, event_type, entity_type, actor_type, actor_user_id, source,
                               occurred_at)
VALUES ('{TENANT}', %(id)s, 'TICKET_STATUS_CHANGED', 'ticket', 'user', '{DANA}', 'ui', now());
"""
#: Short waits between reconnects, and the watcher's figures that tests read.
FAST = {"CDC_RECONNECT_INITIAL_S": "0.2", "CDC_RECONNECT_MAX_S": "1"}
WATCH_ARGS = ("--log-format", "json", "--heartbeat-interval", "1", "--batch-delay", "0.05")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPostgres]:
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture
def dsn(server: LocalPostgres) -> Iterator[str]:
    """A fresh database of the module's cluster with the sample schema, seeded and set up (the
    slot is named as every test's: the database goes, with its slot, after the test)."""
    name = f"rc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = server.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_sql())  # type: ignore[call-overload]
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(queries.raw("sample/workload", "seed"))
    setup_ok(dsn)
    yield dsn
    drop_database(PgServer(server.dsn(), "local"), name)


class Workload:
    """Tickets created and moved between two statuses, one transaction each, until stopped; a
    failed transaction (the server went away) is simply not counted: the expectation is read
    from the database afterwards."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.done = 0
        self.failures = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tickets: list[str] = []
        rng = random.Random(14)
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2) as conn:
                    while not self.stop.is_set():
                        with conn.transaction():
                            if len(tickets) < 3 or rng.random() < 0.3:
                                ticket = str(uuid.uuid4())
                                for statement in TICKET_SQL.split(";")[:2]:
                                    conn.execute(statement, {"id": ticket, "number": f"R-{self.done}"})
                                tickets.append(ticket)
                            else:
                                ticket = rng.choice(tickets)
                                for statement in STATUS_SQL.split(";")[:2]:
                                    conn.execute(statement, {"id": ticket})  # type: ignore[call-overload]
                        self.done += 1
                        time.sleep(0.005)
            except psycopg.Error:
                self.failures += 1
                time.sleep(0.05)

    def wait_done(self, more: int) -> None:
        """Until ``more`` further transactions committed."""
        target = self.done + more
        assert wait_for(lambda: self.done >= target, timeout=30, interval=0.02)

    def __enter__(self) -> Workload:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def pg_ctl(server: LocalPostgres, *args: str) -> None:
    res = server.pg_ctl(*args)
    assert res.returncode == 0, res.stderr


def server_down(server: LocalPostgres) -> None:
    """Like a crash: `pg_ctl stop -m immediate`."""
    pg_ctl(server, "-m", "immediate", "-w", "stop")


def server_up(server: LocalPostgres) -> None:
    res = server.pg_ctl_start()
    assert res.returncode == 0, res.stderr


def rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query).fetchall()  # type: ignore[call-overload]


def written(dsn: str) -> Counter[str]:
    """What the workload committed, by the event type each transaction derives."""
    tickets = rows(dsn, "SELECT count(*) FROM tickets")[0][0]
    moves = rows(dsn, "SELECT count(*) FROM ticket_audit_logs WHERE event_type = 'TICKET_STATUS_CHANGED'")[0][
        0
    ]
    return Counter({"TICKET_CREATED": tickets, "TICKET_STATUS_CHANGED": moves})


def delivered(dsn: str) -> Counter[str]:
    found = rows(
        dsn,
        "SELECT event_type, count(*) FROM cdc.outbox"
        " WHERE event_type IN ('TICKET_CREATED', 'TICKET_STATUS_CHANGED') GROUP BY 1",
    )
    return Counter(dict(found))


def assert_exactly_once(dsn: str) -> None:
    """Every committed ticket write's event in the outbox, once."""
    expected = written(dsn)
    assert expected["TICKET_CREATED"] > 3 and expected["TICKET_STATUS_CHANGED"] > 3, expected
    assert wait_for(lambda: delivered(dsn) == expected, timeout=30, interval=0.2), (delivered(dsn), expected)
    twice = rows(dsn, "SELECT idempotency_key FROM cdc.outbox GROUP BY 1 HAVING count(*) > 1")
    assert twice == []
    created = {r[0] for r in rows(dsn, "SELECT ticket_id::text FROM tickets")}
    announced = rows(
        dsn,
        "SELECT envelope->'payload'->>'ticketId' FROM cdc.outbox WHERE event_type = 'TICKET_CREATED'",
    )
    assert sorted(r[0] for r in announced) == sorted(created)


#: What the outbox logs when rows of a batch were there already (cdc/sinks/outbox.py): a batch
#: delivered twice. The outbox's unique id would absorb the copy silently, so the exactly-once
#: tests look for this line too.
REPLAYED = "events were already there (replayed history)"


def assert_no_replay(*watches: Watch) -> None:
    """No watcher delivered a batch the outbox held already."""
    for watch in watches:
        replays = [line for line in watch.lines if REPLAYED in line]
        assert replays == [], "\n".join(watch.lines)


def wait_streaming(watch: Watch, after: int = 0) -> None:
    """Until the watcher logged its start line, or (``after`` reconnects) its reconnected line."""
    if after == 0:
        watch.wait_record(lambda r: r["msg"].startswith("watch started"))
    else:
        assert wait_for(
            lambda: sum(1 for r in watch.records() if r.get("reconnected")) >= after, timeout=30
        ), "\n".join(watch.lines)


def reconnect_lines(watch: Watch) -> list[dict[str, Any]]:
    return [r for r in watch.records() if r["msg"].startswith("reconnecting in ")]


def stop(watch: Watch) -> dict[str, Any]:
    """SIGTERM: exit 0; the exit summary."""
    watch.proc.send_signal(signal.SIGTERM)
    assert watch.finish() == 0, "\n".join(watch.lines)
    summary = watch.records()[-1]
    assert summary["msg"].startswith("delivered "), summary
    return summary


def run_through(dsn: str, disrupt: Any, after: Any = None, **env: str) -> Watch:
    """The watcher under the workload; ``disrupt()`` once it streams and delivered some,
    ``after()`` once it streams again."""
    watch = Watch("--dsn", dsn, *WATCH_ARGS, env={**FAST, **env})
    try:
        with Workload(dsn) as work:
            wait_streaming(watch)
            work.wait_done(30)
            disrupt()
            wait_streaming(watch, after=1)
            if after is not None:
                after()
            work.wait_done(30)
        assert watch.proc.poll() is None, "\n".join(watch.lines)
        assert_exactly_once(dsn)
        assert_no_replay(watch)
        summary = stop(watch)
        # the summary counts what this run delivered (a commit whose answer a crash swallowed
        # is in the outbox, and not counted)
        assert 0 < summary["events"] <= rows(dsn, "SELECT count(*) FROM cdc.outbox")[0][0]
    finally:
        watch.kill()
    return watch


# -- the server restarts ----------------------------------------------------------------------------
def test_restart_fast_reconnects_and_delivers_everything_once(server: LocalPostgres, dsn: str) -> None:
    watch = run_through(dsn, lambda: server.restart("fast"))
    lines = reconnect_lines(watch)
    assert lines and all(r["level"] == "WARNING" and r["cause"] and r["attempt"] >= 1 for r in lines)
    assert all(0 <= r["wait_s"] <= 1 for r in lines)  # CDC_RECONNECT_MAX_S
    assert any("lost the connection" in r["cause"] or "ended the replication" in r["cause"] for r in lines)


def test_restart_immediate_reconnects_and_health_says_so(server: LocalPostgres, dsn: str) -> None:
    """Down long enough for /healthz (grace 1 s) to say so: unhealthy while down, healthy after."""
    from cdc.localpg import free_port

    port = free_port()
    seen: list[int] = []

    def crash_and_come_back() -> None:
        assert get(port, "/healthz")[0] == 200
        server_down(server)
        try:
            assert wait_for(lambda: get(port, "/healthz")[0] == 503, timeout=15, interval=0.1)
            status, body = get(port, "/healthz")
            seen.append(status)
            health = orjson.loads(body)
            assert health["streaming"] is False, health
            assert health["reasons"][0].startswith("replication stream disconnected for "), health
        finally:
            server_up(server)

    def healthy_again() -> None:
        assert wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=15, interval=0.1)
        assert orjson.loads(get(port, "/healthz")[1])["streaming"] is True

    watch = run_through(
        dsn, crash_and_come_back, healthy_again, CDC_METRICS_ADDR=f"127.0.0.1:{port}", CDC_HEALTH_GRACE_S="1"
    )
    assert seen == [503]
    # while it was down, attempts found nothing to connect to, and each said so
    assert any(r["cause"].startswith("cannot reach the server") for r in reconnect_lines(watch))


def test_terminated_walsender_reconnects_and_delivers_everything_once(dsn: str) -> None:
    def terminate() -> None:
        ended = rows(
            dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE backend_type = 'walsender' AND datname = current_database()",
        )
        assert ended == [(True,)]

    watch = run_through(dsn, terminate)
    # the first attempt may find the slot still held by the dying walsender: one more, then
    first, *more = reconnect_lines(watch)
    # libpq words it as the server did ("terminating connection due to administrator command")
    # or as it found the socket ("no COPY in progress", "server closed the connection …")
    assert first["cause"].startswith(
        ("lost the connection to the server (slot cdc_events): ", "the server ended the replication stream")
    ), first
    assert all("is active in another process" in r["cause"] for r in more), more


def test_a_slot_that_vanished_stops_the_reconnect_with_the_setup_hint(dsn: str) -> None:
    """A failover-style loss: the walsender ends and the slot is gone when the watcher comes
    back. That is no connection problem: one error line naming the slot, exit 1."""
    watch = Watch("--dsn", dsn, *WATCH_ARGS, env=FAST)
    try:
        wait_streaming(watch)

        def dropped() -> bool:  # the watcher may take the slot again before it goes: once more
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                    " WHERE slot_name = 'cdc_events' AND active_pid IS NOT NULL"
                )
                try:
                    conn.execute("SELECT pg_drop_replication_slot('cdc_events')")
                except psycopg.errors.ObjectInUse:
                    return False
            return True

        assert wait_for(dropped, timeout=20, interval=0.01)
        assert watch.finish() == 1, "\n".join(watch.lines)
    finally:
        watch.kill()
    error = watch.records()[-1]
    assert error["level"] == "ERROR" and "replication slot cdc_events does not exist" in error["msg"], error
    assert "run `cdc setup`" in error["msg"]
    assert reconnect_lines(watch)  # it was lost first, and tried again
    assert_no_replay(watch)


def test_sigterm_while_waiting_to_reconnect_exits_0(server: LocalPostgres, dsn: str) -> None:
    """The server stays down: the watcher waits (up to 30 s a time) between failed attempts."""
    watch = Watch(
        "--dsn", dsn, *WATCH_ARGS, env={"CDC_RECONNECT_INITIAL_S": "30", "CDC_RECONNECT_MAX_S": "30"}
    )
    try:
        wait_streaming(watch)
        server_down(server)
        try:
            assert wait_for(lambda: bool(reconnect_lines(watch)), timeout=20), "\n".join(watch.lines)
            summary = stop(watch)
        finally:
            server_up(server)
        assert summary["reason"] == "stopped by SIGTERM while reconnecting", summary
    finally:
        watch.kill()
    assert_no_replay(watch)
