"""The event-type registry: for each event type of the ticket, scheduling, project and
time-entry families, its catalog name, category, description, ``payload_schema_ref``, payload
model, which schema governs it, whether the application's ``system_event_catalog`` has a row
for it, and whether the data can show it at all (``derivable``). Whether a registered deriver
actually emits a type is not the catalog's to say: ``cdc catalog list`` computes it from the
derivers it is handed.

Names and categories follow SPEC §6.3 (Title Case of the type, with the listed exceptions).
Descriptions of types that have an application catalog row are the application's own
(``server/migrations/20260123150000_upsert_domain_workflow_event_catalog_v2.cjs`` and
``20260715150000_seed_project_billing_event_catalog.cjs``), so that ``cdc catalog sync`` leaves
those rows as the application wrote them; bus-only types get descriptions in the same style.
``derivable=False`` marks the types the events.md Derivability column marks NONE (the
application never emits them): they stay in the catalog so that workflows can name them.

The registry is checked once at import: a duplicate event type or ref, a model used twice or a
model whose class name is not the PascalCase of its type raises :class:`RegistryError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from catalog.base import DomainPayload
from catalog.errors import RegistryError, UnknownEventType
from catalog.payloads import projects as P
from catalog.payloads import scheduling as S
from catalog.payloads import tickets as T
from catalog.payloads import time_entries as TE

__all__ = [
    "REGISTRY",
    "EventSpec",
    "Family",
    "RegistryError",
    "SchemaSource",
    "UnknownEventType",
    "by_ref",
    "get",
    "index_specs",
    "pascal_case",
    "payload_schema_ref",
    "specs",
]

Family = Literal["tickets", "scheduling", "projects", "time"]
SchemaSource = Literal["runtime", "event-schemas", "bus"]
"""Which schema governs a payload: the workflow runtime registry's v1 schema (SPEC §4.1), a v1
schema found only in the ``packages/event-schemas`` registry (project billing), or the legacy
bus schema for types without any v1 ref (SPEC §4.2)."""


@dataclass(frozen=True, slots=True)
class EventSpec:
    """Everything the catalog knows about one event type."""

    event_type: str
    name: str
    category: str
    description: str
    payload_schema_ref: str
    model: type[DomainPayload]
    family: Family
    schema_source: SchemaSource
    in_app_catalog: bool
    derivable: bool  # the data can show it (false: the application never emits it, no row shows it)


def pascal_case(event_type: str) -> str:
    """The application's rule: lower-case, split on ``_``, capitalise each part, join."""
    return "".join(part[:1].upper() + part[1:] for part in event_type.lower().split("_"))


def payload_schema_ref(event_type: str) -> str:
    """``payload.<PascalCase>.v1`` (TICKET_SLA_STAGE_MET -> ``payload.TicketSlaStageMet.v1``)."""
    return f"payload.{pascal_case(event_type)}.v1"


# SPEC §6.3: names that are not the Title Case of the type.
_NAME_EXCEPTIONS = {
    "PROJECT_TASK_DEPENDENCY_BLOCKED": "Project Task Blocked",
    "PROJECT_TASK_DEPENDENCY_UNBLOCKED": "Project Task Unblocked",
    "TICKET_QUEUE_CHANGED": "Ticket Queue/Board Changed",
    "APPOINTMENT_NO_SHOW": "Appointment No-Show",
    "PROJECT_BILLING_CONFIG_CREATED": "Project Billing Configuration Created",
    "PROJECT_BILLING_CONFIG_UPDATED": "Project Billing Configuration Updated",
    "PROJECT_BILLING_CONFIG_DELETED": "Project Billing Configuration Deleted",
}
_ACRONYMS = {"SLA"}

_CATEGORY: dict[Family, str] = {
    "tickets": "Tickets",
    "scheduling": "Scheduling",
    "projects": "Projects",
    "time": "Time Entries",
}


def _name(event_type: str) -> str:
    if event_type in _NAME_EXCEPTIONS:
        return _NAME_EXCEPTIONS[event_type]
    words = event_type.split("_")
    return " ".join(w if w in _ACRONYMS else w.capitalize() for w in words)


def _spec(
    family: Family,
    event_type: str,
    model: type[DomainPayload],
    description: str,
    *,
    app: bool,
    source: SchemaSource = "runtime",
    derivable: bool = True,
    category: str | None = None,
) -> EventSpec:
    return EventSpec(
        event_type=event_type,
        name=_name(event_type),
        category=category or _CATEGORY[family],
        description=description,
        payload_schema_ref=payload_schema_ref(event_type),
        model=model,
        family=family,
        schema_source=source,
        in_app_catalog=app,
        derivable=derivable,
    )


def _ticket(
    event_type: str,
    model: type[DomainPayload],
    description: str,
    *,
    app: bool = True,
    source: SchemaSource = "runtime",
    derivable: bool = True,
) -> EventSpec:
    return _spec("tickets", event_type, model, description, app=app, source=source, derivable=derivable)


def _sched(
    event_type: str,
    model: type[DomainPayload],
    description: str,
    *,
    app: bool = True,
    derivable: bool = True,
) -> EventSpec:
    return _spec("scheduling", event_type, model, description, app=app, derivable=derivable)


def _project(
    event_type: str,
    model: type[DomainPayload],
    description: str,
    *,
    app: bool = True,
    source: SchemaSource = "runtime",
    derivable: bool = True,
) -> EventSpec:
    return _spec("projects", event_type, model, description, app=app, source=source, derivable=derivable)


def _billing(event_type: str, model: type[DomainPayload], description: str) -> EventSpec:
    return _spec(
        "projects",
        event_type,
        model,
        description,
        app=True,
        source="event-schemas",
        category="Project Billing",
    )


def _time(
    event_type: str, model: type[DomainPayload], description: str, *, source: SchemaSource
) -> EventSpec:
    return _spec("time", event_type, model, description, app=False, source=source)


_SPECS: tuple[EventSpec, ...] = (
    # --- tickets ---------------------------------------------------------------------------
    _ticket("TICKET_CREATED", T.TicketCreated, "Triggered when a new ticket is created."),
    _ticket("TICKET_UPDATED", T.TicketUpdated, "Triggered when a ticket is updated."),
    _ticket("TICKET_CLOSED", T.TicketClosed, "Triggered when a ticket is closed."),
    _ticket("TICKET_ASSIGNED", T.TicketAssigned, "Assigned to an agent/team."),
    _ticket(
        "TICKET_RESPONSE_STATE_CHANGED",
        T.TicketResponseStateChanged,
        "Triggered when a ticket response state changes.",
    ),
    _ticket("TICKET_STATUS_CHANGED", T.TicketStatusChanged, "Ticket moved between statuses."),
    _ticket("TICKET_PRIORITY_CHANGED", T.TicketPriorityChanged, "Priority updated."),
    _ticket("TICKET_UNASSIGNED", T.TicketUnassigned, "Unassigned from agent/team."),
    _ticket("TICKET_REOPENED", T.TicketReopened, "Closed ticket reopened."),
    _ticket("TICKET_ESCALATED", T.TicketEscalated, "Escalated to higher tier/team/queue."),
    _ticket("TICKET_QUEUE_CHANGED", T.TicketQueueChanged, "Ticket moved between boards/queues."),
    _ticket("TICKET_MERGED", T.TicketMerged, "Ticket merged into another."),
    _ticket("TICKET_SPLIT", T.TicketSplit, "Ticket split into multiple tickets."),
    _ticket(
        "TICKET_TAGS_CHANGED",
        T.TicketTagsChanged,
        "Tags applied/removed on ticket.",
        derivable=False,
    ),
    _ticket(
        "TICKET_MESSAGE_ADDED",
        T.TicketMessageAdded,
        "Any message/comment added (public/private).",
    ),
    _ticket(
        "TICKET_CUSTOMER_REPLIED",
        T.TicketCustomerReplied,
        "Customer reply received (portal/email).",
    ),
    _ticket(
        "TICKET_INTERNAL_NOTE_ADDED",
        T.TicketInternalNoteAdded,
        "Internal/private note added.",
    ),
    _ticket("TICKET_TIME_ENTRY_ADDED", T.TicketTimeEntryAdded, "Time logged against ticket."),
    _ticket("TICKET_SLA_STAGE_ENTERED", T.TicketSlaStageEntered, "SLA stage started."),
    _ticket("TICKET_SLA_STAGE_MET", T.TicketSlaStageMet, "SLA met."),
    _ticket("TICKET_SLA_STAGE_BREACHED", T.TicketSlaStageBreached, "SLA breached."),
    _ticket(
        "TICKET_APPROVAL_REQUESTED",
        T.TicketApprovalRequested,
        "Request approval (access/spend/change).",
        derivable=False,
    ),
    _ticket("TICKET_APPROVAL_GRANTED", T.TicketApprovalGranted, "Approval granted.", derivable=False),
    _ticket("TICKET_APPROVAL_REJECTED", T.TicketApprovalRejected, "Approval rejected.", derivable=False),
    _ticket(
        "TICKET_ADDITIONAL_AGENT_ASSIGNED",
        T.TicketAdditionalAgentAssigned,
        "An additional agent is added to a ticket that already has a primary agent.",
        app=False,
    ),
    _ticket(
        "TICKET_COMMENT_ADDED",
        T.TicketCommentAdded,
        "Comment added to a ticket (legacy; workflows should prefer Ticket Message Added).",
        app=False,
    ),
    _ticket(
        "TICKET_COMMENT_UPDATED",
        T.TicketCommentUpdated,
        "Ticket comment edited (legacy bus event).",
        app=False,
        source="bus",
    ),
    _ticket(
        "TICKET_COMMENT_DELETED",
        T.TicketCommentDeleted,
        "Ticket comment deleted (legacy bus event).",
        app=False,
        source="bus",
    ),
    _ticket(
        "TICKET_DELETED",
        T.TicketDeleted,
        "Ticket deleted (legacy bus event).",
        app=False,
        source="bus",
    ),
    _ticket(
        "TICKET_AUTO_CLOSE_WARNING",
        T.TicketAutoCloseWarning,
        "An idle ticket is about to be closed automatically.",
        app=False,
        source="bus",
    ),
    _ticket(
        "TICKET_SLA_THRESHOLD_REACHED",
        T.TicketSlaThresholdReached,
        "A share of an SLA phase's target time has elapsed.",
        app=False,
        source="bus",
    ),
    # --- scheduling ------------------------------------------------------------------------
    _sched(
        "APPOINTMENT_CREATED",
        S.AppointmentCreated,
        "Appointment scheduled (often tied to a ticket).",
    ),
    _sched("APPOINTMENT_RESCHEDULED", S.AppointmentRescheduled, "Time changed."),
    _sched("APPOINTMENT_CANCELED", S.AppointmentCanceled, "Appointment canceled."),
    _sched("APPOINTMENT_COMPLETED", S.AppointmentCompleted, "Marked completed."),
    _sched("APPOINTMENT_NO_SHOW", S.AppointmentNoShow, "No-show recorded."),
    _sched("APPOINTMENT_ASSIGNED", S.AppointmentAssigned, "Assigned/reassigned to an agent/team."),
    _sched("SCHEDULE_BLOCK_CREATED", S.ScheduleBlockCreated, "Availability block created."),
    _sched("SCHEDULE_BLOCK_DELETED", S.ScheduleBlockDeleted, "Availability block removed."),
    _sched(
        "CAPACITY_THRESHOLD_REACHED",
        S.CapacityThresholdReached,
        "Team/day capacity threshold hit.",
    ),
    _sched("TECHNICIAN_DISPATCHED", S.TechnicianDispatched, "Dispatch action taken."),
    _sched("TECHNICIAN_EN_ROUTE", S.TechnicianEnRoute, "En route status update."),
    _sched("TECHNICIAN_ARRIVED", S.TechnicianArrived, "Arrival recorded."),
    _sched("TECHNICIAN_CHECKED_OUT", S.TechnicianCheckedOut, "Completed onsite work."),
    _sched(
        "APPOINTMENT_REQUEST_CREATED",
        S.AppointmentRequestCreated,
        "Client requested an appointment (legacy request flow).",
        app=False,
        derivable=False,
    ),
    _sched(
        "APPOINTMENT_REQUEST_APPROVED",
        S.AppointmentRequestApproved,
        "Appointment request approved (legacy request flow).",
        app=False,
    ),
    _sched(
        "APPOINTMENT_REQUEST_DECLINED",
        S.AppointmentRequestDeclined,
        "Appointment request declined (legacy request flow).",
        app=False,
    ),
    _sched(
        "APPOINTMENT_REQUEST_CANCELLED",
        S.AppointmentRequestCancelled,
        "Appointment request cancelled (legacy request flow).",
        app=False,
        derivable=False,
    ),
    _sched(
        "SCHEDULE_ENTRY_CREATED",
        S.ScheduleEntryCreated,
        "Schedule entry created (low-level; used by calendar sync).",
        app=False,
    ),
    _sched(
        "SCHEDULE_ENTRY_UPDATED",
        S.ScheduleEntryUpdated,
        "Schedule entry changed (low-level; used by calendar sync).",
        app=False,
    ),
    _sched(
        "SCHEDULE_ENTRY_DELETED",
        S.ScheduleEntryDeleted,
        "Schedule entry deleted (low-level; used by calendar sync).",
        app=False,
    ),
    # --- projects --------------------------------------------------------------------------
    _project("PROJECT_CREATED", P.ProjectCreated, "Triggered when a new project is created."),
    _project("PROJECT_UPDATED", P.ProjectUpdated, "Project fields changed."),
    _project("PROJECT_STATUS_CHANGED", P.ProjectStatusChanged, "Project status transition."),
    _project("PROJECT_TASK_CREATED", P.ProjectTaskCreated, "Task added."),
    _project("PROJECT_TASK_ASSIGNED", P.ProjectTaskAssigned, "Task assigned to user/team."),
    _project("PROJECT_TASK_STATUS_CHANGED", P.ProjectTaskStatusChanged, "Task status transition."),
    _project("PROJECT_TASK_COMPLETED", P.ProjectTaskCompleted, "Task completed."),
    _project(
        "PROJECT_TASK_DEPENDENCY_BLOCKED",
        P.ProjectTaskDependencyBlocked,
        "Dependency blocks progress.",
    ),
    _project(
        "PROJECT_TASK_DEPENDENCY_UNBLOCKED",
        P.ProjectTaskDependencyUnblocked,
        "Dependency resolved.",
    ),
    _project(
        "PROJECT_APPROVAL_REQUESTED",
        P.ProjectApprovalRequested,
        "Scope/budget/change approval request.",
        derivable=False,
    ),
    _project("PROJECT_APPROVAL_GRANTED", P.ProjectApprovalGranted, "Approval granted.", derivable=False),
    _project("PROJECT_APPROVAL_REJECTED", P.ProjectApprovalRejected, "Approval rejected.", derivable=False),
    _project("PROJECT_CLOSED", P.ProjectClosed, "Project closed.", app=False),
    _project("PROJECT_ASSIGNED", P.ProjectAssigned, "Project assigned to a user or team.", app=False),
    _project("PROJECT_TASK_UPDATED", P.ProjectTaskUpdated, "Task fields changed.", app=False),
    _project(
        "PROJECT_TASK_ADDITIONAL_AGENT_ASSIGNED",
        P.ProjectTaskAdditionalAgentAssigned,
        "An additional agent is added to a project task.",
        app=False,
    ),
    _project("TASK_COMMENT_ADDED", P.TaskCommentAdded, "Comment added to a task.", app=False),
    _project("TASK_COMMENT_UPDATED", P.TaskCommentUpdated, "Task comment edited.", app=False),
    _project(
        "PROJECT_DELETED",
        P.ProjectDeleted,
        "Project deleted (legacy bus event).",
        app=False,
        source="bus",
    ),
    _project(
        "PROJECT_PHASE_CREATED",
        P.ProjectPhaseCreated,
        "Project phase created (legacy bus event).",
        app=False,
        source="bus",
    ),
    _project(
        "PROJECT_PHASE_UPDATED",
        P.ProjectPhaseUpdated,
        "Project phase changed (legacy bus event).",
        app=False,
        source="bus",
    ),
    _project(
        "PROJECT_PHASE_DELETED",
        P.ProjectPhaseDeleted,
        "Project phase deleted (legacy bus event).",
        app=False,
        source="bus",
    ),
    _project(
        "PROJECT_TASK_DELETED",
        P.ProjectTaskDeleted,
        "Task deleted (legacy bus event).",
        app=False,
        source="bus",
    ),
    _project(
        "PROJECT_TASK_COMMENT_CREATED",
        P.ProjectTaskCommentCreated,
        "Task comment created (legacy bus event).",
        app=False,
        source="bus",
    ),
    _project(
        "PROJECT_TASK_COMMENT_UPDATED",
        P.ProjectTaskCommentUpdated,
        "Task comment edited (legacy bus event).",
        app=False,
        source="bus",
    ),
    _project(
        "PROJECT_TASK_COMMENT_DELETED",
        P.ProjectTaskCommentDeleted,
        "Task comment deleted (legacy bus event).",
        app=False,
        source="bus",
    ),
    _billing(
        "PROJECT_MILESTONE_READY",
        P.ProjectMilestoneReady,
        "A project billing milestone becomes ready for billing review.",
    ),
    _billing(
        "PROJECT_BUDGET_THRESHOLD_REACHED",
        P.ProjectBudgetThresholdReached,
        "Project billing crosses a configured budget notification threshold.",
    ),
    _billing(
        "PROJECT_BUDGET_EXCEEDED",
        P.ProjectBudgetExceeded,
        "Billable project work first exceeds a hard budget cap and is written down.",
    ),
    _billing(
        "PROJECT_BILLING_CONFIG_CREATED",
        P.ProjectBillingConfigCreated,
        "Project billing is enabled and configured for a project.",
    ),
    _billing(
        "PROJECT_BILLING_CONFIG_UPDATED",
        P.ProjectBillingConfigUpdated,
        "A project billing configuration is changed.",
    ),
    _billing(
        "PROJECT_BILLING_CONFIG_DELETED",
        P.ProjectBillingConfigDeleted,
        "A project billing configuration is removed.",
    ),
    _billing(
        "PROJECT_BILLING_SCHEDULE_ENTRY_CREATED",
        P.ProjectBillingScheduleEntryCreated,
        "A project billing milestone or deposit is added.",
    ),
    _billing(
        "PROJECT_BILLING_SCHEDULE_ENTRY_UPDATED",
        P.ProjectBillingScheduleEntryUpdated,
        "A pending project billing schedule entry is changed.",
    ),
    _billing(
        "PROJECT_BILLING_SCHEDULE_STATUS_CHANGED",
        P.ProjectBillingScheduleStatusChanged,
        "A project billing schedule entry changes lifecycle status.",
    ),
    _billing(
        "PROJECT_BILLING_SCHEDULE_ENTRY_DELETED",
        P.ProjectBillingScheduleEntryDeleted,
        "A project billing schedule entry is removed.",
    ),
    _billing(
        "PROJECT_BILLING_PAYMENT_STATUS_CHANGED",
        P.ProjectBillingPaymentStatusChanged,
        "A flagged project payment prerequisite becomes satisfied, outstanding again, "
        "or requires a replacement invoice.",
    ),
    # --- time entries ----------------------------------------------------------------------
    _time(
        "TIME_ENTRY_SUBMITTED",
        TE.TimeEntrySubmitted,
        "Time entry submitted for approval.",
        source="runtime",
    ),
    _time("TIME_ENTRY_APPROVED", TE.TimeEntryApproved, "Time entry approved.", source="runtime"),
    _time(
        "TIME_ENTRY_CREATED",
        TE.TimeEntryCreated,
        "Time entry created (legacy bus event).",
        source="bus",
    ),
    _time(
        "TIME_ENTRY_UPDATED",
        TE.TimeEntryUpdated,
        "Time entry changed (legacy bus event).",
        source="bus",
    ),
    _time(
        "TIME_ENTRY_DELETED",
        TE.TimeEntryDeleted,
        "Time entry deleted (legacy bus event).",
        source="bus",
    ),
    _time(
        "TIME_ENTRY_CHANGES_REQUESTED",
        TE.TimeEntryChangesRequested,
        "Changes requested on a submitted time entry (legacy bus event).",
        source="bus",
    ),
)


def index_specs(
    entries: tuple[EventSpec, ...],
) -> tuple[Mapping[str, EventSpec], Mapping[str, EventSpec]]:
    """Index ``entries`` by event type and by ref, refusing duplicates (run at import)."""
    by_type: dict[str, EventSpec] = {}
    by_ref: dict[str, EventSpec] = {}
    models: dict[type[DomainPayload], str] = {}
    for spec in entries:
        if spec.event_type in by_type:
            raise RegistryError(f"event type {spec.event_type} is registered twice")
        if spec.payload_schema_ref in by_ref:
            raise RegistryError(f"payload schema ref {spec.payload_schema_ref} is registered twice")
        if spec.model in models:
            raise RegistryError(
                f"model {spec.model.__name__} serves both {models[spec.model]} and {spec.event_type}"
            )
        if spec.model.__name__ != pascal_case(spec.event_type):
            raise RegistryError(f"model {spec.model.__name__} does not match event type {spec.event_type}")
        by_type[spec.event_type] = spec
        by_ref[spec.payload_schema_ref] = spec
        models[spec.model] = spec.event_type
    return MappingProxyType(by_type), MappingProxyType(by_ref)


REGISTRY, _BY_REF = index_specs(_SPECS)
"""Event type -> :class:`EventSpec`, read-only."""


def get(event_type: str) -> EventSpec:
    """The spec of ``event_type``; :class:`UnknownEventType` if the catalog has none."""
    try:
        return REGISTRY[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def by_ref(ref: str) -> EventSpec:
    """The spec whose ``payload_schema_ref`` is ``ref``."""
    try:
        return _BY_REF[ref]
    except KeyError:
        raise UnknownEventType(ref) from None


def specs() -> Iterator[EventSpec]:
    """All specs, ordered by category then event type (the order of listings and exports)."""
    return iter(sorted(_SPECS, key=lambda s: (s.category, s.event_type)))
