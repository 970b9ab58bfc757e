"""Canonical text forms and the field types every payload model is built from.

This module owns the byte-level conventions of DESIGN §4 — an LSN as Postgres prints it
(``0/16B3748``), a timestamp as UTC ISO-8601 with milliseconds and ``Z``
(``2026-01-02T03:04:05.678Z``), a uuid in lower case with hyphens — and the annotated pydantic
types that enforce the Alga payload formats of SPEC §4.0: ``UuidText`` (zod ``uuid()``),
``UtcTimestamp`` (zod ``datetime()``: UTC ``Z`` only, offsets and naive values rejected),
``NonEmptyText`` (``min(1)``), strict numbers and booleans, the ``changes`` record, and ``Opt[T]``
for zod's ``.optional()`` (the key may be absent, but an explicit ``null`` is rejected). Validated
values are stored in their canonical text form, so a validated model is already JSON-ready and
byte-stable. ``DomainPayload`` carries the base fields of every ``payload.*.v1`` schema;
``BusPayload`` is the variant for legacy bus types whose ``tenantId`` must be a uuid.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "UTC_TIMESTAMP_PATTERN",
    "UUID_PATTERN",
    "ActorType",
    "AssigneeType",
    "BusPayload",
    "CatalogError",
    "Changes",
    "DomainPayload",
    "EmailText",
    "NonEmptyText",
    "NonNegativeInt",
    "NonNegativeNumber",
    "Opt",
    "PositiveInt",
    "Record",
    "StrictBool",
    "TenantText",
    "Text",
    "TimestampText",
    "UtcTimestamp",
    "UuidText",
    "canonical_lsn",
    "canonical_ts",
    "canonical_uuid",
    "parse_lsn",
]


class CatalogError(Exception):
    """Root of the errors raised by the catalog package."""


# --- canonical text forms ------------------------------------------------------------------

_LSN_RE = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def canonical_lsn(lsn: int) -> str:
    """``0/16B3748``: the two 32-bit halves in upper-case hex without leading zeros."""
    if not 0 <= lsn < 1 << 64:
        raise ValueError("an LSN is an unsigned 64-bit integer")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """The inverse of :func:`canonical_lsn`; accepts any case and leading zeros."""
    m = _LSN_RE.fullmatch(text)
    if m is None:
        raise ValueError("an LSN looks like 0/16B3748")
    return int(m.group(1), 16) << 32 | int(m.group(2), 16)


def canonical_ts(value: datetime) -> str:
    """``2026-01-02T03:04:05.678Z``: UTC, milliseconds truncated (as JavaScript's Date keeps them).

    A naive datetime is refused: its instant is unknown.
    """
    if value.tzinfo is not UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a naive datetime has no instant; give it a time zone")
        value = value.astimezone(UTC)
    return _utc_text(value)


@functools.lru_cache(maxsize=4096)
def _utc_text(value: datetime) -> str:
    # Cached: a transaction's events share its commit time, which is also their occurredAt.
    # Keys are UTC datetimes only, so equal keys are equal instants.
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UUID_RE = re.compile(UUID_PATTERN)
# The canonical (lower-case) form, tried first by the validators: it needs no lower-cased copy.
_LOWER_UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def canonical_uuid(value: str | UUID) -> str:
    """Lower-case hyphenated text of a uuid given as text (hyphenated, any case) or ``UUID``."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, str) and _UUID_RE.fullmatch(value):
        return value.lower()
    raise ValueError("not a uuid in 8-4-4-4-12 hex form")


# zod 3.22 `datetime()` (the workflow worker pins it): seconds required, any fraction, `Z` only.
# Field ranges are spelled out so that the JSON Schema pattern rejects what the model rejects.
UTC_TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?Z$"
)
_UTC_TS_RE = re.compile(UTC_TIMESTAMP_PATTERN)

# zod's e-mail rule without the case-insensitive flag, which JSON Schema patterns lack.
EMAIL_PATTERN = (
    r"^(?!\.)(?!.*\.\.)[A-Za-z0-9_'+\-.]*[A-Za-z0-9_+\-]@([A-Za-z0-9][A-Za-z0-9\-]*\.)+[A-Za-z]{2,}$"
)
_EMAIL_RE = re.compile(EMAIL_PATTERN)


# --- validators ------------------------------------------------------------------------------


# Canonical timestamp texts already validated: every event of a transaction carries its commit
# time as occurredAt, so the regex and calendar check run once per transaction, not per event.
_VALID_TS: dict[str, str] = {}


def _utc_timestamp(value: Any) -> str:
    if type(value) is str:
        known = _VALID_TS.get(value)
        if known is not None:
            return known
    if isinstance(value, str):
        if _UTC_TS_RE.fullmatch(value) is None:
            raise PydanticCustomError(
                "utc_timestamp",
                "Input should be an ISO-8601 UTC timestamp ending in Z, like 2026-01-02T03:04:05.678Z",
            )
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError("utc_timestamp", "Input is not a calendar date") from None
        # Already canonical when it has exactly three fraction digits.
        if len(value) != 24:
            return canonical_ts(parsed)
        if len(_VALID_TS) >= 4096:
            _VALID_TS.clear()
        _VALID_TS[value] = value
        return value
    if isinstance(value, datetime):
        return _aware_ts(value)
    raise PydanticCustomError("utc_timestamp", "Input should be a timestamp string or datetime")


def _aware_ts(value: datetime) -> str:
    # An aware datetime is one instant whatever its zone (psycopg hands timestamptz values in
    # the session TimeZone), so it is converted; a naive one has no instant and is refused.
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError("naive_datetime", "Input should carry a time zone")
    return canonical_ts(value)


def _timestamp_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return _aware_ts(value)
    raise PydanticCustomError("text", "Input should be a string or an aware datetime")


def _email(value: str) -> str:
    if _EMAIL_RE.fullmatch(value) is None:
        raise PydanticCustomError("email", "Input should be an e-mail address")
    return value


class _UuidText:
    """Core schema for a uuid: text matching the zod pattern, or a ``UUID``; stored lower-case."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.union_schema(
            [
                core_schema.str_schema(pattern=_LOWER_UUID_PATTERN),  # canonical already: no copy
                core_schema.str_schema(pattern=UUID_PATTERN, to_lower=True),
                core_schema.no_info_after_validator_function(str, core_schema.is_instance_schema(UUID)),
            ],
            mode="left_to_right",
            custom_error_type="uuid_text",
            custom_error_message="Input should be a uuid like 0b5f4c1e-6f1a-4d6e-9a55-0c8e7f3b2a10",
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}


class _Text:
    """Core schema for a zod ``string()``: text, or a ``UUID`` (ids often are) as its text.
    With ``uuid_lower``, text in uuid form is lower-cased (tenant ids, which the keys repeat)."""

    def __init__(self, min_length: int = 0, *, uuid_lower: bool = False) -> None:
        self.min_length = min_length
        self.uuid_lower = uuid_lower

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        choices: list[core_schema.CoreSchema | tuple[core_schema.CoreSchema, str]] = [
            core_schema.str_schema(min_length=self.min_length or None),
            core_schema.no_info_after_validator_function(str, core_schema.is_instance_schema(UUID)),
        ]
        if self.uuid_lower:
            choices[:0] = [
                core_schema.str_schema(pattern=_LOWER_UUID_PATTERN),
                core_schema.str_schema(pattern=UUID_PATTERN, to_lower=True),
            ]
        return core_schema.union_schema(
            choices,
            mode="left_to_right",
            custom_error_type="text" if not self.min_length else "non_empty_text",
            custom_error_message="Input should be a string"
            if not self.min_length
            else "Input should be a non-empty string",
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        if self.min_length:
            return {"type": "string", "minLength": self.min_length}
        return {"type": "string"}


class _NotNull:
    """Turns ``T | None`` back into ``T`` for validation: the default ``None`` stands for "absent"
    (defaults are not validated), while an explicit ``null`` fails like zod's ``.optional()``."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        schema = handler(source)
        if schema["type"] == "nullable":
            inner: core_schema.CoreSchema = schema["schema"]
            return inner
        return schema


# --- annotated field types -----------------------------------------------------------------

T = TypeVar("T")

Opt = Annotated[T | None, _NotNull()]
"""An optional key whose value may not be ``null``; declare as ``x: Opt[UuidText] = None``."""

UuidText = Annotated[str, _UuidText()]
Text = Annotated[str, _Text()]
NonEmptyText = Annotated[str, _Text(min_length=1)]
TenantText = Annotated[str, _Text(min_length=1, uuid_lower=True)]
"""SPEC ``tenantId`` of v1 payloads: a non-empty string; a uuid in it is written lower-case."""

UtcTimestamp = Annotated[
    str,
    PlainValidator(_utc_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": UTC_TIMESTAMP_PATTERN}),
]
"""SPEC ``string(date-time)``: stored as the canonical millisecond ``Z`` text."""

TimestampText = Annotated[str, PlainValidator(_timestamp_text), WithJsonSchema({"type": "string"})]
"""SPEC plain ``string`` holding a time (``TicketCreated.createdAt``): any text is valid, an aware
datetime is written in the canonical form."""

EmailText = Annotated[
    str,
    AfterValidator(_email),
    WithJsonSchema({"type": "string", "format": "email", "pattern": EMAIL_PATTERN}),
]

PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
NonNegativeNumber = Annotated[StrictFloat, Field(ge=0)]

Record = dict[str, Any]
"""SPEC ``record<string,any>``."""

Changes = Annotated[
    dict[str, dict[str, Any]],
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"previous": {}, "new": {}},
            },
        }
    ),
]
"""SPEC ``record<string,object{previous?:any, new?:any}>``: dot-path -> ``{previous, new}``."""

AssigneeType = Literal["user", "team"]
ActorType = Literal["USER", "CONTACT", "SYSTEM"]


# --- base payloads ---------------------------------------------------------------------------


class DomainPayload(BaseModel):
    """Base fields of every ``payload.*.v1`` schema (SPEC §4.0 ``BaseDomainEventPayloadSchema``).

    Field names are the camelCase wire names on purpose: the models mirror the SPEC tables
    one to one and need no alias layer. Unknown keys are kept, as the application's non-strict
    schemas keep them.
    """

    # defer_build: a model's validator is built when first used (the watcher uses a handful of the
    # 94 types; building them all would add a third of a second to every start).
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True, defer_build=True)

    tenantId: TenantText
    occurredAt: UtcTimestamp
    actorUserId: Opt[UuidText] = None
    actorContactId: Opt[UuidText] = None
    actorType: Opt[ActorType] = None


class BusPayload(DomainPayload):
    """Base of legacy bus types that have no ``payload.*.v1`` schema: the bus schema governs,
    whose ``BasePayloadSchema`` requires ``tenantId`` to be a uuid. ``occurredAt`` stays
    required because the envelope's ``timestamp`` is taken from it."""

    tenantId: UuidText
