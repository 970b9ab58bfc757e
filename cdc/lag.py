"""``cdc lag``: how far the watcher of a slot is behind, read from the server alone.

No daemon port is needed: one bounded connection reads ``pg_replication_slots``,
``pg_current_wal_lsn()``, the watcher's checkpoint row (``<schema>.checkpoints``), its outbox
and ``pg_stat_activity`` (the queries are in ``sql/lag.sql``). The figures:

* **replication lag bytes** — ``pg_current_wal_lsn() − confirmed_flush_lsn``: WAL the server
  has written that the watcher has not confirmed (``--max-lag-bytes`` compares this one);
* **retained WAL bytes** — ``pg_current_wal_lsn() − restart_lsn``: what the slot keeps on disk
  (none for a lost slot); ``wal_status`` and ``safe_wal_size`` as the server reports them;
* **source lag seconds** — when WAL is pending (the current position is past both the
  confirmed flush position and the checkpoint), the server's ``now()`` minus the commit time of
  the last delivered transaction (the checkpoint row's ``commit_time``); 0 when nothing is
  pending; unknown (null) when WAL is pending and there is no checkpoint row in this database.
  Every transaction committed after the checkpoint has waited at most that long, so the figure
  is an upper bound of the true delay. A running watcher delivers its own heartbeat
  transaction (:mod:`cdc.heartbeat`) every ``heartbeat_interval_s``, and its own checkpoint
  writes are WAL too, so on a quiet database a healthy watcher reads up to about one heartbeat
  interval (5 s by default): that is the resolution, and thresholds should sit above it. A
  stopped watcher reads the time since its last delivery as soon as anything is written;
* **last delivered commit time** and the checkpoint LSN, from the checkpoint row;
* **events in the last minute** — outbox rows created in the last minute (null when this
  database has no ``<schema>.outbox``: another sink, or the outbox in another database). The
  count walks at most :data:`EVENTS_SCAN_CAP` of the newest rows; at the cap it is a floor;
* **active pid** of the slot and the **standby count**: watchers of the slot waiting for its
  lock (:mod:`cdc.standby`), which name their session ``cdc watch <slot>: standby`` while they
  wait. They wait on their store connection, so a watcher whose outbox (and own tables) live in
  another database is counted there, not here; a role without ``pg_read_all_stats`` may not
  see other roles' sessions.

The command exits 2 when a figure is over its threshold (one stderr line saying which and by
how much; an unknown source lag is never over), 1 for a missing slot, a slot of another database
or a physical slot, and for a lost slot (after printing the figures), 3 when the server cannot be
reached (the CLI's conventions, :mod:`cdc.errors`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TextIO

import orjson
from psycopg import sql
from psycopg.rows import dict_row

from catalog.forms import format_timestamp

from . import queries
from .connect import connect
from .errors import CdcError, SlotInvalidated, SlotMissing, SlotOfAnotherDatabase
from .lsn import parse_lsn

#: At most this many of the newest outbox rows are counted for "events in the last minute".
EVENTS_SCAN_CAP: Final = 200_000

#: Seconds between refreshes of ``--watch`` when no interval is given.
DEFAULT_WATCH_INTERVAL_S: Final = 2.0

#: The exit status of a reading over a threshold.
EXIT_OVER: Final = 2


@dataclass(frozen=True)
class Lag:
    """One reading of a slot's figures (see the module docstring for each definition)."""

    slot: str
    current_lsn: str
    confirmed_flush_lsn: str | None
    restart_lsn: str | None
    replication_lag_bytes: int | None
    retained_wal_bytes: int | None
    wal_status: str | None
    safe_wal_size: int | None
    checkpoint_lsn: str | None
    last_delivered_commit_time: datetime | None
    source_lag_seconds: float | None
    events_last_minute: int | None
    events_last_minute_capped: bool
    active_pid: int | None
    standby_count: int
    server_time: datetime

    def as_json(self) -> dict[str, Any]:
        """camelCase, timestamps in the canonical form (DESIGN §4), unknown figures null."""

        def ts(value: datetime | None) -> str | None:
            return format_timestamp(value) if value is not None else None

        return {
            "slot": self.slot,
            "serverTime": ts(self.server_time),
            "currentLsn": self.current_lsn,
            "confirmedFlushLsn": self.confirmed_flush_lsn,
            "restartLsn": self.restart_lsn,
            "replicationLagBytes": self.replication_lag_bytes,
            "retainedWalBytes": self.retained_wal_bytes,
            "walStatus": self.wal_status,
            "safeWalSize": self.safe_wal_size,
            "sourceLagSeconds": self.source_lag_seconds,
            "lastDeliveredCommitTime": ts(self.last_delivered_commit_time),
            "checkpointLsn": self.checkpoint_lsn,
            "eventsLastMinute": self.events_last_minute,
            "eventsLastMinuteCapped": self.events_last_minute_capped,
            "activePid": self.active_pid,
            "standbyCount": self.standby_count,
        }


def source_lag_seconds(
    *,
    current_lsn: str,
    confirmed_flush_lsn: str | None,
    checkpoint_lsn: str | None,
    commit_time: datetime | None,
    now: datetime,
) -> float | None:
    """Seconds since the last delivered commit while WAL is pending, 0 when none is, None when
    pending WAL has no delivered commit to measure from."""
    seen = max((parse_lsn(x) for x in (confirmed_flush_lsn, checkpoint_lsn) if x), default=0)
    if parse_lsn(current_lsn) <= seen:
        return 0.0
    if commit_time is None:
        return None
    return round(max(0.0, (now - commit_time).total_seconds()), 3)


def read_lag(dsn: str, *, slot: str, schema: str) -> Lag:
    """The figures of ``slot`` now; a missing slot, one of another database or a physical one
    raise the CdcError an operator should see."""
    with connect(dsn, purpose="lag", bounded=True, slot=slot) as conn:
        cur = conn.cursor(row_factory=dict_row)
        s = cur.execute(queries.raw("lag", "slot_position"), {"slot": slot}).fetchone()
        if s is None:
            raise SlotMissing(f"replication slot {slot} does not exist")
        if s["slot_type"] != "logical":
            raise CdcError(
                f"replication slot {slot} is a {s['slot_type']} slot",
                hint="pass --slot with the watcher's logical slot",
            )
        if not s["here"]:
            raise SlotOfAnotherDatabase(f"replication slot {slot} belongs to database {s['database']}")
        own = cur.execute(queries.raw("lag", "own_tables"), {"schema": schema}).fetchone()
        assert own is not None
        ident = sql.Identifier(schema)
        checkpoint_lsn: str | None = None
        commit_time: datetime | None = None
        if own["has_checkpoints"]:
            row = conn.execute(
                queries.query("checkpoints", "read_checkpoint", schema=ident), {"slot": slot}
            ).fetchone()
            if row is not None:
                checkpoint_lsn, _, commit_time = row
        events: int | None = None
        if own["has_outbox"]:
            counted = conn.execute(
                queries.query("lag", "events_last_minute", schema=ident), {"cap": EVENTS_SCAN_CAP}
            ).fetchone()
            events = int(counted[0]) if counted is not None else 0
        waiting = conn.execute(queries.raw("lag", "waiting_watchers"), {"slot": slot}).fetchone()
    return Lag(
        slot=slot,
        current_lsn=s["current_lsn"],
        confirmed_flush_lsn=s["confirmed_flush_lsn"],
        restart_lsn=s["restart_lsn"],
        replication_lag_bytes=s["lag_bytes"],
        retained_wal_bytes=s["retained_bytes"],
        wal_status=s["wal_status"],
        safe_wal_size=s["safe_wal_size"],
        checkpoint_lsn=checkpoint_lsn,
        last_delivered_commit_time=commit_time,
        source_lag_seconds=source_lag_seconds(
            current_lsn=s["current_lsn"],
            confirmed_flush_lsn=s["confirmed_flush_lsn"],
            checkpoint_lsn=checkpoint_lsn,
            commit_time=commit_time,
            now=s["server_time"],
        ),
        events_last_minute=events,
        events_last_minute_capped=events is not None and events >= EVENTS_SCAN_CAP,
        active_pid=s["active_pid"],
        standby_count=int(waiting[0]) if waiting is not None else 0,
        server_time=s["server_time"],
    )


@dataclass(frozen=True)
class Thresholds:
    max_lag_bytes: int | None = None
    max_lag_seconds: float | None = None


def over(lag: Lag, limits: Thresholds) -> str | None:
    """The one line saying which thresholds the reading passes and by how much (None: none)."""
    parts: list[str] = []
    lag_bytes, max_bytes = lag.replication_lag_bytes, limits.max_lag_bytes
    if max_bytes is not None and lag_bytes is not None and lag_bytes > max_bytes:
        parts.append(
            f"replication lag {lag_bytes} bytes is over --max-lag-bytes {max_bytes} "
            f"by {lag_bytes - max_bytes} bytes"
        )
    lag_s, max_s = lag.source_lag_seconds, limits.max_lag_seconds
    if max_s is not None and lag_s is not None and lag_s > max_s:
        parts.append(f"source lag {lag_s:.3f} s is over --max-lag-seconds {max_s:g} by {lag_s - max_s:.3f} s")
    return f"cdc: lag: slot {lag.slot}: " + "; ".join(parts) if parts else None


def _na(value: object, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value}{unit}"


def table(lag: Lag) -> Any:
    """A rich table of the reading, one figure a row."""
    from rich.table import Table

    t = Table(title=f"cdc lag · slot {lag.slot}", show_header=True)
    t.add_column("figure")
    t.add_column("value", justify="right")
    events = _na(lag.events_last_minute)
    if lag.events_last_minute_capped:
        events = f"≥ {events}"
    commit = lag.last_delivered_commit_time
    rows = [
        ("replication lag bytes", _na(lag.replication_lag_bytes)),
        ("retained WAL bytes", _na(lag.retained_wal_bytes)),
        ("wal_status", _na(lag.wal_status)),
        ("safe_wal_size", _na(lag.safe_wal_size)),
        ("source lag seconds", _na(lag.source_lag_seconds)),
        ("last delivered commit time", format_timestamp(commit) if commit is not None else "n/a"),
        ("events in the last minute", events),
        ("active pid", _na(lag.active_pid)),
        ("standby count", str(lag.standby_count)),
        ("current LSN", lag.current_lsn),
        ("confirmed flush LSN", _na(lag.confirmed_flush_lsn)),
        ("checkpoint LSN", _na(lag.checkpoint_lsn)),
    ]
    for name, value in rows:
        t.add_row(name, value)
    return t


@dataclass(frozen=True)
class LagOptions:
    dsn: str
    slot: str
    schema: str
    limits: Thresholds
    as_json: bool
    #: Seconds between refreshes; None: one reading.
    watch: float | None = None


def run_lag(
    opts: LagOptions,
    out: TextIO,
    err: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """One reading (or, with ``watch``, one every so often until Ctrl-C); the exit status.

    JSON is one object (a line per reading with ``watch``); the table goes to a rich console.
    With ``watch``, a reading over a threshold writes its line and the refreshing goes on."""

    def read() -> Lag:
        return read_lag(opts.dsn, slot=opts.slot, schema=opts.schema)

    if opts.watch is None:
        lag = read()
        _show(lag, opts.as_json, out)
        _check_lost(lag)
        line = over(lag, opts.limits)
        if line is not None:
            err(line)
            return EXIT_OVER
        return 0
    try:
        if opts.as_json:
            while True:
                lag = read()
                _show(lag, True, out)
                _warn(lag, opts.limits, err)
                sleep(opts.watch)
        from rich.console import Console
        from rich.live import Live

        with Live(console=Console(file=out), auto_refresh=False) as live:
            while True:
                lag = read()
                live.update(table(lag), refresh=True)
                _warn(lag, opts.limits, err)
                sleep(opts.watch)
    except KeyboardInterrupt:
        return 0


def _warn(lag: Lag, limits: Thresholds, err: Callable[[str], None]) -> None:
    line = over(lag, limits)
    if line is not None:
        err(line)


def _show(lag: Lag, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(orjson.dumps(lag.as_json()).decode() + "\n")
        out.flush()
        return
    from rich.console import Console

    Console(file=out).print(table(lag))


def _check_lost(lag: Lag) -> None:
    if lag.wal_status == "lost":
        raise SlotInvalidated(f"replication slot {lag.slot} was invalidated (wal_status lost)")
