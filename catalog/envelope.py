"""The event envelope (DESIGN §4): drafts in, validated and keyed envelopes out.

A deriver hands an :class:`EventDraft`; :func:`build_envelope` validates its payload against the
registered pydantic model, builds the idempotency key, derives the event id and returns an
:class:`Envelope`, or raises :class:`EventValidationError` naming every failing field path
(the draft then belongs in the dead-letter table, see :mod:`catalog.dead_letters`).

Keys (DESIGN §4), with every part in canonical text form (:mod:`catalog.forms`):

* change-driven: ``<EVENT_TYPE>:<tenant>:<subject id>[:<discriminator>]@<end LSN>``
* timer-driven:  ``<EVENT_TYPE>:<tenant>:<subject id>:<stage>@<due time>``

The envelope ``id`` is the UUIDv5 of the key under :data:`NAMESPACE`, so a replay of the same
history yields the same ids, and ``timestamp`` is ``payload.occurredAt``. :meth:`Envelope.to_json_bytes`
is byte-stable: orjson, keys sorted at every level, compact separators, UTF-8, no trailing
newline; all values are already canonical text when the envelope is built.

The payload models are the only definition of a payload: a payload is validated by its model,
whose constraints run in pydantic-core (:mod:`catalog.base`); ids are hashlib's SHA-1 (uuid5)
and JSON is orjson's. (Validating a transaction's drafts of one type in one
``TypeAdapter(list[Model])`` call was measured: 2 % fewer instructions per row change with
``python -m bench.instructions``, not worth a second way in.)
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from pydantic import BaseModel, ValidationError

from catalog.errors import CatalogError, EventValidationError, FieldError, FormError, KeyFormatError
from catalog.forms import format_lsn, format_timestamp, format_uuid
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
    "envelope_source",
    "envelopes_json",
    "event_id",
    "timer_key",
]

NAMESPACE = UUID("e02244fa-7d25-576d-9198-1badae528050")
"""The fixed namespace of event ids: ``id = uuid5(NAMESPACE, idempotency key)``.

It is ``uuid5(NAMESPACE_URL, "urn:alga-cdc:event-id:v1")``; a unit test pins both. Changing it
changes every event id, which Alga's runtime would take for new events: never change it.
"""


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
        return _exact(orjson.dumps(self._with_source(_source_json(self.source)), option=orjson.OPT_SORT_KEYS))

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


def envelopes_json(envelopes: Sequence[Envelope]) -> list[bytes]:
    """Each envelope's :meth:`~Envelope.to_json_bytes`, for a sink's batch."""
    return [e.to_json_bytes() for e in envelopes]


def _exact(raw: bytes) -> bytes:
    """``raw`` in a buffer of its own size. orjson (3.12 and later) returns its output in the
    buffer it wrote into, 4 KiB at least (16 KiB past 1 KiB), and a batch holds the JSON of each
    of its events until it is delivered: ~4 KiB per 800-byte envelope. The copy costs ~0.25 µs."""
    return bytes(memoryview(raw))


#: Each Source's JSON (keys sorted), by identity: a transaction's events share a few Sources
#: (one per table) and are serialised together. Holding the Source keeps its id from being
#: reused while it is here; the map is emptied when it grows past a few batches' worth.
_source_texts: dict[int, tuple[Source, orjson.Fragment]] = {}


def _source_json(source: Source) -> orjson.Fragment:
    found = _source_texts.get(id(source))
    if found is None:
        if len(_source_texts) >= 1024:
            _source_texts.clear()
        raw = _exact(orjson.dumps(source.to_dict(), option=orjson.OPT_SORT_KEYS))
        found = _source_texts[id(source)] = (source, orjson.Fragment(raw))
    return found[1]


# --- keys and ids ----------------------------------------------------------------------------

_EVENT_TYPE_RE = re.compile(r"[A-Z][A-Z0-9_]*")


def _type_part(event_type: str) -> str:
    if not isinstance(event_type, str) or _EVENT_TYPE_RE.fullmatch(event_type) is None:
        raise KeyFormatError("event_type", "must be SCREAMING_SNAKE_CASE")
    return event_type


def _uuid_part(value: str | UUID, name: str) -> str:
    try:
        return format_uuid(value)
    except FormError:
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
    return _change_key(_type_part(event_type), tenant, subject_id, format_lsn(end_lsn), discriminator)


_UUID_TEXT = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: A key's head whose parts are canonical as given: checked in one match (the common case).
_CANONICAL_HEAD_RE = re.compile(f"[A-Z][A-Z0-9_]*:{_UUID_TEXT}:{_UUID_TEXT}")


def _change_key(
    event_type: str, tenant: str | UUID, subject_id: str | UUID, lsn: str, discriminator: str | None
) -> str:
    head = f"{event_type}:{tenant}:{subject_id}"
    if type(tenant) is not str or type(subject_id) is not str or _CANONICAL_HEAD_RE.fullmatch(head) is None:
        # not canonical as given: each part checked (and brought into canonical form) on its own
        head = (
            f"{_type_part(event_type)}:{_uuid_part(tenant, 'tenant')}:{_uuid_part(subject_id, 'subject_id')}"
        )
    if discriminator is not None:
        head = f"{head}:{_text_part(discriminator, 'discriminator')}"
    return f"{head}@{lsn}"


def timer_key(event_type: str, tenant: str | UUID, subject_id: str | UUID, stage: str, due: datetime) -> str:
    """``<EVENT_TYPE>:<tenant>:<subject id>:<stage>@<due time>``; ``due`` must be aware."""
    return _timer_key(_type_part(event_type), tenant, subject_id, stage, due)


def _timer_key(event_type: str, tenant: str | UUID, subject_id: str | UUID, stage: str, due: datetime) -> str:
    try:
        due_text = format_timestamp(due)
    except FormError:
        raise KeyFormatError("due_at", "must be an aware datetime") from None
    return (
        f"{event_type}:{_uuid_part(tenant, 'tenant')}:"
        f"{_uuid_part(subject_id, 'subject_id')}:{_text_part(stage, 'timer_stage')}@{due_text}"
    )


# uuid5 is the SHA-1 of the namespace's bytes followed by the name: the namespace is hashed once
# and copied per id (hashlib's documented use of copy()), and the text is written from the hex
# digest. ``uuid.uuid5`` computes the same, but its UUID object costs three times the hashing.
_NAMESPACE_SHA1 = hashlib.sha1(NAMESPACE.bytes)
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}  # RFC 4122 variant bits: 10xx


def event_id(key: str) -> str:
    """``str(uuid.uuid5(NAMESPACE, key))``: the SHA-1 with the version digit set to 5 and the
    variant bits to 10 (RFC 4122 §4.3); a unit test holds the two equal."""
    sha1 = _NAMESPACE_SHA1.copy()
    sha1.update(key.encode())
    h = sha1.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def draft_key(draft: EventDraft, lsn: int, *, timer: bool = False) -> str:
    """The draft's idempotency key; :class:`EventValidationError` if its parts are invalid."""
    return _draft_key(draft, format_lsn(lsn), timer)


def _draft_key(draft: EventDraft, lsn: str, timer: bool) -> str:
    try:
        if timer:
            if draft.timer_stage is None or draft.due_at is None:
                raise KeyFormatError("timer_stage", "and due_at are needed for a timer event")
            event_type = _type_part(draft.event_type)
            return _timer_key(event_type, draft.tenant, draft.subject_id, draft.timer_stage, draft.due_at)
        # _change_key checks the event type with the rest of the head
        return _change_key(draft.event_type, draft.tenant, draft.subject_id, lsn, draft.discriminator)
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


class _NotJson(CatalogError):
    """A payload value with no canonical JSON form (reported as a field error)."""


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
        return _json_value(_given(value))
    if isinstance(value, Enum):
        return _json_value(value.value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, datetime):
        try:
            return format_timestamp(value)
        except FormError:
            raise _NotJson("a naive datetime") from None
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


def _given(model: BaseModel) -> dict[str, Any]:
    """``model.model_dump(exclude_unset=True)`` without its serialisation pass (the validated
    values are canonical already; nested models and other values are converted by
    :func:`_json_value`): the declared fields that were given, then the extra keys."""
    given = model.model_fields_set
    fields = model.__dict__
    extra = model.model_extra
    if len(given) == len(fields) and not extra:
        return dict(fields)  # every declared field given, none extra: the common case
    out = {k: v for k, v in fields.items() if k in given}
    if extra:
        out.update(extra)
    return out


# --- payload validation ----------------------------------------------------------------------


def _input(payload: Any) -> Any:
    # A payload model instance stands for the fields it was given.
    if type(payload) is not dict and isinstance(payload, BaseModel):
        return _given(payload)
    return payload


def _field_errors(exc: ValidationError) -> list[FieldError]:
    """Each failing field with its path dotted (``changes.status``, ``newTicketIds.0``)."""
    return [
        FieldError(".".join(str(p) for p in e["loc"]), e["type"], e["msg"])
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


# --- the builder ---------------------------------------------------------------------------

#: The Sources of the transaction whose events are being built, by table and timer flag: its
#: events share them, and a transaction's events come from several tables, interleaved.
_tx_sources: tuple[tuple[str, int, int, datetime], dict[tuple[str, bool], Source]] | None = None


def envelope_source(slot: str, lsn: int, xid: int, commit_time: datetime, table: str, timer: bool) -> Source:
    """The :class:`Source` of the events of one transaction's change to ``table``: canonical
    text, built once per table for the events of one transaction (Source is frozen)."""
    global _tx_sources
    tx = (slot, lsn, xid, commit_time)
    cached = _tx_sources
    if cached is None or cached[0] != tx:
        cached = _tx_sources = (tx, {})
    source = cached[1].get((table, timer))
    if source is None:
        source = Source(slot, format_lsn(lsn), xid, format_timestamp(commit_time), table, timer)
        cached[1][(table, timer)] = source
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
    and raises :class:`~catalog.errors.FormError` (a ``ValueError``).
    """
    source = envelope_source(slot, lsn, xid, commit_time, table, timer)
    key = _draft_key(draft, source.lsn, timer)
    event_type = draft.event_type
    spec = REGISTRY.get(event_type)
    if spec is None:
        error = FieldError("eventType", "unknown_event_type", "not in the catalog")
        raise EventValidationError(event_type, key, [error])
    try:
        payload = _given(spec.model.model_validate(_input(draft.payload)))
    except ValidationError as exc:
        raise EventValidationError(event_type, key, _field_errors(exc)) from exc
    # The key's tenant part is the draft's tenant in canonical form: the payload must name it.
    if payload["tenantId"] != key[len(event_type) + 1 : len(event_type) + 37]:
        error = FieldError("tenantId", "tenant_mismatch", "differs from the draft's tenant")
        raise EventValidationError(event_type, key, [error])
    payload = _json_ready(event_type, key, payload)
    return Envelope(
        event_id(key), event_type, payload["occurredAt"], payload, key, spec.payload_schema_ref, source
    )
