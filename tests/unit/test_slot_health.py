"""cdc.slot_health: one pg_replication_slots row → ok, a warning with the number, or a stop."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

from cdc.errors import SlotInUse, SlotInvalidated, SlotOfAnotherDatabase
from cdc.report import Reporter
from cdc.slot_health import SlotMonitor, classify

MB = 1024 * 1024


def row(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "slot_name": "cdc_events",
        "database": "psa",
        "wal_status": "reserved",
        "safe_wal_size": None,
        "active_pid": None,
    }
    return {**base, **over}


# (case, row, at_start, level, state, words in the text or the error's message)
CASES: list[tuple[str, dict[str, Any], bool, str, str, tuple[str, ...]]] = [
    ("reserved", row(), True, "ok", "reserved", ()),
    ("reserved while streaming, own walsender", row(active_pid=4242), False, "ok", "reserved", ()),
    (
        "extended with a keep size",
        row(wal_status="extended", safe_wal_size=5 * MB // 2),
        True,
        "warning",
        "extended",
        ("wal_status extended", "2.5 MB more WAL"),
    ),
    (
        "extended without max_slot_wal_keep_size",
        row(wal_status="extended"),
        True,
        "warning",
        "extended",
        ("unlimited more WAL",),
    ),
    (
        "unreserved: nothing safe left",
        row(wal_status="unreserved", safe_wal_size=-3 * MB),
        False,
        "warning",
        "unreserved",
        ("wal_status unreserved", "-3.0 MB safe WAL left", "next checkpoint"),
    ),
    ("lost", row(wal_status="lost"), True, "stop", "invalidated", ("invalidated (wal_status lost)",)),
    ("lost while streaming", row(wal_status="lost", active_pid=1), False, "stop", "invalidated", ("lost",)),
    (
        "PG 17 invalidation_reason",
        row(invalidation_reason="wal_removed"),
        False,
        "stop",
        "invalidated",
        ("invalidation_reason wal_removed",),
    ),
    (
        "PG 16 conflicting (standby)",
        row(conflicting=True),
        True,
        "stop",
        "invalidated",
        ("invalidation_reason conflicting",),
    ),
    ("PG 16 not conflicting", row(conflicting=False), True, "ok", "reserved", ()),
    (
        "another database",
        row(database="other"),
        True,
        "stop",
        "foreign",
        ("belongs to database other, not psa",),
    ),
    ("in use at start", row(active_pid=4242), True, "stop", "in use", ("pid 4242",)),
]


@pytest.mark.parametrize(
    ("case", "slot", "at_start", "level", "state", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_classify(
    case: str, slot: dict[str, Any], at_start: bool, level: str, state: str, words: tuple[str, ...]
) -> None:
    health = classify("cdc_events", slot, "psa", at_start=at_start)
    assert (health.level, health.state) == (level, state)
    said = str(health.error) if health.error is not None else health.text
    assert (health.error is not None) == (level == "stop")
    assert bool(health.text) == (level == "warning")
    for w in words:
        assert w in said, said


def test_stops_are_the_errors_with_their_hints() -> None:
    lost = classify("s", row(wal_status="lost"), "psa", at_start=False).error
    assert isinstance(lost, SlotInvalidated) and not lost.retryable
    assert "cdc setup --recreate-slot" in lost.hint
    assert isinstance(classify("s", row(database="x"), "psa", at_start=True).error, SlotOfAnotherDatabase)
    in_use = classify("s", row(active_pid=7), "psa", at_start=True).error
    assert isinstance(in_use, SlotInUse) and in_use.retryable


def test_monitor_says_each_change_of_state_once_and_keeps_a_stop(caplog: pytest.LogCaptureFixture) -> None:
    monitor = SlotMonitor("dbname=unused", "cdc_events")
    caplog.set_level(logging.INFO, logger="cdc.watch")
    for status, safe in [
        ("reserved", None),
        ("extended", 8 * MB),
        ("extended", 4 * MB),  # same state: no second line
        ("unreserved", 0),
        ("reserved", None),
        ("reserved", None),
    ]:
        monitor.observe(row(wal_status=status, safe_wal_size=safe, active_pid=99), "psa")
    assert monitor.failure is None
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [lvl for lvl, _ in said] == ["WARNING", "WARNING", "INFO"]
    assert (
        "8.0 MB" in said[0][1] and "unreserved" in said[1][1] and "back to wal_status reserved" in said[2][1]
    )
    monitor.observe(row(wal_status="lost"), "psa")
    assert isinstance(monitor.failure, SlotInvalidated)
    assert caplog.records[-1].levelname == "ERROR"


class _Watcher:
    """What cdc.report.Reporter reads of the watcher, with a batch pending."""

    def __init__(self) -> None:
        self.opts = SimpleNamespace(progress_interval=10.0, slot="cdc_events")
        self.stats = SimpleNamespace(transactions=0, changes=0, events=0)
        self.checkpoint = 0
        self.stream = None
        self.sink = None
        self.delivery = SimpleNamespace(pending=True)
        self.delivered: list[bool] = []

    def deliver(self, *, caught_up: bool) -> None:
        self.delivered.append(caught_up)
        self.delivery.pending = False


def test_a_stop_while_streaming_delivers_the_pending_batch_then_ends_the_loop() -> None:
    watcher = _Watcher()
    reporter = Reporter(watcher)  # type: ignore[arg-type]
    reporter.slot_monitor = monitor = SlotMonitor("dbname=unused", "cdc_events")
    reporter.slot_check_at = 0.0
    reporter.progress()  # healthy: nothing delivered, the next look within a second
    assert watcher.delivered == [] and reporter.next_at <= time.monotonic() + 1.0
    monitor.observe(row(wal_status="lost"), "psa")
    with pytest.raises(SlotInvalidated):
        reporter.progress()
    assert watcher.delivered == [False]
    reporter.next_at = 5.0  # a reload's shorter progress interval still counts
    assert reporter.next_at == 5.0
