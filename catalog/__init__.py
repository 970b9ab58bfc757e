"""The event catalog: what events exist and what they look like on the wire.

It owns the event-type registry (:mod:`catalog.registry`), the pydantic payload models
(:mod:`catalog.payloads`) and the field types they are built from (:mod:`catalog.base`), the
canonical text forms of instants, LSNs and uuids (:mod:`catalog.forms`), the project's exception
root (:mod:`catalog.errors`), the envelope with its idempotency keys and event ids
(:mod:`catalog.envelope`), dead letters (:mod:`catalog.dead_letters`) and the JSON Schema export
(:mod:`catalog.jsonschema_export`). Nothing here does I/O or imports another package of this
project; derivers and the engine depend on it (the sync into the application's
``system_event_catalog`` and the ``cdc catalog`` commands are the engine's:
:mod:`cdc.catalog_sync`, :mod:`cdc.catalog_cli`). See docs/catalog.md.

The names below are loaded on first use: the engine imports :mod:`catalog.forms` and
:mod:`catalog.errors` in every command, and they must not pull in the 94 payload models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from catalog.envelope import (
        NAMESPACE,
        Envelope,
        EventDraft,
        Source,
        build_envelope,
        change_key,
        event_id,
        timer_key,
    )
    from catalog.errors import (
        CatalogError,
        CdcError,
        EventValidationError,
        FieldError,
        FormError,
        KeyFormatError,
        UnknownEventType,
    )
    from catalog.forms import format_lsn, format_timestamp, format_uuid, parse_lsn, parse_timestamp
    from catalog.registry import REGISTRY, EventSpec, get

_HOME = {
    **dict.fromkeys(
        [
            "NAMESPACE",
            "Envelope",
            "EventDraft",
            "Source",
            "build_envelope",
            "change_key",
            "event_id",
            "timer_key",
        ],
        "catalog.envelope",
    ),
    **dict.fromkeys(
        [
            "CatalogError",
            "CdcError",
            "EventValidationError",
            "FieldError",
            "FormError",
            "KeyFormatError",
            "UnknownEventType",
        ],
        "catalog.errors",
    ),
    **dict.fromkeys(
        ["format_lsn", "format_timestamp", "format_uuid", "parse_lsn", "parse_timestamp"], "catalog.forms"
    ),
    **dict.fromkeys(["REGISTRY", "EventSpec", "get"], "catalog.registry"),
}

__all__ = [
    "NAMESPACE",
    "REGISTRY",
    "CatalogError",
    "CdcError",
    "Envelope",
    "EventDraft",
    "EventSpec",
    "EventValidationError",
    "FieldError",
    "FormError",
    "KeyFormatError",
    "Source",
    "UnknownEventType",
    "build_envelope",
    "change_key",
    "event_id",
    "format_lsn",
    "format_timestamp",
    "format_uuid",
    "get",
    "parse_lsn",
    "parse_timestamp",
    "timer_key",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'catalog' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
