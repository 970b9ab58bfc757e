"""Opening a connection to Postgres: the one function every connection of the project goes through.

:func:`connect` adds to the caller's DSN what every connection needs and the DSN (or libpq's
``PG*`` variables) does not already say, and turns a failure into the :class:`~cdc.errors.CdcError`
an operator should see (:func:`cdc.errors.translate`):

* ``connect_timeout`` — a server that accepts TCP and never answers would otherwise hang a
  command for minutes: :data:`DEFAULT_CONNECT_TIMEOUT_S` unless the DSN or ``PGCONNECT_TIMEOUT``
  sets one (``connect_timeout_s`` in the settings, ``CDC_CONNECT_TIMEOUT_S``);
* ``application_name`` ``cdc <purpose>`` (``cdc watch cdc_events``, ``cdc watch cdc_events: store``,
  ``cdc tail``, …) as libpq's ``fallback_application_name``, so that the DSN's own
  ``application_name`` or ``PGAPPNAME`` wins: operators tell the connections apart in
  ``pg_stat_activity`` and ``pg_stat_replication``;
* ``statement_timeout`` on a *bounded* connection — the watcher's own tables, the preflight
  queries, setup and teardown: a held lock or a stuck server ends the command with a clear,
  retryable error instead of a silent wait. :data:`DEFAULT_STATEMENT_TIMEOUT_S` unless set
  (``statement_timeout_s``, ``CDC_STATEMENT_TIMEOUT_S``); a ``-c statement_timeout=…`` in the
  DSN's ``options`` comes later on the server's command line and wins. Replication connections
  and the snapshot copies of ``cdc setup`` are not bounded (their waits are the stream's, or
  as long as the tables are big);
* for a replication connection, ``replication=database`` and the session settings that pin the
  text form of the values the walsender sends (:data:`SESSION_OPTIONS`, which win over the DSN's).

The CLI sets the two timeouts once per command from its settings (:func:`set_defaults`, like
:func:`socket.setdefaulttimeout`); library callers get the defaults.
"""

from __future__ import annotations

import os
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import translate

#: Seconds a connection attempt may take when neither the DSN nor PGCONNECT_TIMEOUT says.
DEFAULT_CONNECT_TIMEOUT_S: Final = 10

#: Seconds a statement on a bounded connection may take.
DEFAULT_STATEMENT_TIMEOUT_S: Final = 60.0

#: Session settings that pin the text form of values sent by the walsender.
SESSION_OPTIONS: Final = "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=3"

_connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S
_statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S


def set_defaults(*, connect_timeout_s: int, statement_timeout_s: float) -> None:
    """The timeouts of every later connection (see the module's docstring)."""
    global _connect_timeout_s, _statement_timeout_s
    _connect_timeout_s = connect_timeout_s
    _statement_timeout_s = statement_timeout_s


def conninfo(dsn: str, *, purpose: str, replication: bool = False, bounded: bool = False) -> str:
    """The connection string :func:`connect` opens: ``dsn`` with the defaults it lacks."""
    params = conninfo_to_dict(dsn)
    extra: dict[str, Any] = {"fallback_application_name": f"cdc {purpose}"}
    if params.get("connect_timeout") is None and not os.environ.get("PGCONNECT_TIMEOUT"):
        extra["connect_timeout"] = str(_connect_timeout_s)
    # libpq reads PGOPTIONS only when the DSN has no options: setting ours must keep them.
    own = str(params.get("options") or os.environ.get("PGOPTIONS") or "")
    first = f"-c statement_timeout={round(_statement_timeout_s * 1000)}" if bounded else ""
    last = SESSION_OPTIONS if replication else ""
    options = " ".join(filter(None, [first, own, last]))
    if options:
        extra["options"] = options
    if replication:
        extra["replication"] = "database"
    return make_conninfo(dsn, **extra)


def connect(
    dsn: str,
    *,
    purpose: str,
    replication: bool = False,
    bounded: bool = False,
    autocommit: bool = True,
    slot: str | None = None,
) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection for ``purpose`` (its application name after ``cdc``); ``bounded``: with the
    statement timeout. Any failure is raised as the CdcError :func:`~cdc.errors.translate`
    gives (``slot`` names the slot in it)."""
    try:
        return psycopg.connect(
            conninfo(dsn, purpose=purpose, replication=replication, bounded=bounded),
            autocommit=autocommit,
            prepare_threshold=None if replication else 5,  # no prepared statements on a walsender
        )
    except psycopg.Error as exc:
        raise translate(exc, slot=slot, connecting=True) from exc
