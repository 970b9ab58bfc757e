"""The event envelope (DESIGN §4): drafts in, validated and keyed envelopes out.

A deriver hands an :class:`EventDraft`; :func:`build_envelope` validates its payload against the
registered model, builds the idempotency key, derives the event id and returns an
:class:`Envelope`, or raises :class:`EventValidationError` naming every failing field path
(the draft then belongs in the dead-letter table, see :mod:`catalog.dead_letters`).

Keys (DESIGN §4), with every part in canonical text form (:mod:`catalog.base`):

* change-driven: ``<EVENT_TYPE>:<tenant>:<subject id>[:<discriminator>]@<end LSN>``
* timer-driven:  ``<EVENT_TYPE>:<tenant>:<subject id>:<stage>@<due time>``

The envelope ``id`` is the UUIDv5 of the key under :data:`NAMESPACE`, so a replay of the same
history yields the same ids, and ``timestamp`` is ``payload.occurredAt``. :meth:`Envelope.to_json_bytes`
is byte-stable: orjson, keys sorted at every level, compact separators, UTF-8, no trailing
newline; all values are already canonical text when the envelope is built.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from hashlib import sha1
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import SchemaValidator, core_schema

from catalog.base import (
    _LOWER_UUID_PATTERN,
    _VALID_TS,
    UUID_PATTERN,
    CatalogError,
    _timestamp_text,
    _utc_timestamp,
    canonical_lsn,
    canonical_ts,
    canonical_uuid,
)
from catalog.registry import REGISTRY

#: The interface of catalog/_speedups.c this module calls (its API_VERSION).
API_VERSION = 2

try:  # the compiled fast paths (catalog/_speedups.c), when they were built
    if os.environ.get("CDC_NO_SPEEDUPS"):  # pydantic and hashlib only (tests, diagnosis)
        raise ImportError("CDC_NO_SPEEDUPS is set")
    from . import _speedups

    if getattr(_speedups, "API_VERSION", 1) != API_VERSION:
        # Built from an older catalog/_speedups.c (a pull without a rebuild): correct but slower
        # without it, wrong with it.
        logging.getLogger(__name__).warning(
            "catalog/_speedups was built from another version of its source: not used "
            "(slower); run `make venv` to rebuild"
        )
        raise ImportError("stale catalog._speedups")
except ImportError:
    _speedups = None  # type: ignore[assignment]

SPEEDUPS = _speedups is not None
"""Whether payloads in canonical form skip pydantic and ids skip hashlib (same results)."""

__all__ = [
    "NAMESPACE",
    "Envelope",
    "EventDraft",
    "EventValidationError",
    "FieldError",
    "KeyFormatError",
    "Source",
    "build_envelope",
    "change_key",
    "draft_key",
    "envelopes_json",
    "event_id",
    "timer_key",
]

NAMESPACE = UUID("e02244fa-7d25-576d-9198-1badae528050")
"""The fixed namespace of event ids: ``id = uuid5(NAMESPACE, idempotency key)``.

It is ``uuid5(NAMESPACE_URL, "urn:alga-cdc:event-id:v1")``; a unit test pins both. Changing it
changes every event id, which Alga's runtime would take for new events: never change it.
"""
_NAMESPACE_BYTES = NAMESPACE.bytes
if _speedups is not None:
    _speedups.set_namespace(_NAMESPACE_BYTES)
_SPEC_OF = REGISTRY.get
_UUID_MATCH = re.compile(UUID_PATTERN).fullmatch


class KeyFormatError(CatalogError, ValueError):
    """A key part that cannot be written canonically (not a uuid, empty, contains ``@``);
    ``part`` names it as the draft does (``tenant``, ``subject_id``, ``discriminator``, ...)."""

    def __init__(self, part: str, message: str) -> None:
        self.part = part
        super().__init__(f"{part} {message}")


@dataclass(frozen=True, slots=True)
class FieldError:
    """One failing field: ``path`` is dotted (``changes.status``, ``newTicketIds.0``)."""

    path: str
    type: str
    message: str


class EventValidationError(CatalogError, ValueError):
    """A draft that cannot become an envelope. The message names each failing field path and
    never a field's value; ``key`` is the idempotency key the event would have had (or its best
    rendering when the key parts are themselves invalid), the dead-letter table's key."""

    def __init__(self, event_type: str, key: str, errors: Sequence[FieldError]) -> None:
        self.event_type = event_type
        self.key = key
        self.errors = tuple(errors)
        detail = "; ".join(f"{e.path or '(payload)'}: {e.message}" for e in self.errors)
        super().__init__(f"{event_type} draft is invalid: {detail}")

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(e.path for e in self.errors)


class EventDraft(NamedTuple):
    """What a deriver emits: the event type, whom it is about and the camelCase payload
    (including ``tenantId`` and ``occurredAt``, a datetime or a UTC ``Z`` string).

    Immutable; a NamedTuple rather than a frozen dataclass because derivers build one per
    event and a frozen dataclass takes several times as long to construct."""

    event_type: str
    tenant: str  # uuid text
    subject_id: str  # uuid text of the subject (ticket id, ...)
    payload: Mapping[str, Any]
    discriminator: str | None = None
    timer_stage: str | None = None  # set for timer-driven events
    due_at: datetime | None = None  # set for timer-driven events (the key uses it)


@dataclass(frozen=True, slots=True)
class Source:
    """Where an event came from, in canonical text. For a timer event it names the change that
    armed the timer, and ``timer`` is true."""

    slot: str
    lsn: str
    xid: int
    commit_time: str
    table: str
    timer: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "slot": self.slot,
            "lsn": self.lsn,
            "xid": self.xid,
            "commitTime": self.commit_time,
            "table": self.table,
        }
        if self.timer:
            out["timer"] = True
        return out


@dataclass(slots=True)
class Envelope:
    """A validated event. ``payload`` is JSON-ready (canonical text values); treat it and the
    envelope as read-only (not frozen: a frozen dataclass costs a microsecond per event to build)."""

    id: str
    event_type: str
    timestamp: str
    payload: dict[str, Any]
    idempotency_key: str
    payload_schema_ref: str
    source: Source

    @property
    def tenant_id(self) -> str:
        tenant: str = self.payload["tenantId"]
        return tenant

    def bus_event(self) -> dict[str, Any]:
        """The Alga bus event ``{id, eventType, timestamp, payload}`` (SPEC §2.3)."""
        return {
            "id": self.id,
            "eventType": self.event_type,
            "timestamp": self.timestamp,
            "payload": self.payload,
        }

    def to_dict(self) -> dict[str, Any]:
        return self._with_source(self.source.to_dict())

    def to_json_bytes(self) -> bytes:
        """Byte-stable JSON: the same event always serialises to the same bytes."""
        if _envelope_json is not None:
            out: bytes | None = _envelope_json(
                self.id,
                self.event_type,
                self.timestamp,
                self.payload,
                self.idempotency_key,
                self.payload_schema_ref,
                _source_serialised(self.source)[2],
            )
            if out is not None:
                return out
        return orjson.dumps(self._with_source(_source_json(self.source)), option=orjson.OPT_SORT_KEYS)

    def _with_source(self, source: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "eventType": self.event_type,
            "timestamp": self.timestamp,
            "payload": self.payload,
            "idempotencyKey": self.idempotency_key,
            "payloadSchemaRef": self.payload_schema_ref,
            "source": source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Envelope:
        """The inverse of :meth:`to_dict`, for readers of delivered envelopes."""
        src = data["source"]
        return cls(
            id=data["id"],
            event_type=data["eventType"],
            timestamp=data["timestamp"],
            payload=dict(data["payload"]),
            idempotency_key=data["idempotencyKey"],
            payload_schema_ref=data["payloadSchemaRef"],
            source=Source(
                slot=src["slot"],
                lsn=src["lsn"],
                xid=src["xid"],
                commit_time=src["commitTime"],
                table=src["table"],
                timer=bool(src.get("timer", False)),
            ),
        )


_last_source_json: tuple[Source, orjson.Fragment, bytes] | None = None


def _source_json(source: Source) -> orjson.Fragment:
    return _source_serialised(source)[1]


def _source_serialised(source: Source) -> tuple[Source, orjson.Fragment, bytes]:
    # The events of a transaction share one Source: serialise it (keys sorted) once.
    global _last_source_json
    last = _last_source_json
    if last is not None and last[0] is source:
        return last
    raw = orjson.dumps(source.to_dict(), option=orjson.OPT_SORT_KEYS)
    last = _last_source_json = (source, orjson.Fragment(raw), raw)
    return last


# --- keys and ids ----------------------------------------------------------------------------

_EVENT_TYPE_RE = re.compile(r"[A-Z][A-Z0-9_]*")


def _type_part(event_type: str) -> str:
    if not isinstance(event_type, str) or _EVENT_TYPE_RE.fullmatch(event_type) is None:
        raise KeyFormatError("event_type", "must be SCREAMING_SNAKE_CASE")
    return event_type


def _uuid_part(value: str | UUID, name: str) -> str:
    try:
        return canonical_uuid(value)
    except ValueError:
        raise KeyFormatError(name, "must be a uuid") from None


# Tenants are few and repeat in every key: their canonical form is looked up, not re-checked.
_TENANTS: dict[str, str] = {}


def _tenant_part(value: str | UUID) -> str:
    known = _TENANTS.get(value) if type(value) is str else None
    if known is not None:
        return known
    canonical = _uuid_part(value, "tenant")
    if type(value) is str:
        if len(_TENANTS) >= 1024:
            _TENANTS.clear()
        _TENANTS[value] = canonical
    return canonical


def _text_part(value: str, name: str) -> str:
    if not isinstance(value, str) or not value or "@" in value:
        raise KeyFormatError(name, "must be non-empty text without '@'")
    return value


def change_key(
    event_type: str,
    tenant: str | UUID,
    subject_id: str | UUID,
    end_lsn: int,
    discriminator: str | None = None,
) -> str:
    """``<EVENT_TYPE>:<tenant>:<subject id>[:<discriminator>]@<end LSN>``.

    ``end_lsn`` is the transaction's ``Commit.end_lsn``. The discriminator is needed wherever
    one transaction yields two events of one type for one subject (one TECHNICIAN_DISPATCHED
    per technician).
    """
    return _change_key(_type_part(event_type), tenant, subject_id, canonical_lsn(end_lsn), discriminator)


def _change_key(
    event_type: str, tenant: str | UUID, subject_id: str | UUID, lsn: str, discriminator: str | None
) -> str:
    head = f"{event_type}:{_tenant_part(tenant)}:{_uuid_part(subject_id, 'subject_id')}"
    if discriminator is not None:
        head = f"{head}:{_text_part(discriminator, 'discriminator')}"
    return f"{head}@{lsn}"


def timer_key(event_type: str, tenant: str | UUID, subject_id: str | UUID, stage: str, due: datetime) -> str:
    """``<EVENT_TYPE>:<tenant>:<subject id>:<stage>@<due time>``; ``due`` must be aware."""
    return _timer_key(_type_part(event_type), tenant, subject_id, stage, due)


def _timer_key(event_type: str, tenant: str | UUID, subject_id: str | UUID, stage: str, due: datetime) -> str:
    try:
        due_text = canonical_ts(due)
    except (ValueError, AttributeError):
        raise KeyFormatError("due_at", "must be an aware datetime") from None
    return (
        f"{event_type}:{_tenant_part(tenant)}:"
        f"{_uuid_part(subject_id, 'subject_id')}:{_text_part(stage, 'timer_stage')}@{due_text}"
    )


# The RFC 4122 variant bits set on the 17th hex digit: 10xx.
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def _py_event_id(key: str) -> str:
    h = sha1(_NAMESPACE_BYTES + key.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def event_id(key: str) -> str:
    """``str(uuid5(NAMESPACE, key))`` without building the intermediate UUID object: the
    SHA-1 hex digest with the version digit set to 5 and the variant bits to 10."""
    return _event_id(key)


_event_id = _speedups.event_id if _speedups is not None else _py_event_id


def draft_key(draft: EventDraft, lsn: int, *, timer: bool = False) -> str:
    """The draft's idempotency key; :class:`EventValidationError` if its parts are invalid."""
    return _draft_key(draft, canonical_lsn(lsn), timer)


def _draft_key(draft: EventDraft, lsn: str, timer: bool) -> str:
    try:
        # A catalogued type is well-formed already (the registry checks its names).
        event_type = (
            draft.event_type
            if type(draft.event_type) is str and draft.event_type in REGISTRY
            else _type_part(draft.event_type)
        )
        if timer:
            if draft.timer_stage is None or draft.due_at is None:
                raise KeyFormatError("timer_stage", "and due_at are needed for a timer event")
            return _timer_key(event_type, draft.tenant, draft.subject_id, draft.timer_stage, draft.due_at)
        return _change_key(event_type, draft.tenant, draft.subject_id, lsn, draft.discriminator)
    except KeyFormatError as exc:
        raise EventValidationError(
            str(draft.event_type), _raw_key(draft, lsn, timer), [FieldError(exc.part, "key", str(exc))]
        ) from exc


def _raw_key(draft: EventDraft, lsn: str, timer: bool) -> str:
    # Best effort for drafts whose key parts are invalid: the dead letter still needs a key.
    parts = [str(draft.event_type), str(draft.tenant), str(draft.subject_id)]
    if timer:
        due = draft.due_at.isoformat() if isinstance(draft.due_at, datetime) else str(draft.due_at)
        return ":".join([*parts, str(draft.timer_stage)]) + f"@{due}"
    if draft.discriminator is not None:
        parts.append(str(draft.discriminator))
    return ":".join(parts) + f"@{lsn}"


# --- payload to JSON-ready values ------------------------------------------------------------

_PLAIN = frozenset({str, int, bool, type(None)})


class _NotJson(Exception):
    pass


def _json_value(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise _NotJson("a non-finite number")
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _NotJson("a non-text object key")
            out[str.__str__(k)] = _json_value(v)
        return out
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, BaseModel):
        return _json_value(_fields(value))
    if isinstance(value, Enum):
        return _json_value(value.value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise _NotJson("a naive datetime")
        return canonical_ts(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _NotJson("a non-finite number")
        # Postgres numeric, kept exact as text (node-postgres hands numeric to the app the same way)
        return str(value)
    raise _NotJson(f"a {kind.__name__}, which has no canonical JSON form")


def _is_plain(value: Any) -> bool:
    """True when ``value`` is JSON-ready as it is: plain scalars, finite floats, and dicts
    (text keys) and lists of them — what derivers build from JSON images."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str:
                return False
            if type(v) in _PLAIN:
                continue
            if type(v) is dict:  # one level unrolled: `changes` is a dict of dicts
                for k2, v2 in v.items():
                    if type(k2) is not str or (type(v2) not in _PLAIN and not _is_plain(v2)):
                        return False
            elif not _is_plain(v):
                return False
        return True
    if kind is list:
        return all(type(v) in _PLAIN or _is_plain(v) for v in value)
    if kind is float:
        return math.isfinite(value)
    return False


def _json_ready(event_type: str, key: str, payload: dict[str, Any]) -> dict[str, Any]:
    # Declared fields are canonical text already; only extra keys and `any` values may need
    # converting, and only when they are not JSON-ready as they are.
    for value in payload.values():
        if type(value) not in _PLAIN and not _is_plain(value):
            break
    else:
        return payload
    out: dict[str, Any] = {}
    errors: list[FieldError] = []
    for name, value in payload.items():
        try:
            out[name] = _json_value(value)
        except _NotJson as exc:
            errors.append(FieldError(name, "json", f"holds {exc}"))
    if errors:
        raise EventValidationError(event_type, key, errors)
    return out


def _field_errors(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(".".join(str(p) for p in e["loc"]), e["type"], e["msg"])
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def _fields(model: BaseModel) -> dict[str, Any]:
    # What model_dump(exclude_unset=True) returns, at half the cost: the fields given plus the
    # extra keys. Nested models (legacy comment objects) are dumped by _json_value.
    given = model.model_fields_set
    out = {k: v for k, v in model.__dict__.items() if k in given}
    if model.model_extra:
        out.update(model.model_extra)
    return out


# --- payload validators ----------------------------------------------------------------------

_VALIDATORS: dict[type[BaseModel], SchemaValidator] = {}


def payload_validator(model: type[BaseModel]) -> SchemaValidator:
    """The model's own validation, returning a plain dict instead of a model instance.

    The model's core schema with its ``model`` node turned into a ``typed-dict`` node: the same
    field schemas, config and extra-key behaviour, but fields without a value stay absent
    (a model would fill defaults and record which were given). The result is exactly what
    ``model_dump(exclude_unset=True)`` of the validated model returns, at a fraction of the
    cost; a unit test holds the two equal, and their errors equal, for every catalogued type.
    """
    validator = _VALIDATORS.get(model)
    if validator is None:
        schema: Any = model.__pydantic_core_schema__
        definitions = None
        if schema["type"] == "definitions":
            definitions, schema = schema["definitions"], schema["schema"]
        if schema["type"] != "model" or schema["schema"]["type"] != "model-fields":
            raise TypeError(f"{model.__name__}: no plain model schema to validate payloads with")
        fields: dict[str, core_schema.TypedDictField] = {}
        for name, spec in schema["schema"]["fields"].items():
            inner = spec["schema"]
            if inner["type"] == "default":
                fields[name] = core_schema.typed_dict_field(inner["schema"], required=False)
            else:
                fields[name] = core_schema.typed_dict_field(inner, required=True)
        config = schema.get("config")
        extra = (config or {}).get("extra_fields_behavior", "ignore")
        typed: core_schema.CoreSchema = core_schema.typed_dict_schema(
            fields, extra_behavior=extra, config=config, ref=None
        )
        if definitions is not None:
            typed = core_schema.definitions_schema(typed, definitions)
        validator = _VALIDATORS[model] = SchemaValidator(typed, config)
    return validator


# --- compiled plans for payloads in canonical form -------------------------------------------

# Field kinds of catalog/_speedups.c (the numbers are its enum).
_K_FALLBACK, _K_UUID, _K_TENANT, _K_TEXT, _K_NONEMPTY, _K_UTC_TS, _K_LITERAL = range(7)
_K_BOOL, _K_INT, _K_RECORD, _K_CHANGES, _K_STRLIST, _K_UUIDLIST, _K_ANY = range(7, 14)
_K_NULLABLE, _K_REQUIRED = 0x100, 0x200

_PLANS: dict[type[BaseModel], Any] = {}


def _is_str(schema: Any, **expected: Any) -> bool:
    return bool(schema.get("type") == "str" and set(schema) - {"metadata"} == {"type", *expected}) and all(
        schema[k] == v for k, v in expected.items()
    )


def _is_uuid_object(schema: Any) -> bool:
    # no_info_after_validator_function(str, is_instance_schema(UUID)): a UUID becomes its text
    return bool(
        schema.get("type") == "function-after"
        and schema["function"].get("function") is str
        and schema["schema"].get("type") == "is-instance"
        and schema["schema"].get("cls") is UUID
    )


def _field_kind(schema: Any) -> tuple[int, Any]:
    """The compiled kind of one field's core schema; ``_K_FALLBACK`` for anything the fast path
    does not know (such a field, when present, sends the payload to pydantic)."""
    kind = schema.get("type")
    if kind == "nullable":
        inner, arg = _field_kind(schema["schema"])
        return (inner | _K_NULLABLE, arg) if inner != _K_FALLBACK else (_K_FALLBACK, None)
    if kind == "union" and schema.get("mode") == "left_to_right":
        choices = [c if isinstance(c, dict) else c[0] for c in schema["choices"]]
        if not choices or not _is_uuid_object(choices[-1]):
            return _K_FALLBACK, None
        head = choices[:-1]
        lower = {"pattern": _LOWER_UUID_PATTERN}
        any_case = {"pattern": UUID_PATTERN, "to_lower": True}
        if len(head) == 2 and _is_str(head[0], **lower) and _is_str(head[1], **any_case):
            return _K_UUID, None
        if (
            len(head) == 3
            and _is_str(head[0], **lower)
            and _is_str(head[1], **any_case)
            and _is_str(head[2], min_length=1)
        ):
            return _K_TENANT, None
        if len(head) == 1 and _is_str(head[0]):
            return _K_TEXT, None
        if len(head) == 1 and _is_str(head[0], min_length=1):
            return _K_NONEMPTY, None
        return _K_FALLBACK, None
    if kind == "function-plain":
        function = schema["function"].get("function")
        if function is _utc_timestamp:
            return _K_UTC_TS, None
        if function is _timestamp_text:
            return _K_TEXT, None
        return _K_FALLBACK, None
    if kind == "literal":
        expected = schema["expected"]
        if (
            expected
            and all(type(e) is str for e in expected)
            and set(schema) - {"metadata"} == {"type", "expected"}
        ):
            return _K_LITERAL, tuple(expected)
        return _K_FALLBACK, None
    if kind == "bool" and schema.get("strict") and set(schema) - {"metadata"} == {"type", "strict"}:
        return _K_BOOL, None
    if (
        kind == "int"
        and schema.get("strict")
        and set(schema) - {"metadata"} <= {"type", "strict", "ge", "gt", "le", "lt"}
    ):
        low = schema.get("ge", schema["gt"] + 1 if "gt" in schema else None)
        high = schema.get("le", schema["lt"] - 1 if "lt" in schema else None)
        if ("ge" in schema and "gt" in schema) or ("le" in schema and "lt" in schema):
            return _K_FALLBACK, None
        return _K_INT, (low, high)
    if kind == "dict" and set(schema) - {"metadata"} == {"type", "keys_schema", "values_schema"}:
        if not _is_str(schema["keys_schema"]):
            return _K_FALLBACK, None
        values = schema["values_schema"]
        if values == {"type": "any"}:
            return _K_RECORD, None
        if (
            values.get("type") == "dict"
            and set(values) == {"type", "keys_schema", "values_schema"}
            and _is_str(values["keys_schema"])
            and values["values_schema"] == {"type": "any"}
        ):
            return _K_CHANGES, None
        return _K_FALLBACK, None
    if kind == "list" and set(schema) - {"metadata"} == {"type", "items_schema"}:
        item, _ = (
            _field_kind(schema["items_schema"]) if not _is_str(schema["items_schema"]) else (_K_TEXT, None)
        )
        if item == _K_TEXT and _is_str(schema["items_schema"]):
            return _K_STRLIST, None
        if item == _K_UUID:
            return _K_UUIDLIST, None
        return _K_FALLBACK, None
    if kind == "any" and set(schema) - {"metadata"} == {"type"}:
        return _K_ANY, None
    return _K_FALLBACK, None


def payload_plan(model: type[BaseModel]) -> Any:
    """The compiled check of canonical payloads for ``model`` (see catalog/_speedups.c), or None
    when the speedups are not built or the model has settings the check does not know. It
    returns what :func:`payload_validator` returns, or None to say "ask pydantic"; a unit test
    holds the two equal for every catalogued type."""
    if _speedups is None:
        return None
    plan = _PLANS.get(model)
    if plan is None:
        schema: Any = model.__pydantic_core_schema__
        if schema["type"] == "definitions":
            schema = schema["schema"]
        config = schema.get("config") or {}
        if (
            schema["type"] != "model"
            or schema["schema"]["type"] != "model-fields"
            or config.get("extra_fields_behavior") != "allow"
            or set(config) - _PLAN_CONFIG
        ):
            plan = _PLANS[model] = False
            return None
        fields = []
        for name, spec in schema["schema"]["fields"].items():
            inner = spec["schema"]
            required = inner["type"] != "default"
            kind, arg = _field_kind(inner if required else inner["schema"])
            fields.append((name, kind | (_K_REQUIRED if required else 0), arg))
        plan = _PLANS[model] = _speedups.Plan(fields)
    return plan or None


# Model settings that do not change how a canonical payload validates.
_PLAN_CONFIG = frozenset({"title", "extra_fields_behavior", "allow_inf_nan", "frozen", "defer_build"})


# --- the builder ---------------------------------------------------------------------------

_last_source: tuple[tuple[Any, ...], Source] | None = None


def envelope_source(slot: str, lsn: int, xid: int, commit_time: datetime, table: str, timer: bool) -> Source:
    """The :class:`Source` of the events of one transaction's change to ``table`` (remembered
    for the last transaction: its events share it)."""
    return _source(slot, lsn, xid, commit_time, table, timer)


def _source(slot: str, lsn: int, xid: int, commit_time: datetime, table: str, timer: bool) -> Source:
    # The events of one transaction share their source: build it once (Source is frozen).
    global _last_source
    args = (slot, lsn, xid, commit_time, table, timer)
    last = _last_source
    if last is not None and last[0] == args:
        return last[1]
    source = Source(slot, canonical_lsn(lsn), xid, canonical_ts(commit_time), table, timer)
    _last_source = (args, source)
    return source


def build_envelope(
    draft: EventDraft,
    *,
    slot: str,
    lsn: int,
    xid: int,
    commit_time: datetime,
    table: str,
    timer: bool = False,
) -> Envelope:
    """Validate ``draft`` and wrap it in an envelope.

    ``lsn`` is the transaction's end LSN (``Commit.end_lsn``) and ``commit_time`` its commit
    time; for a timer event (``timer=True``) they describe the change that armed the timer and
    the key uses ``draft.timer_stage`` and ``draft.due_at``. Raises :class:`EventValidationError`
    for anything wrong with the draft; a bad ``lsn`` or naive ``commit_time`` is a caller bug
    and raises ``ValueError``.
    """
    source = _source(slot, lsn, xid, commit_time, table, timer)
    if _fast_envelope is not None and not timer:
        env: Envelope | None = _fast_envelope(draft, source, source.lsn)
        if env is not None:  # the common draft, built in one compiled call
            return env
    event_type, tenant, subject_id, payload_in, discriminator = draft[:5]
    spec = _SPEC_OF(event_type) if type(event_type) is str else None
    # The common case, checked inline (this runs once per event): a catalogued change-driven
    # event whose tenant was seen before and whose subject is uuid text. Anything else takes
    # the general key builder, which names the failing part.
    canonical_tenant = _TENANTS.get(tenant) if type(tenant) is str else None
    if (
        spec is not None
        and canonical_tenant is not None
        and not timer
        and discriminator is None
        and type(subject_id) is str
        and _UUID_MATCH(subject_id) is not None
    ):
        key = f"{event_type}:{canonical_tenant}:{subject_id.lower()}@{source.lsn}"
    else:
        key = _draft_key(draft, source.lsn, timer)
        canonical_tenant = key[len(event_type) + 1 : len(event_type) + 37]
    if spec is None:
        raise EventValidationError(
            event_type, key, [FieldError("eventType", "unknown_event_type", "not in the catalog")]
        )
    model = spec.model
    plan = _PLANS.get(model)
    if plan is None:
        plan = payload_plan(model)
    if plan and event_type not in _FAST_TYPES:  # the compiled builder takes this type from now on
        _FAST_TYPES[event_type] = (plan, spec.payload_schema_ref)
    # Canonical, JSON-ready payloads (what derivers build from row images) pass the compiled
    # check; anything else, and every error, is pydantic's.
    payload: dict[str, Any] | None = plan(payload_in, _VALID_TS) if plan else None
    ready = payload is not None
    if payload is None:
        validator = _VALIDATORS.get(model) or payload_validator(model)
        if type(payload_in) is not dict and isinstance(payload_in, BaseModel):  # a model: its given fields
            payload_in = _fields(payload_in)
        try:
            payload = validator.validate_python(payload_in)
        except ValidationError as exc:
            raise EventValidationError(event_type, key, _field_errors(exc)) from exc
    if payload["tenantId"] != canonical_tenant:
        raise EventValidationError(
            event_type,
            key,
            [FieldError("tenantId", "tenant_mismatch", "differs from the draft's tenant")],
        )
    if not ready:
        payload = _json_ready(event_type, key, payload)
    return Envelope(
        _event_id(key),
        event_type,
        payload["occurredAt"],
        payload,
        key,
        spec.payload_schema_ref,
        source,
    )


# The compiled builder (catalog/_speedups.c) takes the common draft whole: a type whose plan is
# compiled (the general path adds it on first use), a tenant seen before, uuid subject text.
_FAST_TYPES: dict[str, tuple[Any, str]] = {}
_fast_envelope = _speedups.envelope if _speedups is not None else None
fast_envelope: Callable[..., Envelope | None] | None = _fast_envelope
"""``fast_envelope(draft, source, source.lsn, adopt=False)``: the compiled builder for the common
change-driven draft, or None where it does not apply (then :func:`build_envelope`, which also
names every error); None itself without the compiled speedups. ``source`` comes from
:func:`envelope_source`. The envelope's payload is a copy, as pydantic's would be; with
``adopt`` true it is the draft's own payload dict (and the lists and dicts in it) wherever no
value needs converting: for a caller that owns the draft and drops it, such as the watcher,
this saves a copy of every payload."""
_envelope_json = _speedups.envelope_json if _speedups is not None else None
_envelopes_json = _speedups.envelopes_json if _speedups is not None else None


def envelopes_json(envelopes: Sequence[Envelope]) -> list[bytes]:
    """``[e.to_json_bytes() for e in envelopes]``, for a sink's batch: one compiled call that
    reads the envelopes' slots, when the speedups are built."""
    if _envelopes_json is not None:
        return _envelopes_json(envelopes, _source_bytes)
    return [e.to_json_bytes() for e in envelopes]


def _source_bytes(source: Source) -> bytes:
    return _source_serialised(source)[2]


if _speedups is not None:
    # True: envelopes are filled in slot by slot (Envelope is a slotted dataclass of 7 fields)
    _ENVELOPE_SLOTS = _speedups.configure_envelopes(_FAST_TYPES, _TENANTS, _VALID_TS, Envelope)
    _speedups.configure_json(orjson.dumps, orjson.OPT_SORT_KEYS)
