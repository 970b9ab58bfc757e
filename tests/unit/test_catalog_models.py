"""Payload models: every model accepts its example and rejects each required field removed, each
malformed uuid and each timestamp that is not UTC ``Z``; values are stored in canonical form."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from catalog.forms import format_timestamp
from catalog.jsonschema_export import example
from catalog.payloads.projects import ProjectBillingScheduleEntryCreated
from catalog.payloads.scheduling import AppointmentRequestCreated, CapacityThresholdReached
from catalog.payloads.tickets import (
    TicketAutoCloseWarning,
    TicketCreated,
    TicketResponseStateChanged,
    TicketSplit,
    TicketStatusChanged,
    TicketTimeEntryAdded,
)
from catalog.registry import REGISTRY
from tests.unit.catalog_cases import (
    EVENT_TYPES,
    Case,
    invalid_cases,
    null_cases,
    required_fields,
    timestamp_fields,
    valid_cases,
)

VALID = list(valid_cases())
INVALID = list(invalid_cases())
NULLS = list(null_cases())


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_model_accepts_its_example(case: Case) -> None:
    model = REGISTRY[case.event_type].model.model_validate(case.payload)
    assert model.model_dump(exclude_unset=True) == case.payload


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_model_rejects_invalid_variant(case: Case) -> None:
    with pytest.raises(ValidationError) as info:
        REGISTRY[case.event_type].model.model_validate(case.payload)
    field = case.label.split("-")[1] if case.label.startswith("without-") else case.label.split("-")[0]
    assert field in {str(e["loc"][0]) for e in info.value.errors()}


@pytest.mark.parametrize("case", NULLS, ids=[c.id for c in NULLS])
def test_optional_field_is_not_nullable(case: Case) -> None:
    with pytest.raises(ValidationError):
        REGISTRY[case.event_type].model.model_validate(case.payload)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_base_fields_on_every_payload(event_type: str) -> None:
    fields = REGISTRY[event_type].model.model_fields
    assert {"tenantId", "occurredAt", "actorUserId", "actorContactId", "actorType"} <= set(fields)
    assert {"tenantId", "occurredAt"} <= set(required_fields(event_type))
    assert "occurredAt" in timestamp_fields(event_type)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_naive_and_offset_datetimes(event_type: str) -> None:
    model = REGISTRY[event_type].model
    base = example(event_type)
    with pytest.raises(ValidationError):
        model.model_validate({**base, "occurredAt": datetime(2026, 1, 2, 3, 4, 5)})
    berlin = timezone(timedelta(hours=1))
    aware = datetime(2026, 1, 2, 4, 4, 5, 678999, tzinfo=berlin)
    assert model.model_validate({**base, "occurredAt": aware}).occurredAt == "2026-01-02T03:04:05.678Z"


def test_extra_keys_are_kept() -> None:
    payload = {**example("TICKET_CREATED"), "userId": str(uuid.uuid4()), "board_id": "b"}
    dumped = TicketCreated.model_validate(payload).model_dump(exclude_unset=True)
    assert dumped["userId"] == payload["userId"]
    assert dumped["board_id"] == "b"


def test_values_are_stored_in_canonical_form() -> None:
    ticket = uuid.uuid4()
    status = uuid.uuid4()
    m = TicketStatusChanged.model_validate(
        {
            "tenantId": uuid.UUID(int=7),
            "occurredAt": "2026-01-02T03:04:05.6789Z",
            "ticketId": str(ticket).upper(),
            "previousStatusId": status,
            "newStatusId": "open",
            "changedAt": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        }
    )
    assert m.tenantId == "00000000-0000-0000-0000-000000000007"
    assert m.ticketId == str(ticket)
    assert m.previousStatusId == str(status)
    assert m.occurredAt == "2026-01-02T03:04:05.678Z"
    assert m.changedAt == "2026-01-02T03:04:05.000Z"


def test_nullable_fields_accept_null() -> None:
    base = example("TICKET_RESPONSE_STATE_CHANGED")
    m = TicketResponseStateChanged.model_validate({**base, "previousResponseState": None})
    assert m.previousResponseState is None
    req = {**example("APPOINTMENT_REQUEST_CREATED"), "requesterName": None, "requesterPhone": None}
    assert AppointmentRequestCreated.model_validate(req).requesterName is None
    sched = {**example("PROJECT_BILLING_SCHEDULE_ENTRY_CREATED"), "previousStatus": None}
    assert ProjectBillingScheduleEntryCreated.model_validate(sched).previousStatus is None


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (TicketTimeEntryAdded, "minutes", 0),  # integer > 0
        (TicketTimeEntryAdded, "minutes", "5"),  # not a number
        (TicketTimeEntryAdded, "minutes", True),  # a boolean is not an integer
        (TicketTimeEntryAdded, "billable", "yes"),
        (TicketStatusChanged, "previousStatusId", ""),  # min length 1
        (TicketSplit, "newTicketIds", []),  # at least one
        (CapacityThresholdReached, "capacityLimit", -1),  # >= 0
        (CapacityThresholdReached, "capacityLimit", float("nan")),
        (CapacityThresholdReached, "currentBooked", "1.5"),  # strict number
        (AppointmentRequestCreated, "requesterEmail", "not-an-email"),
        (AppointmentRequestCreated, "requestedDuration", 1.5),
        (TicketResponseStateChanged, "tenantId", ""),
    ],
)
def test_bounds_and_strict_types(model: type, field: str, value: object) -> None:
    event_type = next(t for t, s in REGISTRY.items() if s.model is model)
    with pytest.raises(ValidationError) as info:
        model.model_validate({**example(event_type), field: value})  # type: ignore[attr-defined]
    assert info.value.errors()[0]["loc"][0] == field


def test_numeric_columns_become_numbers() -> None:
    # psycopg loads Postgres numeric as Decimal; a JSON number is what the schema wants.
    payload = {**example("CAPACITY_THRESHOLD_REACHED"), "capacityLimit": Decimal("7.5"), "currentBooked": 8}
    m = CapacityThresholdReached.model_validate(payload)
    assert (m.capacityLimit, m.currentBooked) == (7.5, 8.0)


def test_plain_string_times_keep_their_text() -> None:
    # SPEC types TicketCreated.createdAt as plain string: any text passes, datetimes are canonical.
    base = example("TICKET_CREATED")
    assert TicketCreated.model_validate({**base, "createdAt": "yesterday"}).createdAt == "yesterday"
    aware = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert TicketCreated.model_validate({**base, "createdAt": aware}).createdAt == format_timestamp(aware)
    warn = {**example("TICKET_AUTO_CLOSE_WARNING"), "scheduledCloseAt": "2026-01-09T00:00:00+01:00"}
    assert TicketAutoCloseWarning.model_validate(warn).scheduledCloseAt == "2026-01-09T00:00:00+01:00"


def test_legacy_bus_types_need_a_uuid_tenant() -> None:
    # Types governed by the bus schema use BasePayloadSchema: tenantId must be a uuid.
    for event_type in ("TICKET_DELETED", "PROJECT_DELETED", "TIME_ENTRY_CREATED"):
        with pytest.raises(ValidationError):
            REGISTRY[event_type].model.model_validate({**example(event_type), "tenantId": "acme"})
    # v1 schemas only ask for a non-empty string.
    REGISTRY["TICKET_CREATED"].model.model_validate({**example("TICKET_CREATED"), "tenantId": "acme"})


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("2024-02-29T03:04:05.678Z", "2024-02-29T03:04:05.678Z"),  # canonical: kept as it is
        ("2024-02-29T03:04:05Z", "2024-02-29T03:04:05.000Z"),  # zod's form: made canonical
        ("2024-02-29T03:04:05.6789Z", "2024-02-29T03:04:05.678Z"),
        (datetime(2024, 2, 29, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))), "2024-02-29T03:04:05.000Z"),
        ("2023-02-29T03:04:05.678Z", None),  # no such day, whatever the fraction
        ("2023-02-29T03:04:05Z", None),
        ("1900-02-29T00:00:00.000Z", None),
        ("0000-01-01T00:00:00.000Z", None),
        ("2024-02-29T03:04:05.678Z\n", None),
        (b"2024-02-29T03:04:05.678Z", None),  # bytes are not text
        (datetime(2024, 2, 29, 3, 4, 5), None),  # naive: no instant
    ],
)
def test_utc_timestamps(value: object, stored: str | None) -> None:
    base = example("TICKET_STATUS_CHANGED")
    if stored is None:
        with pytest.raises(ValidationError) as info:
            TicketStatusChanged.model_validate({**base, "changedAt": value})
        assert [(e["loc"], e["type"]) for e in info.value.errors()] == [(("changedAt",), "utc_timestamp")]
    else:
        assert TicketStatusChanged.model_validate({**base, "changedAt": value}).changedAt == stored


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("user@example.com", True),
        ("A'b+c@mail.example.co", True),
        ("user@example.com\n", False),  # the rule is anchored at the very end
        (".user@example.com", False),
        ("us..er@example.com", False),
        ("user'@example.com", False),
        ("user@example", False),
    ],
)
def test_email_addresses(value: str, ok: bool) -> None:
    payload = {**example("APPOINTMENT_REQUEST_CREATED"), "requesterEmail": value}
    if ok:
        assert AppointmentRequestCreated.model_validate(payload).requesterEmail == value
    else:
        with pytest.raises(ValidationError) as info:
            AppointmentRequestCreated.model_validate(payload)
        assert info.value.errors()[0]["type"] == "email"
