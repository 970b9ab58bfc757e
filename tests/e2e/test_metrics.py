"""`cdc watch --metrics-addr`: /metrics, /healthz and /readyz of a real watcher on a real Postgres.

* a ticket workload: the scraped counters equal what the outbox holds (events by type, changes by
  table and op, one latency observation per ticket transaction), the slot gauges agree with
  each other and with the slot, the timers gauges with the timers table, /healthz and /readyz 200;
* a Redis sink at a port nothing listens on: /healthz and /readyz turn 503 and say why, and the
  sink counters move;
* a bad --metrics-addr (not HOST:PORT, a port in use): one error line, exit 1.
"""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request
import uuid
from collections import Counter
from typing import Any

import orjson
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cdc.localpg import free_port
from tests.e2e.test_cli_errors import assert_one_line_error, cdc
from tests.e2e.test_watch_lifecycle import TICKET_SQL, Watch, seeded  # noqa: F401 - the fixture
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TICKETS = 12


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    status, body = get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def by_label(samples: dict[Any, float], name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (n, labels), v in samples.items() if n == name}


def write_tickets(dsn: str, n: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(n):
            ticket = str(uuid.uuid4())
            with conn.transaction():
                for statement in TICKET_SQL.split(";")[:2]:
                    conn.execute(statement, {"id": ticket, "number": f"M-{i}"})


def rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def test_metrics_match_the_workload_and_health_is_ok(seeded: str) -> None:  # noqa: F811
    port = free_port()
    watch = Watch("--dsn", seeded, "--metrics-addr", f"127.0.0.1:{port}", "--heartbeat-interval", "0.5")
    try:
        assert wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=30, interval=0.1), watch.lines
        write_tickets(seeded, TICKETS)

        def delivered() -> bool:
            events = by_label(scrape(port), "cdc_events_total", "type")
            return sum(events.values()) == 2 * TICKETS

        assert wait_for(delivered, timeout=30, interval=0.1), watch.lines
        outbox = Counter(t for (t,) in rows(seeded, "SELECT event_type FROM cdc.outbox"))
        armed = rows(
            seeded,
            "SELECT count(*) FILTER (WHERE state = 'armed'),"
            "       count(*) FILTER (WHERE state = 'armed' AND due_at <= now()) FROM cdc.timers",
        )[0]
        # the timers are counted with a batch at most once a second: the heartbeat brings one
        assert wait_for(
            lambda: (
                (scrape(port)[("cdc_timers_pending", ())], scrape(port)[("cdc_timers_overdue", ())]) == armed
            ),
            timeout=10,
            interval=0.2,
        )
        m = scrape(port)
        assert by_label(m, "cdc_events_total", "type") == dict(outbox)
        assert outbox == {"TICKET_CREATED": TICKETS, "TICKET_SLA_STAGE_ENTERED": TICKETS}
        changes = {
            (dict(labels)["table"], dict(labels)["op"]): v
            for (n, labels), v in m.items()
            if n == "cdc_changes_total"
        }
        assert changes == {
            ("public.tickets", "insert"): TICKETS,
            ("public.ticket_audit_logs", "insert"): TICKETS,
        }
        # one observation per delivered transaction with events: the ticket transactions
        assert m[("cdc_commit_to_delivered_seconds_count", ())] == TICKETS
        assert 0 < m[("cdc_commit_to_delivered_seconds_sum", ())] < 30 * TICKETS
        assert m[("cdc_commit_to_delivered_seconds_bucket", (("le", "+Inf"),))] == TICKETS
        assert m[("cdc_transactions_total", ())] > TICKETS  # and the heartbeats (one right at start)
        assert m[("cdc_dead_letters_total", ())] == 0
        lag, retained = m[("cdc_replication_lag_bytes", ())], m[("cdc_retained_wal_bytes", ())]
        assert 0 <= lag <= retained  # one reading: restart_lsn <= confirmed_flush_lsn
        assert by_label(m, "cdc_slot_wal_status", "cdc_slot_wal_status") == {
            "reserved": 1,
            "extended": 0,
            "unreserved": 0,
            "lost": 0,
            "unknown": 0,
        }
        assert 0 <= m[("cdc_source_lag_seconds", ())] < 5
        assert by_label(m, "cdc_standby_role", "cdc_standby_role") == {"active": 1, "standby": 0}
        assert m[("cdc_stream_connected", ())] == 1
        assert m[("cdc_sink_errors_total", ())] == 0 and m[("cdc_sink_retries_total", ())] == 0
        assert m[("cdc_sink_healthy", ())] == 1
        for path in ("/healthz", "/readyz"):
            status, body = get(port, path)
            health = orjson.loads(body)
            assert status == 200 and health["status"] == "ok" and health["reasons"] == [], body
            assert health["streaming"] is True and health["sinkHealthy"] is True
        assert get(port, "/nothing")[0] == 404
        watch.proc.send_signal(signal.SIGTERM)
        assert watch.finish() == 0, watch.lines
    finally:
        watch.kill()


def test_a_sink_that_keeps_failing_turns_health_unhealthy(seeded: str) -> None:  # noqa: F811
    port = free_port()
    sink = f"redis://127.0.0.1:{free_port()}/0?retry_give_up=120&retry_initial=0.1&retry_max_delay=0.3"
    write_tickets(seeded, 1)
    watch = Watch(
        "--dsn",
        seeded,
        "--sink",
        sink,
        "--metrics-addr",
        f"127.0.0.1:{port}",
        env={"CDC_HEALTH_GRACE_S": "1"},
    )
    try:
        assert wait_for(lambda: get(port, "/healthz")[0] == 503, timeout=30, interval=0.1), watch.lines
        for path in ("/healthz", "/readyz"):
            status, body = get(port, path)
            health = orjson.loads(body)
            assert status == 503 and health["status"] == "unhealthy", body
            (reason,) = health["reasons"]
            assert reason.startswith("sink failing for ") and "ConnectionError" in reason, reason
            assert health["sinkHealthy"] is False and health["streaming"] is True
        m = scrape(port)
        assert m[("cdc_sink_healthy", ())] == 0
        assert m[("cdc_sink_errors_total", ())] >= 2
        assert m[("cdc_sink_retries_total", ())] >= 2
        assert by_label(m, "cdc_events_total", "type") == {}  # nothing delivered
    finally:
        watch.kill()


@pytest.mark.parametrize("addr", ["localhost", "127.0.0.1:http", "127.0.0.1:70000", "a b:9100"])
def test_a_bad_metrics_addr_is_one_error_line(addr: str) -> None:
    res = cdc("watch", "--dsn", f"host=127.0.0.1 port={free_port()}", "--metrics-addr", addr)
    assert_one_line_error(res, "metrics_addr", "HOST:PORT")
    assert res.returncode == 1


def test_a_metrics_port_in_use_is_one_error_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = cdc(
            "watch", "--dsn", f"host=127.0.0.1 port={free_port()}", "--metrics-addr", f"127.0.0.1:{port}"
        )
    assert_one_line_error(res, f"--metrics-addr 127.0.0.1:{port}: cannot listen")
    assert res.returncode == 1
