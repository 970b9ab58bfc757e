"""`cdc demo` — the embedded default — runs end to end, shows every family's events in its table
of derived events, and cleans up after itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from catalog.registry import get as get_spec

pytestmark = pytest.mark.e2e

#: Every event type the demo's scripted workload yields, by family: exactly these, nothing else.
EXPECTED_TYPES = {
    "tickets": {
        "TICKET_CREATED", "TICKET_ASSIGNED", "TICKET_ADDITIONAL_AGENT_ASSIGNED", "TICKET_STATUS_CHANGED",
        "TICKET_UPDATED", "TICKET_PRIORITY_CHANGED", "TICKET_MESSAGE_ADDED", "TICKET_INTERNAL_NOTE_ADDED",
        "TICKET_COMMENT_ADDED", "TICKET_CUSTOMER_REPLIED", "TICKET_RESPONSE_STATE_CHANGED",
        "TICKET_TIME_ENTRY_ADDED", "TICKET_MERGED", "TICKET_CLOSED", "TICKET_REOPENED",
        "TICKET_SLA_STAGE_ENTERED", "TICKET_SLA_STAGE_MET", "TICKET_SLA_THRESHOLD_REACHED",
        "TICKET_SLA_STAGE_BREACHED",
    },
    "scheduling": {
        "APPOINTMENT_CREATED", "TECHNICIAN_DISPATCHED", "APPOINTMENT_RESCHEDULED", "APPOINTMENT_ASSIGNED",
        "SCHEDULE_ENTRY_UPDATED", "TECHNICIAN_EN_ROUTE", "TECHNICIAN_ARRIVED", "TECHNICIAN_CHECKED_OUT",
        "APPOINTMENT_COMPLETED", "SCHEDULE_BLOCK_CREATED", "SCHEDULE_BLOCK_DELETED",
        "CAPACITY_THRESHOLD_REACHED",
    },
    "projects": {
        "PROJECT_CREATED", "PROJECT_PHASE_CREATED", "PROJECT_STATUS_CHANGED", "PROJECT_UPDATED",
        "PROJECT_CLOSED", "PROJECT_TASK_CREATED", "PROJECT_TASK_ASSIGNED", "PROJECT_TASK_STATUS_CHANGED",
        "PROJECT_TASK_UPDATED", "PROJECT_TASK_ADDITIONAL_AGENT_ASSIGNED", "PROJECT_TASK_COMPLETED",
        "PROJECT_TASK_DEPENDENCY_BLOCKED", "PROJECT_TASK_DEPENDENCY_UNBLOCKED",
    },
    "time": {"TIME_ENTRY_CREATED", "TIME_ENTRY_SUBMITTED", "TIME_ENTRY_APPROVED"},
}  # fmt: skip


def event_rows(out: str) -> list[tuple[str, str, str, str]]:
    """(type, about, actor, key fields) of each row of the table of derived events."""
    body = out[out.index("derived events") : out.index("event types per family")]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 7 and cells[2]:  # a row's first line (a folded cell's next lines have no type)
            rows.append((cells[2], cells[3], cells[4], cells[5]))
    return rows


def test_demo_runs_and_shows_every_family() -> None:
    # A temp directory of its own (readable by the postgres user the server may run as) shows
    # that the demo leaves nothing behind: no data directory, no events file.
    tmp = Path(tempfile.mkdtemp(prefix="cdc-demo-test-"))
    tmp.chmod(0o755)
    try:
        res = subprocess.run(
            [sys.executable, "-m", "cdc.cli", "demo"],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "TMPDIR": str(tmp)},
        )
        left = sorted(p.name for p in tmp.iterdir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert res.returncode == 0, res.stderr
    assert left == [], left
    rows = event_rows(res.stdout)
    assert f"{len(rows)} derived events" in res.stdout
    seen: dict[str, set[str]] = {}
    for event_type, *_ in rows:
        seen.setdefault(get_spec(event_type).family, set()).add(event_type)
    assert seen == EXPECTED_TYPES
    counts = Counter(event_type for event_type, *_ in rows)
    # one crossing of the Field team's capacity; the booking past the limit emits nothing
    assert counts["CAPACITY_THRESHOLD_REACHED"] == 1
    # two technicians dispatched at creation, the third on the reassignment
    assert counts["TECHNICIAN_DISPATCHED"] == 3
    by_type: dict[str, tuple[str, str, str, str]] = {}  # each type's first row
    for row in rows:
        by_type.setdefault(row[0], row)
    assert by_type["CAPACITY_THRESHOLD_REACHED"][1:] == (
        "team Field",
        "",
        "date=2027-01-12, capacityLimit=8.0, currentBooked=8.0",
    )
    # actors only where the transaction says who acts (the cdc.context message), never guessed
    assert by_type["APPOINTMENT_ASSIGNED"][1:3] == ("appointment (T-1001)", "USER dana")
    assert by_type["PROJECT_TASK_CREATED"][2] == "USER kim"
    assert by_type["PROJECT_CLOSED"][2] == "USER dana"
    assert by_type["TIME_ENTRY_APPROVED"][2] == "USER dana"
    assert by_type["APPOINTMENT_CREATED"][2] == ""
    assert by_type["PROJECT_CREATED"][2] == ""
    assert by_type["PROJECT_TASK_DEPENDENCY_BLOCKED"][1:] == ("task 1.1.2", "", "blockedByTaskId=task 1.1.1")
    # the summary below the table names each family
    for family in EXPECTED_TYPES:
        assert f"│ {family} " in res.stdout
