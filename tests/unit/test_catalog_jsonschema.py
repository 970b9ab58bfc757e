"""The exported JSON Schemas: valid Draft 2020-12, accept and reject what the models accept and
reject, match the committed copy under catalog/schemas, and come out of ``cdc catalog export``."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError
from typer.testing import CliRunner

import catalog
from catalog.jsonschema_export import INDEX_FILE, dump, envelope_schema, export, payload_schema
from catalog.registry import REGISTRY, specs
from cdc.catalog_cli import app
from tests.unit.catalog_cases import EVENT_TYPES, Case, invalid_cases, null_cases, valid_cases

COMMITTED = Path(catalog.__file__).resolve().parent / "schemas"
REGENERATE = "cdc catalog export --format jsonschema --out catalog/schemas"


@cache
def validator(event_type: str) -> Draft202012Validator:
    schema = payload_schema(REGISTRY[event_type])
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def model_accepts(case: Case) -> bool:
    try:
        REGISTRY[case.event_type].model.model_validate(case.payload)
    except ValidationError:
        return False
    return True


VALID = list(valid_cases())
REJECTED = list(invalid_cases()) + list(null_cases())


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_is_valid_draft_2020_12(event_type: str) -> None:
    Draft202012Validator.check_schema(payload_schema(REGISTRY[event_type]))


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_schema_accepts_what_the_model_accepts(case: Case) -> None:
    assert model_accepts(case)
    assert validator(case.event_type).is_valid(case.payload)


@pytest.mark.parametrize("case", REJECTED, ids=[c.id for c in REJECTED])
def test_schema_rejects_what_the_model_rejects(case: Case) -> None:
    assert not model_accepts(case)
    assert not validator(case.event_type).is_valid(case.payload)


@pytest.mark.parametrize(
    ("event_type", "field", "value"),
    [
        ("TICKET_TIME_ENTRY_ADDED", "minutes", 0),
        ("TICKET_TIME_ENTRY_ADDED", "minutes", "5"),
        ("TICKET_TIME_ENTRY_ADDED", "minutes", True),
        ("TICKET_SLA_THRESHOLD_REACHED", "thresholdPercent", 101),
        ("TICKET_MESSAGE_ADDED", "channel", "fax"),
        ("TICKET_SPLIT", "newTicketIds", []),
        ("TICKET_STATUS_CHANGED", "previousStatusId", ""),
        ("CAPACITY_THRESHOLD_REACHED", "capacityLimit", -0.5),
        ("CAPACITY_THRESHOLD_REACHED", "capacityLimit", 3),
        ("APPOINTMENT_REQUEST_CREATED", "requesterEmail", "a@b"),
        ("APPOINTMENT_REQUEST_CREATED", "requesterEmail", "first.last@example.org"),
        ("APPOINTMENT_REQUEST_CREATED", "requesterName", None),
        ("TICKET_UPDATED", "changes", {"status_id": "closed"}),
        ("TICKET_UPDATED", "changes", {"status_id": {"old": 1, "new": 2}}),
        ("TICKET_APPROVAL_GRANTED", "conditions", None),
        ("TICKET_CREATED", "someLegacyExtra", {"x": [1, 2]}),
        ("TICKET_CREATED", "tenantId", "acme"),
        ("TICKET_DELETED", "tenantId", "acme"),
    ],
)
def test_model_and_schema_agree_on_edge_values(event_type: str, field: str, value: object) -> None:
    case = Case(event_type, field, {**payload_schema(REGISTRY[event_type])["examples"][0], field: value})
    assert model_accepts(case) == validator(event_type).is_valid(case.payload)


def test_committed_schemas_match_the_models(tmp_path: Path) -> None:
    export(tmp_path)
    generated = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.iterdir()}
    committed = {p.name: p.read_text(encoding="utf-8") for p in COMMITTED.iterdir()}
    assert sorted(committed) == sorted(generated), f"schema files changed; run: {REGENERATE}"
    stale = [name for name in generated if committed[name] != generated[name]]
    assert not stale, f"{stale} drifted from the models; run: {REGENERATE}"


def test_export_is_byte_stable(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    export(first)
    export(second)
    for path in first.iterdir():
        assert path.read_bytes() == (second / path.name).read_bytes()
    assert dump(envelope_schema()).endswith("}\n")


def test_cli_export_writes_one_schema_per_ref_and_an_index(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "--format", "jsonschema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / INDEX_FILE).read_text(encoding="utf-8"))
    refs = {entry["payloadSchemaRef"] for entry in index["schemas"]}
    assert refs == {s.payload_schema_ref for s in REGISTRY.values()}
    for entry in index["schemas"]:
        schema = json.loads((tmp_path / entry["file"]).read_text(encoding="utf-8"))
        assert schema["title"] == entry["payloadSchemaRef"]
    assert (tmp_path / index["envelope"]).is_file()


def test_cli_list() -> None:
    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["eventType"] for r in rows] == [s.event_type for s in specs()]
    assert {r["eventType"] for r in rows if not r["derived"]} >= {"TICKET_TAGS_CHANGED"}
    table = CliRunner().invoke(app, ["list"])
    assert table.exit_code == 0
    assert f"{len(rows)} event types" in table.stdout
    assert "payload.TicketSlaStageMet.v1" in table.stdout
