"""The deriver toolkit (derivers.toolkit) on its own, with tables of no family, and the actor rule
as every registered family applies it (the ``cdc.context`` message included)."""

from __future__ import annotations

from typing import Any

import pytest

from derivers.base import Change
from derivers.testing import FakeChange, FakeState, FakeTimers, make_tx
from derivers.toolkit import (
    NO_ACTOR,
    SYSTEM_ACTOR,
    Actor,
    AuditTable,
    Edits,
    FamilyTx,
    camel_case,
    context_actor,
    fields,
    subject,
    written_actor,
)
from tests.unit.derive_cases import (
    COMMENTS,
    COMMIT,
    CONTACT,
    NOW,
    STAFF,
    STAFF2,
    STAFF3,
    TENANT,
    TICKET,
    TIME,
    audit,
    comment_row,
    entry_row,
    ins,
    run,
    ticket_upd,
    u,
)

TASKS = "public.project_tasks"
TASK_AUDIT = AuditTable("public.task_audit_logs", "task_id")
TASK1, TASK2 = u(501), u(502)


def task(task_id: str = TASK1, **values: Any) -> dict[str, Any]:
    return {"tenant": TENANT, "task_id": task_id, "task_name": "Plan", "due_date": None, **values}


def task_audit(task_id: str = TASK1, **values: Any) -> FakeChange:
    row = {"tenant": TENANT, "task_id": task_id, "actor_type": "user", "actor_user_id": STAFF, **values}
    return FakeChange(TASK_AUDIT.table, "insert", None, row)


def family_tx(*changes: FakeChange, messages: list[tuple[str, bytes]] | None = None) -> FamilyTx:
    tx = make_tx(changes, commit_time=COMMIT, messages=messages or ())
    return FamilyTx(tx, FakeState(), FakeTimers(), (TASKS,), audit=TASK_AUDIT)


def context(payload: bytes) -> tuple[str, bytes]:
    return ("cdc.context", payload)


# --- payload helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "name"),
    [("title", "title"), ("sla_policy_id", "slaPolicyId"), ("itil_priority_level", "itilPriorityLevel")],
)
def test_camel_case(column: str, name: str) -> None:
    assert camel_case(column) == name


def test_fields_leaves_out_none_only() -> None:
    assert fields(a=1, b=None, c=False, d=0, e="") == {"a": 1, "c": False, "d": 0, "e": ""}


def test_subject_is_the_rows_tenant_and_id() -> None:
    assert subject(task(), "task_id") == (TENANT, TASK1)


# --- edits --------------------------------------------------------------------------------------------

TASK_EDITS = Edits(("task_name", "due_date", "assigned_to"))


def test_edits_in_list_order_and_camel_case() -> None:
    before = task(assigned_to=None, updated_at=NOW)
    after = task(task_name="Build", assigned_to=STAFF, due_date=NOW, updated_at="later")
    assert TASK_EDITS.of(FakeChange(TASKS, "update", before, after)) == {
        "updatedFields": ["taskName", "dueDate", "assignedTo"],
        "changes": {
            "taskName": {"previous": "Plan", "new": "Build"},
            "dueDate": {"previous": None, "new": NOW},
            "assignedTo": {"previous": None, "new": STAFF},
        },
    }


def test_edits_keep_column_names_when_asked() -> None:
    edits = Edits(("task_name", "due_date"), camel=False)
    change = FakeChange(TASKS, "update", task(), task(due_date=NOW, task_name="Build"))
    assert edits.of(change)["updatedFields"] == ["task_name", "due_date"]
    assert set(edits.of(change)["changes"]) == {"task_name", "due_date"}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(FakeChange(TASKS, "update", task(), task(updated_at=NOW)), id="bookkeeping-only"),
        pytest.param(FakeChange(TASKS, "update", task(), task()), id="nothing"),
        pytest.param(FakeChange(TASKS, "insert", None, task()), id="insert"),
        pytest.param(FakeChange(TASKS, "delete", task(), None), id="delete"),
    ],
)
def test_no_edit_no_fields(change: Change) -> None:
    assert TASK_EDITS.of(change) == {}


def test_edited_orders_any_number_of_columns() -> None:
    assert TASK_EDITS.edited(frozenset({"assigned_to", "task_name"})) == ["task_name", "assigned_to"]
    assert TASK_EDITS.edited(frozenset({"assigned_to", "x", "due_date", "task_name"})) == [
        "task_name",
        "due_date",
        "assigned_to",
    ]
    assert TASK_EDITS.edited(frozenset({"updated_at"})) == []


# --- actor columns -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "actor"),
    [
        pytest.param(FakeChange(TASKS, "insert", None, task(created_by=STAFF)), STAFF, id="insert-writes-it"),
        pytest.param(
            FakeChange(TASKS, "update", task(created_by=STAFF2), task(created_by=STAFF)),
            STAFF,
            id="update-changed",
        ),
        pytest.param(
            FakeChange(TASKS, "update", task(created_by=STAFF), task(created_by=STAFF, task_name="x")),
            None,
            id="stale-value-says-nothing",
        ),
        pytest.param(FakeChange(TASKS, "insert", None, task(created_by=None)), None, id="null"),
        pytest.param(FakeChange(TASKS, "insert", None, task()), None, id="no-such-column"),
        pytest.param(FakeChange(TASKS, "delete", task(created_by=STAFF), None), None, id="delete"),
    ],
)
def test_written_actor(change: Change, actor: str | None) -> None:
    expected = {"actorType": "USER", "actorUserId": actor} if actor else NO_ACTOR
    assert written_actor(change, "created_by") == expected


# --- the audit table of any family ----------------------------------------------------------------------


def test_declared_actor_from_the_audit_row_of_the_subject() -> None:
    d = family_tx(
        task_audit(TASK2, actor_user_id=STAFF2),
        task_audit(TASK1, actor_type="robot"),  # names no actor: the next row of the task counts
        task_audit(TASK1, actor_type="system", actor_user_id=None),
        task_audit(TASK1, actor_user_id=STAFF3),
        FakeChange(TASKS, "update", task(), task(task_name="x")),
    )
    assert d.declared_actor(TENANT, TASK1) == SYSTEM_ACTOR
    assert d.declared_actor(TENANT, TASK2) == {"actorType": "USER", "actorUserId": STAFF2}
    assert d.declared_actor(TENANT, u(599)) is None
    assert d.declared_actor(u(2), TASK1) is None  # another tenant's subject
    # The first subject that has an audit row names the actor.
    assert d.declared_actor(TENANT, u(599), TASK2, TASK1) == {"actorType": "USER", "actorUserId": STAFF2}
    assert d.audit_row(TENANT, TASK2) is not None
    assert [c.table for c in d.changes(TASKS)] == [TASKS]


def test_an_updated_audit_row_is_not_a_declaration() -> None:
    row = {"tenant": TENANT, "task_id": TASK1, "actor_type": "user", "actor_user_id": STAFF}
    d = family_tx(FakeChange(TASK_AUDIT.table, "update", row, {**row, "actor_user_id": STAFF2}))
    assert d.declared_actor(TENANT, TASK1) is None


def test_audit_table_reads_declare_the_actor_columns() -> None:
    assert TASK_AUDIT.reads(["TASK_UPDATED"]) == (
        "public.task_audit_logs",
        ("tenant", "task_id", "actor_type", "actor_user_id", "actor_contact_id"),
        ("TASK_UPDATED",),
    )


# --- the cdc.context message ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "actor"),
    [
        pytest.param(
            [context(b'{"actorUserId": "%s"}' % STAFF.encode())],
            {"actorType": "USER", "actorUserId": STAFF},
            id="user",
        ),
        pytest.param(
            [context(b'{"actorUserId": "%s"}' % STAFF.upper().encode())],
            {"actorType": "USER", "actorUserId": STAFF},
            id="canonical-uuid",
        ),
        pytest.param(
            [context(b'{"actorContactId": "%s"}' % CONTACT.encode())],
            {"actorType": "CONTACT", "actorContactId": CONTACT},
            id="contact",
        ),
        pytest.param(
            [
                context(b"not json"),
                context(b'["%s"]' % STAFF.encode()),
                context(b'{"actorUserId": "someone"}'),
                context(b'{"actorUserId": 7}'),
                ("cdc.heartbeat", b'{"actorUserId": "%s"}' % STAFF3.encode()),
                context(b'{"actorUserId": "%s"}' % STAFF2.encode()),
                context(b'{"actorUserId": "%s"}' % STAFF.encode()),
            ],
            {"actorType": "USER", "actorUserId": STAFF2},
            id="first-usable-message-wins",
        ),
        pytest.param([context(b"{}")], None, id="names-nobody"),
        pytest.param([], None, id="no-message"),
    ],
)
def test_context_actor(messages: list[tuple[str, bytes]], actor: Actor | None) -> None:
    assert context_actor(messages) == actor
    assert family_tx(messages=messages).declared_actor(TENANT, TASK1) == actor


def test_the_audit_row_outranks_the_context_message() -> None:
    d = family_tx(
        task_audit(actor_user_id=STAFF2), messages=[context(b'{"actorUserId": "%s"}' % STAFF.encode())]
    )
    assert d.declared_actor(TENANT, TASK1) == {"actorType": "USER", "actorUserId": STAFF2}
    assert d.declared_actor(TENANT, TASK2) == {"actorType": "USER", "actorUserId": STAFF}


# --- emitting -------------------------------------------------------------------------------------------


def test_drafts_come_by_position_then_in_the_order_added() -> None:
    d = family_tx(
        FakeChange(TASKS, "insert", None, task(TASK1)), FakeChange(TASKS, "insert", None, task(TASK2))
    )
    first, second = d.changes(TASKS)  # as make_tx numbered them
    d.emit(second, "B1", TENANT, TASK2, NO_ACTOR, {"taskId": TASK2})
    d.emit(first, "A1", TENANT, TASK1, {"actorType": "SYSTEM"}, {"taskId": TASK1}, discriminator="x")
    d.emit(second, "B2", TENANT, TASK2, NO_ACTOR, {"taskId": TASK2})
    drafts = d.drafts()
    assert [(x.draft.event_type, x.position, x.table) for x in drafts] == [
        ("A1", 0, TASKS),
        ("B1", 1, TASKS),
        ("B2", 1, TASKS),
    ]
    a1 = drafts[0].draft
    assert (a1.tenant, a1.subject_id, a1.discriminator) == (TENANT, TASK1, "x")
    assert a1.payload == {"tenantId": TENANT, "occurredAt": NOW, "actorType": "SYSTEM", "taskId": TASK1}


# --- every family applies the same actor rule ----------------------------------------------------------

FAMILY_CHANGES = [
    pytest.param(ticket_upd({"title": "a"}, {"title": "b"}), "TICKET_UPDATED", id="tickets"),
    pytest.param(ins(COMMENTS, comment_row()), "TICKET_COMMENT_ADDED", id="ticket-comments"),
    pytest.param(ins(TIME, entry_row()), "TICKET_TIME_ENTRY_ADDED", id="time-entries"),
]


@pytest.mark.parametrize(("change", "event_type"), FAMILY_CHANGES)
def test_every_family_takes_the_actor_from_the_context_message(change: FakeChange, event_type: str) -> None:
    result = run([change], messages=[context(b'{"actorUserId": "%s"}' % STAFF3.encode())])
    (event,) = [e for e in result.envelopes if e.event_type == event_type]
    assert (event.payload["actorType"], event.payload["actorUserId"]) == ("USER", STAFF3)


@pytest.mark.parametrize(("change", "event_type"), FAMILY_CHANGES)
def test_every_family_prefers_the_audit_row_of_the_ticket(change: FakeChange, event_type: str) -> None:
    result = run(
        [audit(ticket_id=TICKET, actor_user_id=STAFF2), change],
        messages=[context(b'{"actorUserId": "%s"}' % STAFF3.encode())],
    )
    (event,) = [e for e in result.envelopes if e.event_type == event_type]
    assert (event.payload["actorType"], event.payload["actorUserId"]) == ("USER", STAFF2)
