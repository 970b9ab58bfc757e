"""``cdc watch --metrics-addr HOST:PORT``: Prometheus metrics, ``/healthz`` and ``/readyz``.

One :class:`Metrics` per watcher, over a registry of its own (never prometheus-client's global
one), served with the health endpoints on one port by :func:`serve` (a daemon thread; the
watcher's loop never waits for a scrape). The figures, all prefixed ``cdc_`` with their unit:

* ``cdc_replication_lag_bytes`` (current WAL − the slot's confirmed flush LSN),
  ``cdc_retained_wal_bytes`` (current WAL − restart LSN) and ``cdc_slot_wal_status`` (a state
  gauge: reserved, extended, unreserved, lost, or unknown while the slot cannot be read): one
  short query of ``pg_replication_slots`` every ``poll_interval`` seconds (5 by default) on a
  connection of its own to the watched database, in a background thread — never per transaction;
  the same poll hands the slot's row to :mod:`cdc.slot_health`'s monitor every 10 s;
* ``cdc_source_lag_seconds``: when the watcher's own heartbeat message (:mod:`cdc.heartbeat`,
  which carries the server's ``now()`` when it was sent) comes back through the stream, the
  watcher's clock at receipt minus that send time (the commit time when the text cannot be
  read). It moves with each heartbeat (every ``heartbeat_interval_s``); the server's and the
  watcher's clocks are compared, so skew between the hosts shows in it (never below 0);
* ``cdc_commit_to_delivered_seconds`` (histogram): one observation per delivered source
  transaction that produced at least one event (timer events count with the transaction whose
  arrival fired them): from its commit time to the moment its batch was durable;
* ``cdc_transactions_total``, ``cdc_changes_total{table,op}`` (the row changes as the server
  sent them, before folding; ``op`` insert, update, delete or truncate),
  ``cdc_events_total{type}`` and ``cdc_dead_letters_total``: added once per delivered batch,
  from counts the watcher keeps anyway — nothing is counted per event in prometheus-client
  (the changes are tallied per processed transaction in a plain dict; a transaction spilled to
  disk, past ``spill_changes``, is read once more for it);
* ``cdc_sink_errors_total`` (failed attempts) and ``cdc_sink_retries_total`` (attempts retried)
  and ``cdc_sink_healthy``, read at scrape time from the retrying sink's
  :class:`~cdc.sinks.retry.SinkHealth` (the Redis and NATS sinks; the outbox and the JSON-lines
  file have no retries: their failures stop the watcher, so these stay 0 and 1);
* ``cdc_timers_pending`` (armed timers) and ``cdc_timers_overdue`` (armed timers whose due
  time has passed by the watcher's clock: they fire when the stream's watermark reaches it),
  counted with a delivered batch at most once a second (the heartbeat delivers one every
  ``heartbeat_interval_s`` on a quiet database);
* ``cdc_stream_connected`` (1 while the replication stream is open; 0 while the watcher
  reconnects) and ``cdc_standby_role`` (a state gauge: ``active`` for the watcher that holds the
  slot's lock or is getting it, ``standby`` while it waits for another one, :mod:`cdc.standby`).

``/healthz`` answers 200 or 503 with a JSON body ``{"status", "reasons", …}``; it is unhealthy
(:func:`assess`) when the stream has been disconnected (or not yet connected) for longer than
``health_grace_s`` — a standby waiting for the lock is not disconnected, it is healthy —, when
the sink has kept failing for longer than ``health_grace_s``, or when the replication lag passes
``health_max_lag_bytes`` (when set). ``/readyz`` is the same and also 503 while the stream is not
connected at all (starting, reconnecting, or a standby). The slot poll lives as long as the
watcher, across its reconnects (it reconnects on its own), on a connection of its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import queries
from .config import DEFAULT_HEALTH_GRACE_S, parse_addr
from .errors import ConfigError
from .heartbeat import HEARTBEAT_PREFIX

if TYPE_CHECKING:
    import psycopg

    from .assembler import Transaction
    from .batch import Delivered
    from .sinks.retry import SinkHealth
    from .timers import TimerStore

log = logging.getLogger("cdc.metrics")

WAL_STATES: Final = ("reserved", "extended", "unreserved", "lost", "unknown")
ROLES: Final = ("active", "standby")
#: Seconds, from a few milliseconds (an idle outbox) to minutes (a watcher catching up).
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DEFAULT_POLL_INTERVAL_S: Final = 5.0
#: Timers are counted with a delivered batch at most this often (a walk over every timer).
TIMERS_REFRESH_S: Final = 1.0


def heartbeat_sent(content: bytes) -> datetime | None:
    """The send time a heartbeat message carries (the server's ``now()::text``), or None."""
    try:
        sent = datetime.fromisoformat(content.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return sent if sent.tzinfo is not None else None


@dataclass(frozen=True)
class HealthLimits:
    grace_s: float = DEFAULT_HEALTH_GRACE_S
    max_lag_bytes: int | None = None


def assess(
    *,
    now: float,
    connected: bool,
    disconnected_since: float,
    sink: SinkHealth | None,
    sink_failing_for: float | None,
    lag_bytes: int | None,
    limits: HealthLimits,
    standby: bool = False,
) -> list[str]:
    """Why the watcher is unhealthy (empty: healthy). ``now`` and ``disconnected_since`` are
    monotonic seconds; ``sink_failing_for`` how long the sink has been failing (None: it is not);
    ``standby``: waiting for the lock, which is no disconnection."""
    reasons: list[str] = []
    if not connected and not standby and now - disconnected_since > limits.grace_s:
        reasons.append(
            f"replication stream disconnected for {now - disconnected_since:.0f} s "
            f"(grace {limits.grace_s:g} s)"
        )
    failing_for = sink_failing_for if sink is not None and not sink.healthy else None
    if sink is not None and failing_for is not None and failing_for > limits.grace_s:
        reasons.append(
            f"sink failing for {failing_for:.0f} s ({sink.consecutive_failures} attempts): {sink.last_error}"
        )
    if limits.max_lag_bytes is not None and lag_bytes is not None and lag_bytes > limits.max_lag_bytes:
        reasons.append(f"replication lag {lag_bytes} bytes over {limits.max_lag_bytes}")
    return reasons


class _SinkCollector(Collector):
    """The sink's counters as :class:`SinkHealth` has them at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        h = self.metrics.sink_health
        errors = CounterMetricFamily("cdc_sink_errors", "Failed sink write attempts.")
        errors.add_metric([], h.errors_total if h is not None else 0)
        retries = CounterMetricFamily("cdc_sink_retries", "Sink write attempts retried after a failure.")
        retries.add_metric([], h.retries_total if h is not None else 0)
        healthy = GaugeMetricFamily("cdc_sink_healthy", "1 when the sink's last attempt succeeded.")
        healthy.add_metric([], 1 if h is None or h.healthy else 0)
        yield from (errors, retries, healthy)


class Metrics:
    """The watcher's metrics and health (see the module docstring)."""

    def __init__(
        self,
        limits: HealthLimits | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or HealthLimits()
        self.poll_interval = poll_interval
        self._clock = clock
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series (process-wide)
        r = self.registry = CollectorRegistry(auto_describe=False)
        self.lag_bytes = Gauge(
            "cdc_replication_lag_bytes", "Current WAL minus the slot's confirmed flush LSN.", registry=r
        )
        self.retained_bytes = Gauge(
            "cdc_retained_wal_bytes", "Current WAL minus the slot's restart LSN.", registry=r
        )
        self.wal_status = Enum(
            "cdc_slot_wal_status", "The slot's wal_status.", states=list(WAL_STATES), registry=r
        )
        self.source_lag = Gauge(
            "cdc_source_lag_seconds", "Receipt minus send time of the last heartbeat message.", registry=r
        )
        self.latency = Histogram(
            "cdc_commit_to_delivered_seconds",
            "From a source transaction's commit to its events being durable in the sink.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.transactions = Counter("cdc_transactions", "Source transactions delivered.", registry=r)
        self.changes = Counter(
            "cdc_changes", "Row changes delivered, by table and op.", ["table", "op"], registry=r
        )
        self.events = Counter("cdc_events", "Events delivered, by type.", ["type"], registry=r)
        self.dead_letters = Counter("cdc_dead_letters", "Drafts set aside as dead letters.", registry=r)
        self.timers_pending = Gauge("cdc_timers_pending", "Armed timers.", registry=r)
        self.timers_overdue = Gauge("cdc_timers_overdue", "Armed timers past their due time.", registry=r)
        self.connected = Gauge("cdc_stream_connected", "1 while the replication stream is open.", registry=r)
        self.role = Enum("cdc_standby_role", "Active or standby.", states=list(ROLES), registry=r)
        self.role.state("active")
        self.is_standby = False
        self.wal_status.state("unknown")
        r.register(_SinkCollector(self))
        self.sink_health: SinkHealth | None = None
        self.is_connected = False
        self.disconnected_since = clock()
        self.last_lag_bytes: int | None = None
        self._changes: dict[tuple[str, str], int] = {}
        self._seen: tuple[int, int, dict[str, int]] = (0, 0, {})  # transactions, dead letters, by type
        self._timers_at = float("-inf")
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        #: Given the slot's whole row every CHECK_INTERVAL_S by the poll (cdc.slot_health: one
        #: poll feeds both).
        self.slot_observer: Callable[[dict[str, Any], str], None] | None = None

    # -- state ---------------------------------------------------------------------------------
    def set_connected(self, connected: bool) -> None:
        """The stream is open (True) or lost (False; health counts the grace from now)."""
        if connected != self.is_connected and not connected:
            self.disconnected_since = self._clock()
        self.is_connected = connected
        self.connected.set(1 if connected else 0)

    def set_role(self, standby: bool) -> None:
        """Waiting for the lock (True) or holding it; the grace of a disconnection starts when
        a standby becomes active."""
        if self.is_standby and not standby:
            self.disconnected_since = self._clock()
        self.is_standby = standby
        self.role.state("standby" if standby else "active")

    def disconnected(self) -> None:
        """The stream was lost (the watcher reconnects): the changes counted of transactions
        that were not delivered are forgotten — they come again from the checkpoint."""
        self.set_connected(False)
        self._changes.clear()

    def streaming(self, dsn: str, slot: str, sink_health: SinkHealth | None) -> None:
        """The stream started: the slot poll begins."""
        self.sink_health = sink_health
        self.set_connected(True)
        if self._poller is None:
            self._stop.clear()
            self._poller = threading.Thread(
                target=self._poll_loop, args=(dsn, slot), name="cdc-metrics-slot", daemon=True
            )
            self._poller.start()

    def stopped(self) -> None:
        self.set_connected(False)
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
            self._poller = None

    # -- the watcher's hooks (main thread) -------------------------------------------------------
    def transaction(self, tx: Transaction) -> None:
        """Count a processed transaction's changes (added to the counters at delivery) and take
        the source lag from a heartbeat it carries."""
        counts = self._changes
        for change in tx.changes:
            key = (change.table, change.op)
            counts[key] = counts.get(key, 0) + 1
        for msg in tx.messages:
            if msg.prefix == HEARTBEAT_PREFIX:
                sent = heartbeat_sent(msg.content) or tx.commit_time
                self.source_lag.set(max(0.0, time.time() - sent.timestamp()))

    def take_changes(self) -> dict[tuple[str, str], int]:
        """The changes counted since the last take: those of a batch being sent (added to the
        counters once it is durable, :meth:`delivered`)."""
        changes, self._changes = self._changes, {}
        return changes

    def delivered(
        self, delivered: Delivered, stats: Any, timers: TimerStore, changes: Mapping[tuple[str, str], int]
    ) -> None:
        """A batch is durable: add what it carried to the counters (``stats``: the watcher's
        WatchStats as of the batch's end, totals since start; ``changes``: :meth:`take_changes`
        when it was sent)."""
        now = delivered.durable_at or time.time()
        observe = self.latency.observe
        for commit_time in delivered.commit_times:
            observe(max(0.0, now - commit_time.timestamp()))
        transactions, dead, by_type = self._seen
        self.transactions.inc(stats.transactions - transactions)
        if stats.dead_letters != dead:
            self.dead_letters.inc(stats.dead_letters - dead)
        for event_type, n in stats.by_type.items():
            if n != by_type.get(event_type, 0):
                self.events.labels(event_type).inc(n - by_type.get(event_type, 0))
        self._seen = (stats.transactions, stats.dead_letters, dict(stats.by_type))
        for (table, op), n in changes.items():
            self.changes.labels(table, op).inc(n)
        if self._clock() - self._timers_at >= TIMERS_REFRESH_S:
            self.count_timers(timers)

    def count_timers(self, timers: TimerStore) -> None:
        self._timers_at = self._clock()
        now = datetime.now(UTC)
        armed = [t.due_at for t in timers.timers.values() if t.state == "armed"]
        self.timers_pending.set(len(armed))
        self.timers_overdue.set(sum(1 for due in armed if due <= now))

    # -- the slot poll (its own thread and connection) -----------------------------------------
    def _poll_loop(self, dsn: str, slot: str) -> None:
        from .connect import connect
        from .slot_health import CHECK_INTERVAL_S, read_slot

        conn: psycopg.Connection[Any] | None = None
        warned = False
        judged_at = float("-inf")
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = connect(dsn, purpose=f"metrics {slot}", bounded=True)
                row = conn.execute(queries.raw("lag", "slot_position"), {"slot": slot}).fetchone()
                self.slot_read(None if row is None else (row[6], row[7], row[8]))
                observer = self.slot_observer
                if observer is not None and time.monotonic() - judged_at >= CHECK_INTERVAL_S:
                    judged_at = time.monotonic()
                    found = read_slot(conn, slot)
                    if found is not None:
                        observer(*found)
                warned = False
            except Exception as exc:  # the poll never ends the thread: a warning, then retries
                if not warned:
                    log.warning(
                        "metrics: cannot read the slot (retrying every %g s): %s", self.poll_interval, exc
                    )
                    warned = True
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                self.slot_read(None)
            self._stop.wait(self.poll_interval)
        if conn is not None:
            conn.close()

    def slot_read(self, row: tuple[int | None, int | None, str | None] | None) -> None:
        """(lag bytes, retained bytes, wal_status) of one poll; None: the slot could not be read."""
        lag, retained, status = row if row is not None else (None, None, None)
        self.last_lag_bytes = lag
        self.lag_bytes.set(float("nan") if lag is None else lag)
        self.retained_bytes.set(float("nan") if retained is None else retained)
        self.wal_status.state(status if status in WAL_STATES else "unknown")

    # -- health ----------------------------------------------------------------------------------
    def health(self) -> tuple[list[str], dict[str, Any]]:
        now = self._clock()
        h = self.sink_health
        failing_for = (
            (datetime.now(UTC) - h.failing_since).total_seconds()
            if h is not None and h.failing_since is not None
            else None
        )
        reasons = assess(
            now=now,
            connected=self.is_connected,
            disconnected_since=self.disconnected_since,
            sink=h,
            sink_failing_for=failing_for,
            lag_bytes=self.last_lag_bytes,
            limits=self.limits,
            standby=self.is_standby,
        )
        detail = {
            "streaming": self.is_connected,
            "role": "standby" if self.is_standby else "active",
            "replicationLagBytes": self.last_lag_bytes,
            "sinkHealthy": h is None or h.healthy,
            "sinkLastError": h.last_error if h is not None else None,
        }
        return reasons, detail

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The WSGI application: ``/metrics``, ``/healthz``, ``/readyz``."""
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            body = generate_latest(self.registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path in ("/healthz", "/readyz"):
            reasons, detail = self.health()
            if path == "/readyz" and self.is_standby:
                reasons = [*reasons, "standby: waiting for the lock of the active watcher"]
            elif path == "/readyz" and not self.is_connected:
                reasons = [*reasons, "replication stream not connected"]
            status = "unhealthy" if reasons else "ok"
            body = orjson.dumps({"status": status, "reasons": reasons, **detail})
            code = "503 Service Unavailable" if reasons else "200 OK"
            start_response(code, [("Content-Type", "application/json")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics, /healthz, /readyz\n"]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(WSGIServer):
    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        threading.Thread(
            target=self._handle, args=(request, client_address), daemon=True, name="cdc-metrics-http"
        ).start()

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # a broken scrape must not reach the watcher
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class Served:
    """The HTTP server of one :class:`Metrics` (a daemon thread); :meth:`close` stops it."""

    def __init__(self, metrics: Metrics, addr: str) -> None:
        host, port = parse_addr(addr)
        try:
            self.server = make_server(host, port, metrics.app, server_class=_Server, handler_class=_Quiet)
        except OSError as exc:
            raise ConfigError(
                f"--metrics-addr {addr}: cannot listen ({exc.strerror or exc})",
                hint="choose a free port and an address of this host",
            ) from None
        self.metrics = metrics
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name="cdc-metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.metrics.stopped()


def serve(addr: str, limits: HealthLimits | None = None) -> Served:
    """Listen on ``addr`` (``HOST:PORT``) for ``/metrics``, ``/healthz`` and ``/readyz``."""
    return Served(Metrics(limits), addr)
