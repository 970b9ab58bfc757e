"""Log sequence numbers: parsing and the canonical ``X/Y`` text form Postgres prints."""

from __future__ import annotations

from .errors import ConfigError


def format_lsn(lsn: int) -> str:
    """``0/16B3748``: upper-case hex halves, no leading zeros."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """Parse Postgres's ``X/Y`` form."""
    try:
        hi, lo = text.strip().split("/")
        value = (int(hi, 16) << 32) | int(lo, 16)
    except ValueError as exc:
        raise ConfigError(f"not an LSN: {text!r} (expected the X/Y form, e.g. 0/16B3748)") from exc
    if not 0 <= value < 1 << 64 or int(lo, 16) > 0xFFFFFFFF:
        raise ConfigError(f"LSN out of range: {text!r}")
    return value
