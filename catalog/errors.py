"""The one exception root of the project, and the errors the catalog raises.

Every error the project raises on purpose is a :class:`CdcError`: it carries a one-line
``hint`` (what to do), a ``retryable`` flag (retry with backoff, or stop with a clear message)
and, when Postgres reported it, the ``sqlstate``; :meth:`CdcError.one_line` is what an operator
reads. The root lives here, in the lowest layer, because the catalog imports nothing of the
project while the engine (:mod:`cdc.errors`: its subclasses and the translation of psycopg
errors) and the derivers import the catalog. Messages never contain row values.

The catalog's own errors hang under :class:`CatalogError`: a draft that cannot become an
envelope (:class:`EventValidationError`, with the failing field paths as :class:`FieldError`),
a key part without a canonical form (:class:`KeyFormatError`), a value that is not in a
canonical text form (:class:`FormError`), an event type the catalog does not know
(:class:`UnknownEventType`) and a registry that contradicts itself (:class:`RegistryError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CatalogError",
    "CdcError",
    "EventValidationError",
    "FieldError",
    "FormError",
    "KeyFormatError",
    "RegistryError",
    "UnknownEventType",
]


class CdcError(Exception):
    """Root of every error this project raises on purpose."""

    hint: str = ""
    retryable: bool = False
    sqlstate: str | None = None

    def __init__(self, message: str, *, hint: str | None = None, sqlstate: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint
        if sqlstate is not None:
            self.sqlstate = sqlstate

    def one_line(self) -> str:
        """The operator-facing line: cause, then what to do."""
        text = str(self).strip().splitlines()[0] if str(self).strip() else type(self).__name__
        return f"{text} — {self.hint}" if self.hint else text


class CatalogError(CdcError):
    """Root of the errors raised by the catalog package."""


class FormError(CatalogError, ValueError):
    """A value that has no canonical text form (:mod:`catalog.forms`): a naive datetime, text
    that is not an LSN or not a uuid, an LSN out of range."""


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


class RegistryError(CatalogError):
    """The registry table contradicts itself (raised at import)."""


class UnknownEventType(CatalogError, KeyError):
    """An event type that the catalog does not know."""

    def __str__(self) -> str:
        return f"unknown event type {self.args[0]!r}"
