"""Payload models of the project family: projects, tasks, dependencies, task comments and
approvals (SPEC §4.1 runtime registry), the project-billing schemas that only the
``packages/event-schemas`` registry holds (SPEC §4.1, last eleven), and the legacy bus shapes
of project deletion, phases, task deletion and ``PROJECT_TASK_COMMENT_*`` (SPEC §4.2).
"""

from __future__ import annotations

from typing import Literal

from pydantic import StrictBool

from catalog.base import (
    AssigneeType,
    BusPayload,
    Changes,
    DomainPayload,
    NonEmptyText,
    NonNegativeInt,
    Opt,
    PositiveInt,
    Record,
    Text,
    TimestampText,
    UtcTimestamp,
    UuidText,
)


class ProjectCreated(DomainPayload):
    projectId: UuidText
    createdByUserId: Opt[UuidText] = None
    createdAt: Opt[UtcTimestamp] = None


class ProjectUpdated(DomainPayload):
    projectId: UuidText
    updatedAt: Opt[UtcTimestamp] = None
    updatedFields: Opt[list[str]] = None
    changes: Opt[Changes] = None


class ProjectStatusChanged(DomainPayload):
    projectId: UuidText
    previousStatus: NonEmptyText
    newStatus: NonEmptyText
    changedAt: Opt[UtcTimestamp] = None


class ProjectClosed(DomainPayload):
    projectId: UuidText
    closedByUserId: Opt[UuidText] = None
    closedAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


class ProjectAssigned(DomainPayload):
    projectId: UuidText
    assignedToId: Opt[UuidText] = None
    assignedToType: Opt[AssigneeType] = None
    assignedByUserId: Opt[UuidText] = None
    assignedAt: Opt[UtcTimestamp] = None


class ProjectTaskCreated(DomainPayload):
    taskId: UuidText
    projectId: UuidText
    createdByUserId: Opt[UuidText] = None
    createdAt: Opt[UtcTimestamp] = None
    title: NonEmptyText
    dueDate: Opt[TimestampText] = None
    status: NonEmptyText


class ProjectTaskUpdated(DomainPayload):
    taskId: UuidText
    projectId: UuidText
    updatedAt: Opt[UtcTimestamp] = None
    updatedFields: Opt[list[str]] = None
    changes: Opt[Changes] = None


class ProjectTaskAssigned(DomainPayload):
    taskId: UuidText
    projectId: UuidText
    assignedToId: UuidText
    assignedToType: AssigneeType
    assignedByUserId: Opt[UuidText] = None
    assignedByName: Opt[Text] = None
    assignedAt: Opt[UtcTimestamp] = None


class ProjectTaskAdditionalAgentAssigned(DomainPayload):
    taskId: UuidText
    projectId: UuidText
    primaryAgentId: UuidText
    additionalAgentId: UuidText
    assignedByUserId: Opt[UuidText] = None
    assignedAt: Opt[UtcTimestamp] = None


class ProjectTaskStatusChanged(DomainPayload):
    taskId: UuidText
    projectId: UuidText
    previousStatus: NonEmptyText
    newStatus: NonEmptyText
    changedAt: Opt[UtcTimestamp] = None


class ProjectTaskCompleted(DomainPayload):
    taskId: UuidText
    projectId: UuidText
    completedByUserId: Opt[UuidText] = None
    completedAt: Opt[UtcTimestamp] = None


class ProjectTaskDependencyBlocked(DomainPayload):
    taskId: UuidText
    projectId: UuidText
    blockedByTaskId: UuidText
    blockedAt: Opt[UtcTimestamp] = None


class ProjectTaskDependencyUnblocked(DomainPayload):
    taskId: UuidText
    projectId: UuidText
    unblockedByTaskId: UuidText
    unblockedAt: Opt[UtcTimestamp] = None


class TaskCommentAdded(DomainPayload):
    taskId: UuidText
    projectId: UuidText
    taskCommentId: UuidText
    commentContent: NonEmptyText
    createdByUserId: Opt[UuidText] = None
    taskName: Opt[Text] = None


class TaskCommentUpdated(DomainPayload):
    taskId: UuidText
    projectId: UuidText
    taskCommentId: UuidText
    oldCommentContent: Opt[NonEmptyText] = None
    newCommentContent: NonEmptyText
    updatedByUserId: Opt[UuidText] = None
    taskName: Opt[Text] = None


class ProjectApprovalRequested(DomainPayload):
    approvalId: UuidText
    projectId: UuidText
    approvalType: NonEmptyText
    requestedByUserId: Opt[UuidText] = None
    requestedAt: Opt[UtcTimestamp] = None
    notes: Opt[Text] = None


class ProjectApprovalGranted(DomainPayload):
    approvalId: UuidText
    projectId: UuidText
    approvalType: NonEmptyText
    approvedByUserId: Opt[UuidText] = None
    approvedAt: Opt[UtcTimestamp] = None
    notes: Opt[Text] = None


class ProjectApprovalRejected(DomainPayload):
    approvalId: UuidText
    projectId: UuidText
    approvalType: NonEmptyText
    rejectedByUserId: Opt[UuidText] = None
    rejectedAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


# --- project billing (refs only in the packages/event-schemas registry) ----------------------

BillingScheduleStatus = Literal["pending", "ready", "held", "approved", "invoiced", "canceled"]
PaymentState = Literal["outstanding", "satisfied", "replacement_needed"]


class ProjectMilestoneReady(DomainPayload):
    projectId: UuidText
    entryId: UuidText
    description: NonEmptyText
    computedAmount: NonNegativeInt
    trigger: Literal["phase", "date", "manual"]


class ProjectBudgetThresholdReached(DomainPayload):
    projectId: UuidText
    threshold: NonNegativeInt
    billed: NonNegativeInt
    cap: NonNegativeInt


class ProjectBudgetExceeded(DomainPayload):
    projectId: UuidText
    invoiceId: UuidText
    billed: NonNegativeInt
    attempted: PositiveInt
    cap: NonNegativeInt
    writtenDown: PositiveInt


class _ProjectBillingConfig(DomainPayload):
    projectId: UuidText
    configId: UuidText
    billingModel: Literal["fixed_price", "time_and_materials"]
    invoiceMode: Literal["recurring", "standalone"]
    userId: Opt[UuidText] = None
    changes: Opt[Record] = None


class ProjectBillingConfigCreated(_ProjectBillingConfig):
    pass


class ProjectBillingConfigUpdated(_ProjectBillingConfig):
    pass


class ProjectBillingConfigDeleted(_ProjectBillingConfig):
    pass


class _ProjectBillingSchedule(DomainPayload):
    projectId: UuidText
    configId: UuidText
    entryId: UuidText
    description: NonEmptyText
    status: BillingScheduleStatus
    previousStatus: BillingScheduleStatus | None = None
    requiresPaymentBeforeWork: StrictBool
    userId: Opt[UuidText] = None
    changes: Opt[Record] = None


class ProjectBillingScheduleEntryCreated(_ProjectBillingSchedule):
    pass


class ProjectBillingScheduleEntryUpdated(_ProjectBillingSchedule):
    pass


class ProjectBillingScheduleEntryDeleted(_ProjectBillingSchedule):
    pass


class ProjectBillingScheduleStatusChanged(_ProjectBillingSchedule):
    pass


class ProjectBillingPaymentStatusChanged(DomainPayload):
    projectId: UuidText
    configId: UuidText
    entryId: UuidText
    invoiceId: UuidText
    previousState: PaymentState
    newState: PaymentState
    previousInvoiceStatus: NonEmptyText
    newInvoiceStatus: NonEmptyText
    requiresPaymentBeforeWork: StrictBool
    userId: Opt[UuidText] = None


# --- legacy bus shapes (no payload.*.v1 schema; SPEC §4.2) -----------------------------------


class ProjectDeleted(BusPayload):
    """The bus ``ProjectEventPayloadSchema``: ``userId`` (the acting user) is required."""

    projectId: UuidText
    userId: UuidText
    changes: Opt[Record] = None
    assignedTo: Opt[UuidText] = None


class _ProjectPhase(BusPayload):
    projectId: UuidText
    phaseId: UuidText
    userId: Opt[UuidText] = None
    timestamp: Opt[UtcTimestamp] = None
    changes: Opt[Record] = None


class ProjectPhaseCreated(_ProjectPhase):
    pass


class ProjectPhaseUpdated(_ProjectPhase):
    pass


class ProjectPhaseDeleted(_ProjectPhase):
    pass


class ProjectTaskDeleted(BusPayload):
    projectId: UuidText
    taskId: UuidText
    phaseId: Opt[UuidText] = None
    userId: Opt[UuidText] = None
    timestamp: Opt[UtcTimestamp] = None
    changes: Opt[Record] = None


class ProjectTaskCommentCreated(BusPayload):
    taskId: UuidText
    projectId: UuidText
    userId: UuidText
    taskCommentId: UuidText
    taskName: Text
    commentContent: Text
    isUpdate: Opt[StrictBool] = None


class ProjectTaskCommentUpdated(ProjectTaskCommentCreated):
    """SPEC §4.2: the created shape plus the old and new content."""

    oldCommentContent: Text
    newCommentContent: Text


class ProjectTaskCommentDeleted(BusPayload):
    taskId: UuidText
    projectId: UuidText
    taskCommentId: UuidText
    userId: Opt[UuidText] = None
    taskName: Opt[Text] = None
    timestamp: Opt[UtcTimestamp] = None
