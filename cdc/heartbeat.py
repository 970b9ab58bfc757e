"""The watcher's heartbeat: a transactional logical message emitted every few seconds.

``pg_logical_emit_message(true, 'cdc.heartbeat', <send time>)`` commits a transaction of its own
into the WAL. When it comes back through the stream, every transaction that committed before it
has been received, so its commit time is a safe watermark for the timers (DESIGN §4) even
when no watched table changes. An apscheduler background job emits it every ``interval``
seconds, and once more just after the next timer's due time (:meth:`Heartbeat.wake_at`), so a
deadline that passes on a quiet database fires promptly. It emits on a connection of the
watcher's pool (:class:`cdc.connect.Pool`) when given one, else on a connection of its own. A
failed emission is logged and retried at the next tick: the replication loop notices a dead
server on its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from apscheduler.jobstores.base import JobLookupError

from . import queries
from .connect import Pool, connect
from .errors import CdcError, translate

log = logging.getLogger("cdc.heartbeat")

#: The logical message prefix of the heartbeat (transactional messages of other prefixes are
#: the application's own).
HEARTBEAT_PREFIX = "cdc.heartbeat"


class Heartbeat:
    """Emits the watcher's transactional heartbeat message from a background scheduler."""

    def __init__(
        self, dsn: str, interval: float, purpose: str = "heartbeat", pool: Pool | None = None
    ) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.pool = pool
        self.dsn = dsn
        self.interval = interval
        self.purpose = purpose
        self._conn: psycopg.Connection[Any] | None = None
        self._scheduler = BackgroundScheduler(daemon=True)
        self._wake_at: datetime | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def emit(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._emit()

    def _emit(self) -> None:
        emit, params = queries.raw("heartbeat", "emit"), {"prefix": HEARTBEAT_PREFIX}
        if self.pool is not None:
            try:
                with self.pool.connection() as conn:
                    conn.execute(emit, params)
            except (psycopg.Error, CdcError) as exc:  # the loop notices a dead server on its own
                log.warning("heartbeat failed (the next one tries again): %s", translate(exc))
            return
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.dsn, purpose=self.purpose, bounded=True)
            self._conn.execute(emit, params)
        except (psycopg.Error, CdcError) as exc:  # the loop notices a dead server on its own
            log.warning("heartbeat failed (the next one connects again): %s", translate(exc))
            self._conn = None

    def start(self) -> None:
        self._scheduler.add_job(self.emit, "interval", seconds=self.interval, id="heartbeat")
        self._scheduler.start()

    def set_interval(self, interval: float) -> None:
        """A new period (a configuration reload); the next beat is one new period from now."""
        self.interval = interval
        if self._scheduler.running:
            self._scheduler.reschedule_job("heartbeat", trigger="interval", seconds=interval)

    def wake_at(self, due: datetime | None) -> None:
        """One extra heartbeat just after the next timer's due time, so it fires promptly."""
        if due == self._wake_at:
            return
        self._wake_at = due
        if due is None:
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job("timer-wake")
            return
        run_at = max(due + timedelta(milliseconds=50), datetime.now(UTC))
        self._scheduler.add_job(self.emit, "date", run_date=run_at, id="timer-wake", replace_existing=True)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._conn is not None:
                self._conn.close()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
