"""The event catalog: what events exist and what they look like on the wire.

It owns the event-type registry (:mod:`catalog.registry`), the pydantic payload models
(:mod:`catalog.payloads`), the canonical text forms and field types (:mod:`catalog.base`), the
envelope with its idempotency keys and event ids (:mod:`catalog.envelope`), dead letters
(:mod:`catalog.dead_letters`) and the JSON Schema export (:mod:`catalog.jsonschema_export`).
Nothing here does I/O or imports another package of this project; derivers and the engine
depend on it (the sync into the application's ``system_event_catalog`` and the ``cdc catalog``
commands are the engine's: :mod:`cdc.catalog_sync`, :mod:`cdc.catalog_cli`). See docs/catalog.md.
"""

from catalog.base import CatalogError, canonical_lsn, canonical_ts, canonical_uuid
from catalog.envelope import (
    NAMESPACE,
    Envelope,
    EventDraft,
    EventValidationError,
    FieldError,
    KeyFormatError,
    Source,
    build_envelope,
    change_key,
    event_id,
    timer_key,
)
from catalog.registry import REGISTRY, EventSpec, UnknownEventType, get

__all__ = [
    "NAMESPACE",
    "REGISTRY",
    "CatalogError",
    "Envelope",
    "EventDraft",
    "EventSpec",
    "EventValidationError",
    "FieldError",
    "KeyFormatError",
    "Source",
    "UnknownEventType",
    "build_envelope",
    "canonical_lsn",
    "canonical_ts",
    "canonical_uuid",
    "change_key",
    "event_id",
    "get",
    "timer_key",
]
