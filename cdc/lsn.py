"""Log sequence numbers for the engine: the ``X/Y`` text form Postgres prints, and back.

The one definition is :mod:`catalog.forms` (the lowest layer: keys and envelopes write LSNs
too); this module re-exports it for the engine. A malformed or out-of-range LSN raises
:class:`catalog.errors.FormError`, a :class:`~catalog.errors.CdcError`.
"""

from __future__ import annotations

from catalog.forms import format_lsn as format_lsn
from catalog.forms import parse_lsn as parse_lsn

__all__ = ["format_lsn", "parse_lsn"]
