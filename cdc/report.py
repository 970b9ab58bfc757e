"""What the watcher says while it runs (issue 14 item 7): the start line, a progress line every
``progress_interval`` seconds while busy, state changes and the exit summary, in the format of
:mod:`cdc.logs` (text or JSON, passwords masked). One place, so that metrics and health hook in
beside the log lines: the start marks the stream connected in :mod:`cdc.metrics` and starts its
slot poll, the exit marks it disconnected. A watcher that reconnects (:mod:`cdc.watch`) says so:
one warning line per attempt with the cause and the wait (:meth:`Reporter.reconnecting`), and a
``reconnected`` line with the LSN it resumes after once it streams again, instead of a second
start line (:meth:`Reporter.started`); in between the stream counts as disconnected. The slot's
health while streaming (:mod:`cdc.slot_health`) hooks in here too: :meth:`Reporter.started`
starts its monitor (fed by the metrics poller when there is one), and :meth:`Reporter.progress`,
which the loop calls at least once a second, ends the watcher with the monitor's stop after
delivering the batch it has.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict

from . import logs
from .lsn import format_lsn
from .sinks.base import Sink
from .slot_health import SlotMonitor
from .stream import ReplicationStream

log = logging.getLogger("cdc.watch")

#: How often the loop looks at the slot monitor's verdict (the monitor reads the slot less often).
SLOT_CHECK_S = 1.0


class Watched(Protocol):
    """What the reporter reads of the watcher (``cdc.watch.Watcher``)."""

    opts: Any  # WatchOptions: slot, publication, schema, dsn, sink_label, progress_interval
    stats: Any  # WatchStats: transactions, changes, events, timers_fired, dead_letters
    checkpoint: int
    stream: ReplicationStream | None
    sink: Sink
    delivery: Any  # cdc.batch.Delivery: pending

    def deliver(self, *, caught_up: bool) -> None: ...


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, without its password (or anything but host, port, database, user)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable)"
    keys = ("host", "port", "dbname", "user")
    shown = " ".join(f"{k}={params[k]}" for k in keys if params.get(k))
    return shown or "(from the PG* variables)"


class Reporter:
    """The one place the watcher says what it does: the start line, progress while busy, state
    changes and the exit summary (see the module doc), and the stream's state for the metrics."""

    def __init__(self, watcher: Watched) -> None:
        self.watcher = watcher
        self.interval = watcher.opts.progress_interval
        self.progress_at = float("inf")  # until the stream starts
        self.slot_check_at = float("inf")
        self.has_started = False
        self._t0 = time.monotonic()
        self._last: tuple[float, int, int, int] = (0.0, 0, 0, 0)
        self.slot_monitor: SlotMonitor | None = None

    @property
    def next_at(self) -> float:
        """When the loop calls :meth:`progress` next: the progress line or a look at the slot."""
        return min(self.progress_at, self.slot_check_at)

    @next_at.setter
    def next_at(self, value: float) -> None:  # the progress line's (a reload shortens it)
        self.progress_at = value

    def _common(self) -> dict[str, Any]:
        w = self.watcher
        return {"slot": w.opts.slot, "lsn": format_lsn(w.checkpoint)}

    def lag_bytes(self) -> int | None:
        stream = self.watcher.stream
        if stream is None:
            return None
        server = max(stream.server_wal_end, stream.position.write)
        return max(0, server - self.watcher.checkpoint) if server else None

    def started(self) -> None:
        from importlib.metadata import version

        w, opts = self.watcher, self.watcher.opts
        now = time.monotonic()
        again, self.has_started = self.has_started, True
        self.progress_at, self.slot_check_at = now + self.interval, now + SLOT_CHECK_S
        monitor = self.slot_monitor = SlotMonitor(opts.dsn, opts.slot)
        if w.opts.metrics is not None:  # streaming: the stream gauge, the slot poll, the sink's health
            w.opts.metrics.slot_observer = monitor.observe  # one slot poll feeds both
            w.opts.metrics.streaming(opts.dsn, opts.slot, getattr(w.sink, "health", None))
        else:
            monitor.start()
        stats = w.stats
        self._last = (now, stats.transactions, stats.changes, stats.events)
        if again:
            self.state(
                f"reconnected: streaming slot {opts.slot} again, resuming after {format_lsn(w.checkpoint)}",
                reconnected=True,
            )
            return
        sink = w.opts.sink_label or getattr(w.sink, "name", type(w.sink).__name__)
        database = describe_dsn(opts.dsn)
        log.info(
            "watch started: cdc %s, slot %s, publication %s, sink %s, database %s, resuming %s",
            version("alga-cdc"),
            opts.slot,
            opts.publication,
            sink,
            database,
            f"after {format_lsn(w.checkpoint)}"
            if w.checkpoint
            else "at the slot's position (no checkpoint yet)",
            extra=logs.fields(
                **self._common(),
                version=version("alga-cdc"),
                publication=opts.publication,
                sink=sink,
                database=database,
                schema=opts.schema,
            ),
        )

    def progress(self) -> None:
        """Called by the loop once :attr:`next_at` has passed: a stop from the slot monitor
        (deliver what is pending, then raise it); a progress line when it is due and anything
        arrived since the last one (the next is due in ``interval`` seconds either way)."""
        now = time.monotonic()
        monitor = self.slot_monitor
        if monitor is not None and monitor.failure is not None:
            if self.watcher.delivery.pending:
                self.watcher.deliver(caught_up=False)
            raise monitor.failure
        self.slot_check_at = now + SLOT_CHECK_S
        if now < self.progress_at:
            return
        self.progress_at = now + self.interval
        stats = self.watcher.stats
        t, transactions, changes, events = self._last
        if stats.transactions == transactions:
            return
        self._last = (now, stats.transactions, stats.changes, stats.events)
        d_tx, d_ch, d_ev = stats.transactions - transactions, stats.changes - changes, stats.events - events
        rate = d_ev / (now - t) if now > t else 0.0
        lag = self.lag_bytes()
        log.info(
            "progress: %d transactions, %d changes, %d events (%.1f events/s) in %.1f s; "
            "lag %s bytes; checkpoint %s",
            d_tx,
            d_ch,
            d_ev,
            rate,
            now - t,
            "?" if lag is None else lag,
            format_lsn(self.watcher.checkpoint),
            extra=logs.fields(
                **self._common(),
                transactions=d_tx,
                changes=d_ch,
                events=d_ev,
                events_per_s=round(rate, 1),
                lag_bytes=lag,
                seconds=round(now - t, 3),
                totals={"transactions": stats.transactions, "changes": stats.changes, "events": stats.events},
            ),
        )

    def state(self, message: str, level: int = logging.INFO, **values: Any) -> None:
        """A change of state (stopping, reloaded, reconnecting, standby, …)."""
        log.log(level, message, extra=logs.fields(**self._common(), **values))

    def disconnected(self) -> None:
        """The stream is gone (the watcher is about to reconnect, or ends): the slot monitor
        stops. (The metrics hear of it from the watcher's reconnect, or its end.)"""
        if self.slot_monitor is not None:
            self.slot_monitor.stop()
            self.slot_monitor = None
        self.slot_check_at = float("inf")

    def reconnecting(self, cause: str, wait: float, attempt: int) -> None:
        """One line per reconnect attempt: the cause and the wait before it."""
        self.state(
            f"reconnecting in {wait:.1f} s (attempt {attempt}): {cause}",
            logging.WARNING,
            attempt=attempt,
            wait_s=round(wait, 3),
            cause=cause,
        )

    def finished(self, reason: str) -> None:
        stats = self.watcher.stats
        if self.watcher.opts.metrics is not None:
            self.watcher.opts.metrics.stopped()
        if self.slot_monitor is not None:
            self.slot_monitor.stop()
        seconds = time.monotonic() - self._t0
        log.info(
            "delivered %d events from %d transactions (%d timers fired, %d dead letters) "
            "in %.1f s; checkpoint %s; %s",
            stats.events,
            stats.transactions,
            stats.timers_fired,
            stats.dead_letters,
            seconds,
            format_lsn(self.watcher.checkpoint),
            reason,
            extra=logs.plain(
                **self._common(),
                transactions=stats.transactions,
                changes=stats.changes,
                events=stats.events,
                timers_fired=stats.timers_fired,
                dead_letters=stats.dead_letters,
                seconds=round(seconds, 3),
                reason=reason,
            ),
        )
