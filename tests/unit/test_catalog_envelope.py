"""Envelope, idempotency keys, event ids and dead letters (the canonical forms: test_forms.py)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import catalog
from catalog.dead_letters import dead_letter
from catalog.envelope import (
    NAMESPACE,
    Envelope,
    EventDraft,
    EventValidationError,
    KeyFormatError,
    build_envelope,
    change_key,
    envelopes_json,
    event_id,
    timer_key,
)
from catalog.errors import FormError
from catalog.jsonschema_export import envelope_schema, example
from catalog.registry import REGISTRY
from tests.unit.catalog_cases import EVENT_TYPES, Case, valid_cases

TENANT = "6f1c2b1e-5d0e-4c7a-9a61-2f4b8f0d9c11"
TICKET = "0b5f4c1e-6f1a-4d6e-9a55-0c8e7f3b2a10"
COMMIT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
SOURCE: dict[str, Any] = {
    "slot": "cdc_events",
    "lsn": 0x16B3748,
    "xid": 771,
    "commit_time": COMMIT,
    "table": "public.tickets",
}


def status_changed(**overrides: Any) -> EventDraft:
    payload = {
        "tenantId": TENANT,
        "occurredAt": COMMIT,
        "ticketId": TICKET,
        "previousStatusId": "5b0f1e7a-0000-4000-8000-000000000001",
        "newStatusId": "5b0f1e7a-0000-4000-8000-000000000002",
        "actorUserId": "5b0f1e7a-0000-4000-8000-000000000003",
        "actorType": "USER",
        **overrides,
    }
    return EventDraft("TICKET_STATUS_CHANGED", TENANT, TICKET, payload)


# --- keys and ids ----------------------------------------------------------------------------


def test_namespace_is_documented_derivation() -> None:
    assert uuid.uuid5(uuid.NAMESPACE_URL, "urn:alga-cdc:event-id:v1") == NAMESPACE
    assert str(NAMESPACE) == "e02244fa-7d25-576d-9198-1badae528050"


@given(st.text())
def test_event_id_is_uuid5_of_the_key(key: str) -> None:
    assert event_id(key) == str(uuid.uuid5(NAMESPACE, key))


@pytest.mark.parametrize("length", [*range(0, 140), 1000, 4096])
def test_event_id_is_uuid5_around_the_sha1_block_sizes(length: int) -> None:
    key = ("TICKET_ASSIGNED:" + "é✓x" * length)[: 16 + length]
    assert event_id(key) == str(uuid.uuid5(NAMESPACE, key))


def test_change_key_forms() -> None:
    assert change_key("TICKET_STATUS_CHANGED", TENANT, TICKET, 0x16B3748) == (
        f"TICKET_STATUS_CHANGED:{TENANT}:{TICKET}@0/16B3748"
    )
    tech = "9e0c1d5a-1111-4222-8333-444455556666"
    assert change_key("TECHNICIAN_DISPATCHED", TENANT.upper(), uuid.UUID(TICKET), 1 << 32, tech) == (
        f"TECHNICIAN_DISPATCHED:{TENANT}:{TICKET}:{tech}@1/0"
    )


def test_timer_key_form() -> None:
    due = datetime(2026, 1, 3, 4, 4, 5, 1000, tzinfo=timezone(timedelta(hours=1)))
    assert timer_key("TICKET_SLA_STAGE_BREACHED", TENANT, TICKET, "resolution", due) == (
        f"TICKET_SLA_STAGE_BREACHED:{TENANT}:{TICKET}:resolution@2026-01-03T03:04:05.001Z"
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: change_key("TICKET_CREATED", "acme", TICKET, 1),
        lambda: change_key("TICKET_CREATED", TENANT, "42", 1),
        lambda: change_key("ticket_created", TENANT, TICKET, 1),
        lambda: change_key("TICKET_CREATED", TENANT, TICKET, 1, ""),
        lambda: change_key("TICKET_CREATED", TENANT, TICKET, 1, "a@b"),
        lambda: timer_key("TICKET_SLA_STAGE_BREACHED", TENANT, TICKET, "resolution", datetime(2026, 1, 2)),
        lambda: timer_key("TICKET_SLA_STAGE_BREACHED", TENANT, TICKET, "", COMMIT),
    ],
)
def test_key_parts_are_checked(call: Any) -> None:
    with pytest.raises(KeyFormatError):
        call()


# --- build_envelope --------------------------------------------------------------------------


def test_envelope_fields() -> None:
    env = build_envelope(status_changed(), **SOURCE)
    key = f"TICKET_STATUS_CHANGED:{TENANT}:{TICKET}@0/16B3748"
    assert env.idempotency_key == key
    assert env.id == str(uuid.uuid5(NAMESPACE, key))
    assert env.timestamp == env.payload["occurredAt"] == "2026-01-02T03:04:05.678Z"
    assert env.payload_schema_ref == "payload.TicketStatusChanged.v1"
    assert env.tenant_id == TENANT
    assert env.source.to_dict() == {
        "slot": "cdc_events",
        "lsn": "0/16B3748",
        "xid": 771,
        "commitTime": "2026-01-02T03:04:05.678Z",
        "table": "public.tickets",
    }
    assert env.bus_event() == {
        "id": env.id,
        "eventType": "TICKET_STATUS_CHANGED",
        "timestamp": env.timestamp,
        "payload": env.payload,
    }


def test_same_event_built_twice_is_identical() -> None:
    a = build_envelope(status_changed(), **SOURCE)
    b = build_envelope(status_changed(), **SOURCE)
    assert (a.id, a.idempotency_key, a.to_json_bytes()) == (b.id, b.idempotency_key, b.to_json_bytes())


def test_events_of_tables_interleaved_in_one_transaction_keep_their_sources() -> None:
    """A transaction's events come from several tables in turn (a booking's entry, then its
    assignees, then the next entry): each names its own table, each table's share one Source,
    and another transaction or a timer event gets its own."""
    tables = ["public.schedule_entries", "public.schedule_entry_assignees"] * 3 + ["public.tickets"]
    envs = [build_envelope(status_changed(), **{**SOURCE, "table": t}) for t in tables]
    assert [json.loads(e.to_json_bytes())["source"]["table"] for e in envs] == tables
    assert envs[0].source is envs[2].source is envs[4].source
    assert envs[1].source is envs[3].source is not envs[0].source
    later = build_envelope(status_changed(), **{**SOURCE, "lsn": SOURCE["lsn"] + 8})
    assert later.source.lsn == "0/16B3750" and later.source is not envs[6].source
    again = build_envelope(status_changed(), **SOURCE)
    assert (
        again.source == envs[6].source and json.loads(again.to_json_bytes())["source"]["lsn"] == "0/16B3748"
    )


def test_bytes_do_not_depend_on_input_representation() -> None:
    reference = build_envelope(status_changed(), **SOURCE).to_json_bytes()
    reordered = status_changed()
    reordered = EventDraft(
        reordered.event_type,
        reordered.tenant,
        reordered.subject_id,
        dict(reversed(list(reordered.payload.items()))),
    )
    variants = [
        reordered,
        status_changed(occurredAt="2026-01-02T03:04:05.678Z"),
        status_changed(occurredAt=COMMIT.astimezone(timezone(timedelta(hours=5)))),
        status_changed(ticketId=uuid.UUID(TICKET), tenantId=TENANT.upper()),
    ]
    for draft in variants:
        assert build_envelope(draft, **SOURCE).to_json_bytes() == reference


def test_json_bytes_are_sorted_compact_utf8() -> None:
    env = build_envelope(status_changed(reason="été"), **SOURCE)
    raw = env.to_json_bytes()
    assert raw == orjson.dumps(json.loads(raw), option=orjson.OPT_SORT_KEYS)
    assert "été".encode() in raw and not raw.endswith(b"\n")
    assert Envelope.from_dict(orjson.loads(raw)).to_json_bytes() == raw


def test_timer_envelope() -> None:
    due = datetime(2026, 1, 3, 3, 4, 5, tzinfo=UTC)
    draft = EventDraft(
        "TICKET_SLA_STAGE_BREACHED",
        TENANT,
        TICKET,
        {
            "tenantId": TENANT,
            "occurredAt": due,
            "ticketId": TICKET,
            "slaPolicyId": TENANT,
            "stage": "resolution",
            "targetAt": due,
        },
        timer_stage="resolution",
        due_at=due,
    )
    env = build_envelope(draft, **SOURCE, timer=True)
    assert env.idempotency_key == (
        f"TICKET_SLA_STAGE_BREACHED:{TENANT}:{TICKET}:resolution@2026-01-03T03:04:05.000Z"
    )
    assert env.timestamp == "2026-01-03T03:04:05.000Z"
    assert env.source.to_dict()["timer"] is True
    assert "timer" not in build_envelope(status_changed(), **SOURCE).source.to_dict()


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_example_builds_a_schema_valid_envelope(event_type: str) -> None:
    payload = example(event_type)
    draft = EventDraft(event_type, payload["tenantId"], TICKET, payload, discriminator="d1")
    env = build_envelope(draft, **SOURCE)
    Draft202012Validator(envelope_schema()).validate(orjson.loads(env.to_json_bytes()))
    assert env.payload_schema_ref == REGISTRY[event_type].payload_schema_ref
    assert env.idempotency_key.endswith(":d1@0/16B3748")


@pytest.mark.parametrize("case", list(valid_cases()), ids=lambda c: c.id)
def test_the_payload_is_what_the_model_validated(case: Case) -> None:
    """The envelope's payload is the model's: the fields given (``exclude_unset``) and extra keys."""
    draft = EventDraft(case.event_type, case.payload["tenantId"], TICKET, case.payload)
    env = build_envelope(draft, **SOURCE)
    model = REGISTRY[case.event_type].model.model_validate(case.payload)
    assert env.payload == orjson.loads(orjson.dumps(model.model_dump(exclude_unset=True)))


def test_envelopes_json_is_each_envelopes_bytes() -> None:
    envs = []
    for n, event_type in enumerate(EVENT_TYPES):
        payload = example(event_type)
        draft = EventDraft(event_type, payload["tenantId"], TICKET, payload, 'q"uote' if n % 5 == 0 else None)
        table = "public.t" if n % 2 else "public.u"
        envs.append(build_envelope(draft, **{**SOURCE, "lsn": 1000 + n // 4, "table": table}))
    envs.append(Envelope.from_dict(envs[0].to_dict()))  # one built by its constructor
    expected = [e.to_json_bytes() for e in envs]
    assert envelopes_json(envs) == expected
    assert [orjson.loads(raw) for raw in expected] == [e.to_dict() for e in envs]
    assert envelopes_json([]) == []


def test_extra_values_get_canonical_json() -> None:
    env = build_envelope(
        status_changed(
            userId=uuid.UUID(TENANT),
            changes={"due": {"previous": date(2026, 1, 2), "new": COMMIT}, "n": Decimal("1.50")},
            tags=("a", "b"),
        ),
        **SOURCE,
    )
    assert env.payload["userId"] == TENANT
    assert env.payload["changes"] == {
        "due": {"previous": "2026-01-02", "new": "2026-01-02T03:04:05.678Z"},
        "n": "1.50",
    }
    assert env.payload["tags"] == ["a", "b"]


def test_invalid_payload_names_every_path_but_no_value() -> None:
    secret = "5ecre7-5ecre7"
    draft = status_changed(ticketId=secret, occurredAt="2026-01-02T03:04:05+02:00", newStatusId="")
    with pytest.raises(EventValidationError) as info:
        build_envelope(draft, **SOURCE)
    err = info.value
    assert set(err.paths) == {"ticketId", "occurredAt", "newStatusId"}
    assert secret not in str(err)
    assert err.key == f"TICKET_STATUS_CHANGED:{TENANT}:{TICKET}@0/16B3748"


@pytest.mark.parametrize(
    ("draft", "path"),
    [
        (EventDraft("NO_SUCH_EVENT", TENANT, TICKET, {}), "eventType"),
        (status_changed(tenantId="0b5f4c1e-6f1a-4d6e-9a55-0c8e7f3b2a11"), "tenantId"),
        (status_changed(extra={1, 2}), "extra"),
        (status_changed(extra=float("inf")), "extra"),
        (EventDraft("TICKET_STATUS_CHANGED", "acme", TICKET, {}), "tenant"),
        (EventDraft("TICKET_STATUS_CHANGED", TENANT, TICKET, {}, discriminator=""), "discriminator"),
    ],
)
def test_draft_errors(draft: EventDraft, path: str) -> None:
    with pytest.raises(EventValidationError) as info:
        build_envelope(draft, **SOURCE)
    assert info.value.paths == (path,)


def test_timer_event_needs_stage_and_due() -> None:
    with pytest.raises(EventValidationError) as info:
        build_envelope(status_changed(), **SOURCE, timer=True)
    assert info.value.paths == ("timer_stage",)


@pytest.mark.parametrize("bad", [{"commit_time": datetime(2026, 1, 2)}, {"lsn": -1}, {"lsn": 1 << 64}])
def test_bad_source_is_a_caller_bug(bad: dict[str, Any]) -> None:
    with pytest.raises(FormError):  # a ValueError, not a dead letter
        build_envelope(status_changed(), **{**SOURCE, **bad})


# --- dead letters ----------------------------------------------------------------------------


def test_dead_letter_keeps_payload_as_given() -> None:
    draft = status_changed(ticketId="nope", odd={3, 4}, when=datetime(2026, 1, 2))
    with pytest.raises(EventValidationError) as info:
        build_envelope(draft, **SOURCE)
    letter = dead_letter(draft, info.value, **SOURCE)
    params = letter.params()
    assert params["idempotency_key"] == info.value.key
    assert params["lsn"] == "0/16B3748" and params["commit_time"] == "2026-01-02T03:04:05.678Z"
    assert json.loads(params["payload"])["ticketId"] == "nope"
    assert json.loads(params["errors"]) == [
        {"path": "ticketId", "type": "uuid_text", "message": info.value.errors[0].message}
    ]


def test_sql_files_are_packaged_with_the_catalog() -> None:
    root = Path(catalog.__file__).resolve().parent.parent / "sql"
    for name in ("catalog.sql", "dead_letters.sql"):
        assert "-- name:" in (root / name).read_text(encoding="utf-8")


def test_an_unhashable_event_type_is_a_validation_error_not_a_crash() -> None:
    draft = status_changed()._replace(event_type=["TICKET_STATUS_CHANGED"])  # type: ignore[arg-type]
    with pytest.raises(EventValidationError) as info:
        build_envelope(draft, **SOURCE)
    assert info.value.paths == ("event_type",)


def test_a_payload_model_instance_builds_the_same_envelope_as_its_mapping() -> None:
    from catalog.registry import REGISTRY

    draft = status_changed()
    model = REGISTRY["TICKET_STATUS_CHANGED"].model.model_validate(draft.payload)
    as_model = build_envelope(draft._replace(payload=model), **SOURCE)  # type: ignore[arg-type]
    assert as_model.to_json_bytes() == build_envelope(draft, **SOURCE).to_json_bytes()


def test_envelope_json_is_held_in_a_buffer_of_its_own_size() -> None:
    """A batch holds each event's JSON until it is delivered: orjson's output buffer (4 KiB and
    up for an 800-byte envelope) is not what it keeps."""
    import tracemalloc

    envelopes = [build_envelope(status_changed(), **SOURCE) for _ in range(200)]
    tracemalloc.start()
    try:
        bodies = envelopes_json(envelopes)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2 * sum(len(b) for b in bodies), (held, len(bodies[0]))
