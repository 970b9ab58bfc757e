"""Payload models of the scheduling family: appointments, schedule blocks, capacity, field
technician events (SPEC §4.1), the legacy appointment-request and schedule-entry types, whose
runtime registry holds v1 schemas although the catalog has no row for them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import StrictBool

from catalog.base import (
    AssigneeType,
    DomainPayload,
    EmailText,
    NonEmptyText,
    NonNegativeNumber,
    Opt,
    PositiveInt,
    Record,
    Text,
    UtcTimestamp,
    UuidText,
)


class AppointmentCreated(DomainPayload):
    appointmentId: UuidText
    ticketId: Opt[UuidText] = None
    startAt: UtcTimestamp
    endAt: UtcTimestamp
    timezone: NonEmptyText
    assigneeId: Opt[UuidText] = None
    assigneeType: Opt[AssigneeType] = None
    createdByUserId: Opt[UuidText] = None
    createdAt: Opt[UtcTimestamp] = None
    location: Opt[Text] = None


class AppointmentRescheduled(DomainPayload):
    appointmentId: UuidText
    ticketId: Opt[UuidText] = None
    previousStartAt: UtcTimestamp
    previousEndAt: UtcTimestamp
    newStartAt: UtcTimestamp
    newEndAt: UtcTimestamp
    timezone: NonEmptyText
    rescheduledAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


class AppointmentCanceled(DomainPayload):
    appointmentId: UuidText
    ticketId: Opt[UuidText] = None
    canceledAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


class AppointmentCompleted(DomainPayload):
    appointmentId: UuidText
    ticketId: Opt[UuidText] = None
    completedAt: Opt[UtcTimestamp] = None
    outcome: Opt[Text] = None


class AppointmentNoShow(DomainPayload):
    appointmentId: UuidText
    ticketId: Opt[UuidText] = None
    markedAt: Opt[UtcTimestamp] = None
    party: Literal["customer", "agent"]


class AppointmentAssigned(DomainPayload):
    appointmentId: UuidText
    ticketId: Opt[UuidText] = None
    previousAssigneeId: Opt[UuidText] = None
    previousAssigneeType: Opt[AssigneeType] = None
    newAssigneeId: UuidText
    newAssigneeType: AssigneeType
    assignedAt: Opt[UtcTimestamp] = None


class ScheduleBlockCreated(DomainPayload):
    scheduleBlockId: UuidText
    ownerId: UuidText
    ownerType: AssigneeType
    startAt: UtcTimestamp
    endAt: UtcTimestamp
    timezone: NonEmptyText
    createdAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


class ScheduleBlockDeleted(DomainPayload):
    scheduleBlockId: UuidText
    deletedAt: Opt[UtcTimestamp] = None
    reason: Opt[Text] = None


class CapacityThresholdReached(DomainPayload):
    teamId: UuidText
    date: NonEmptyText
    capacityLimit: NonNegativeNumber
    currentBooked: NonNegativeNumber
    triggeredAt: Opt[UtcTimestamp] = None


class TechnicianDispatched(DomainPayload):
    appointmentId: UuidText
    ticketId: Opt[UuidText] = None
    technicianUserId: UuidText
    dispatchedByUserId: Opt[UuidText] = None
    dispatchedAt: Opt[UtcTimestamp] = None


class TechnicianEnRoute(DomainPayload):
    appointmentId: UuidText
    ticketId: Opt[UuidText] = None
    technicianUserId: UuidText
    startedAt: Opt[UtcTimestamp] = None
    eta: Opt[UtcTimestamp] = None


class TechnicianArrived(DomainPayload):
    appointmentId: UuidText
    ticketId: Opt[UuidText] = None
    technicianUserId: UuidText
    arrivedAt: Opt[UtcTimestamp] = None
    location: Opt[Text] = None


class TechnicianCheckedOut(DomainPayload):
    appointmentId: UuidText
    ticketId: Opt[UuidText] = None
    technicianUserId: UuidText
    checkedOutAt: Opt[UtcTimestamp] = None
    workSummary: Opt[Text] = None


class _AppointmentRequest(DomainPayload):
    """The shared shape of the four ``payload.AppointmentRequest*.v1`` schemas."""

    appointmentRequestId: UuidText
    serviceId: UuidText
    serviceName: NonEmptyText
    requestedDate: NonEmptyText
    requestedTime: NonEmptyText
    requestedDuration: PositiveInt
    isAuthenticated: StrictBool
    requesterEmail: EmailText
    requesterName: Text | None = None
    requesterPhone: Text | None = None
    clientId: Opt[UuidText] = None
    contactId: Opt[UuidText] = None
    clientUserId: Opt[UuidText] = None
    preferredAssignedUserId: Opt[UuidText] = None
    companyName: Opt[Text] = None
    ticketId: Opt[UuidText] = None
    description: Opt[Text] = None
    approvedByUserId: Opt[UuidText] = None
    assignedUserId: Opt[UuidText] = None
    scheduleEntryId: Opt[UuidText] = None
    declineReason: Opt[Text] = None


class AppointmentRequestCreated(_AppointmentRequest):
    pass


class AppointmentRequestApproved(_AppointmentRequest):
    pass


class AppointmentRequestDeclined(_AppointmentRequest):
    pass


class AppointmentRequestCancelled(_AppointmentRequest):
    pass


class _ScheduleEntry(DomainPayload):
    """``payload.ScheduleEntry*.v1``: ``userId`` is the acting user, which no column records."""

    entryId: UuidText
    userId: UuidText
    changes: Opt[Record] = None


class ScheduleEntryCreated(_ScheduleEntry):
    pass


class ScheduleEntryUpdated(_ScheduleEntry):
    pass


class ScheduleEntryDeleted(_ScheduleEntry):
    pass
