"""The dict validator the envelope uses is the model's own validation, case for case.

``payload_validator(model)`` turns the model's core schema into a typed-dict schema so that
the envelope gets a plain dict without building a model. For every catalogued type, on the
valid examples (full and minimal), on every invalid variant and on every explicit null, it
must accept exactly what the model accepts, return what ``model_dump(exclude_unset=True)``
returns, and fail on the same field paths with the same error types.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from catalog.envelope import payload_validator
from catalog.registry import REGISTRY
from tests.unit.catalog_cases import Case, invalid_cases, null_cases, valid_cases


def _model_side(model: type[BaseModel], payload: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", model.model_validate(payload).model_dump(exclude_unset=True)
    except ValidationError as exc:
        return "error", sorted((e["loc"], e["type"]) for e in exc.errors())


def _dict_side(model: type[BaseModel], payload: dict[str, Any]) -> tuple[str, Any]:
    try:
        out = payload_validator(model).validate_python(payload)
    except ValidationError as exc:
        return "error", sorted((e["loc"], e["type"]) for e in exc.errors())
    # nested models (legacy comment objects) are dumped the way model_dump dumps them
    return "ok", {
        k: v.model_dump(exclude_unset=True) if isinstance(v, BaseModel) else v for k, v in out.items()
    }


CASES = [*valid_cases(), *invalid_cases(), *null_cases()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_dict_validation_equals_model_validation(case: Case) -> None:
    model = REGISTRY[case.event_type].model
    assert _dict_side(model, case.payload) == _model_side(model, case.payload)


@pytest.mark.parametrize("event_type", sorted(REGISTRY))
def test_canonicalising_inputs_agree(event_type: str) -> None:
    """Upper-case uuids, UUID objects, aware datetimes and extra keys come out alike."""
    from catalog.jsonschema_export import example

    payload = example(event_type)
    tenant = payload["tenantId"]
    variants = [
        {**payload, "tenantId": tenant.upper()},
        {**payload, "tenantId": uuid.UUID(tenant)},
        {**payload, "occurredAt": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)},
        {**payload, "legacy_extra": {"a": [1, 2]}},
    ]
    model = REGISTRY[event_type].model
    for variant in variants:
        assert _dict_side(model, variant) == _model_side(model, variant)


def test_every_catalogued_model_has_a_dict_validator() -> None:
    assert all(payload_validator(spec.model) is payload_validator(spec.model) for spec in REGISTRY.values())
