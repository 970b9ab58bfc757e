"""Deterministic example payloads, built from a payload's JSON Schema.

Every value is derived from the field's schema and a seed (uuids are UUIDv5 of the seed and the
field name), so the same event type always yields the same example. The exported schemas embed
one example each; tests use the examples as the valid case and derive invalid variants from them.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, uuid5

__all__ = ["EXAMPLE_TENANT", "EXAMPLE_TIME", "example_from_schema"]

EXAMPLE_TIME = "2026-01-02T03:04:05.678Z"
EXAMPLE_TENANT = "6f1c2b1e-5d0e-4c7a-9a61-2f4b8f0d9c11"
_EXAMPLE_NS = uuid5(NAMESPACE_URL, "urn:alga-cdc:examples")


def _uuid(seed: str, name: str) -> str:
    return str(uuid5(_EXAMPLE_NS, f"{seed}.{name}"))


def _value(schema: dict[str, Any], defs: dict[str, Any], seed: str, name: str) -> Any:
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return _object(target, defs, seed, minimal=False)
    if "anyOf" in schema:
        branch = next(b for b in schema["anyOf"] if b.get("type") != "null")
        return _value(branch, defs, seed, name)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "string":
        fmt = schema.get("format")
        if name == "tenantId":
            return EXAMPLE_TENANT
        if fmt == "uuid" or (name.endswith("Id") and schema.get("minLength")):
            return _uuid(seed, name)
        if fmt == "date-time":
            return EXAMPLE_TIME
        if fmt == "email":
            return "requester@example.com"
        return f"example {name}"
    if kind == "integer":
        if "exclusiveMinimum" in schema:
            return schema["exclusiveMinimum"] + 1
        return max(schema.get("minimum", 0), min(1, schema.get("maximum", 1)))
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [_value(schema.get("items", {}), defs, seed, f"{name}.0")]
    if kind == "object":
        if "properties" in schema:
            return _object(schema, defs, seed, minimal=False)
        inner = schema.get("additionalProperties")
        if isinstance(inner, dict) and inner.get("type") == "object":
            return {"status": {"previous": "open", "new": "closed"}}
        return {"field": "value"}
    return "example"


def _object(schema: dict[str, Any], defs: dict[str, Any], seed: str, *, minimal: bool) -> dict[str, Any]:
    required = set(schema.get("required", ()))
    return {
        name: _value(sub, defs, seed, name)
        for name, sub in schema.get("properties", {}).items()
        if not minimal or name in required
    }


def example_from_schema(schema: dict[str, Any], *, seed: str, minimal: bool = False) -> dict[str, Any]:
    """A valid instance of an object ``schema``: every property, or only the required ones."""
    return _object(schema, schema.get("$defs", {}), seed, minimal=minimal)
