"""Canonical text forms (DESIGN §4): the one definition of how an instant, an LSN and a uuid are
written wherever the project writes them — keys, ids, envelopes, checkpoints, logs, ``cdc tail``.

* an instant: UTC ISO-8601 with milliseconds and ``Z`` (``2026-01-02T03:04:05.678Z``, what the
  application's schemas and JavaScript's ``Date`` produce). A naive ``datetime`` has no instant
  and is refused, everywhere: guessing UTC or the machine's zone would shift events silently;
* an LSN: as Postgres prints it, ``0/16B3748`` (upper-case hex halves, no leading zeros);
* a uuid: lower case with hyphens.

Each form has its parser back. Everything wrong raises :class:`~catalog.errors.FormError` (a
:class:`~catalog.errors.CdcError` and a ``ValueError``) with a message that never repeats a
timestamp or uuid (they may come from a row); an LSN is named, it never comes from a row.
This module is the catalog's lowest layer: the engine and the derivers import it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import UUID

from catalog.errors import FormError

__all__ = [
    "CANONICAL_UUID_PATTERN",
    "TIMESTAMP_PATTERN",
    "UUID_PATTERN",
    "format_lsn",
    "format_timestamp",
    "format_uuid",
    "parse_lsn",
    "parse_timestamp",
]

# --- instants --------------------------------------------------------------------------------

_YEAR = r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"  # 0001-9999
_BY_4 = r"(?:0[48]|[2468][048]|[13579][26])"  # two digits divisible by 4, not 00
_DATE = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    rf"|(?:[0-9]{{2}}{_BY_4}|{_BY_4}00)-02-29)"  # leap days: years by 4, centuries by 400
)
TIMESTAMP_PATTERN = rf"^{_DATE}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{{3}}Z$"
"""Exactly the texts :func:`format_timestamp` writes: a calendar date (leap days included), a
time with milliseconds, ``Z``. No look-around, so pydantic-core's own regex engine runs it."""


def format_timestamp(value: datetime) -> str:
    """``2026-01-02T03:04:05.678Z``: the instant in UTC, milliseconds truncated (as JavaScript's
    ``Date`` keeps them). An aware datetime in any zone is converted; a naive one is refused."""
    if not isinstance(value, datetime):
        raise FormError(f"a timestamp must be a datetime, not {type(value).__name__}")
    if value.tzinfo is not UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise FormError("a naive datetime has no instant: give it a time zone")
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            raise FormError("a datetime whose instant is outside the years 1-9999 in UTC") from None
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_timestamp(text: str) -> datetime:
    """ISO-8601 text with a zone (``Z`` or an offset; the canonical form is one) back to an aware
    datetime in UTC. Text without a zone is refused, as a naive datetime is."""
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise FormError("not an ISO-8601 timestamp (like 2026-01-02T03:04:05.678Z)") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise FormError("a timestamp without a time zone has no instant: write it with Z or an offset")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise FormError("a timestamp whose instant is outside the years 1-9999 in UTC") from None


# --- LSNs ------------------------------------------------------------------------------------

_LSN_RE = re.compile(r"\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*")


def format_lsn(lsn: int) -> str:
    """``0/16B3748``: the two 32-bit halves in upper-case hex without leading zeros."""
    if not 0 <= lsn < 1 << 64:
        raise FormError(f"LSN out of range: {lsn} (an LSN is an unsigned 64-bit integer)")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """Postgres's ``X/Y`` form (any case, leading zeros, surrounding blanks) back to an integer."""
    found = _LSN_RE.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise FormError(f"not an LSN: {text!r} (expected the X/Y form, e.g. 0/16B3748)")
    return int(found.group(1), 16) << 32 | int(found.group(2), 16)


# --- uuids -----------------------------------------------------------------------------------

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
"""A uuid as text in any case (zod's ``uuid()`` takes both)."""
CANONICAL_UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""The canonical form: lower case."""

_UUID_RE = re.compile(UUID_PATTERN)


def format_uuid(value: str | UUID) -> str:
    """Lower-case hyphenated text of a uuid given as text (hyphenated, any case) or ``UUID``."""
    if isinstance(value, str) and _UUID_RE.fullmatch(value):
        return value.lower()
    if isinstance(value, UUID):
        return str(value)
    raise FormError("not a uuid in 8-4-4-4-12 hex form")
