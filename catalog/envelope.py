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

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from hashlib import sha1
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel, ValidationError

from catalog.base import CatalogError, canonical_lsn, canonical_ts, canonical_uuid
from catalog.registry import REGISTRY

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
    "event_id",
    "timer_key",
]

NAMESPACE = UUID("e02244fa-7d25-576d-9198-1badae528050")
"""The fixed namespace of event ids: ``id = uuid5(NAMESPACE, idempotency key)``.

It is ``uuid5(NAMESPACE_URL, "urn:alga-cdc:event-id:v1")``; a unit test pins both. Changing it
changes every event id, which Alga's runtime would take for new events: never change it.
"""
_NAMESPACE_BYTES = NAMESPACE.bytes


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


@dataclass(frozen=True, slots=True)
class EventDraft:
    """What a deriver emits: the event type, whom it is about and the camelCase payload
    (including ``tenantId`` and ``occurredAt``, a datetime or a UTC ``Z`` string)."""

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


@dataclass(frozen=True, slots=True)
class Envelope:
    """A validated event. ``payload`` is JSON-ready (canonical text values); treat it as
    read-only."""

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
        return {
            "id": self.id,
            "eventType": self.event_type,
            "timestamp": self.timestamp,
            "payload": self.payload,
            "idempotencyKey": self.idempotency_key,
            "payloadSchemaRef": self.payload_schema_ref,
            "source": self.source.to_dict(),
        }

    def to_json_bytes(self) -> bytes:
        """Byte-stable JSON: the same event always serialises to the same bytes."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

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
    head = f"{event_type}:{_uuid_part(tenant, 'tenant')}:{_uuid_part(subject_id, 'subject_id')}"
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
        f"{event_type}:{_uuid_part(tenant, 'tenant')}:"
        f"{_uuid_part(subject_id, 'subject_id')}:{_text_part(stage, 'timer_stage')}@{due_text}"
    )


def event_id(key: str) -> str:
    """``str(uuid5(NAMESPACE, key))`` without building the intermediate UUID object."""
    digest = bytearray(sha1(_NAMESPACE_BYTES + key.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def draft_key(draft: EventDraft, lsn: int, *, timer: bool = False) -> str:
    """The draft's idempotency key; :class:`EventValidationError` if its parts are invalid."""
    return _draft_key(draft, canonical_lsn(lsn), timer)


def _draft_key(draft: EventDraft, lsn: str, timer: bool) -> str:
    try:
        event_type = _type_part(draft.event_type)
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


def _json_ready(event_type: str, key: str, payload: dict[str, Any]) -> dict[str, Any]:
    # Declared fields are canonical text already; only extra keys and `any` values need a walk.
    for value in payload.values():
        if type(value) not in _PLAIN:
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


# --- the builder ---------------------------------------------------------------------------


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
    lsn_text = canonical_lsn(lsn)
    source = Source(slot, lsn_text, xid, canonical_ts(commit_time), table, timer)
    key = _draft_key(draft, lsn_text, timer)
    spec = REGISTRY.get(draft.event_type)
    if spec is None:
        raise EventValidationError(
            draft.event_type, key, [FieldError("eventType", "unknown_event_type", "not in the catalog")]
        )
    try:
        model = spec.model.model_validate(draft.payload)
    except ValidationError as exc:
        raise EventValidationError(draft.event_type, key, _field_errors(exc)) from exc
    # The key's second part is the draft's tenant in canonical form.
    if model.tenantId != key.split(":", 2)[1]:
        raise EventValidationError(
            draft.event_type,
            key,
            [FieldError("tenantId", "tenant_mismatch", "differs from the draft's tenant")],
        )
    return Envelope(
        id=event_id(key),
        event_type=draft.event_type,
        timestamp=model.occurredAt,
        payload=_json_ready(draft.event_type, key, _fields(model)),
        idempotency_key=key,
        payload_schema_ref=spec.payload_schema_ref,
        source=source,
    )
