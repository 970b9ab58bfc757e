"""Dead letters: events that are not delivered, kept with the reasons and the change they came from.

Two kinds: a draft that :func:`catalog.envelope.build_envelope` rejects (DESIGN §3.6,
:func:`dead_letter`), and a valid envelope larger than its sink takes (:func:`too_large`: the
JSON is over the sink's ``max_event_bytes``, e.g. NATS's ``max_payload``), which no retry could
ever deliver. The engine writes a :class:`DeadLetter` with the ``insert_dead_letter`` query of
``sql/dead_letters.sql``, in the same transaction as the checkpoint, and counts it. The row is
keyed by the idempotency key the event would have had, so replaying the same history (restart,
backfill) does not add a second row. The payload is stored as the deriver gave it (for a large
envelope: its payload); the error list holds field paths and reasons only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from catalog.envelope import Envelope, EventDraft, EventValidationError, Source, envelope_source

__all__ = ["TOO_LARGE", "DeadLetter", "dead_letter", "too_large"]

#: The error ``type`` of a dead letter whose envelope is larger than its sink takes.
TOO_LARGE = "envelope_too_large"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One row of ``cdc.dead_letters``."""

    idempotency_key: str
    event_type: str
    payload_json: str
    errors_json: str
    source: Source

    def params(self) -> dict[str, Any]:
        """Parameters of the ``insert_dead_letter`` query."""
        return {
            "idempotency_key": self.idempotency_key,
            "event_type": self.event_type,
            "payload": self.payload_json,
            "errors": self.errors_json,
            "slot": self.source.slot,
            "lsn": self.source.lsn,
            "xid": self.source.xid,
            "commit_time": self.source.commit_time,
            "source_table": self.source.table,
            "timer": self.source.timer,
        }


def _as_given(value: Any) -> Any:
    # Whatever the deriver put in the payload must still be storable; its text form will do.
    return str(value)


def dead_letter(
    draft: EventDraft,
    error: EventValidationError,
    *,
    slot: str,
    lsn: int,
    xid: int,
    commit_time: datetime,
    table: str,
    timer: bool = False,
) -> DeadLetter:
    """The dead letter of ``draft``, rejected with ``error`` at the given source position."""
    payload = orjson.dumps(
        draft.payload, default=_as_given, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS
    )
    errors = orjson.dumps([{"path": e.path, "type": e.type, "message": e.message} for e in error.errors])
    return DeadLetter(
        idempotency_key=error.key,
        event_type=error.event_type,
        payload_json=payload.decode(),
        errors_json=errors.decode(),
        source=envelope_source(slot, lsn, xid, commit_time, table, timer),
    )


def too_large(envelope: Envelope, reason: str) -> DeadLetter:
    """The dead letter of ``envelope``, valid but larger than its sink takes; ``reason`` says by
    how much (sizes only, no values)."""
    payload = orjson.dumps(envelope.payload, option=orjson.OPT_SORT_KEYS)
    errors = orjson.dumps([{"path": "", "type": TOO_LARGE, "message": reason}])
    return DeadLetter(
        idempotency_key=envelope.idempotency_key,
        event_type=envelope.event_type,
        payload_json=payload.decode(),
        errors_json=errors.decode(),
        source=envelope.source,
    )
