"""Example payloads and their invalid variants, shared by the catalog model and schema tests.

A valid example per event type comes from :func:`catalog.jsonschema_export.example`; the
invalid variants are derived from it field by field, using the exported schema only to find
which fields are required, uuids or UTC timestamps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from catalog.jsonschema_export import example, payload_schema
from catalog.registry import REGISTRY

EVENT_TYPES = sorted(REGISTRY)

BAD_UUIDS = ["not-a-uuid", "0b5f4c1e6f1a4d6e9a550c8e7f3b2a10", "0b5f4c1e-6f1a-4d6e-9a55-0c8e7f3b2a1", ""]
NON_UTC_TIMESTAMPS = [
    "2026-01-02T03:04:05+02:00",  # an offset
    "2026-01-02T03:04:05.678+00:00",  # UTC, but not written with Z
    "2026-01-02T03:04:05",  # naive
    "2026-01-02",  # a date
    "2026-01-02 03:04:05Z",  # no T
    "2026-13-02T03:04:05Z",  # no such month
]


@dataclass(frozen=True)
class Case:
    event_type: str
    label: str
    payload: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.event_type}-{self.label}"


def _props(event_type: str) -> dict[str, Any]:
    props: dict[str, Any] = payload_schema(REGISTRY[event_type])["properties"]
    return props


def required_fields(event_type: str) -> list[str]:
    return list(payload_schema(REGISTRY[event_type])["required"])


def uuid_fields(event_type: str) -> list[str]:
    return [
        name
        for name, prop in _props(event_type).items()
        if prop.get("format") == "uuid" or prop.get("items", {}).get("format") == "uuid"
    ]


def timestamp_fields(event_type: str) -> list[str]:
    return [name for name, prop in _props(event_type).items() if prop.get("format") == "date-time"]


def _with(payload: dict[str, Any], field: str, value: Any, *, is_array: bool = False) -> dict[str, Any]:
    return {**payload, field: [value] if is_array else value}


def valid_cases() -> Iterator[Case]:
    for t in EVENT_TYPES:
        yield Case(t, "full", example(t))
        yield Case(t, "minimal", example(t, minimal=True))


def invalid_cases() -> Iterator[Case]:
    """Each required field removed; each uuid field malformed; each timestamp not UTC ``Z``."""
    for t in EVENT_TYPES:
        full = example(t)
        props = _props(t)
        for field in required_fields(t):
            yield Case(t, f"without-{field}", {k: v for k, v in full.items() if k != field})
        for field in uuid_fields(t):
            is_array = props[field].get("type") == "array"
            for i, bad in enumerate(BAD_UUIDS):
                yield Case(t, f"{field}-bad-uuid-{i}", _with(full, field, bad, is_array=is_array))
        for field in timestamp_fields(t):
            for i, bad in enumerate(NON_UTC_TIMESTAMPS):
                yield Case(t, f"{field}-not-utc-{i}", _with(full, field, bad))


def optional_non_nullable_fields(event_type: str) -> list[str]:
    required = set(required_fields(event_type))
    return [
        name
        for name, prop in _props(event_type).items()
        if name not in required and "anyOf" not in prop and prop != {}
    ]


def null_cases() -> Iterator[Case]:
    """An explicit ``null`` where SPEC says optional but not nullable (zod ``.optional()``)."""
    for t in EVENT_TYPES:
        full = example(t)
        for field in optional_non_nullable_fields(t):
            yield Case(t, f"{field}-null", {**full, field: None})
