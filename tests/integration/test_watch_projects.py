"""Project and task events from application-shaped writes, through a real Postgres and the watch
loop: a project created, edited with a status change and closed; a task created with an
assignee, moved through the board's columns into a closed one, given an additional agent; a
``blocks`` dependency added (next to a ``related_to`` one) and removed. Every delivered event is
checked — type, idempotency key, payload — and nothing else may be delivered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from catalog.envelope import Envelope
from cdc.sinks.memory import MemorySink
from cdc.watch import Watcher, WatchOptions
from derivers import default_derivers

from .conftest import run_sql, setup_with_state

pytestmark = pytest.mark.integration

T = "11111111-1111-4111-8111-111111111111"
CLIENT = "22222222-2222-4222-8222-222222222222"
DANA, LEE, KIM = (
    "33333333-3333-4333-8333-333333333333",
    "44444444-4444-4444-8444-444444444444",
    "34343434-3434-4343-8343-343434343434",
)
ACTIVE, ON_HOLD, COMPLETED = (f"a0000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
TODO_STATUS, DONE_STD = "b0000000-0000-4000-8000-000000000001", "b0000000-0000-4000-8000-000000000002"
PROJECT = "c0000000-0000-4000-8000-000000000001"
PHASE = "c0000000-0000-4000-8000-000000000002"
MAP_TODO, MAP_DOING, MAP_DONE = (f"d0000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
TASK1, TASK2 = "e0000000-0000-4000-8000-000000000001", "e0000000-0000-4000-8000-000000000002"
BLOCKS, RELATED = "f0000000-0000-4000-8000-000000000001", "f0000000-0000-4000-8000-000000000002"

SEED = f"""
INSERT INTO tenants (tenant, client_name, email) VALUES ('{T}', 'Acme MSP', 'ops@acme.test');
INSERT INTO clients (tenant, client_id, client_name) VALUES ('{T}', '{CLIENT}', 'Globex');
INSERT INTO users (tenant, user_id, username, hashed_password, email, user_type, first_name, last_name) VALUES
  ('{T}', '{DANA}', 'dana', 'x', 'dana@acme.test', 'internal', 'Dana', 'Lopez'),
  ('{T}', '{LEE}', 'lee', 'x', 'lee@acme.test', 'internal', 'Lee', 'Chen'),
  ('{T}', '{KIM}', 'kim', 'x', 'kim@acme.test', 'internal', 'Kim', 'Park');
INSERT INTO statuses (tenant, status_id, name, status_type, item_type, order_number, is_closed) VALUES
  ('{T}', '{ACTIVE}', 'Active', 'project', 'project', 1, false),
  ('{T}', '{ON_HOLD}', 'On Hold', 'project', 'project', 2, false),
  ('{T}', '{COMPLETED}', 'Completed', 'project', 'project', 3, true),
  ('{T}', '{TODO_STATUS}', 'To Do', 'project_task', 'project_task', 1, false);
INSERT INTO standard_statuses (standard_status_id, name, item_type, display_order, is_closed) VALUES
  ('{DONE_STD}', 'Done', 'project_task', 9, true);
"""

CONTEXT_KIM = f"""SELECT pg_logical_emit_message(true, 'cdc.context', '{{"actorUserId": "{KIM}"}}')"""

# One list per transaction, in commit order, shaped like the application's writes (SPEC §5.9).
WORKLOAD: tuple[tuple[str, ...], ...] = (
    (  # createProject: the project, then its board's status columns
        "INSERT INTO projects (tenant, project_id, project_name, status, wbs_code, client_id, project_number, "
        f"created_at, updated_at) VALUES ('{T}', '{PROJECT}', 'Office move', '{ACTIVE}', '1', '{CLIENT}', "
        "'PRJ-0001', '2026-03-01T09:00:00Z', '2026-03-01T09:00:00Z')",
        "INSERT INTO project_status_mappings (tenant, project_id, status_id, standard_status_id, "
        "project_status_mapping_id, custom_name, display_order, is_standard) VALUES "
        f"('{T}', '{PROJECT}', '{TODO_STATUS}', NULL, '{MAP_TODO}', NULL, 1, false), "
        f"('{T}', '{PROJECT}', '{TODO_STATUS}', NULL, '{MAP_DOING}', 'Doing', 2, false), "
        f"('{T}', '{PROJECT}', NULL, '{DONE_STD}', '{MAP_DONE}', NULL, 3, true)",
    ),
    (  # addPhase
        "INSERT INTO project_phases (tenant, phase_id, project_id, phase_name, status, order_number, wbs_code) "
        f"VALUES ('{T}', '{PHASE}', '{PROJECT}', 'Planning', 'active', 1, '1.1')",
    ),
    (  # updateProject: a rename and a status change
        "UPDATE projects SET project_name = 'HQ move', status = "
        f"'{ON_HOLD}', updated_at = '2026-03-02T09:00:00Z' WHERE tenant = '{T}' AND project_id = '{PROJECT}'",
    ),
    (  # addTaskToPhase with an assignee
        CONTEXT_KIM,
        "INSERT INTO project_tasks (tenant, task_id, phase_id, task_name, assigned_to, due_date, wbs_code, "
        "created_at, updated_at, project_status_mapping_id, order_key) VALUES "
        f"('{T}', '{TASK1}', '{PHASE}', 'Pack the servers', '{DANA}', '2026-03-10T17:00:00Z', '1.1.1', "
        f"'2026-03-02T10:00:00Z', '2026-03-02T10:00:00Z', '{MAP_TODO}', 'a0')",
    ),
    (  # updateTaskStatus: dragged into the next column
        f"UPDATE project_tasks SET project_status_mapping_id = '{MAP_DOING}', order_key = 'a1', "
        f"updated_at = '2026-03-03T10:00:00Z' WHERE tenant = '{T}' AND task_id = '{TASK1}'",
    ),
    (  # addTaskResource, the writer saying who acts
        CONTEXT_KIM,
        "INSERT INTO task_resources (tenant, task_id, assigned_to, additional_user_id, assigned_at) VALUES "
        f"('{T}', '{TASK1}', '{DANA}', '{LEE}', '2026-03-03T11:00:00Z')",
    ),
    (  # dragged into the closed column
        f"UPDATE project_tasks SET project_status_mapping_id = '{MAP_DONE}', order_key = 'a2', "
        f"updated_at = '2026-03-04T10:00:00Z' WHERE tenant = '{T}' AND task_id = '{TASK1}'",
    ),
    (  # a second task, no assignee
        "INSERT INTO project_tasks (tenant, task_id, phase_id, task_name, wbs_code, created_at, updated_at, "
        f"project_status_mapping_id) VALUES ('{T}', '{TASK2}', '{PHASE}', 'Unplug the racks', '1.1.2', "
        f"'2026-03-04T11:00:00Z', '2026-03-04T11:00:00Z', '{MAP_TODO}')",
    ),
    (  # addTaskDependency: a blocking edge and a related_to one
        "INSERT INTO project_task_dependencies (tenant, dependency_id, predecessor_task_id, successor_task_id, "
        f"dependency_type, created_at) VALUES ('{T}', '{BLOCKS}', '{TASK1}', '{TASK2}', 'blocks', "
        f"'2026-03-04T12:00:00Z'), ('{T}', '{RELATED}', '{TASK2}', '{TASK1}', 'related_to', '2026-03-04T12:00:00Z')",
    ),
    (  # removeTaskDependency, both edges
        f"DELETE FROM project_task_dependencies WHERE tenant = '{T}'",
    ),
    (  # updateProject: closing, with the writer saying who acts
        CONTEXT_KIM,
        f"UPDATE projects SET status = '{COMPLETED}', updated_at = '2026-03-05T09:00:00Z' "
        f"WHERE tenant = '{T}' AND project_id = '{PROJECT}'",
    ),
)

AT = "<commit time>"  # a payload value equal to the transaction's commit time
BY_KIM = {"actorType": "USER", "actorUserId": KIM}


def changes(*triples: tuple[str, Any, Any]) -> dict[str, Any]:
    return {
        "updatedFields": [name for name, _, _ in triples],
        "changes": {name: {"previous": old, "new": new} for name, old, new in triples},
    }


TASK1_IDS = {"taskId": TASK1, "projectId": PROJECT}

# (transaction index, key head "<TYPE>:<tenant>:<subject>[:<discriminator>]", payload without tenantId)
EXPECTED: list[tuple[int, str, dict[str, Any]]] = [
    (0, f"PROJECT_CREATED:{T}:{PROJECT}", {"projectId": PROJECT, "createdAt": "2026-03-01T09:00:00.000Z"}),
    (1, f"PROJECT_PHASE_CREATED:{T}:{PHASE}", {"projectId": PROJECT, "phaseId": PHASE, "timestamp": AT}),
    (
        2,
        f"PROJECT_STATUS_CHANGED:{T}:{PROJECT}",
        {"projectId": PROJECT, "previousStatus": ACTIVE, "newStatus": ON_HOLD, "changedAt": AT},
    ),
    (
        2,
        f"PROJECT_UPDATED:{T}:{PROJECT}",
        {
            "projectId": PROJECT,
            "updatedAt": "2026-03-02T09:00:00.000Z",
            **changes(("projectName", "Office move", "HQ move"), ("status", ACTIVE, ON_HOLD)),
        },
    ),
    (
        3,
        f"PROJECT_TASK_CREATED:{T}:{TASK1}",
        {
            **BY_KIM,
            **TASK1_IDS,
            "createdByUserId": KIM,
            "createdAt": "2026-03-02T10:00:00.000Z",
            "title": "Pack the servers",
            "dueDate": "2026-03-10T17:00:00.000Z",
            "status": "To Do",
        },
    ),
    (
        3,
        f"PROJECT_TASK_ASSIGNED:{T}:{TASK1}",
        {
            **BY_KIM,
            **TASK1_IDS,
            "assignedToId": DANA,
            "assignedToType": "user",
            "assignedByUserId": KIM,
            "assignedByName": "Kim Park",
            "assignedAt": AT,
        },
    ),
    (
        4,
        f"PROJECT_TASK_STATUS_CHANGED:{T}:{TASK1}",
        {**TASK1_IDS, "previousStatus": "To Do", "newStatus": "Doing", "changedAt": AT},
    ),
    (
        4,
        f"PROJECT_TASK_UPDATED:{T}:{TASK1}",
        {
            **TASK1_IDS,
            "updatedAt": "2026-03-03T10:00:00.000Z",
            **changes(("projectStatusMappingId", MAP_TODO, MAP_DOING)),
        },
    ),
    (
        5,
        f"PROJECT_TASK_ADDITIONAL_AGENT_ASSIGNED:{T}:{TASK1}:{LEE}",
        {
            **BY_KIM,
            **TASK1_IDS,
            "primaryAgentId": DANA,
            "additionalAgentId": LEE,
            "assignedByUserId": KIM,
            "assignedAt": "2026-03-03T11:00:00.000Z",
        },
    ),
    (
        6,
        f"PROJECT_TASK_STATUS_CHANGED:{T}:{TASK1}",
        {**TASK1_IDS, "previousStatus": "Doing", "newStatus": "Done", "changedAt": AT},
    ),
    (6, f"PROJECT_TASK_COMPLETED:{T}:{TASK1}", {**TASK1_IDS, "completedAt": AT}),
    (
        6,
        f"PROJECT_TASK_UPDATED:{T}:{TASK1}",
        {
            **TASK1_IDS,
            "updatedAt": "2026-03-04T10:00:00.000Z",
            **changes(("projectStatusMappingId", MAP_DOING, MAP_DONE)),
        },
    ),
    (
        7,
        f"PROJECT_TASK_CREATED:{T}:{TASK2}",
        {
            "taskId": TASK2,
            "projectId": PROJECT,
            "createdAt": "2026-03-04T11:00:00.000Z",
            "title": "Unplug the racks",
            "status": "To Do",
        },
    ),
    (
        8,
        f"PROJECT_TASK_DEPENDENCY_BLOCKED:{T}:{TASK2}:{TASK1}",
        {
            "taskId": TASK2,
            "projectId": PROJECT,
            "blockedByTaskId": TASK1,
            "blockedAt": "2026-03-04T12:00:00.000Z",
        },
    ),
    (
        9,
        f"PROJECT_TASK_DEPENDENCY_UNBLOCKED:{T}:{TASK2}:{TASK1}",
        {"taskId": TASK2, "projectId": PROJECT, "unblockedByTaskId": TASK1, "unblockedAt": AT},
    ),
    (
        10,
        f"PROJECT_STATUS_CHANGED:{T}:{PROJECT}",
        {**BY_KIM, "projectId": PROJECT, "previousStatus": ON_HOLD, "newStatus": COMPLETED, "changedAt": AT},
    ),
    (
        10,
        f"PROJECT_CLOSED:{T}:{PROJECT}",
        {**BY_KIM, "projectId": PROJECT, "closedByUserId": KIM, "closedAt": AT},
    ),
    (
        10,
        f"PROJECT_UPDATED:{T}:{PROJECT}",
        {
            **BY_KIM,
            "projectId": PROJECT,
            "updatedAt": "2026-03-05T09:00:00.000Z",
            **changes(("status", ON_HOLD, COMPLETED)),
        },
    ),
]


def _seen(envelope: Envelope) -> dict[str, Any]:
    """The payload, the commit time written as AT and the tenant left out (checked apart)."""
    commit = envelope.source.commit_time
    return {k: AT if v == commit else v for k, v in envelope.payload.items() if k != "tenantId"}


def _lsn_number(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def test_project_and_task_workload_yields_exactly_the_expected_events(db_dsn: str) -> None:
    run_sql(db_dsn, SEED)
    setup_with_state(db_dsn)
    for statements in WORKLOAD:
        with psycopg.connect(db_dsn) as conn, conn.transaction():
            for statement in statements:
                conn.execute(statement)  # type: ignore[call-overload]

    sink = MemorySink()
    opts = WatchOptions(db_dsn, once=True, heartbeat_interval=0.5, status_interval=1.0)
    Watcher(opts, sink, default_derivers()).run()
    envelopes = sink.envelopes

    # Which transaction each event came from: commit LSNs in order number the transactions.
    lsns = sorted({e.source.lsn for e in envelopes}, key=_lsn_number)
    transactions_with_events = sorted({i for i, _, _ in EXPECTED})
    assert len(lsns) == len(transactions_with_events)
    tx_of = dict(zip(lsns, transactions_with_events, strict=True))

    got = [(tx_of[e.source.lsn], e.idempotency_key.rsplit("@", 1)[0], _seen(e)) for e in envelopes]
    want = [(i, head, {"occurredAt": AT, **payload}) for i, head, payload in EXPECTED]
    assert got == want
    for e in envelopes:
        assert e.payload["tenantId"] == T
        assert e.event_type == e.idempotency_key.split(":", 1)[0]
        assert e.idempotency_key.endswith("@" + e.source.lsn)
        assert e.timestamp == e.payload["occurredAt"] == e.source.commit_time
        assert e.source.table.startswith("public.project") or e.source.table == "public.task_resources"
    # Nothing is left to deliver.
    again = MemorySink()
    Watcher(opts, again, default_derivers()).run()
    assert again.envelopes == []


def documented_trigger() -> str:
    """The SQL block after the ``cdc-context-trigger`` marker of docs/derivers.md, as written."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "derivers.md").read_text(encoding="utf-8")
    block = text.split("<!-- cdc-context-trigger -->", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    return "\n".join(line.removeprefix("  ") for line in block.splitlines())


def test_the_documented_trigger_sends_the_context_of_a_setting(db_dsn: str) -> None:
    """docs/derivers.md's trigger: a transaction that sets ``app.user_id`` gets that user as its
    actor (PROJECT_DELETED, which requires it, is emitted; the phase deleted with the project is
    not news then); one without the setting gets no actor and no message."""
    run_sql(db_dsn, SEED)
    run_sql(db_dsn, documented_trigger())
    setup_with_state(db_dsn)
    for statements in (
        WORKLOAD[0],
        WORKLOAD[1],
        (f"UPDATE projects SET project_name = 'HQ move' WHERE tenant = '{T}' AND project_id = '{PROJECT}'",),
        (
            f"SET LOCAL app.user_id = '{KIM}'",
            f"DELETE FROM project_phases WHERE tenant = '{T}'",
            f"DELETE FROM project_status_mappings WHERE tenant = '{T}'",
            f"DELETE FROM projects WHERE tenant = '{T}'",
        ),
    ):
        with psycopg.connect(db_dsn) as conn, conn.transaction():
            for statement in statements:
                conn.execute(statement)  # type: ignore[call-overload]

    sink = MemorySink()
    Watcher(WatchOptions(db_dsn, once=True, heartbeat_interval=0.5), sink, default_derivers()).run()
    got = [(e.event_type, _seen(e)) for e in sink.envelopes]
    assert got == [
        (
            "PROJECT_CREATED",
            {"occurredAt": AT, "projectId": PROJECT, "createdAt": "2026-03-01T09:00:00.000Z"},
        ),
        (
            "PROJECT_PHASE_CREATED",
            {"occurredAt": AT, "projectId": PROJECT, "phaseId": PHASE, "timestamp": AT},
        ),
        (
            "PROJECT_UPDATED",
            {
                "occurredAt": AT,
                "projectId": PROJECT,
                "updatedAt": AT,
                **changes(("projectName", "Office move", "HQ move")),
            },
        ),
        ("PROJECT_DELETED", {"occurredAt": AT, **BY_KIM, "projectId": PROJECT, "userId": KIM}),
    ]
