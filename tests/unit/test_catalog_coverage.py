"""The catalog against the project's own copy of the SPEC facts (catalog/facts/): every
``payload.*.v1`` ref of SPEC §4.1 and every event type of the four families of SPEC §2.2 is
registered, with the SPEC's fields, required-ness, formats and bounds, and the derivable flag
follows the events.md Derivability column. The expected lists come from the facts files, never
from the registry."""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import catalog
from catalog.base import UTC_TIMESTAMP_PATTERN, UUID_PATTERN, BusPayload
from catalog.jsonschema_export import payload_schema
from catalog.registry import REGISTRY, RegistryError, by_ref, index_specs

FACTS = Path(catalog.__file__).resolve().parent / "facts"
BASE_FIELDS = {"tenantId", "occurredAt", "actorUserId", "actorContactId", "actorType"}


def _rows(name: str) -> list[list[str]]:
    lines = (FACTS / name).read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line and not line.startswith("#")]


# ref -> (registry, {field: (required, type)})
SPEC_V1: dict[str, tuple[str, dict[str, tuple[bool, str]]]] = {}
for _ref, _registry, _field, _required, _type in _rows("spec_v1_fields.tsv"):
    SPEC_V1.setdefault(_ref, (_registry, {}))[1][_field] = (_required == "yes", _type)

# event type -> (family, app catalog category or "bus", derivability)
FAMILY_TYPES = {row[0]: (row[1], row[2], row[3]) for row in _rows("event_types.tsv")}


def test_facts_are_the_project_copy() -> None:
    assert len(SPEC_V1) == 77
    assert len(FAMILY_TYPES) == 94


@pytest.mark.parametrize("ref", sorted(SPEC_V1))
def test_every_spec_v1_ref_is_registered(ref: str) -> None:
    spec = by_ref(ref)
    registry, _ = SPEC_V1[ref]
    assert spec.schema_source == ("runtime" if registry == "runtime" else "event-schemas")


def test_no_invented_v1_refs() -> None:
    # Refs not in SPEC §4.1 are ours and must be marked as governed by the bus schema.
    ours = {s.payload_schema_ref for s in REGISTRY.values() if s.schema_source != "bus"}
    assert ours == set(SPEC_V1)


def test_registry_covers_the_four_families() -> None:
    assert set(REGISTRY) == set(FAMILY_TYPES)


@pytest.mark.parametrize("event_type", sorted(FAMILY_TYPES))
def test_catalog_flags_follow_the_facts(event_type: str) -> None:
    family, app_catalog, derivability = FAMILY_TYPES[event_type]
    spec = REGISTRY[event_type]
    assert spec.family == family
    assert spec.derivable == (derivability != "NONE")
    assert spec.in_app_catalog == (app_catalog != "bus")
    if app_catalog != "bus":
        assert spec.category == app_catalog


@pytest.mark.parametrize(
    ("event_type", "name"),
    [
        ("PROJECT_TASK_DEPENDENCY_BLOCKED", "Project Task Blocked"),
        ("TICKET_QUEUE_CHANGED", "Ticket Queue/Board Changed"),
        ("APPOINTMENT_NO_SHOW", "Appointment No-Show"),
        ("TICKET_SLA_STAGE_MET", "Ticket SLA Stage Met"),
        ("PROJECT_BILLING_CONFIG_DELETED", "Project Billing Configuration Deleted"),
        ("TICKET_CREATED", "Ticket Created"),
    ],
)
def test_names_follow_spec_6_3(event_type: str, name: str) -> None:
    assert REGISTRY[event_type].name == name


def _expected(type_text: str) -> dict[str, Any]:
    """The JSON Schema fragment a SPEC §4.1 type description stands for."""
    uuid = {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}
    if type_text == "string(uuid)":
        return uuid
    if type_text == "string(date-time)":
        return {"type": "string", "format": "date-time", "pattern": UTC_TIMESTAMP_PATTERN}
    if type_text == "string(email)":
        return {"type": "string", "format": "email"}
    if type_text == "string":
        return {"type": "string"}
    if type_text == "string min1":
        return {"type": "string", "minLength": 1}
    if type_text == "string|null":
        return {"anyOf": [{"type": "string"}, {"type": "null"}]}
    if type_text in ("boolean", "boolean default=false"):
        return {"type": "boolean"}
    if m := re.fullmatch(r"(integer|number) (>0|>=0)", type_text):
        bound = {">0": "exclusiveMinimum", ">=0": "minimum"}[m.group(2)]
        return {"type": m.group(1), bound: 0}
    if type_text == "array<string>":
        return {"type": "array", "items": {"type": "string"}}
    if type_text == "array<string(uuid)>":
        return {"type": "array", "items": uuid}
    if type_text == "array<string(uuid)> minItems1":
        return {"type": "array", "items": uuid, "minItems": 1}
    if type_text == "record<string,any>":
        return {"type": "object", "additionalProperties": True}
    if type_text == "record<string,object{previous?:any, new?:any}>":
        return {"type": "object", "additionalProperties": {"type": "object"}}
    if type_text == "any":
        return {}
    if m := re.fullmatch(r"enum\[(.*)\]( \| null)?", type_text):
        enum = {"type": "string", "enum": m.group(1).split(", ")}
        return {"anyOf": [enum, {"type": "null"}]} if m.group(2) else enum
    raise AssertionError(f"no rule for SPEC type {type_text!r}")


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _contains(actual[k], v) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_contains(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return bool(actual == expected)


@pytest.mark.parametrize("ref", sorted(SPEC_V1))
def test_payload_matches_the_spec_table(ref: str) -> None:
    _, fields = SPEC_V1[ref]
    schema = payload_schema(by_ref(ref))
    props = schema["properties"]
    assert set(props) == set(fields) | BASE_FIELDS
    assert set(schema["required"]) == {f for f, (req, _) in fields.items() if req} | {
        "tenantId",
        "occurredAt",
    }
    mismatched = {f: t for f, (_, t) in fields.items() if not _contains(props[f], _expected(t))}
    assert not mismatched, mismatched


def test_base_fields_follow_spec_4_0() -> None:
    for spec in REGISTRY.values():
        props = payload_schema(spec)["properties"]
        # Legacy bus shapes extend BasePayloadSchema (tenantId uuid); v1 and the bus's domain
        # shapes (auto-close warning, SLA threshold) extend BaseDomainEventPayloadSchema.
        legacy = issubclass(spec.model, BusPayload)
        assert not legacy or spec.schema_source == "bus"
        tenant = {"type": "string", "format": "uuid"} if legacy else {"type": "string", "minLength": 1}
        assert _contains(props["tenantId"], tenant), spec.event_type
        assert _contains(props["occurredAt"], _expected("string(date-time)"))
        assert _contains(props["actorType"], {"enum": ["USER", "CONTACT", "SYSTEM"]})
        assert _contains(props["actorUserId"], _expected("string(uuid)"))


def test_duplicates_fail_at_import() -> None:
    ticket_created = REGISTRY["TICKET_CREATED"]
    with pytest.raises(RegistryError, match="registered twice"):
        index_specs((ticket_created, ticket_created))
    other = REGISTRY["TICKET_UPDATED"]
    same_ref = dataclasses.replace(other, payload_schema_ref=ticket_created.payload_schema_ref)
    with pytest.raises(RegistryError, match="registered twice"):
        index_specs((ticket_created, same_ref))
    wrong_model = dataclasses.replace(other, model=REGISTRY["TICKET_CLOSED"].model)
    with pytest.raises(RegistryError, match="does not match"):
        index_specs((wrong_model,))
    with pytest.raises(RegistryError, match="serves both"):
        index_specs((ticket_created, dataclasses.replace(other, model=ticket_created.model)))


def test_refs_follow_the_application_naming_rule() -> None:
    refs_by_family: dict[str, int] = defaultdict(int)
    for event_type, spec in REGISTRY.items():
        pascal = "".join(p.capitalize() for p in event_type.lower().split("_"))
        assert spec.payload_schema_ref == f"payload.{pascal}.v1"
        refs_by_family[spec.family] += 1
    assert set(refs_by_family) == {"tickets", "scheduling", "projects", "time"}
