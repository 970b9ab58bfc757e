"""The field types every payload model is built from, and the base payloads.

The annotated pydantic types here enforce the Alga payload formats of SPEC §4.0: ``UuidText``
(zod ``uuid()``), ``UtcTimestamp`` (zod ``datetime()``: UTC ``Z`` only, offsets and naive values
rejected), ``NonEmptyText`` (``min(1)``), strict numbers and booleans, the ``changes`` record,
and ``Opt[T]`` for zod's ``.optional()`` (the key may be absent, but an explicit ``null`` is
rejected). Validated values are stored in their canonical text form (:mod:`catalog.forms`), so
a validated model is already JSON-ready and byte-stable. ``DomainPayload`` carries the base
fields of every ``payload.*.v1`` schema; ``BusPayload`` is the variant for legacy bus types whose
``tenantId`` must be a uuid.

Each type is a pydantic-core schema — patterns, unions, strictness — so that validation runs in
pydantic-core; Python code runs only to convert what is not canonical yet (a ``datetime``, a
timestamp with another fraction), never for a value that already is (pydantic's performance
guide). The models are the only definition of a payload.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
)
from pydantic_core import core_schema

from catalog.forms import CANONICAL_UUID_PATTERN, TIMESTAMP_PATTERN, UUID_PATTERN, format_timestamp

__all__ = [
    "UTC_TIMESTAMP_PATTERN",
    "UUID_PATTERN",
    "ActorType",
    "AssigneeType",
    "BusPayload",
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
]

# zod 3.22 `datetime()` (the workflow worker pins it): seconds required, any fraction, `Z` only.
# Field ranges are spelled out so that the JSON Schema pattern rejects what the model rejects
# (but for the calendar: the model also refuses February 30th).
UTC_TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?Z$"
)

# zod's e-mail rule without the case-insensitive flag, which JSON Schema patterns lack.
EMAIL_PATTERN = (
    r"^(?!\.)(?!.*\.\.)[A-Za-z0-9_'+\-.]*[A-Za-z0-9_+\-]@([A-Za-z0-9][A-Za-z0-9\-]*\.)+[A-Za-z]{2,}$"
)


# --- core schemas ----------------------------------------------------------------------------


def _timestamp_from_text(value: str) -> str:
    # zod's form with another fraction than milliseconds (or none): the same instant, canonical.
    # fromisoformat also refuses what only the calendar rules out (February 30th).
    return format_timestamp(datetime.fromisoformat(value))


def _aware() -> core_schema.CoreSchema:
    """An aware ``datetime`` (any zone: psycopg hands timestamptz in the session's zone) as its
    canonical text; a naive one has no instant and fails."""
    return core_schema.no_info_after_validator_function(
        format_timestamp, core_schema.is_instance_schema(datetime)
    )


def _uuid_object() -> core_schema.CoreSchema:
    """A ``UUID`` as its (canonical) text."""
    return core_schema.no_info_after_validator_function(str, core_schema.is_instance_schema(UUID))


class _Core:
    """An annotation that is a ready pydantic-core schema (see the types below)."""

    def __init__(self, schema: core_schema.CoreSchema) -> None:
        self.schema = schema

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return self.schema


def _either(choices: list[core_schema.CoreSchema], error_type: str, message: str) -> core_schema.CoreSchema:
    """The first choice that accepts the input (so the canonical one, tried first, costs one
    pattern match); one error of ``error_type`` when none does."""
    return core_schema.union_schema(
        list(choices), mode="left_to_right", custom_error_type=error_type, custom_error_message=message
    )


_CANONICAL_UUID = core_schema.str_schema(pattern=CANONICAL_UUID_PATTERN)  # canonical already: no copy
_ANY_CASE_UUID = core_schema.str_schema(pattern=UUID_PATTERN, to_lower=True)

_UUID_TEXT = _either(
    [_CANONICAL_UUID, _ANY_CASE_UUID, _uuid_object()],
    "uuid_text",
    "Input should be a uuid like 0b5f4c1e-6f1a-4d6e-9a55-0c8e7f3b2a10",
)


def _text(min_length: int = 0, *, uuid_lower: bool = False) -> core_schema.CoreSchema:
    """A zod ``string()``: text, or a ``UUID`` (ids often are) as its text. With ``uuid_lower``,
    text in uuid form is lower-cased (tenant ids, which the keys repeat)."""
    choices = [core_schema.str_schema(min_length=min_length or None), _uuid_object()]
    if uuid_lower:
        choices[:0] = [_CANONICAL_UUID, _ANY_CASE_UUID]
    if min_length:
        return _either(choices, "non_empty_text", "Input should be a non-empty string")
    return _either(choices, "text", "Input should be a string")


_UTC_TIMESTAMP = _either(
    [
        core_schema.str_schema(pattern=TIMESTAMP_PATTERN, strict=True),  # canonical: kept as it is
        core_schema.no_info_after_validator_function(
            _timestamp_from_text, core_schema.str_schema(pattern=UTC_TIMESTAMP_PATTERN, strict=True)
        ),
        _aware(),
    ],
    "utc_timestamp",
    "Input should be an ISO-8601 UTC timestamp ending in Z, like 2026-01-02T03:04:05.678Z, "
    "or an aware datetime",
)

_TIMESTAMP_TEXT = _either(
    [core_schema.str_schema(strict=True), _aware()],
    "text",
    "Input should be a string or an aware datetime",
)

_EMAIL = core_schema.chain_schema(
    [
        core_schema.str_schema(),
        core_schema.custom_error_schema(
            # python-re: the rule needs look-ahead, which pydantic-core's own engine lacks; it
            # searches, so the end is \Z (``$`` would let a trailing newline through)
            core_schema.str_schema(pattern=EMAIL_PATTERN.removesuffix("$") + r"\Z", regex_engine="python-re"),
            custom_error_type="email",
            custom_error_message="Input should be an e-mail address",
        ),
    ]
)


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

_UUID_JSON = WithJsonSchema({"type": "string", "format": "uuid", "pattern": UUID_PATTERN})
_TEXT_JSON = WithJsonSchema({"type": "string"})
_NON_EMPTY_JSON = WithJsonSchema({"type": "string", "minLength": 1})

UuidText = Annotated[str, _Core(_UUID_TEXT), _UUID_JSON]
"""A uuid as text in any case, or a ``UUID``; stored lower-case."""
Text = Annotated[str, _Core(_text()), _TEXT_JSON]
NonEmptyText = Annotated[str, _Core(_text(min_length=1)), _NON_EMPTY_JSON]
TenantText = Annotated[str, _Core(_text(min_length=1, uuid_lower=True)), _NON_EMPTY_JSON]
"""SPEC ``tenantId`` of v1 payloads: a non-empty string; a uuid in it is written lower-case."""

UtcTimestamp = Annotated[
    str,
    _Core(_UTC_TIMESTAMP),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": UTC_TIMESTAMP_PATTERN}),
]
"""SPEC ``string(date-time)``: stored as the canonical millisecond ``Z`` text."""

TimestampText = Annotated[str, _Core(_TIMESTAMP_TEXT), _TEXT_JSON]
"""SPEC plain ``string`` holding a time (``TicketCreated.createdAt``): any text is valid, an aware
datetime is written in the canonical form."""

EmailText = Annotated[
    str,
    _Core(_EMAIL),
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
