"""Payload models of the ticket family: the 26 ``payload.Ticket*.v1`` schemas of SPEC §4.1 and
the legacy bus shapes of SPEC §4.2 for ticket types that have no v1 schema (comment edits and
deletes, ticket deletion, auto-close warning, SLA threshold).

Field order follows the SPEC tables. Where SPEC types a time as plain ``string`` rather than
``string(date-time)`` (``createdAt``, ``assignedAt``, ``closedAt`` of the oldest schemas), the
model keeps it a plain string, as the application does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

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

Visibility = Literal["public", "internal"]
AuthorType = Literal["user", "contact"]
MessageChannel = Literal["email", "portal", "ui", "api"]
SlaStage = Literal["response", "resolution", "custom"]


class _Suppression(DomainPayload):
    """Notification suppression flags of TICKET_ASSIGNED / CLOSED / UPDATED (default false)."""

    suppressContactNotifications: StrictBool = False
    suppressInternalNotifications: StrictBool = False


class TicketCreated(DomainPayload):
    ticketId: UuidText
    createdByUserId: Opt[UuidText] = None
    createdAt: Opt[TimestampText] = None
    updatedFields: Opt[list[str]] = None
    changes: Opt[Changes] = None


class TicketUpdated(_Suppression):
    ticketId: UuidText
    updatedByUserId: Opt[UuidText] = None
    updatedFields: Opt[list[str]] = None
    changes: Opt[Changes] = None


class TicketClosed(_Suppression):
    ticketId: UuidText
    closedByUserId: Opt[UuidText] = None
    closedAt: Opt[TimestampText] = None
    reason: Opt[Text] = None
    updatedFields: Opt[list[str]] = None
    changes: Opt[Changes] = None


class TicketAssigned(_Suppression):
    ticketId: UuidText
    assignedToUserId: Opt[UuidText] = None
    assignedByUserId: Opt[UuidText] = None
    previousAssigneeId: Opt[UuidText] = None
    previousAssigneeType: Opt[AssigneeType] = None
    newAssigneeId: Opt[UuidText] = None
    newAssigneeType: Opt[AssigneeType] = None
    assignedAt: Opt[TimestampText] = None
    updatedFields: Opt[list[str]] = None
    changes: Opt[Changes] = None


class TicketAdditionalAgentAssigned(DomainPayload):
    ticketId: UuidText
    primaryAgentId: UuidText
    additionalAgentId: UuidText
    assignedByUserId: Opt[UuidText] = None
    assignedAt: Opt[UtcTimestamp] = None


class TicketCommentAdded(DomainPayload):
    ticketId: UuidText
    commentId: Opt[UuidText] = None
    visibility: Opt[Visibility] = None
    authorId: Opt[UuidText] = None
    authorType: Opt[AuthorType] = None
    createdAt: Opt[UtcTimestamp] = None


class TicketResponseStateChanged(DomainPayload):
    ticketId: UuidText
    previousResponseState: Text | None = None
    newResponseState: Text | None = None


class TicketStatusChanged(DomainPayload):
    ticketId: UuidText
    previousStatusId: NonEmptyText
    newStatusId: NonEmptyText
    reason: Opt[Text] = None
    changedAt: Opt[UtcTimestamp] = None


class TicketPriorityChanged(DomainPayload):
    ticketId: UuidText
    previousPriorityId: NonEmptyText
    newPriorityId: NonEmptyText
    reason: Opt[Text] = None
    changedAt: Opt[UtcTimestamp] = None


class TicketUnassigned(DomainPayload):
    ticketId: UuidText
    previousAssigneeId: UuidText
    previousAssigneeType: AssigneeType
    newAssigneeId: Opt[UuidText] = None
    newAssigneeType: Opt[AssigneeType] = None
    unassignedAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


class TicketReopened(DomainPayload):
    ticketId: UuidText
    previousStatusId: NonEmptyText
    newStatusId: NonEmptyText
    reopenedAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


class TicketEscalated(DomainPayload):
    ticketId: UuidText
    fromQueueId: Opt[UuidText] = None
    toQueueId: Opt[UuidText] = None
    escalatedAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


class TicketQueueChanged(DomainPayload):
    ticketId: UuidText
    previousBoardId: Opt[UuidText] = None
    newBoardId: Opt[UuidText] = None
    changedAt: Opt[UtcTimestamp] = None


class TicketMerged(DomainPayload):
    sourceTicketId: UuidText
    targetTicketId: UuidText
    mergedAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


class TicketSplit(DomainPayload):
    originalTicketId: UuidText
    newTicketIds: Annotated[list[UuidText], Field(min_length=1)]
    splitAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


class TicketTagsChanged(DomainPayload):
    ticketId: UuidText
    addedTagIds: Opt[list[UuidText]] = None
    removedTagIds: Opt[list[UuidText]] = None
    changedAt: Opt[UtcTimestamp] = None


class TicketMessageAdded(DomainPayload):
    ticketId: UuidText
    messageId: UuidText
    visibility: Visibility
    authorId: UuidText
    authorType: AuthorType
    channel: MessageChannel
    createdAt: Opt[UtcTimestamp] = None
    attachmentsCount: Opt[NonNegativeInt] = None


class TicketCustomerReplied(DomainPayload):
    ticketId: UuidText
    messageId: UuidText
    contactId: UuidText
    channel: MessageChannel
    receivedAt: Opt[UtcTimestamp] = None
    attachmentsCount: Opt[NonNegativeInt] = None


class TicketInternalNoteAdded(DomainPayload):
    ticketId: UuidText
    noteId: UuidText
    createdAt: Opt[UtcTimestamp] = None


class TicketTimeEntryAdded(DomainPayload):
    ticketId: UuidText
    timeEntryId: UuidText
    minutes: PositiveInt
    billable: StrictBool
    createdAt: Opt[UtcTimestamp] = None


class TicketSlaStageEntered(DomainPayload):
    ticketId: UuidText
    slaPolicyId: UuidText
    stage: SlaStage
    enteredAt: Opt[UtcTimestamp] = None
    targetAt: Opt[UtcTimestamp] = None


class TicketSlaStageMet(DomainPayload):
    ticketId: UuidText
    slaPolicyId: UuidText
    stage: SlaStage
    metAt: Opt[UtcTimestamp] = None
    targetAt: Opt[UtcTimestamp] = None


class TicketSlaStageBreached(DomainPayload):
    ticketId: UuidText
    slaPolicyId: UuidText
    stage: SlaStage
    breachedAt: Opt[UtcTimestamp] = None
    targetAt: Opt[UtcTimestamp] = None
    overdueBySeconds: Opt[NonNegativeInt] = None


class TicketApprovalRequested(DomainPayload):
    ticketId: UuidText
    approvalRequestId: UuidText
    approvalType: NonEmptyText
    requestedByUserId: Opt[UuidText] = None
    requestedAt: Opt[UtcTimestamp] = None
    notes: Opt[Text] = None


class TicketApprovalGranted(DomainPayload):
    ticketId: UuidText
    approvalRequestId: UuidText
    approvedByUserId: Opt[UuidText] = None
    approvedAt: Opt[UtcTimestamp] = None
    conditions: Any = None


class TicketApprovalRejected(DomainPayload):
    ticketId: UuidText
    approvalRequestId: UuidText
    rejectedByUserId: Opt[UuidText] = None
    rejectedAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


# --- legacy bus shapes (no payload.*.v1 schema; SPEC §4.2) -----------------------------------


class LegacyComment(BaseModel):
    """The ``comment`` object of the legacy ticket payload."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: UuidText
    content: str
    author: str
    isInternal: Opt[StrictBool] = None
    authorType: Opt[Literal["internal", "client", "unknown"]] = None


class LegacyCommentVersion(BaseModel):
    """``oldComment`` / ``newComment`` of TICKET_COMMENT_UPDATED."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: UuidText
    content: str
    author: str
    isInternal: Opt[StrictBool] = None


class _LegacyTicket(BusPayload):
    """The bus ``TicketEventPayloadSchema``: ``userId`` (the acting user) is required."""

    ticketId: UuidText
    userId: UuidText
    assignedByUserId: Opt[UuidText] = None
    changes: Opt[Record] = None
    suppressContactNotifications: StrictBool = False
    suppressInternalNotifications: StrictBool = False
    comment: Opt[LegacyComment] = None


class TicketDeleted(_LegacyTicket):
    pass


class TicketCommentUpdated(_LegacyTicket):
    oldComment: Opt[LegacyCommentVersion] = None
    newComment: Opt[LegacyCommentVersion] = None


class TicketCommentDeleted(BusPayload):
    ticketId: UuidText
    commentId: UuidText
    userId: Opt[UuidText] = None
    isInternal: Opt[StrictBool] = None


class TicketAutoCloseWarning(DomainPayload):
    """The domain alternative of the bus union (the legacy alternative needs ``userId``)."""

    ticketId: Text
    ticketNumber: Text
    title: Text
    scheduledCloseAt: TimestampText
    contactNameId: Text | None = None
    assignedTo: Text | None = None
    enteredBy: Text | None = None


class TicketSlaThresholdReached(DomainPayload):
    ticketId: UuidText
    phase: Literal["response", "resolution"]
    thresholdPercent: Annotated[StrictInt, Field(ge=0, le=100)]
