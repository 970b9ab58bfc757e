"""The project deriver: projects, phases, tasks, additional agents and task dependencies
(SPEC §5.9), from ``projects``, ``project_phases``, ``project_tasks``, ``task_resources`` and
``project_task_dependencies``, with statuses, status mappings, standard statuses, phases and tasks
as reference state.

**Actors.** None of these tables has an actor column (SPEC §7.6): the actor fields — and the
payload's ``createdByUserId`` / ``assignedByUserId`` / ``closedByUserId`` / ``completedByUserId``
/ legacy ``userId`` — come only from the transaction's ``cdc.context`` message
(:func:`derivers.toolkit.context_actor`); without one they are left out, never guessed.

**Projects.** An insert is PROJECT_CREATED (``createdAt`` = ``created_at``), plus PROJECT_ASSIGNED
when it is created with ``assigned_to`` (as a task or ticket created with an assignee is: the
application's ``createProject`` sends none, but a workflow waiting for "assigned" should not miss
the project that starts assigned). An update yields, in this order: PROJECT_STATUS_CHANGED when
``status`` changed (status **uuids**, as the application sends them); PROJECT_CLOSED when the
new status is closed and the old one was not; PROJECT_ASSIGNED when ``assigned_to`` changed to a
user (unassigning sends nothing, as in the application); PROJECT_UPDATED when any column of
:data:`PROJECT_EDITS` changed, with camelCase ``updatedFields`` and ``{previous, new}``
``changes``. The application sends PROJECT_UPDATED on every ``updateProject`` call, even with
no difference; a row diff cannot tell such a call from any other write, so an update that
changes nothing a user edits (only ``updated_at``) sends nothing. *PROJECT_CLOSED* is the
intuitive rule — a project moving into a status whose ``statuses.is_closed`` is true (as of the
transaction) — and not the application's, which publishes it when someone edits a status
*definition* to be closed (``updateProjectStatus``), an act about no project. A delete is
PROJECT_DELETED only when the context message names a user: its bus schema requires ``userId``
(the acting user), and no column says who deleted.

**Phases.** Insert, update (a column of :data:`PHASE_EDITS` changed) and delete are
PROJECT_PHASE_CREATED / _UPDATED / _DELETED in their legacy bus shape (``projectId``,
``phaseId``; an update adds camelCase ``updatedFields`` and ``{previous, new}`` ``changes``).

**Tasks.** ``projectId`` is the task's phase's project, from the reference state (or from the
before-image of a phase deleted in the same transaction); a task whose phase is unknown yields
nothing. A task's *status name* is, as in the application, COALESCE(mapping ``custom_name``,
``statuses.name``, ``standard_statuses.name``, the mapping id) for its
``project_status_mapping_id``; a mapping is *closed* when COALESCE(``statuses.is_closed``,
``standard_statuses.is_closed``, false). The previous status is resolved from the reference rows
as they were before the transaction (their before-images, when the transaction changed them).
An insert is PROJECT_TASK_CREATED (``title`` = ``task_name``; a task with no status mapping
falls back on its legacy ``status_id``'s name, and with neither yields no CREATED: ``status`` is
required) and PROJECT_TASK_ASSIGNED when created with an assignee. An update yields
PROJECT_TASK_STATUS_CHANGED when the mapping changed (names), PROJECT_TASK_COMPLETED when it
moved from a not-closed into a closed mapping, PROJECT_TASK_ASSIGNED when ``assigned_to``
changed to a user (or ``assigned_team_id`` to a team: ``assignedToType`` ``team``,
discriminator ``team``; the application only knows users; ``assignedByName`` is the acting
user's "First Last" from ``users``), and PROJECT_TASK_UPDATED (the v1 shape:
camelCase ``updatedFields`` / ``changes``) when a column of :data:`TASK_EDITS` changed;
``order_key`` and ``wbs_code`` are positions the board rewrites and no edit. A pure drag to
another column (only ``project_status_mapping_id``) is a TASK_UPDATED too, after STATUS_CHANGED:
the application's update reports phase and status moves among the task's changes (SPEC §5.9),
and a workflow on "task updated" sees every edit of the task, a status move included. A delete is
PROJECT_TASK_DELETED.

**Additional agents.** A ``task_resources`` row inserted with an ``additional_user_id``, or
updated to another one (or onto another task), is PROJECT_TASK_ADDITIONAL_AGENT_ASSIGNED
(``primaryAgentId`` = the row's ``assigned_to``, which the application fills with the task's
assignee; discriminator: the agent; ``assignedAt`` = the row's ``assigned_at`` when the change
wrote it, else the commit time). One event per task and agent per transaction, however many rows
name them. An agent removed and added back on the same task in one transaction is churn, not
news.

**Dependencies.** Only ``blocks`` edges count (successor blocked by predecessor): an edge that
appears is PROJECT_TASK_DEPENDENCY_BLOCKED (``blockedAt`` = the row's ``created_at``), one that
disappears is _UNBLOCKED (``unblockedAt`` = the commit time) — by insert or delete, or by an
update that changes the type or the tasks; an edge removed and re-added in one transaction is
neither. Subject: the blocked task; discriminator: the blocking task.

**Cascades.** The deletion of a parent in the same transaction says it all when its event is
reported: no PHASE_DELETED for the phases of a project deleted with it (unless PROJECT_DELETED
is not, for want of the acting user: then each phase's deletion is), no TASK_DELETED for tasks
whose phase or reported project goes with them, and no UNBLOCKED for a blocked task deleted with its edge (a deleted predecessor does
unblock its successor, which is news).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from catalog.envelope import EventDraft

from .base import Change, Derived, Image, StateView, Timer, TimerOps, TxView, declare_reads
from .tables import STATUSES, USERS
from .toolkit import NO_ACTOR, Actor, Edits, FamilyTx, fields

PROJECTS: Final = "public.projects"
PHASES: Final = "public.project_phases"
TASKS: Final = "public.project_tasks"
TASK_RESOURCES: Final = "public.task_resources"
DEPENDENCIES: Final = "public.project_task_dependencies"
MAPPINGS: Final = "public.project_status_mappings"
STANDARD_STATUSES: Final = "public.standard_statuses"

#: The project columns a user edits (``updateProject``'s input), in ``updatedFields`` order.
PROJECT_EDITS: Final = Edits(
    (
        "project_name",
        "description",
        "start_date",
        "end_date",
        "status",
        "assigned_to",
        "contact_name_id",
        "client_id",
        "budgeted_hours",
        "is_inactive",
        "wbs_code",
        "project_number",
        "client_portal_config",
        "billing_profile_id",
    )
)
PHASE_EDITS: Final = Edits(
    (
        "project_id",
        "phase_name",
        "description",
        "start_date",
        "end_date",
        "status",
        "order_number",
        "wbs_code",
        "completed_at",
    )
)
TASK_EDITS: Final = Edits(
    (
        "task_name",
        "description",
        "description_rich_text",
        "phase_id",
        "project_status_mapping_id",
        "status_id",
        "assigned_to",
        "assigned_team_id",
        "estimated_hours",
        "actual_hours",
        "due_date",
        "priority_id",
        "service_id",
        "task_type_key",
    )
)

PROJECT_EVENTS: Final = (
    "PROJECT_CREATED",
    "PROJECT_STATUS_CHANGED",
    "PROJECT_CLOSED",
    "PROJECT_ASSIGNED",
    "PROJECT_UPDATED",
    "PROJECT_DELETED",
)
PHASE_EVENTS: Final = ("PROJECT_PHASE_CREATED", "PROJECT_PHASE_UPDATED", "PROJECT_PHASE_DELETED")
TASK_EVENTS: Final = (
    "PROJECT_TASK_CREATED",
    "PROJECT_TASK_STATUS_CHANGED",
    "PROJECT_TASK_COMPLETED",
    "PROJECT_TASK_ASSIGNED",
    "PROJECT_TASK_UPDATED",
    "PROJECT_TASK_DELETED",
)
AGENT_EVENTS: Final = ("PROJECT_TASK_ADDITIONAL_AGENT_ASSIGNED",)
DEPENDENCY_EVENTS: Final = ("PROJECT_TASK_DEPENDENCY_BLOCKED", "PROJECT_TASK_DEPENDENCY_UNBLOCKED")
#: Events whose ``projectId`` is a task's phase's project.
VIA_TASK: Final = (*TASK_EVENTS, *AGENT_EVENTS, *DEPENDENCY_EVENTS)
STATUS_NAME_EVENTS: Final = ("PROJECT_TASK_CREATED", "PROJECT_TASK_STATUS_CHANGED")
CLOSED_EVENTS: Final = ("PROJECT_TASK_COMPLETED",)

#: What these rules read (see ``derivers.base.Reads``).
READS: Final = (
    (PROJECTS, ("tenant", "project_id"), (*PROJECT_EVENTS, "PROJECT_PHASE_DELETED", "PROJECT_TASK_DELETED")),
    (PROJECTS, ("created_at",), ("PROJECT_CREATED",)),
    (PROJECTS, ("status",), ("PROJECT_STATUS_CHANGED", "PROJECT_CLOSED")),
    (STATUSES, ("tenant", "status_id", "is_closed"), ("PROJECT_CLOSED", *CLOSED_EVENTS)),
    (PROJECTS, ("assigned_to",), ("PROJECT_CREATED", "PROJECT_ASSIGNED")),
    (PROJECTS, ("updated_at",), ("PROJECT_UPDATED",)),
    (PROJECTS, PROJECT_EDITS.columns, ("PROJECT_UPDATED",)),
    (PHASES, ("tenant", "phase_id", "project_id"), (*PHASE_EVENTS, *VIA_TASK)),
    (PHASES, ("updated_at",), ("PROJECT_PHASE_UPDATED",)),
    (PHASES, PHASE_EDITS.columns, ("PROJECT_PHASE_UPDATED",)),
    (TASKS, ("tenant", "task_id", "phase_id"), VIA_TASK),
    (TASKS, ("task_name", "due_date", "created_at"), ("PROJECT_TASK_CREATED",)),
    (TASKS, ("project_status_mapping_id",), (*STATUS_NAME_EVENTS, *CLOSED_EVENTS, "PROJECT_TASK_UPDATED")),
    (TASKS, ("status_id",), ("PROJECT_TASK_CREATED", "PROJECT_TASK_UPDATED", "PROJECT_TASK_STATUS_CHANGED")),
    (TASKS, ("assigned_to", "assigned_team_id"), ("PROJECT_TASK_ASSIGNED", "PROJECT_TASK_UPDATED")),
    (TASKS, ("updated_at",), ("PROJECT_TASK_UPDATED",)),
    (TASKS, TASK_EDITS.columns, ("PROJECT_TASK_UPDATED",)),
    (
        MAPPINGS,
        ("tenant", "project_status_mapping_id", "custom_name", "status_id", "standard_status_id"),
        (*STATUS_NAME_EVENTS, *CLOSED_EVENTS),
    ),
    (STATUSES, ("name",), STATUS_NAME_EVENTS),
    (STANDARD_STATUSES, ("standard_status_id", "name"), STATUS_NAME_EVENTS),
    (STANDARD_STATUSES, ("standard_status_id", "is_closed"), CLOSED_EVENTS),
    (USERS, ("tenant", "user_id", "first_name", "last_name"), ("PROJECT_TASK_ASSIGNED",)),
    (TASK_RESOURCES, ("tenant", "task_id", "assigned_to", "additional_user_id", "assigned_at"), AGENT_EVENTS),
    (
        DEPENDENCIES,
        ("tenant", "predecessor_task_id", "successor_task_id", "dependency_type", "created_at"),
        DEPENDENCY_EVENTS,
    ),
)

Key = tuple[str, ...]


class ProjectTx(FamilyTx):
    """One transaction of the project family: its changes, and the reference rows as of the
    transaction (:meth:`now`) and as they were before it (:meth:`before`)."""

    __slots__ = ("_ref_before", "deleted_phases", "deleted_projects", "deleted_tasks")

    def __init__(self, tx: TxView, state: StateView, timers: TimerOps) -> None:
        super().__init__(tx, state, timers, ProjectDeriver.tables)
        self.deleted_projects = _deleted_keys(self.changes(PROJECTS), "project_id")
        self.deleted_phases = _deleted_keys(self.changes(PHASES), "phase_id")
        self.deleted_tasks = _deleted_keys(self.changes(TASKS), "task_id")
        self._ref_before: dict[tuple[str, Key], Image | None] | None = None

    @property
    def actor(self) -> Actor:
        """No actor column in this family: the ``cdc.context`` message's actor, or none."""
        return self.context_actor or NO_ACTOR

    @property
    def announced_projects(self) -> Mapping[Key, Image]:
        """The projects deleted in this transaction whose PROJECT_DELETED is reported (it
        requires the acting user): a phase or task deleted with one of them is not news."""
        return self.deleted_projects if _user_id(self.actor) is not None else {}

    def now(self, table: str, key: Key) -> Image | None:
        return self.state.get(table, key)

    def before(self, table: str, key: Key) -> Image | None:
        """A reference row as it was before this transaction (the state is applied first)."""
        index = self._ref_before
        if index is None:
            index = self._ref_before = {}
            for change in self.tx.changes:
                key_of = _REF_KEYS.get(change.table)
                if key_of is None:
                    continue
                row = change.before if change.before is not None else change.after
                if row is not None:
                    index.setdefault((change.table, key_of(row)), change.before)
        found = index.get((table, key), _UNCHANGED)
        return self.state.get(table, key) if found is _UNCHANGED else found

    def phase_project(self, tenant: str, phase_id: str | None) -> str | None:
        """The project of a phase: the reference state, or the phase deleted in this transaction."""
        if phase_id is None:
            return None
        phase = self.state.get(PHASES, (tenant, phase_id)) or self.deleted_phases.get((tenant, phase_id))
        return None if phase is None else phase.get("project_id")

    def task(self, tenant: str, task_id: str) -> Image | None:
        return self.state.get(TASKS, (tenant, task_id)) or self.deleted_tasks.get((tenant, task_id))


_UNCHANGED: Final[Any] = object()

_REF_KEYS: Final[dict[str, Callable[[Image], Key]]] = {
    STATUSES: lambda row: (row["tenant"], row["status_id"]),
    MAPPINGS: lambda row: (row["tenant"], row["project_status_mapping_id"]),
    STANDARD_STATUSES: lambda row: (row["standard_status_id"],),
}


def _deleted_keys(changes: list[Change], id_column: str) -> dict[Key, Image]:
    return {
        (row["tenant"], row[id_column]): row
        for change in changes
        if change.op == "delete" and (row := change.before) is not None
    }


# --- status names and closed-ness of task columns --------------------------------------------------

Lookup = Callable[[str, Key], Image | None]


def status_name(get: Lookup, tenant: str, mapping_id: str | None) -> str | None:
    """COALESCE(custom_name, statuses.name, standard_statuses.name, mapping id) (SPEC §5.9)."""
    if mapping_id is None:
        return None
    mapping = get(MAPPINGS, (tenant, mapping_id))
    if mapping is None:
        return mapping_id
    if mapping.get("custom_name"):
        return str(mapping["custom_name"])
    status_id = mapping.get("status_id")
    status = get(STATUSES, (tenant, status_id)) if status_id is not None else None
    if status is not None and status.get("name"):
        return str(status["name"])
    standard_id = mapping.get("standard_status_id")
    standard = get(STANDARD_STATUSES, (standard_id,)) if standard_id is not None else None
    if standard is not None and standard.get("name"):
        return str(standard["name"])
    return mapping_id


def task_status(get: Lookup, task: Image) -> str | None:
    """A task's status name: its mapping's (:func:`status_name`), else — a task without a mapping,
    a legacy row or an SQL writer's — its legacy ``status_id``'s name."""
    tenant = task["tenant"]
    name = status_name(get, tenant, task.get("project_status_mapping_id"))
    if name is None and task.get("status_id") is not None:
        legacy = get(STATUSES, (tenant, task["status_id"]))
        name = None if legacy is None else legacy.get("name")
    return name


def mapping_closed(get: Lookup, tenant: str, mapping_id: str | None) -> bool:
    """COALESCE(statuses.is_closed, standard_statuses.is_closed, false) (SPEC §5.9)."""
    mapping = get(MAPPINGS, (tenant, mapping_id)) if mapping_id is not None else None
    if mapping is None:
        return False
    status_id = mapping.get("status_id")
    status = get(STATUSES, (tenant, status_id)) if status_id is not None else None
    if status is not None and status.get("is_closed") is not None:
        return bool(status["is_closed"])
    standard_id = mapping.get("standard_status_id")
    standard = get(STANDARD_STATUSES, (standard_id,)) if standard_id is not None else None
    return standard is not None and bool(standard.get("is_closed"))


def _user_id(actor: Actor) -> str | None:
    return actor.get("actorUserId")


def user_name(ctx: ProjectTx, tenant: str, user_id: str | None) -> str | None:
    """ "First Last" of a user, as the application names who assigned a task; None if unnamed."""
    if user_id is None:
        return None
    for user in ctx.state.find(USERS, "user_id", user_id):
        if user.get("tenant") == tenant:
            return " ".join(part for part in (user.get("first_name"), user.get("last_name")) if part) or None
    return None


# --- projects ---------------------------------------------------------------------------------------


def project_events(ctx: ProjectTx) -> None:
    for change in ctx.changes(PROJECTS):
        if change.op == "insert":
            project_created(ctx, change)
        elif change.op == "update":
            project_updated(ctx, change)
        elif change.op == "delete":
            project_deleted(ctx, change)


def project_created(ctx: ProjectTx, change: Change) -> None:
    row = change.after
    assert row is not None
    tenant, project_id = row["tenant"], row["project_id"]
    actor = ctx.actor
    ctx.emit(
        change,
        "PROJECT_CREATED",
        tenant,
        project_id,
        actor,
        fields(projectId=project_id, createdByUserId=_user_id(actor), createdAt=row.get("created_at")),
    )
    if row.get("assigned_to") is not None:
        _project_assigned(ctx, change, tenant, project_id, row["assigned_to"])


def project_updated(ctx: ProjectTx, change: Change) -> None:
    old, new = change.before, change.after
    assert old is not None and new is not None
    tenant, project_id = new["tenant"], new["project_id"]
    actor = ctx.actor
    if change.changed("status") and old.get("status") and new.get("status"):
        ctx.emit(
            change,
            "PROJECT_STATUS_CHANGED",
            tenant,
            project_id,
            actor,
            fields(
                projectId=project_id,
                previousStatus=old["status"],
                newStatus=new["status"],
                changedAt=ctx.occurred_at,
            ),
        )
        was = ctx.before(STATUSES, (tenant, old["status"]))
        now = ctx.now(STATUSES, (tenant, new["status"]))
        # Closing needs the new status known closed and the old one known open: never a guess.
        if (
            now is not None
            and now.get("is_closed") is True
            and was is not None
            and was.get("is_closed") is False
        ):
            ctx.emit(
                change,
                "PROJECT_CLOSED",
                tenant,
                project_id,
                actor,
                fields(projectId=project_id, closedByUserId=_user_id(actor), closedAt=ctx.occurred_at),
            )
    if change.changed("assigned_to") and new.get("assigned_to") is not None:
        _project_assigned(ctx, change, tenant, project_id, new["assigned_to"])
    edits = PROJECT_EDITS.of(change)
    if edits:
        ctx.emit(
            change,
            "PROJECT_UPDATED",
            tenant,
            project_id,
            actor,
            fields(projectId=project_id, updatedAt=ctx.written_time(change, "updated_at"), **edits),
        )


def _project_assigned(ctx: ProjectTx, change: Change, tenant: str, project_id: str, user_id: str) -> None:
    actor = ctx.actor
    ctx.emit(
        change,
        "PROJECT_ASSIGNED",
        tenant,
        project_id,
        actor,
        fields(
            projectId=project_id,
            assignedToId=user_id,
            assignedToType="user",
            assignedByUserId=_user_id(actor),
            assignedAt=ctx.occurred_at,
        ),
    )


def project_deleted(ctx: ProjectTx, change: Change) -> None:
    row = change.before
    assert row is not None
    actor = ctx.actor
    user_id = _user_id(actor)
    if user_id is None:
        return  # the bus schema requires the acting user, which no column records
    tenant, project_id = row["tenant"], row["project_id"]
    ctx.emit(
        change, "PROJECT_DELETED", tenant, project_id, actor, {"projectId": project_id, "userId": user_id}
    )


# --- phases -----------------------------------------------------------------------------------------


def phase_events(ctx: ProjectTx) -> None:
    actor = ctx.actor
    user = fields(userId=_user_id(actor))
    for change in ctx.changes(PHASES):
        row = change.after if change.after is not None else change.before
        if row is None:
            continue
        tenant, phase_id, project_id = row["tenant"], row["phase_id"], row["project_id"]
        base = {"projectId": project_id, "phaseId": phase_id, **user, "timestamp": ctx.occurred_at}
        if change.op == "insert":
            ctx.emit(change, "PROJECT_PHASE_CREATED", tenant, phase_id, actor, base)
        elif change.op == "update":
            edits = PHASE_EDITS.of(change)
            if edits:
                ctx.emit(change, "PROJECT_PHASE_UPDATED", tenant, phase_id, actor, {**base, **edits})
        elif change.op == "delete" and (tenant, project_id) not in ctx.announced_projects:
            ctx.emit(change, "PROJECT_PHASE_DELETED", tenant, phase_id, actor, base)


# --- tasks ------------------------------------------------------------------------------------------


def task_events(ctx: ProjectTx) -> None:
    for change in ctx.changes(TASKS):
        if change.op == "insert":
            task_created(ctx, change)
        elif change.op == "update":
            task_updated(ctx, change)
        elif change.op == "delete":
            task_deleted(ctx, change)


def task_created(ctx: ProjectTx, change: Change) -> None:
    row = change.after
    assert row is not None
    tenant, task_id = row["tenant"], row["task_id"]
    project_id = ctx.phase_project(tenant, row.get("phase_id"))
    if project_id is None:
        return
    actor = ctx.actor
    status = task_status(ctx.now, row)
    if status and row.get("task_name"):
        ctx.emit(
            change,
            "PROJECT_TASK_CREATED",
            tenant,
            task_id,
            actor,
            fields(
                taskId=task_id,
                projectId=project_id,
                createdByUserId=_user_id(actor),
                createdAt=row.get("created_at"),
                title=row["task_name"],
                dueDate=row.get("due_date"),
                status=status,
            ),
        )
    _task_assigned(ctx, change, None, row, tenant, task_id, project_id)


def task_updated(ctx: ProjectTx, change: Change) -> None:
    old, new = change.before, change.after
    assert old is not None and new is not None
    tenant, task_id = new["tenant"], new["task_id"]
    project_id = ctx.phase_project(tenant, new.get("phase_id"))
    if project_id is None:
        return
    actor = ctx.actor
    if change.changed("project_status_mapping_id"):
        old_mapping, new_mapping = old.get("project_status_mapping_id"), new.get("project_status_mapping_id")
        previous, current = task_status(ctx.before, old), task_status(ctx.now, new)
        if previous and current:
            ctx.emit(
                change,
                "PROJECT_TASK_STATUS_CHANGED",
                tenant,
                task_id,
                actor,
                fields(
                    taskId=task_id,
                    projectId=project_id,
                    previousStatus=previous,
                    newStatus=current,
                    changedAt=ctx.occurred_at,
                ),
            )
        if mapping_closed(ctx.now, tenant, new_mapping) and not mapping_closed(
            ctx.before, tenant, old_mapping
        ):
            ctx.emit(
                change,
                "PROJECT_TASK_COMPLETED",
                tenant,
                task_id,
                actor,
                fields(
                    taskId=task_id,
                    projectId=project_id,
                    completedByUserId=_user_id(actor),
                    completedAt=ctx.occurred_at,
                ),
            )
    _task_assigned(ctx, change, old, new, tenant, task_id, project_id)
    edits = TASK_EDITS.of(change)
    if edits:
        ctx.emit(
            change,
            "PROJECT_TASK_UPDATED",
            tenant,
            task_id,
            actor,
            fields(
                taskId=task_id,
                projectId=project_id,
                updatedAt=ctx.written_time(change, "updated_at"),
                **edits,
            ),
        )


_ASSIGNEE_COLUMNS: Final = (("assigned_to", "user"), ("assigned_team_id", "team"))


def _task_assigned(
    ctx: ProjectTx,
    change: Change,
    old: Image | None,
    new: Image,
    tenant: str,
    task_id: str,
    project_id: str,
) -> None:
    actor = ctx.actor
    by = _user_id(actor)
    for column, kind in _ASSIGNEE_COLUMNS:
        assignee = new.get(column)
        if assignee is None or (old is not None and not change.changed(column)):
            continue
        ctx.emit(
            change,
            "PROJECT_TASK_ASSIGNED",
            tenant,
            task_id,
            actor,
            fields(
                taskId=task_id,
                projectId=project_id,
                assignedToId=assignee,
                assignedToType=kind,
                assignedByUserId=by,
                assignedByName=user_name(ctx, tenant, by),
                assignedAt=ctx.occurred_at,
            ),
            discriminator="team" if kind == "team" else None,
        )


def task_deleted(ctx: ProjectTx, change: Change) -> None:
    row = change.before
    assert row is not None
    tenant, task_id, phase_id = row["tenant"], row["task_id"], row.get("phase_id")
    if (tenant, phase_id) in ctx.deleted_phases:
        return  # its phase (or project) goes with it: that deletion is the news
    project_id = ctx.phase_project(tenant, phase_id)
    if project_id is None or (tenant, project_id) in ctx.announced_projects:
        return
    actor = ctx.actor
    ctx.emit(
        change,
        "PROJECT_TASK_DELETED",
        tenant,
        task_id,
        actor,
        fields(
            projectId=project_id,
            taskId=task_id,
            phaseId=phase_id,
            userId=_user_id(actor),
            timestamp=ctx.occurred_at,
        ),
    )


# --- additional agents ------------------------------------------------------------------------------


Agent = tuple[str, str, str]  # tenant, task, additional agent


def _agent(row: Image | None) -> Agent | None:
    if row is None or row.get("additional_user_id") is None:
        return None
    return row["tenant"], row["task_id"], row["additional_user_id"]


def additional_agent_events(ctx: ProjectTx) -> None:
    resources = ctx.changes(TASK_RESOURCES)
    removed: set[Agent] = set()
    for change in resources:
        before, after = _agent(change.before), _agent(change.after)
        if before is not None and before != after:
            removed.add(before)
    emitted: set[Agent] = set()
    for change in resources:
        row = change.after
        added = _agent(row)
        if added is None or added == _agent(change.before) or added in emitted:
            continue  # no agent, the same agent, or this agent reported already in this transaction
        if added in removed:
            continue  # removed and added back: a reassignment's churn
        assert row is not None
        emitted.add(added)
        tenant, task_id, agent = added
        task = ctx.task(tenant, task_id)
        project_id = None if task is None else ctx.phase_project(tenant, task.get("phase_id"))
        if project_id is None or row.get("assigned_to") is None:
            continue
        actor = ctx.actor
        ctx.emit(
            change,
            "PROJECT_TASK_ADDITIONAL_AGENT_ASSIGNED",
            tenant,
            task_id,
            actor,
            fields(
                taskId=task_id,
                projectId=project_id,
                primaryAgentId=row["assigned_to"],
                additionalAgentId=agent,
                assignedByUserId=_user_id(actor),
                # an update that moves a row to another agent keeps the old time unless it sets one
                assignedAt=ctx.written_time(change, "assigned_at"),
            ),
            discriminator=agent,
        )


# --- dependencies -----------------------------------------------------------------------------------

Edge = tuple[str, str, str]  # tenant, successor (blocked), predecessor (blocking)


def _blocking_edge(row: Image | None) -> Edge | None:
    if row is None or row.get("dependency_type") != "blocks":
        return None
    return row["tenant"], row["successor_task_id"], row["predecessor_task_id"]


def dependency_events(ctx: ProjectTx) -> None:
    changes = ctx.changes(DEPENDENCIES)
    removed: dict[Edge, Change] = {}
    added: dict[Edge, Change] = {}
    for change in changes:
        before, after = _blocking_edge(change.before), _blocking_edge(change.after)
        if before == after:
            continue
        if before is not None:
            removed.setdefault(before, change)
        if after is not None:
            added[after] = change
    for edge in removed.keys() & added.keys():  # removed and re-added: still blocked
        del removed[edge], added[edge]
    # One pass in position order, so the drafts come in the order of the rows that caused them.
    for change in changes:
        before, after = _blocking_edge(change.before), _blocking_edge(change.after)
        if before is not None and removed.get(before) is change:
            _dependency_event(ctx, change, before, blocked=False)
        if after is not None and added.get(after) is change:
            _dependency_event(ctx, change, after, blocked=True)


def _dependency_event(ctx: ProjectTx, change: Change, edge: Edge, *, blocked: bool) -> None:
    tenant, task_id, by_task_id = edge
    if not blocked and (tenant, task_id) in ctx.deleted_tasks:
        return  # the blocked task itself is gone
    task = ctx.task(tenant, task_id)
    project_id = None if task is None else ctx.phase_project(tenant, task.get("phase_id"))
    if project_id is None:
        return
    actor = ctx.actor
    if blocked:
        row = change.after
        assert row is not None
        payload = fields(
            taskId=task_id,
            projectId=project_id,
            blockedByTaskId=by_task_id,
            blockedAt=row.get("created_at") if change.op == "insert" else ctx.occurred_at,
        )
        event_type = "PROJECT_TASK_DEPENDENCY_BLOCKED"
    else:
        payload = fields(
            taskId=task_id, projectId=project_id, unblockedByTaskId=by_task_id, unblockedAt=ctx.occurred_at
        )
        event_type = "PROJECT_TASK_DEPENDENCY_UNBLOCKED"
    ctx.emit(change, event_type, tenant, task_id, actor, payload, discriminator=by_task_id)


# --- the deriver ------------------------------------------------------------------------------------


class ProjectDeriver:
    """Project-family events from projects, phases, tasks, task resources and dependencies; no
    timers."""

    name = "projects"
    tables = frozenset({PROJECTS, PHASES, TASKS, TASK_RESOURCES, DEPENDENCIES})
    state_tables = frozenset({STATUSES, MAPPINGS, STANDARD_STATUSES, PHASES, TASKS, USERS})
    reads = declare_reads(*READS)

    def derive(self, tx: TxView, state: StateView, timers: TimerOps) -> list[Derived]:
        ctx = ProjectTx(tx, state, timers)
        if ctx.changes(PROJECTS):
            project_events(ctx)
        if ctx.changes(PHASES):
            phase_events(ctx)
        if ctx.changes(TASKS):
            task_events(ctx)
        if ctx.changes(TASK_RESOURCES):
            additional_agent_events(ctx)
        if ctx.changes(DEPENDENCIES):
            dependency_events(ctx)
        return ctx.drafts()

    def fire(self, timer: Timer, state: StateView) -> list[EventDraft]:
        return []  # arms none
