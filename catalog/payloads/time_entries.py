"""Payload models of the time-entry family: the runtime-only ``payload.TimeEntrySubmitted.v1`` /
``payload.TimeEntryApproved.v1`` (SPEC §4.1) and the legacy bus ``TimeEntryEventPayloadSchema``
shape (SPEC §4.2) for the time-entry types that have no v1 schema.
"""

from __future__ import annotations

from typing import Literal

from catalog.base import BusPayload, DomainPayload, Opt, Record, Text, UtcTimestamp, UuidText


class _TimeEntryWorkflow(DomainPayload):
    timeEntryId: UuidText
    userId: UuidText
    workItemId: UuidText
    workItemType: Literal["TICKET", "PROJECT_TASK"]


class TimeEntrySubmitted(_TimeEntryWorkflow):
    pass


class TimeEntryApproved(_TimeEntryWorkflow):
    pass


class _TimeEntryLegacy(BusPayload):
    timeEntryId: UuidText
    userId: Opt[UuidText] = None
    workItemId: Text | None = None
    workItemType: Text | None = None
    approvedBy: Opt[UuidText] = None
    requestedBy: Opt[UuidText] = None
    reason: Opt[Text] = None
    changes: Opt[Record] = None
    timestamp: Opt[UtcTimestamp] = None


class TimeEntryCreated(_TimeEntryLegacy):
    pass


class TimeEntryUpdated(_TimeEntryLegacy):
    pass


class TimeEntryDeleted(_TimeEntryLegacy):
    pass


class TimeEntryChangesRequested(_TimeEntryLegacy):
    pass
