"""The project deriver (derivers.projects): projects, phases, tasks, additional agents, dependencies.

Each case is a folded transaction and the exact drafts it must yield: event type, subject,
discriminator and the whole payload (``tenantId`` and ``occurredAt`` added by the check).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from derivers.projects import ProjectDeriver
from derivers.testing import FakeChange, FakeState, FakeTimers, make_tx
from tests.unit.derive_cases import (
    COMMIT,
    EARLIER,
    NOW,
    STAFF,
    STAFF2,
    STAFF3,
    TEAM_A,
    TENANT,
    base_state,
    dele,
    ins,
    run,
    u,
    upd,
)

PROJECTS = "public.projects"
PHASES = "public.project_phases"
TASKS = "public.project_tasks"
TASK_RES = "public.task_resources"
DEPS = "public.project_task_dependencies"
STATUSES = "public.statuses"
MAPPINGS = "public.project_status_mappings"
STANDARD = "public.standard_statuses"

PROJ, PROJ2 = u(300), u(301)
PHASE1, PHASE2, PHASE_UNKNOWN = u(310), u(311), u(319)
TASK1, TASK2, TASK3 = u(320), u(321), u(322)
P_ACTIVE, P_ON_HOLD, P_DONE, P_ARCHIVED, P_UNKNOWN = u(330), u(331), u(332), u(333), u(339)
S_TODO, S_DONE = u(340), u(341)
STD_DONE = u(350)
MAP_TODO, MAP_DONE, MAP_REVIEW, MAP_STD, MAP_BARE, MAP_UNKNOWN = (
    u(360),
    u(361),
    u(362),
    u(363),
    u(364),
    u(369),
)
DEP1, DEP2 = u(370), u(371)
RES1, RES2 = u(380), u(381)
CLIENT = u(80)

CONTEXT = [("cdc.context", f'{{"actorUserId": "{STAFF2}"}}'.encode())]
BY_STAFF2 = {"actorType": "USER", "actorUserId": STAFF2}


def project_row(project_id: str = PROJ, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "project_id": project_id,
        "project_name": "Office move",
        "description": None,
        "start_date": None,
        "end_date": None,
        "status": P_ACTIVE,
        "wbs_code": "1",
        "created_at": EARLIER,
        "updated_at": EARLIER,
        "is_inactive": False,
        "assigned_to": None,
        "contact_name_id": None,
        "budgeted_hours": None,
        "client_id": CLIENT,
        "project_number": "PRJ-0001",
        "client_portal_config": {"show_tasks": False},
        "billing_profile_id": None,
    }
    row.update(values)
    return row


def phase_row(phase_id: str = PHASE1, project_id: str = PROJ, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "phase_id": phase_id,
        "project_id": project_id,
        "phase_name": "Planning",
        "description": None,
        "start_date": None,
        "end_date": None,
        "status": "active",
        "order_number": 1,
        "wbs_code": "1.1",
        "created_at": EARLIER,
        "updated_at": EARLIER,
        "order_key": "a0",
        "completed_at": None,
    }
    row.update(values)
    return row


def task_row(task_id: str = TASK1, phase_id: str = PHASE1, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "task_id": task_id,
        "phase_id": phase_id,
        "task_name": "Pack the servers",
        "description": None,
        "assigned_to": None,
        "estimated_hours": None,
        "due_date": None,
        "actual_hours": None,
        "status_id": None,
        "wbs_code": "1.1.1",
        "created_at": EARLIER,
        "updated_at": EARLIER,
        "project_status_mapping_id": MAP_TODO,
        "order_key": "a0",
        "task_type_key": "task",
        "priority_id": None,
        "service_id": None,
        "assigned_team_id": None,
        "description_rich_text": None,
    }
    row.update(values)
    return row


def resource_row(assignment_id: str, agent: str | None, task_id: str = TASK1) -> dict[str, Any]:
    return {
        "tenant": TENANT,
        "assignment_id": assignment_id,
        "task_id": task_id,
        "assigned_to": STAFF,
        "additional_user_id": agent,
        "role": None,
        "assigned_at": "2026-01-02T03:04:05.100Z",
    }


def dep_row(
    dep_id: str = DEP1, predecessor: str = TASK1, successor: str = TASK2, kind: str = "blocks"
) -> dict[str, Any]:
    return {
        "tenant": TENANT,
        "dependency_id": dep_id,
        "predecessor_task_id": predecessor,
        "successor_task_id": successor,
        "dependency_type": kind,
        "lead_lag_days": 0,
        "notes": None,
        "created_at": "2026-01-02T03:04:05.200Z",
        "updated_at": "2026-01-02T03:04:05.200Z",
    }


def mapping_row(mapping_id: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenant": TENANT,
        "project_id": PROJ,
        "status_id": None,
        "standard_status_id": None,
        "project_status_mapping_id": mapping_id,
        "custom_name": None,
        "display_order": 1,
        "is_visible": True,
        "is_standard": False,
        "phase_id": None,
    }
    row.update(values)
    return row


def project_state() -> FakeState:
    state = base_state()
    email = f"{STAFF2[-2:]}@example.test"
    state.put(
        "public.users",
        (TENANT, STAFF2, email),
        {"tenant": TENANT, "user_id": STAFF2, "email": email, "first_name": "Lee", "last_name": "Park"},
    )
    for status, name, kind, closed in (
        (P_ACTIVE, "Active", "project", False),
        (P_ON_HOLD, "On Hold", "project", False),
        (P_DONE, "Completed", "project", True),
        (P_ARCHIVED, "Archived", "project", True),
        (S_TODO, "To Do", "project_task", False),
        (S_DONE, "Done", "project_task", True),
    ):
        state.put(
            STATUSES,
            (TENANT, status),
            {"tenant": TENANT, "status_id": status, "name": name, "status_type": kind, "is_closed": closed},
        )
    state.put(
        STANDARD,
        (STD_DONE,),
        {"standard_status_id": STD_DONE, "name": "Completed", "item_type": "project_task", "is_closed": True},
    )
    for mapping in (
        mapping_row(MAP_TODO, status_id=S_TODO),
        mapping_row(MAP_DONE, status_id=S_DONE),
        mapping_row(MAP_REVIEW, status_id=S_TODO, custom_name="Review"),
        mapping_row(MAP_STD, standard_status_id=STD_DONE, is_standard=True),
        mapping_row(MAP_BARE),
    ):
        state.put(MAPPINGS, (TENANT, mapping["project_status_mapping_id"]), mapping)
    state.put(PHASES, (TENANT, PHASE1), phase_row())
    state.put(PHASES, (TENANT, PHASE2), phase_row(PHASE2, PROJ2, wbs_code="2.1"))
    for task in (task_row(TASK1, assigned_to=STAFF), task_row(TASK2), task_row(TASK3)):
        state.put(TASKS, (TENANT, task["task_id"]), task)
    return state


Want = tuple[str, str, str | None, dict[str, Any]]  # event type, subject, discriminator, payload


def check(
    changes: Sequence[FakeChange],
    expected: Sequence[Want],
    messages: Sequence[tuple[str, bytes]] = (),
    state: FakeState | None = None,
) -> None:
    result = run(changes, state=state or project_state(), messages=messages)
    got = [
        (d.draft.event_type, d.draft.subject_id, d.draft.discriminator, e.payload)
        for d, e in zip(result.derived, result.envelopes, strict=True)
    ]
    want = [(t, s, disc, {"tenantId": TENANT, "occurredAt": NOW, **p}) for t, s, disc, p in expected]
    assert got == want
    assert all(d.draft.tenant == TENANT for d in result.derived)


WRITTEN_AT = "2026-01-02T03:00:00.000Z"  # an updated_at the change wrote (else: the commit time)


def changes_of(*triples: tuple[str, Any, Any]) -> dict[str, Any]:
    return {
        "updatedFields": [name for name, _, _ in triples],
        "changes": {name: {"previous": old, "new": new} for name, old, new in triples},
    }


# --- projects --------------------------------------------------------------------------------------

PROJECT_CASES = [
    pytest.param(
        [ins(PROJECTS, project_row())],
        [],
        [("PROJECT_CREATED", PROJ, None, {"projectId": PROJ, "createdAt": EARLIER})],
        id="created",
    ),
    pytest.param(
        [ins(PROJECTS, project_row(assigned_to=STAFF))],
        CONTEXT,
        [
            (
                "PROJECT_CREATED",
                PROJ,
                None,
                {**BY_STAFF2, "projectId": PROJ, "createdByUserId": STAFF2, "createdAt": EARLIER},
            ),
            (
                "PROJECT_ASSIGNED",
                PROJ,
                None,
                {
                    **BY_STAFF2,
                    "projectId": PROJ,
                    "assignedToId": STAFF,
                    "assignedToType": "user",
                    "assignedByUserId": STAFF2,
                    "assignedAt": NOW,
                },
            ),
        ],
        id="created-assigned-with-context-actor",
    ),
    pytest.param(
        [upd(PROJECTS, project_row(), project_row(status=P_DONE, updated_at=NOW))],
        [],
        [
            (
                "PROJECT_STATUS_CHANGED",
                PROJ,
                None,
                {"projectId": PROJ, "previousStatus": P_ACTIVE, "newStatus": P_DONE, "changedAt": NOW},
            ),
            ("PROJECT_CLOSED", PROJ, None, {"projectId": PROJ, "closedAt": NOW}),
            (
                "PROJECT_UPDATED",
                PROJ,
                None,
                {"projectId": PROJ, "updatedAt": NOW, **changes_of(("status", P_ACTIVE, P_DONE))},
            ),
        ],
        id="status-to-closed",
    ),
    pytest.param(
        [upd(PROJECTS, project_row(status=P_DONE), project_row(status=P_ON_HOLD))],
        CONTEXT,
        [
            (
                "PROJECT_STATUS_CHANGED",
                PROJ,
                None,
                {
                    **BY_STAFF2,
                    "projectId": PROJ,
                    "previousStatus": P_DONE,
                    "newStatus": P_ON_HOLD,
                    "changedAt": NOW,
                },
            ),
            (
                "PROJECT_UPDATED",
                PROJ,
                None,
                {
                    **BY_STAFF2,
                    "projectId": PROJ,
                    "updatedAt": NOW,
                    **changes_of(("status", P_DONE, P_ON_HOLD)),
                },
            ),
        ],
        id="status-reopened-no-close",
    ),
    pytest.param(
        [upd(PROJECTS, project_row(status=P_DONE), project_row(status=P_ARCHIVED))],
        [],
        [
            (
                "PROJECT_STATUS_CHANGED",
                PROJ,
                None,
                {"projectId": PROJ, "previousStatus": P_DONE, "newStatus": P_ARCHIVED, "changedAt": NOW},
            ),
            (
                "PROJECT_UPDATED",
                PROJ,
                None,
                {"projectId": PROJ, "updatedAt": NOW, **changes_of(("status", P_DONE, P_ARCHIVED))},
            ),
        ],
        id="closed-to-closed-not-closed-again",
    ),
    pytest.param(
        [upd(PROJECTS, project_row(status=P_UNKNOWN), project_row(status=P_DONE))],
        [],
        [
            (
                "PROJECT_STATUS_CHANGED",
                PROJ,
                None,
                {"projectId": PROJ, "previousStatus": P_UNKNOWN, "newStatus": P_DONE, "changedAt": NOW},
            ),
            (
                "PROJECT_UPDATED",
                PROJ,
                None,
                {"projectId": PROJ, "updatedAt": NOW, **changes_of(("status", P_UNKNOWN, P_DONE))},
            ),
        ],
        id="from-unknown-status-no-close-guessed",
    ),
    pytest.param(
        [
            upd(
                PROJECTS,
                project_row(),
                project_row(
                    project_name="HQ move", assigned_to=STAFF, client_portal_config={"show_tasks": True}
                ),
            )
        ],
        [],
        [
            (
                "PROJECT_ASSIGNED",
                PROJ,
                None,
                {"projectId": PROJ, "assignedToId": STAFF, "assignedToType": "user", "assignedAt": NOW},
            ),
            (
                "PROJECT_UPDATED",
                PROJ,
                None,
                {
                    "projectId": PROJ,
                    "updatedAt": NOW,
                    **changes_of(
                        ("projectName", "Office move", "HQ move"),
                        ("assignedTo", None, STAFF),
                        ("clientPortalConfig", {"show_tasks": False}, {"show_tasks": True}),
                    ),
                },
            ),
        ],
        id="edit-and-assign-camel-case",
    ),
    pytest.param(
        [upd(PROJECTS, project_row(assigned_to=STAFF), project_row())],
        [],
        [
            (
                "PROJECT_UPDATED",
                PROJ,
                None,
                {"projectId": PROJ, "updatedAt": NOW, **changes_of(("assignedTo", STAFF, None))},
            )
        ],
        id="unassigned-no-assigned-event",
    ),
    pytest.param(
        [upd(PROJECTS, project_row(assigned_to=STAFF), project_row(updated_at=WRITTEN_AT))],
        [],
        [
            (
                "PROJECT_UPDATED",
                PROJ,
                None,
                {"projectId": PROJ, "updatedAt": WRITTEN_AT, **changes_of(("assignedTo", STAFF, None))},
            )
        ],
        id="updated_at-written-is-updatedAt",
    ),
    pytest.param([upd(PROJECTS, project_row(), project_row(updated_at=NOW))], [], [], id="updated_at-only"),
    pytest.param([dele(PROJECTS, project_row())], [], [], id="deleted-without-actor-cannot-be-emitted"),
    pytest.param(
        [dele(TASKS, task_row()), dele(PHASES, phase_row()), dele(PROJECTS, project_row())],
        CONTEXT,
        [("PROJECT_DELETED", PROJ, None, {**BY_STAFF2, "projectId": PROJ, "userId": STAFF2})],
        id="deleted-with-context-cascade-is-one-event",
    ),
    pytest.param(
        [dele(TASKS, task_row()), dele(PHASES, phase_row()), dele(PROJECTS, project_row())],
        [],
        [("PROJECT_PHASE_DELETED", PHASE1, None, {"projectId": PROJ, "phaseId": PHASE1, "timestamp": NOW})],
        id="deleted-without-actor-its-phases-deletion-is-reported",
    ),
]


@pytest.mark.parametrize(("changes", "messages", "expected"), PROJECT_CASES)
def test_projects(changes: list[FakeChange], messages: list[tuple[str, bytes]], expected: list[Want]) -> None:
    check(changes, expected, messages)


def test_a_project_moving_to_a_status_closed_in_the_same_transaction_is_closed() -> None:
    state = project_state()
    on_hold_closed = {"tenant": TENANT, "status_id": P_ON_HOLD, "name": "On Hold", "is_closed": True}
    state.put(STATUSES, (TENANT, P_ON_HOLD), on_hold_closed)  # the state is applied first
    before = {**on_hold_closed, "is_closed": False}
    result = run(
        [upd(STATUSES, before, on_hold_closed), upd(PROJECTS, project_row(), project_row(status=P_ON_HOLD))],
        state=state,
    )
    assert result.types == ["PROJECT_STATUS_CHANGED", "PROJECT_CLOSED", "PROJECT_UPDATED"]


# --- phases ----------------------------------------------------------------------------------------

PHASE_BASE = {"projectId": PROJ, "phaseId": PHASE1, "timestamp": NOW}

PHASE_CASES = [
    pytest.param(
        [ins(PHASES, phase_row())], [], [("PROJECT_PHASE_CREATED", PHASE1, None, PHASE_BASE)], id="created"
    ),
    pytest.param(
        [upd(PHASES, phase_row(), phase_row(phase_name="Design", completed_at=NOW, order_key="b0"))],
        CONTEXT,
        [
            (
                "PROJECT_PHASE_UPDATED",
                PHASE1,
                None,
                {
                    **BY_STAFF2,
                    **PHASE_BASE,
                    "userId": STAFF2,
                    **changes_of(("phaseName", "Planning", "Design"), ("completedAt", None, NOW)),
                },
            )
        ],
        id="updated",
    ),
    pytest.param(
        [upd(PHASES, phase_row(), phase_row(order_key="b0", updated_at=NOW))], [], [], id="reordered"
    ),
    pytest.param(
        [dele(PHASES, phase_row())], [], [("PROJECT_PHASE_DELETED", PHASE1, None, PHASE_BASE)], id="deleted"
    ),
]


@pytest.mark.parametrize(("changes", "messages", "expected"), PHASE_CASES)
def test_phases(changes: list[FakeChange], messages: list[tuple[str, bytes]], expected: list[Want]) -> None:
    check(changes, expected, messages)


# --- tasks -----------------------------------------------------------------------------------------

TASK_IDS = {"taskId": TASK1, "projectId": PROJ}


def assigned(user: str, kind: str = "user", **extra: Any) -> dict[str, Any]:
    return {**TASK_IDS, "assignedToId": user, "assignedToType": kind, **extra, "assignedAt": NOW}


TASK_CASES = [
    pytest.param(
        [ins(TASKS, task_row(assigned_to=STAFF, due_date=NOW))],
        [],
        [
            (
                "PROJECT_TASK_CREATED",
                TASK1,
                None,
                {
                    **TASK_IDS,
                    "createdAt": EARLIER,
                    "title": "Pack the servers",
                    "dueDate": NOW,
                    "status": "To Do",
                },
            ),
            ("PROJECT_TASK_ASSIGNED", TASK1, None, assigned(STAFF)),
        ],
        id="created-with-assignee",
    ),
    pytest.param(
        [ins(TASKS, task_row(assigned_team_id=TEAM_A))],
        CONTEXT,
        [
            (
                "PROJECT_TASK_CREATED",
                TASK1,
                None,
                {
                    **BY_STAFF2,
                    **TASK_IDS,
                    "createdByUserId": STAFF2,
                    "createdAt": EARLIER,
                    "title": "Pack the servers",
                    "status": "To Do",
                },
            ),
            (
                "PROJECT_TASK_ASSIGNED",
                TASK1,
                "team",
                {**BY_STAFF2, **assigned(TEAM_A, "team", assignedByUserId=STAFF2, assignedByName="Lee Park")},
            ),
        ],
        id="created-with-team-and-context",
    ),
    pytest.param(
        [ins(TASKS, task_row(phase_id=PHASE_UNKNOWN))], [], [], id="phase-unknown-no-project-guessed"
    ),
    pytest.param(
        [ins(TASKS, task_row(project_status_mapping_id=None, status_id=None))], [], [], id="no-status-at-all"
    ),
    pytest.param(
        [
            upd(
                TASKS,
                task_row(),
                task_row(project_status_mapping_id=MAP_DONE, order_key="b0", updated_at=NOW),
            )
        ],
        [],
        [
            (
                "PROJECT_TASK_STATUS_CHANGED",
                TASK1,
                None,
                {**TASK_IDS, "previousStatus": "To Do", "newStatus": "Done", "changedAt": NOW},
            ),
            ("PROJECT_TASK_COMPLETED", TASK1, None, {**TASK_IDS, "completedAt": NOW}),
            (
                "PROJECT_TASK_UPDATED",
                TASK1,
                None,
                {**TASK_IDS, "updatedAt": NOW, **changes_of(("projectStatusMappingId", MAP_TODO, MAP_DONE))},
            ),
        ],
        id="moved-into-closed-column",
    ),
    pytest.param(
        [
            upd(
                TASKS,
                task_row(project_status_mapping_id=MAP_DONE),
                task_row(project_status_mapping_id=MAP_STD),
            )
        ],
        [],
        [
            (
                "PROJECT_TASK_STATUS_CHANGED",
                TASK1,
                None,
                {**TASK_IDS, "previousStatus": "Done", "newStatus": "Completed", "changedAt": NOW},
            ),
            (
                "PROJECT_TASK_UPDATED",
                TASK1,
                None,
                {
                    **TASK_IDS,
                    "updatedAt": NOW,
                    **changes_of(("projectStatusMappingId", MAP_DONE, MAP_STD)),
                },
            ),
        ],
        id="closed-to-closed-not-completed-again",
    ),
    pytest.param(
        [upd(TASKS, task_row(assigned_to=STAFF), task_row(assigned_to=STAFF3, task_name="Pack"))],
        [],
        [
            ("PROJECT_TASK_ASSIGNED", TASK1, None, assigned(STAFF3)),
            (
                "PROJECT_TASK_UPDATED",
                TASK1,
                None,
                {
                    **TASK_IDS,
                    "updatedAt": NOW,
                    **changes_of(("taskName", "Pack the servers", "Pack"), ("assignedTo", STAFF, STAFF3)),
                },
            ),
        ],
        id="reassigned-and-renamed",
    ),
    pytest.param(
        [upd(TASKS, task_row(assigned_to=STAFF), task_row())],
        [],
        [
            (
                "PROJECT_TASK_UPDATED",
                TASK1,
                None,
                {**TASK_IDS, "updatedAt": NOW, **changes_of(("assignedTo", STAFF, None))},
            )
        ],
        id="unassigned",
    ),
    pytest.param(
        [upd(TASKS, task_row(), task_row(order_key="a5", wbs_code="1.1.9", updated_at=NOW))],
        [],
        [],
        id="reordered-only",
    ),
    pytest.param(
        [upd(TASKS, task_row(), task_row(phase_id=PHASE2))],
        [],
        [
            (
                "PROJECT_TASK_UPDATED",
                TASK1,
                None,
                {
                    "taskId": TASK1,
                    "projectId": PROJ2,
                    "updatedAt": NOW,
                    **changes_of(("phaseId", PHASE1, PHASE2)),
                },
            )
        ],
        id="moved-to-another-project's-phase",
    ),
    pytest.param(
        [dele(TASKS, task_row())],
        CONTEXT,
        [
            (
                "PROJECT_TASK_DELETED",
                TASK1,
                None,
                {**BY_STAFF2, **TASK_IDS, "phaseId": PHASE1, "userId": STAFF2, "timestamp": NOW},
            )
        ],
        id="deleted",
    ),
    pytest.param(
        [dele(TASKS, task_row()), dele(PHASES, phase_row())],
        [],
        [("PROJECT_PHASE_DELETED", PHASE1, None, PHASE_BASE)],
        id="deleted-with-its-phase",
    ),
]


@pytest.mark.parametrize(("changes", "messages", "expected"), TASK_CASES)
def test_tasks(changes: list[FakeChange], messages: list[tuple[str, bytes]], expected: list[Want]) -> None:
    check(changes, expected, messages)


@pytest.mark.parametrize(
    ("mapping", "status_id", "name"),
    [
        pytest.param(MAP_REVIEW, None, "Review", id="custom-name-first"),
        pytest.param(MAP_DONE, None, "Done", id="status-name"),
        pytest.param(MAP_STD, None, "Completed", id="standard-status-name"),
        pytest.param(MAP_BARE, None, MAP_BARE, id="nothing-named-mapping-id"),
        pytest.param(MAP_UNKNOWN, None, MAP_UNKNOWN, id="unknown-mapping-id"),
        pytest.param(None, S_DONE, "Done", id="no-mapping-legacy-status_id"),
    ],
)
def test_created_task_status_name(mapping: str | None, status_id: str | None, name: str) -> None:
    result = run(
        [ins(TASKS, task_row(project_status_mapping_id=mapping, status_id=status_id))], state=project_state()
    )
    assert [(e.event_type, e.payload["status"]) for e in result.envelopes] == [("PROJECT_TASK_CREATED", name)]


def test_previous_status_name_is_as_before_the_transaction() -> None:
    """The column renamed and the task moved out of it in one transaction: the old name."""
    state = project_state()
    renamed = mapping_row(MAP_TODO, status_id=S_TODO, custom_name="Backlog")
    state.put(MAPPINGS, (TENANT, MAP_TODO), renamed)
    result = run(
        [
            upd(MAPPINGS, mapping_row(MAP_TODO, status_id=S_TODO), renamed),
            upd(TASKS, task_row(), task_row(project_status_mapping_id=MAP_REVIEW)),
        ],
        state=state,
    )
    (changed,) = [e for e in result.envelopes if e.event_type == "PROJECT_TASK_STATUS_CHANGED"]
    assert (changed.payload["previousStatus"], changed.payload["newStatus"]) == ("To Do", "Review")


def test_a_task_without_a_mapping_moved_into_a_column_changes_status_from_its_legacy_status() -> None:
    """A legacy row (no mapping, a ``status_id``) is created and read with that status's name;
    moved into a column, its status changes from that name, as it was shown."""
    result = run(
        [
            upd(
                TASKS,
                task_row(project_status_mapping_id=None, status_id=S_TODO),
                task_row(project_status_mapping_id=MAP_REVIEW, status_id=S_TODO),
            )
        ],
        state=project_state(),
    )
    (changed,) = [e for e in result.envelopes if e.event_type == "PROJECT_TASK_STATUS_CHANGED"]
    assert (changed.payload["previousStatus"], changed.payload["newStatus"]) == ("To Do", "Review")


# --- additional agents ----------------------------------------------------------------------------


def agent(who: str) -> dict[str, Any]:
    return {
        **TASK_IDS,
        "primaryAgentId": STAFF,
        "additionalAgentId": who,
        "assignedAt": "2026-01-02T03:04:05.100Z",
    }


AGENT_CASES = [
    pytest.param(
        [ins(TASK_RES, resource_row(RES1, STAFF2)), ins(TASK_RES, resource_row(RES2, STAFF3))],
        [],
        [
            ("PROJECT_TASK_ADDITIONAL_AGENT_ASSIGNED", TASK1, STAFF2, agent(STAFF2)),
            ("PROJECT_TASK_ADDITIONAL_AGENT_ASSIGNED", TASK1, STAFF3, agent(STAFF3)),
        ],
        id="two-agents",
    ),
    pytest.param(
        [dele(TASK_RES, resource_row(RES1, STAFF2)), ins(TASK_RES, resource_row(RES2, STAFF2))],
        [],
        [],
        id="removed-and-added-back-is-churn",
    ),
    pytest.param(
        [ins(TASK_RES, resource_row(RES1, STAFF2)), ins(TASK_RES, resource_row(RES2, STAFF2))],
        [],
        [("PROJECT_TASK_ADDITIONAL_AGENT_ASSIGNED", TASK1, STAFF2, agent(STAFF2))],
        id="one-agent-in-two-rows-once",
    ),
    pytest.param(
        [upd(TASK_RES, resource_row(RES1, STAFF2), resource_row(RES1, STAFF3))],
        [],
        [("PROJECT_TASK_ADDITIONAL_AGENT_ASSIGNED", TASK1, STAFF3, {**agent(STAFF3), "assignedAt": NOW})],
        id="row-updated-to-another-agent",
    ),
    pytest.param(
        [
            upd(
                TASK_RES,
                resource_row(RES1, STAFF2),
                {**resource_row(RES1, STAFF3), "assigned_at": "2026-01-02T03:04:05.300Z"},
            )
        ],
        [],
        [
            (
                "PROJECT_TASK_ADDITIONAL_AGENT_ASSIGNED",
                TASK1,
                STAFF3,
                {**agent(STAFF3), "assignedAt": "2026-01-02T03:04:05.300Z"},
            )
        ],
        id="row-updated-to-another-agent-with-its-time",
    ),
    pytest.param(
        [upd(TASK_RES, resource_row(RES1, STAFF2), {**resource_row(RES1, STAFF2), "role": "reviewer"})],
        [],
        [],
        id="row-updated-same-agent-is-nothing",
    ),
    pytest.param([ins(TASK_RES, resource_row(RES1, None))], [], [], id="no-additional-user"),
    pytest.param([dele(TASK_RES, resource_row(RES1, STAFF2))], [], [], id="removed"),
    pytest.param([ins(TASK_RES, resource_row(RES1, STAFF2, task_id=u(399)))], [], [], id="task-unknown"),
]


@pytest.mark.parametrize(("changes", "messages", "expected"), AGENT_CASES)
def test_additional_agents(
    changes: list[FakeChange], messages: list[tuple[str, bytes]], expected: list[Want]
) -> None:
    check(changes, expected, messages)


# --- dependencies ----------------------------------------------------------------------------------

BLOCKED = (
    "PROJECT_TASK_DEPENDENCY_BLOCKED",
    TASK2,
    TASK1,
    {"taskId": TASK2, "projectId": PROJ, "blockedByTaskId": TASK1, "blockedAt": "2026-01-02T03:04:05.200Z"},
)
UNBLOCKED = (
    "PROJECT_TASK_DEPENDENCY_UNBLOCKED",
    TASK2,
    TASK1,
    {"taskId": TASK2, "projectId": PROJ, "unblockedByTaskId": TASK1, "unblockedAt": NOW},
)

DEPENDENCY_CASES = [
    pytest.param([ins(DEPS, dep_row())], [BLOCKED], id="blocks-added"),
    pytest.param([ins(DEPS, dep_row(kind="related_to"))], [], id="related-to-added"),
    pytest.param([dele(DEPS, dep_row())], [UNBLOCKED], id="blocks-removed"),
    pytest.param([dele(DEPS, dep_row(kind="related_to"))], [], id="related-to-removed"),
    pytest.param(
        [upd(DEPS, dep_row(kind="related_to"), dep_row())],
        [(*BLOCKED[:3], {**BLOCKED[3], "blockedAt": NOW})],
        id="related-to-becomes-blocks",
    ),
    pytest.param(
        [upd(DEPS, dep_row(), dep_row(kind="related_to"))], [UNBLOCKED], id="blocks-becomes-related-to"
    ),
    pytest.param([dele(DEPS, dep_row()), ins(DEPS, dep_row(DEP2))], [], id="edge-replaced-still-blocked"),
    pytest.param(
        [ins(DEPS, dep_row(DEP1, TASK1, TASK3)), ins(DEPS, dep_row(DEP2, TASK2, TASK3))],
        [
            (
                "PROJECT_TASK_DEPENDENCY_BLOCKED",
                TASK3,
                TASK1,
                {
                    "taskId": TASK3,
                    "projectId": PROJ,
                    "blockedByTaskId": TASK1,
                    "blockedAt": "2026-01-02T03:04:05.200Z",
                },
            ),
            (
                "PROJECT_TASK_DEPENDENCY_BLOCKED",
                TASK3,
                TASK2,
                {
                    "taskId": TASK3,
                    "projectId": PROJ,
                    "blockedByTaskId": TASK2,
                    "blockedAt": "2026-01-02T03:04:05.200Z",
                },
            ),
        ],
        id="two-blockers-one-task",
    ),
    pytest.param(
        [dele(DEPS, dep_row()), dele(TASKS, task_row(TASK2))],
        [
            (
                "PROJECT_TASK_DELETED",
                TASK2,
                None,
                {"taskId": TASK2, "projectId": PROJ, "phaseId": PHASE1, "timestamp": NOW},
            )
        ],
        id="blocked-task-deleted-no-unblocked",
    ),
    pytest.param(
        [dele(DEPS, dep_row()), dele(TASKS, task_row(TASK1))],
        [
            UNBLOCKED,
            ("PROJECT_TASK_DELETED", TASK1, None, {**TASK_IDS, "phaseId": PHASE1, "timestamp": NOW}),
        ],
        id="blocking-task-deleted-unblocks",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), DEPENDENCY_CASES)
def test_dependencies(changes: list[FakeChange], expected: list[Want]) -> None:
    check(changes, expected)


# --- the deriver on its own ---------------------------------------------------------------------------


def test_the_deriver_declares_its_tables_and_reads() -> None:
    deriver = ProjectDeriver()
    assert deriver.name == "projects"
    assert deriver.tables == {PROJECTS, PHASES, TASKS, TASK_RES, DEPS}
    assert deriver.state_tables == {STATUSES, MAPPINGS, STANDARD, PHASES, TASKS, "public.users"}
    assert set(deriver.reads) >= deriver.tables | deriver.state_tables
    assert deriver.reads[STATUSES]["is_closed"] == {"PROJECT_CLOSED", "PROJECT_TASK_COMPLETED"}
    assert "PROJECT_TASK_DEPENDENCY_BLOCKED" in deriver.reads[PHASES]["project_id"]


def test_events_follow_row_positions_across_the_family() -> None:
    tx = make_tx(
        [ins(DEPS, dep_row()), ins(TASKS, task_row(TASK3)), ins(PROJECTS, project_row(PROJ2))],
        commit_time=COMMIT,
    )
    timers = FakeTimers(deriver="projects")
    derived = ProjectDeriver().derive(tx, project_state(), timers)
    assert [(d.position, d.draft.event_type) for d in derived] == [
        (0, "PROJECT_TASK_DEPENDENCY_BLOCKED"),
        (1, "PROJECT_TASK_CREATED"),
        (2, "PROJECT_CREATED"),
    ]
    assert timers.timers == {}


def test_a_context_message_naming_a_contact_is_the_actor_without_user_fields() -> None:
    contact = u(30)
    result = run(
        [ins(PROJECTS, project_row())],
        state=project_state(),
        messages=[("cdc.context", f'{{"actorContactId": "{contact}"}}'.encode())],
    )
    (created,) = result.envelopes
    assert created.payload == {
        "tenantId": TENANT,
        "occurredAt": NOW,
        "actorType": "CONTACT",
        "actorContactId": contact,
        "projectId": PROJ,
        "createdAt": EARLIER,
    }
