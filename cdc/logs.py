"""Logging of the daemon: two formats, structured fields, and no password anywhere.

:func:`setup` puts one handler on the root logger (stderr), in one of two formats:

* ``text`` — ``2026-12-06T09:00:00.123Z INFO cdc.watch: <message>``, one line per record (a
  traceback follows on its own lines). A record logged with ``extra=plain()`` is the bare
  message (the exit summary ``delivered … events from … transactions …`` stays greppable);
* ``json`` — one object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, the
  record's structured fields (``extra=fields(slot=…, lsn=…, transactions=…)``) at the top level,
  and ``exc`` for a traceback.

**Redaction.** The handler's filter rewrites every record — message, arguments, structured
fields and traceback — with :func:`redact`, which replaces the password of any libpq
keyword/value DSN (``password=…``, quoted or not; ``PGPASSWORD=…`` too) and of any URI
(``scheme://user:password@…``: postgresql, redis, nats, …) with ``***``. The command line's
final error line goes through :func:`error_line`, which redacts it too and writes it in the
configured format. Redaction is the second guard: messages are written not to hold DSNs in the
first place.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final, Literal

import orjson

from .values import canonical_timestamp

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

#: ``password = value`` of a keyword/value DSN (also ``PGPASSWORD=value``, ``?password=value``):
#: a quoted value with its escapes, or everything up to white space, ``&`` or a quote.
_KEYWORD = re.compile(r"""(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&'"]+)""", re.IGNORECASE)
#: ``user:password@`` of any URI; an ``@`` inside a password is percent-encoded.
_URI = re.compile(r"([a-z][a-z0-9+.\-]*://[^\s:/@]*:)([^\s@/]*)(@)", re.IGNORECASE)
MASK: Final = "***"

_FIELDS = "cdc_fields"
_PLAIN = "cdc_plain"


def redact(text: str) -> str:
    """``text`` with every DSN or URI password replaced by ``***``."""
    if "=" not in text and "@" not in text:
        return text
    text = _KEYWORD.sub(lambda m: m.group(1) + MASK, text)
    return _URI.sub(lambda m: m.group(1) + MASK + m.group(3), text)


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for structured fields (the top-level keys of a JSON line)."""
    return {_FIELDS: values}


def plain(**values: Any) -> dict[str, Any]:
    """``extra=`` for a line that is the bare message in the text format (the exit summary)."""
    return {_FIELDS: values, _PLAIN: True}


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


class RedactFilter(logging.Filter):
    """Rewrites a record so nothing a formatter prints holds a password (see the module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what can be shown
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # formatted (and redacted) once: the formatters use exc_text
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        values = getattr(record, _FIELDS, None)
        if values:
            setattr(record, _FIELDS, _redact_value(values))
        return True


def _timestamp(created: float) -> str:
    return canonical_timestamp(datetime.fromtimestamp(created, UTC))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line = (
            message
            if getattr(record, _PLAIN, False)
            else f"{_timestamp(record.created)} {record.levelname} {record.name}: {message}"
        )
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{record.stack_info}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in (getattr(record, _FIELDS, None) or {}).items():
            obj.setdefault(key, value)
        if record.exc_text:
            obj["exc"] = record.exc_text
        if record.stack_info:
            obj["stack"] = record.stack_info
        return orjson.dumps(obj, default=str).decode()


class _State:
    format: LogFormat = "text"
    handler: logging.Handler | None = None


def _level(name: str) -> int:
    return logging.getLevelNamesMapping()[name.upper()]


def make_handler(fmt: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter())
    return handler


def setup(level: str = "info", fmt: LogFormat = "text", stream: IO[str] | None = None) -> None:
    """One handler on the root logger in ``fmt`` at ``level`` (replacing an earlier one of ours)."""
    root = logging.getLogger()
    if _State.handler is not None:
        root.removeHandler(_State.handler)
    _State.handler = make_handler(fmt, stream)
    _State.format = fmt
    root.addHandler(_State.handler)
    set_level(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # its own job chatter


def set_level(level: str) -> None:
    logging.getLogger().setLevel(_level(level))


def current_level() -> str:
    return logging.getLevelName(logging.getLogger().level).lower()


def current_format() -> LogFormat:
    return _State.format


def error_line(text: str, stream: IO[str] | None = None, **values: Any) -> None:
    """The command's final error line, redacted: ``text`` as is in the text format, an
    object of level ERROR (logger ``cdc``) in the json format."""
    out = stream if stream is not None else sys.stderr
    text = redact(text)
    if _State.format == "json":
        obj = {"ts": _timestamp(time.time()), "level": "ERROR", "logger": "cdc", "msg": text}
        obj.update(_redact_value(values))
        text = orjson.dumps(obj, default=str).decode()
    print(text, file=out)


def unexpected(exc: BaseException) -> None:
    """An error no handler expected (a bug): its traceback as a CRITICAL record, redacted."""
    if _State.handler is None:
        setup()
    logging.getLogger("cdc").critical("unexpected error (a bug: please report it)", exc_info=exc)
