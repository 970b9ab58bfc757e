"""CAPACITY_THRESHOLD_REACHED through a real Postgres and the watcher (derivers.capacity).

Schedule writes shaped like the application's (``addScheduleEntry``: the entry, then its
assignee rows, in one transaction; deletes cascade to the assignees; a reassignment deletes and
re-inserts the assignee row). The team, its members, their resources and an inactive member are
written before the slot exists, so they reach the deriver through the state bootstrap; a later
capacity edit reaches it through the stream.

One workload, derived twice: by an uninterrupted in-process watcher, and by a ``cdc watch``
subprocess killed with SIGKILL in the middle (``CDC_FAULT``) and started again. The capacity
numbers live in the reference state persisted with the checkpoint, so the second run delivers
the same events, by key and byte, as the first.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from catalog.envelope import Envelope
from cdc import queries
from cdc.sinks.memory import MemorySink
from cdc.watch import Watcher, WatchOptions
from derivers import default_derivers
from tests.environ import command_env

from .conftest import run_sql, setup_with_state

pytestmark = pytest.mark.integration

T = "11111111-1111-4111-8111-111111111111"
DANA = "33333333-3333-4333-8333-333333333333"  # 4 h/day, 5 after "raise_capacity"
LEE = "44444444-4444-4444-8444-444444444444"  # 4 h/day
KIM = "34343434-3434-4343-8343-343434343434"  # 10 h/day, inactive: adds no capacity
TEAM = "7a7a7a7a-7a7a-47a7-87a7-7a7a7a7a7a7a"
E1, E2, E3, E4, E5 = (f"e0e0e0e0-0000-4000-8000-00000000000{n}" for n in range(1, 6))
EVENT = "CAPACITY_THRESHOLD_REACHED"

TEAM_SQL = f"""
INSERT INTO teams (tenant, team_id, team_name, manager_id) VALUES ('{T}', '{TEAM}', 'Field', '{DANA}');
INSERT INTO team_members (tenant, team_id, user_id) VALUES
  ('{T}', '{TEAM}', '{DANA}'), ('{T}', '{TEAM}', '{LEE}'), ('{T}', '{TEAM}', '{KIM}');
INSERT INTO resources (tenant, user_id, max_daily_capacity) VALUES
  ('{T}', '{DANA}', 4), ('{T}', '{LEE}', 4), ('{T}', '{KIM}', 10);
UPDATE users SET is_inactive = true WHERE tenant = '{T}' AND user_id = '{KIM}';
"""


def book(entry: str, start: str, end: str, user: str, context: str | None = None) -> str:
    """addScheduleEntry: the entry row, then its assignee row (one transaction)."""
    message = (
        f"SELECT pg_logical_emit_message(true, 'cdc.context', '{{\"actorUserId\": \"{context}\"}}');"
        if context
        else ""
    )
    return (
        f"{message}"
        "INSERT INTO schedule_entries (tenant, entry_id, title, scheduled_start, scheduled_end, status, "
        f"work_item_type) VALUES ('{T}', '{entry}', 'Onsite', '{start}', '{end}', 'scheduled', 'ad_hoc');"
        f"INSERT INTO schedule_entry_assignees (tenant, entry_id, user_id) VALUES ('{T}', '{entry}', '{user}');"
    )


#: One transaction each; the limit is 8 h (dana 4 + lee 4; kim inactive), 9 h after raise_capacity.
WORKLOAD = (
    ("dana_6h", book(E1, "2026-03-02 09:00Z", "2026-03-02 15:00Z", DANA)),  # 6 h: under
    ("lee_2h", book(E2, "2026-03-02 15:00Z", "2026-03-02 17:00Z", LEE)),  # 8 h: crossing
    ("lee_1h_more", book(E3, "2026-03-02 17:00Z", "2026-03-02 18:00Z", LEE)),  # 9 h: already past
    ("free_3h", f"DELETE FROM schedule_entries WHERE tenant = '{T}' AND entry_id IN ('{E2}', '{E3}')"),
    (
        "raise_capacity",
        f"UPDATE resources SET max_daily_capacity = 5 WHERE tenant = '{T}' AND user_id = '{DANA}'",
    ),
    # 21:00–09:00: 3 h on 03-02 (6 + 3 = 9) and 9 h on 03-03: two crossings, one per UTC day
    ("overnight", book(E4, "2026-03-02 21:00Z", "2026-03-03 09:00Z", LEE)),
    (
        "reassign",  # lee → kim, both in the team: the same hours, no event
        f"DELETE FROM schedule_entry_assignees WHERE tenant = '{T}' AND entry_id = '{E4}';"
        f"INSERT INTO schedule_entry_assignees (tenant, entry_id, user_id) VALUES ('{T}', '{E4}', '{KIM}');",
    ),
    ("with_actor", book(E5, "2026-03-04 08:00Z", "2026-03-04 17:00Z", DANA, context=LEE)),  # 9 h: crossing
)

#: Every event the workload delivers, in order: (transaction, event type). Nothing else — the
#: schedule entries of the workload are neither appointments nor private blocks, and only the
#: transaction with a ``cdc.context`` message names the user that SCHEDULE_ENTRY_CREATED requires.
DELIVERED = [
    ("lee_2h", EVENT),
    ("overnight", EVENT),
    ("overnight", EVENT),
    ("with_actor", "SCHEDULE_ENTRY_CREATED"),
    ("with_actor", EVENT),
]

EXPECTED = [  # (transaction, date, capacityLimit, currentBooked, actor)
    ("lee_2h", "2026-03-02", 8.0, 8.0, None),
    ("overnight", "2026-03-02", 9.0, 9.0, None),
    ("overnight", "2026-03-03", 9.0, 9.0, None),
    ("with_actor", "2026-03-04", 9.0, 9.0, LEE),
]


def prepare(dsn: str, *slots: str) -> None:
    run_sql(dsn, queries.raw("sample/workload", "seed"), TEAM_SQL)
    for slot in slots:
        setup_with_state(dsn, slot=slot)


def write_workload(dsn: str) -> dict[str, int]:
    """Runs the workload; each transaction's name → its xid."""
    xids: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        for name, statements in WORKLOAD:
            with conn.transaction():
                conn.execute(statements)  # type: ignore[call-overload]
                row = conn.execute("SELECT txid_current()").fetchone()
            assert row is not None
            xids[name] = int(row[0])
    return xids


def drain(dsn: str, slot: str) -> list[Envelope]:
    sink = MemorySink()
    opts = WatchOptions(dsn, slot=slot, once=True, heartbeat_interval=0.5, status_interval=1.0)
    Watcher(opts, sink, default_derivers()).run()
    return sink.envelopes


def watch_subprocess(
    dsn: str, slot: str, out: Path, fault: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = command_env()
    if fault:
        env["CDC_FAULT"] = fault
    args = ["watch", "--dsn", dsn, "--slot", slot, "--once", "--heartbeat-interval", "0.5"]
    args += ["--batch-transactions", "1", "--sink", f"jsonl:{out}"]
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return (
        [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        if path.exists()
        else []
    )


def comparable(envelope: dict[str, Any]) -> bytes:
    """The envelope's bytes less the slot name (two slots over one history)."""
    source = {k: v for k, v in envelope["source"].items() if k != "slot"}
    return orjson.dumps({**envelope, "source": source}, option=orjson.OPT_SORT_KEYS)


def test_capacity_crossings_are_exact_and_survive_a_kill_9(db_dsn: str, tmp_path: Path) -> None:
    prepare(db_dsn, "straight", "bumpy")
    xids = write_workload(db_dsn)

    # -- uninterrupted: exactly the crossings, nothing for the booking past the limit ----------------
    delivered = drain(db_dsn, "straight")
    names = {xid: name for name, xid in xids.items()}
    assert [(names.get(e.source.xid), e.event_type) for e in delivered] == DELIVERED
    straight = [e for e in delivered if e.event_type == EVENT]
    got = [
        (
            e.source.xid,
            e.payload["date"],
            e.payload["capacityLimit"],
            e.payload["currentBooked"],
            e.payload.get("actorUserId"),
        )
        for e in straight
    ]
    assert got == [(xids[name], date, limit, booked, actor) for name, date, limit, booked, actor in EXPECTED]
    for e in straight:
        assert e.payload == {
            "tenantId": T,
            "occurredAt": e.source.commit_time,
            **({"actorType": "USER", "actorUserId": LEE} if e.payload.get("actorUserId") else {}),
            "teamId": TEAM,
            "date": e.payload["date"],
            "capacityLimit": e.payload["capacityLimit"],
            "currentBooked": e.payload["currentBooked"],
            "triggeredAt": e.source.commit_time,
        }
        assert e.idempotency_key == f"{EVENT}:{T}:{TEAM}:{e.payload['date']}@{e.source.lsn}"
        assert e.source.table in ("public.schedule_entries", "public.schedule_entry_assignees")

    # -- killed with SIGKILL mid-workload (a batch durable in the sink, its checkpoint not written) --
    killed_out, resumed_out = tmp_path / "killed.jsonl", tmp_path / "resumed.jsonl"
    killed = watch_subprocess(db_dsn, "bumpy", killed_out, fault="watch.after_sink:6")
    assert killed.returncode == -9, killed.stderr
    before_kill = lines(killed_out)
    assert 1 <= len([e for e in before_kill if e["eventType"] == EVENT]) < len(EXPECTED)  # between crossings
    resumed = watch_subprocess(db_dsn, "bumpy", resumed_out)
    assert resumed.returncode == 0, resumed.stderr
    after_restart = lines(resumed_out)
    # the batch the kill cut off is derived again, from the state of the checkpoint before it
    assert {e["idempotencyKey"] for e in before_kill} & {e["idempotencyKey"] for e in after_restart}
    bumpy = before_kill + after_restart
    by_key = {e["idempotencyKey"]: comparable(e) for e in bumpy}
    assert by_key == {e.idempotency_key: comparable(e.to_dict()) for e in delivered}  # every event
