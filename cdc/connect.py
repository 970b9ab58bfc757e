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

:class:`Pool` is a small ``psycopg-pool`` pool of bounded connections to one database, for the
short statements a long-running command keeps making on the side (``cdc watch``: its heartbeat,
the catalog reads a Relation message or ``--once`` needs, the slot look-ups of a reconnect and of
a standby's take-over). A connection the pool cannot open is opened once more directly, so the
error an operator reads is the server's own, translated like any other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from .errors import translate

#: Seconds a connection attempt may take when neither the DSN nor PGCONNECT_TIMEOUT says.
DEFAULT_CONNECT_TIMEOUT_S: Final = 10

#: Seconds a statement on a bounded connection may take.
DEFAULT_STATEMENT_TIMEOUT_S: Final = 60.0

#: Session settings that pin the text form of values sent by the walsender.
SESSION_OPTIONS: Final = "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=3"

#: Seconds :meth:`Pool.connection` waits for the pool before it connects directly (which then
#: waits the whole connect timeout and says why it failed).
POOL_WAIT_S: Final = 2.0
#: Connections of a watcher's pool: the heartbeat, catalog reads and a take-over's look-ups at once.
POOL_SIZE: Final = 3

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


class Pool:
    """Up to :data:`POOL_SIZE` bounded autocommit connections to ``dsn`` for ``purpose``, opened on
    demand and checked before each use (a server restart leaves dead ones behind)."""

    def __init__(self, dsn: str, *, purpose: str, slot: str | None = None) -> None:
        self.dsn, self.purpose, self.slot = dsn, purpose, slot
        # psycopg-pool logs each failed attempt of its workers; what failed is ours to report.
        logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            conninfo(dsn, purpose=purpose, bounded=True),
            kwargs={"autocommit": True, "prepare_threshold": 5},
            min_size=0,
            max_size=POOL_SIZE,
            open=True,
            check=ConnectionPool.check_connection,
            name=f"cdc {purpose}",
            timeout=_connect_timeout_s,
            reconnect_timeout=_connect_timeout_s,
        )

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A connection of the pool for the ``with`` block; any failure to get one is raised as
        the CdcError :func:`connect` gives for it."""
        try:
            conn = self._pool.getconn(timeout=min(POOL_WAIT_S, _connect_timeout_s))
        except PoolTimeout:
            # the pool could not open one: once more directly, for the server's own reason
            with connect(self.dsn, purpose=self.purpose, bounded=True, slot=self.slot) as direct:
                yield direct
            return
        try:
            yield conn
        finally:
            self._pool.putconn(conn)

    def close(self) -> None:
        self._pool.close(timeout=1.0)
