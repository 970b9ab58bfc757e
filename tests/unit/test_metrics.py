"""cdc.metrics without a server: the address, the heartbeat's send time, the health verdict, the
counters a delivered batch adds, the slot and timer gauges, and the three endpoints (WSGI)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from cdc.assembler import Transaction
from cdc.batch import Delivered
from cdc.changelog import RowChange
from cdc.checkpoint import Position
from cdc.config import parse_addr
from cdc.errors import ConfigError
from cdc.metrics import HealthLimits, Metrics, assess, heartbeat_sent, serve
from cdc.pgoutput.messages import LogicalMessage
from cdc.sinks.retry import SinkHealth
from cdc.timers import TimerStore
from derivers.base import Timer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9187", ("127.0.0.1", 9187)),
        (":9187", ("0.0.0.0", 9187)),
        ("[::1]:9100", ("::1", 9100)),
        ("metrics.local:1", ("metrics.local", 1)),
    ],
)
def test_parse_addr(text: str, expected: tuple[str, int]) -> None:
    assert parse_addr(text) == expected


@pytest.mark.parametrize("text", ["9187", "host:", "host:0", "host:65536", "host:http", "a b:1", "h/x:1"])
def test_parse_addr_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_addr(text)


def test_heartbeat_sent_reads_the_servers_now_text() -> None:
    assert heartbeat_sent(b"2026-12-06 09:38:01.123456+00") == datetime(2026, 12, 6, 9, 38, 1, 123456, UTC)
    assert heartbeat_sent(b"2026-12-06 10:38:01+01") == datetime(2026, 12, 6, 9, 38, 1, tzinfo=UTC)
    assert heartbeat_sent(b"Sun Dec 06 09:38:01 2026 UTC") is None  # DateStyle other than ISO
    assert heartbeat_sent(b"2026-12-06 09:38:01") is None  # no zone: not comparable
    assert heartbeat_sent(b"\xff") is None


def failing() -> SinkHealth:
    return SinkHealth(healthy=False, consecutive_failures=4, last_error="ConnectionError: refused")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({}, []),
        ({"connected": False, "disconnected_since": 95.0}, []),  # within the grace
        (
            {"connected": False, "disconnected_since": 80.0},
            ["replication stream disconnected for 20 s (grace 10 s)"],
        ),
        ({"sink": failing(), "sink_failing_for": 5.0}, []),
        (
            {"sink": failing(), "sink_failing_for": 12.0},
            ["sink failing for 12 s (4 attempts): ConnectionError: refused"],
        ),
        ({"sink": SinkHealth(), "sink_failing_for": 12.0}, []),  # healthy again
        ({"lag_bytes": 1000}, []),
        ({"lag_bytes": 1001}, ["replication lag 1001 bytes over 1000"]),
        ({"lag_bytes": 10**9, "limits": HealthLimits(10.0, None)}, []),  # no lag threshold
        (
            {"connected": False, "disconnected_since": 0.0, "lag_bytes": 2000},
            [
                "replication stream disconnected for 100 s (grace 10 s)",
                "replication lag 2000 bytes over 1000",
            ],
        ),
    ],
)
def test_assess(case: dict[str, Any], expected: list[str]) -> None:
    args: dict[str, Any] = {
        "now": 100.0,
        "connected": True,
        "disconnected_since": 0.0,
        "sink": None,
        "sink_failing_for": None,
        "lag_bytes": 10,
        "limits": HealthLimits(grace_s=10.0, max_lag_bytes=1000),
    }
    assert assess(**{**args, **case}) == expected


@dataclass
class Stats:
    transactions: int = 0
    dead_letters: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def tx(*changes: tuple[str, str], heartbeat: bytes | None = None) -> Transaction:
    t = Transaction(xid=1, begin_lsn=1, commit_lsn=1, end_lsn=2, commit_ts=0)
    for i, (table, op) in enumerate(changes):
        t.changes.append(RowChange(table, op, None, None, i))  # type: ignore[arg-type]
    if heartbeat is not None:
        t.messages.append(LogicalMessage(True, 1, "cdc.heartbeat", heartbeat))
    return t


def test_counters_move_once_per_delivered_batch_by_the_difference() -> None:
    m = Metrics()
    store = TimerStore("s", "cdc")
    now = datetime.now(UTC)
    m.transaction(
        tx(("public.tickets", "insert"), ("public.tickets", "insert"), ("public.comments", "update"))
    )
    assert sample(m, "cdc_changes_total", table="public.tickets", op="insert") is None  # not yet delivered
    stats = Stats(2, 1, {"TICKET_CREATED": 3, "TICKET_UPDATED": 1})
    batch = Delivered(
        Position(9, 1, now), 4, commit_times=[now - timedelta(seconds=0.5), now - timedelta(seconds=0.05)]
    )
    changes = m.take_changes()  # the batch is sent: what it carried is taken
    m.transaction(tx(("public.tickets", "insert")))  # the next batch's, while it is in flight
    m.delivered(batch, stats, store, changes)
    assert sample(m, "cdc_changes_total", table="public.tickets", op="insert") == 2
    assert sample(m, "cdc_changes_total", table="public.comments", op="update") == 1
    assert sample(m, "cdc_events_total", type="TICKET_CREATED") == 3
    assert sample(m, "cdc_events_total", type="TICKET_UPDATED") == 1
    assert sample(m, "cdc_transactions_total") == 2
    assert sample(m, "cdc_dead_letters_total") == 1
    assert sample(m, "cdc_commit_to_delivered_seconds_count") == 2
    assert sample(m, "cdc_commit_to_delivered_seconds_bucket", le="0.025") == 0
    assert sample(m, "cdc_commit_to_delivered_seconds_bucket", le="0.1") == 1
    assert sample(m, "cdc_commit_to_delivered_seconds_bucket", le="1.0") == 2
    # the next batch: only what changed since
    m.transaction(tx(("public.tickets", "delete")))
    stats.transactions, stats.by_type["TICKET_CREATED"] = 3, 4
    m.delivered(Delivered(Position(10, 2, now), 1), stats, store, m.take_changes())
    assert sample(m, "cdc_events_total", type="TICKET_CREATED") == 4
    assert sample(m, "cdc_events_total", type="TICKET_UPDATED") == 1
    assert sample(m, "cdc_changes_total", table="public.tickets", op="insert") == 3  # one was this batch's
    assert sample(m, "cdc_changes_total", table="public.tickets", op="delete") == 1
    assert sample(m, "cdc_transactions_total") == 3
    assert sample(m, "cdc_dead_letters_total") == 1
    assert sample(m, "cdc_commit_to_delivered_seconds_count") == 2
    assert (
        REGISTRY.get_sample_value("cdc_events_total", {"type": "TICKET_CREATED"}) is None
    )  # its own registry


def test_source_lag_from_a_heartbeat() -> None:
    m = Metrics()
    sent = (datetime.now(UTC) - timedelta(seconds=3)).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    m.transaction(tx(heartbeat=sent.encode()))
    lag = sample(m, "cdc_source_lag_seconds")
    assert lag is not None and 3 <= lag < 4
    m.transaction(tx(heartbeat=(datetime.now(UTC) + timedelta(seconds=5)).isoformat().encode()))
    assert sample(m, "cdc_source_lag_seconds") == 0  # a clock ahead never reads negative


def test_timers_pending_and_overdue() -> None:
    m = Metrics()
    store = TimerStore("s", "cdc")
    now = datetime.now(UTC)
    for key, due, state in [
        ("a", now - timedelta(minutes=1), "armed"),
        ("b", now + timedelta(hours=1), "armed"),
        ("c", now - timedelta(hours=1), "paused"),
        ("d", now - timedelta(hours=1), "fired"),
    ]:
        store.timers[key] = Timer(key, "tickets", "t", "x", "stage", due, state)  # type: ignore[arg-type]
    m.count_timers(store)
    assert sample(m, "cdc_timers_pending") == 2
    assert sample(m, "cdc_timers_overdue") == 1


def test_slot_gauges() -> None:
    m = Metrics()
    assert sample(m, "cdc_slot_wal_status", cdc_slot_wal_status="unknown") == 1
    m.slot_read((100, 5000, "extended"))
    assert sample(m, "cdc_replication_lag_bytes") == 100
    assert sample(m, "cdc_retained_wal_bytes") == 5000
    assert sample(m, "cdc_slot_wal_status", cdc_slot_wal_status="extended") == 1
    assert sample(m, "cdc_slot_wal_status", cdc_slot_wal_status="unknown") == 0
    m.slot_read(None)
    assert sample(m, "cdc_slot_wal_status", cdc_slot_wal_status="unknown") == 1
    assert m.last_lag_bytes is None
    assert sample(m, "cdc_standby_role", cdc_standby_role="active") == 1


def call(m: Metrics, path: str) -> tuple[str, dict[str, str], bytes]:
    got: list[Any] = []
    body = b"".join(m.app({"PATH_INFO": path}, lambda status, headers: got.extend([status, dict(headers)])))
    return got[0], got[1], body


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_endpoints() -> None:
    clock = Clock()
    m = Metrics(HealthLimits(grace_s=30.0, max_lag_bytes=500), clock=clock)
    status, headers, body = call(m, "/metrics")
    assert status == "200 OK" and headers["Content-Type"].startswith("text/plain; version=")
    assert b"cdc_sink_errors_total 0.0" in body and b"cdc_stream_connected 0.0" in body
    # starting: healthy within the grace, not ready
    assert call(m, "/healthz")[0] == "200 OK"
    status, _, body = call(m, "/readyz")
    assert status == "503 Service Unavailable"
    assert orjson.loads(body)["reasons"] == ["replication stream not connected"]
    m.set_connected(True)
    sink = SinkHealth()
    m.sink_health = sink
    assert [call(m, p)[0] for p in ("/healthz", "/readyz")] == ["200 OK", "200 OK"]
    m.slot_read((501, 501, "reserved"))
    status, headers, body = call(m, "/healthz")
    assert status == "503 Service Unavailable" and headers["Content-Type"] == "application/json"
    assert orjson.loads(body) == {
        "status": "unhealthy",
        "reasons": ["replication lag 501 bytes over 500"],
        "streaming": True,
        "role": "active",
        "replicationLagBytes": 501,
        "sinkHealthy": True,
        "sinkLastError": None,
    }
    m.slot_read((0, 0, "reserved"))
    sink.healthy, sink.last_error = False, "ConnectionError: refused"
    sink.failing_since = datetime.now(UTC) - timedelta(seconds=40)
    sink.errors_total, sink.retries_total = 3, 2
    health = orjson.loads(call(m, "/healthz")[2])
    assert health["reasons"] == ["sink failing for 40 s (0 attempts): ConnectionError: refused"]
    assert health["sinkHealthy"] is False
    body = call(m, "/metrics")[2]
    assert b"cdc_sink_errors_total 3.0" in body and b"cdc_sink_retries_total 2.0" in body
    assert b"cdc_sink_healthy 0.0" in body
    sink.healthy, sink.failing_since = True, None
    m.set_connected(False)  # a lost stream: the grace counts from now
    clock.now += 30
    assert call(m, "/healthz")[0] == "200 OK"
    clock.now += 1
    assert orjson.loads(call(m, "/healthz")[2])["reasons"] == [
        "replication stream disconnected for 31 s (grace 30 s)"
    ]
    assert call(m, "/other")[0] == "404 Not Found"


def test_a_standby_is_healthy_not_ready_and_a_reconnect_forgets_what_was_not_delivered() -> None:
    clock = Clock()
    m = Metrics(HealthLimits(grace_s=30.0), clock=clock)
    m.set_role(standby=True)
    clock.now += 300  # waiting for the lock for long is no disconnection
    assert call(m, "/healthz")[0] == "200 OK"
    status, _, body = call(m, "/readyz")
    assert status == "503 Service Unavailable"
    assert orjson.loads(body)["reasons"] == ["standby: waiting for the lock of the active watcher"]
    assert orjson.loads(body)["role"] == "standby"
    assert sample(m, "cdc_standby_role", cdc_standby_role="standby") == 1
    m.set_role(standby=False)  # took over: the grace starts now
    assert sample(m, "cdc_standby_role", cdc_standby_role="active") == 1
    clock.now += 30
    assert call(m, "/healthz")[0] == "200 OK"
    clock.now += 1
    assert call(m, "/healthz")[0] == "503 Service Unavailable"
    m.set_connected(True)
    m._changes[("public.tickets", "insert")] = 3  # processed, not delivered
    m.disconnected()
    assert m._changes == {} and sample(m, "cdc_stream_connected") == 0


def test_serve_refuses_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--metrics-addr 127.0.0.1:{port}: cannot listen"):
            serve(f"127.0.0.1:{port}")


ROOT = Path(__file__).resolve().parents[2]


def exposed() -> set[str]:
    """The metric names a scrape shows (counters with ``_total``)."""
    families = Metrics().registry.collect()
    return {f.name + "_total" if f.type == "counter" else f.name for f in families}


def test_no_created_series() -> None:
    body = call(Metrics(), "/metrics")[2].decode()
    assert "_created" not in body


def test_readme_lists_every_metric() -> None:
    text = (ROOT / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `cdc_")]
    listed = {name for row in rows for name in re.findall(r"`(cdc_\w+)", row.split("|")[1])}
    assert listed == exposed()


def test_grafana_dashboard_is_importable_and_uses_real_metrics() -> None:
    dashboard = orjson.loads((ROOT / "docs" / "grafana-dashboard.json").read_bytes())
    assert dashboard["title"] and dashboard["schemaVersion"] >= 36 and dashboard["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for p in dashboard["panels"]:
        assert p["targets"] and set(p["gridPos"]) == {"x", "y", "w", "h"}
        for target in p["targets"]:
            used |= {re.sub(r"_bucket$", "", m) for m in re.findall(r"cdc_\w+", target["expr"])}
    names = exposed()
    assert used <= names, used - names
    assert {
        "cdc_replication_lag_bytes",
        "cdc_retained_wal_bytes",
        "cdc_source_lag_seconds",
        "cdc_events_total",
        "cdc_commit_to_delivered_seconds",
        "cdc_dead_letters_total",
        "cdc_sink_errors_total",
        "cdc_sink_retries_total",
        "cdc_timers_pending",
        "cdc_timers_overdue",
    } <= used


def test_sink_health_counts_errors_and_retries_apart() -> None:
    """Every failed attempt is an error; only those followed by another attempt are retries."""
    from cdc.sinks.base import Batch
    from cdc.sinks.retry import RetryingSink, RetryPolicy, SinkGaveUp
    from tests.unit.test_sinks import FakeTime, Flaky, retrying

    t = FakeTime()
    sink: RetryingSink = retrying(Flaky(100), RetryPolicy(initial_delay=1, max_delay=1, give_up_after=3.5), t)
    with pytest.raises(SinkGaveUp):
        sink.write(Batch([], end_lsn=1, transactions=1))
    h = sink.health
    assert (h.errors_total, h.retries_total, h.consecutive_failures, h.healthy) == (5, 4, 5, False)
    m = Metrics()
    m.sink_health = h
    body = call(m, "/metrics")[2]
    assert b"cdc_sink_errors_total 5.0" in body and b"cdc_sink_retries_total 4.0" in body


def test_timers_are_counted_with_a_batch_at_most_once_a_second() -> None:
    clock = Clock()
    m = Metrics(clock=clock)
    store = TimerStore("s", "cdc")
    batch = Delivered(Position(1, 1, datetime.now(UTC)), 0)
    m.delivered(batch, Stats(), store, {})
    assert sample(m, "cdc_timers_pending") == 0
    store.timers["a"] = Timer("a", "tickets", "t", "x", "stage", datetime.now(UTC) + timedelta(hours=1))
    clock.now += 0.9
    m.delivered(batch, Stats(), store, {})
    assert sample(m, "cdc_timers_pending") == 0
    clock.now += 0.1
    m.delivered(batch, Stats(), store, {})
    assert sample(m, "cdc_timers_pending") == 1


def test_defaults() -> None:
    from cdc.config import Settings

    s = Settings()
    assert (s.metrics_addr, s.health_grace_s, s.health_max_lag_bytes) == (None, 30.0, None)
    assert Metrics().poll_interval == 5.0 and HealthLimits() == HealthLimits(30.0, None)
