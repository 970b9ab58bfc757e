"""Slot health before and while streaming (issue 14 item 2): :func:`classify` and :class:`SlotMonitor`.

:func:`classify` is pure: one row of ``pg_replication_slots`` (as :func:`read_slot` reads it,
``to_jsonb`` of the whole row, so that the columns of newer servers come along where they exist)
and the database the watcher connects to give ``ok``, a ``warning`` (a line with the number
that matters) or a ``stop`` (a :class:`~cdc.errors.CdcError` with a one-line cause and hint):

* ``wal_status`` ``reserved``: ok. ``extended`` (the slot holds more than ``max_wal_size``,
  within ``max_slot_wal_keep_size``) and ``unreserved`` (the server may remove WAL the slot
  needs at the next checkpoint): a warning with ``safe_wal_size`` in MB — how much more WAL the
  server may write before the slot is lost (``unlimited`` when the server reports none, i.e. no
  ``max_slot_wal_keep_size``). ``lost``, or a PG 17 ``invalidation_reason`` / PG 16
  ``conflicting`` (a slot invalidated on a standby): stop, :class:`~cdc.errors.SlotInvalidated`,
  whose hint is ``cdc setup --recreate-slot``;
* a slot of another database: stop, :class:`~cdc.errors.SlotOfAnotherDatabase`;
* ``active_pid``: at start, a slot some process already streams from is a stop
  (:class:`~cdc.errors.SlotInUse`, retryable: the server would refuse it anyway); while
  streaming the pid is the watcher's own walsender and is not judged.

At start :func:`cdc.startup.start` classifies once: a stop ends the start, a warning is one log
line. While streaming, :class:`SlotMonitor` re-reads the slot at most every
:data:`CHECK_INTERVAL_S` seconds in a thread of its own on a short connection of its own (or,
with ``--metrics-addr``, takes the row the metrics poller reads every 5 s, so that there is one
poll, not two), logs a warning once per change of state (``reserved`` → ``extended`` →
``unreserved``, and back to ok: one line each, never one per poll), and keeps a stop for the
watcher's loop, which delivers what it has and then ends with it (exit 1).

A slot invalidated while a walsender streams from it: the server's checkpointer ends that
walsender before it marks the slot lost, so the watcher usually sees the connection end first
(connection lost); the next start — or a reconnect through the start's preflight — then stops
with the ``--recreate-slot`` hint. A failed read of the slot while streaming is not a verdict:
the monitor says nothing and tries again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import psycopg

from . import queries
from .errors import CdcError, SlotInUse, SlotInvalidated, SlotOfAnotherDatabase

log = logging.getLogger("cdc.watch")

#: How often the slot is read while streaming (the metrics poller, when on, reads more often).
CHECK_INTERVAL_S: Final = 10.0
MB: Final = 1024 * 1024


@dataclass(frozen=True)
class Health:
    level: Literal["ok", "warning", "stop"]
    state: str  # what changes of state are judged by: wal_status, "invalidated", "foreign", "in use"
    text: str = ""
    error: CdcError | None = None


def _mb(size: Any) -> str:
    if size is None:
        return "unlimited"
    return f"{int(size) / MB:.1f} MB"


def classify(slot: str, row: Mapping[str, Any], database: str, *, at_start: bool) -> Health:
    """Judge one ``pg_replication_slots`` row (see the module docstring)."""
    owner = row.get("database")
    if owner is not None and owner != database:
        return Health(
            "stop",
            "foreign",
            error=SlotOfAnotherDatabase(
                f"replication slot {slot} belongs to database {owner}, not {database}"
            ),
        )
    status = row.get("wal_status")
    reason = row.get("invalidation_reason") or ("conflicting" if row.get("conflicting") else None)
    if status == "lost" or reason is not None:
        why = f"wal_status {status}" if status == "lost" else f"invalidation_reason {reason}"
        return Health(
            "stop", "invalidated", error=SlotInvalidated(f"replication slot {slot} was invalidated ({why})")
        )
    if at_start and row.get("active_pid") is not None:
        return Health(
            "stop",
            "in use",
            error=SlotInUse(
                f"replication slot {slot} is active in another process (pid {row['active_pid']})"
            ),
        )
    safe = row.get("safe_wal_size")
    if status == "extended":
        return Health(
            "warning",
            status,
            f"replication slot {slot} retains more WAL than max_wal_size (wal_status extended): "
            f"{_mb(safe)} more WAL before the server may invalidate it",
        )
    if status == "unreserved":
        return Health(
            "warning",
            status,
            f"replication slot {slot} is about to lose WAL it needs (wal_status unreserved): "
            f"{_mb(safe)} safe WAL left; the next checkpoint may invalidate it",
        )
    return Health("ok", str(status))


def read_slot(conn: psycopg.Connection[Any], slot: str) -> tuple[dict[str, Any], str] | None:
    """The slot's row and the database ``conn`` is connected to; None: no such slot."""
    found = conn.execute(queries.raw("lag", "slot_row"), {"slot": slot}).fetchone()
    return None if found is None else (dict(found[0]), str(found[1]))


def invalidated(dsn: str, slot: str) -> CdcError | None:
    """After the stream was lost: the slot's invalidation, if that is why (the server ends an
    invalidated slot's walsender before anyone can read ``lost``); None when the slot is fine or
    cannot be read (then the lost connection is the error to report)."""
    from .connect import connect

    try:
        with connect(dsn, purpose=f"watch {slot}: slot health", bounded=True) as conn:
            found = read_slot(conn, slot)
    except Exception:
        return None
    if found is None:
        return None
    health = classify(slot, found[0], found[1], at_start=False)
    return health.error if health.state == "invalidated" else None


class SlotMonitor:
    """The periodic check while streaming (module docstring). :meth:`observe` judges one row
    (from its own thread, or the metrics poller's); :attr:`failure` is the stop to act on."""

    def __init__(self, dsn: str, slot: str, interval: float = CHECK_INTERVAL_S) -> None:
        self.dsn, self.slot, self.interval = dsn, slot, interval
        self.failure: CdcError | None = None
        self.state = "reserved"  # the start has judged and said its own line already
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def observe(self, row: Mapping[str, Any], database: str) -> None:
        health = classify(self.slot, row, database, at_start=False)
        if health.state == self.state:
            return
        self.state = health.state
        if health.level == "stop":
            self.failure = health.error
            log.error("slot health: %s; stopping after the current batch", health.error)
        elif health.level == "warning":
            log.warning("slot health: %s", health.text)
        else:
            log.info("slot health: replication slot %s is back to wal_status %s", self.slot, health.state)

    def start(self) -> None:
        """Poll in a daemon thread of its own (not needed when the metrics poller feeds us)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="cdc-slot-health", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        from .connect import connect

        while not self._stop.wait(self.interval):
            try:
                with connect(self.dsn, purpose=f"watch {self.slot}: slot health", bounded=True) as conn:
                    found = read_slot(conn, self.slot)
            except Exception as exc:  # a failed read is no verdict: the stream's own errors say more
                log.debug("could not read replication slot %s: %s", self.slot, exc)
                continue
            if found is not None:
                with contextlib.suppress(Exception):
                    self.observe(*found)
