"""The ``cdc`` command line: setup, teardown, tail, watch, backfill, journal prune, lag, catalog, demo.

Errors an operator can cause or meet (bad DSN, server down, wal_level, missing slot,
slot in use, missing table, table without a primary key, …) end the command with one
line on stderr — the cause and what to do — and a non-zero exit, never a traceback.
Exit codes: 0 ok, 1 error that needs a change, 3 error worth retrying, 2 usage.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from .config import (
    DEFAULT_BATCH_DELAY_S,
    DEFAULT_BATCH_EVENTS,
    DEFAULT_BATCH_TRANSACTIONS,
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_JOURNAL_RETENTION_DAYS,
    DEFAULT_LOG_FORMAT,
    DEFAULT_LOG_LEVEL,
    DEFAULT_PROGRESS_INTERVAL_S,
    DEFAULT_PUBLICATION,
    DEFAULT_SCHEMA,
    DEFAULT_SLOT,
    Settings,
    check_dsn,
    load_settings,
)
from .errors import CdcError, translate
from .logs import error_line
from .lsn import parse_lsn

if TYPE_CHECKING:
    from .sinks.base import Sink

app = typer.Typer(
    name="cdc",
    help="Derive Alga PSA domain events from the Postgres write-ahead log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: rich's panels label every flag `<bool>`
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"cdc {version('alga-cdc')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """Derive Alga PSA domain events from the Postgres write-ahead log."""


# Options that are settings default to None: an option left out falls through to CDC_*
# variables, the CDC_CONFIG file and the defaults (cdc/config.py), in that order.
DsnOpt = Annotated[
    str | None,
    typer.Option(
        "--dsn", help="libpq connection string or URI; PG* variables fill in what it leaves out. [CDC_DSN]"
    ),
]
SlotOpt = Annotated[
    str | None, typer.Option("--slot", help=f"Logical replication slot. [CDC_SLOT; default: {DEFAULT_SLOT}]")
]
PubOpt = Annotated[
    str | None,
    typer.Option(
        "--publication", help=f"Publication name. [CDC_PUBLICATION; default: {DEFAULT_PUBLICATION}]"
    ),
]
SchemaOpt = Annotated[
    str | None,
    typer.Option(
        "--schema", help=f"Schema of the watcher's own tables. [CDC_SCHEMA; default: {DEFAULT_SCHEMA}]"
    ),
]
TablesOpt = Annotated[
    str | None,
    typer.Option("--tables", help="Comma-separated watched tables. [CDC_TABLES; default: the PSA set]"),
]

SinkOpt = Annotated[
    str | None,
    typer.Option(
        "--sink",
        help="Where events go: postgres (the outbox in the watched database, the default), "
        "postgresql://… (an outbox in another database, which then also keeps the watcher's own "
        "schema), redis://host:port/db, nats://host:port, jsonl:PATH (- for stdout), discard. "
        "See docs/sinks.md. [CDC_SINK]",
    ),
]


def _store_dsn(sink: str | None) -> str | None:
    from .sinks.factory import store_dsn_of

    store = store_dsn_of(sink)
    if store is not None:
        check_dsn(store)
    return store


def _settings(**flags: object) -> Settings:
    from .connect import set_defaults

    settings = load_settings(**flags)
    # for every connection the command opens
    set_defaults(
        connect_timeout_s=settings.connect_timeout_s, statement_timeout_s=settings.statement_timeout_s
    )
    return settings


def _echo(line: str) -> None:
    typer.echo(line)


@app.command()
def setup(
    dsn: DsnOpt = None,
    slot: SlotOpt = None,
    publication: PubOpt = None,
    schema: SchemaOpt = None,
    tables: TablesOpt = None,
    check: Annotated[bool, typer.Option("--check", help="Only report what would change.")] = False,
    sink: SinkOpt = None,
    recreate_slot: Annotated[
        bool,
        typer.Option(
            "--recreate-slot",
            help="Replace a slot the server invalidated (wal_status lost) with a new one, printing and "
            "recording in <schema>.slot_gaps the range of changes that were lost.",
        ),
    ] = False,
) -> None:
    """Create the cdc schema, publication, REPLICA IDENTITY FULL and the slot (idempotent)."""
    from derivers import default_derivers

    from .provision import setup as do_setup
    from .state import make_bootstrap_hook

    s = _settings(dsn=dsn, slot=slot, publication=publication, schema_name=schema, tables=tables, sink=sink)
    store_dsn = _store_dsn(s.sink)
    report = do_setup(
        s.dsn.get_secret_value(),
        slot=s.slot,
        publication=s.publication,
        tables=s.qualified_tables(),
        schema=s.schema_name,
        check_only=check,
        # the reference-state copy under the slot's snapshot, for the registry's derivers
        bootstrap=make_bootstrap_hook(default_derivers()),
        store_dsn=store_dsn,
        recreate_lost_slot=recreate_slot,
    )
    verb = "would" if check else "did"
    if not report.changes and not report.problems:
        _echo("nothing to do: schema, publication, replica identity and slot are in place")
    for line in report.changes:
        _echo(f"{verb}: {line}")
    for line in report.problems:  # only --check gets here with problems; setup itself refuses them
        _echo(f"problem: {line}")
    if check and (report.changes or report.problems):
        raise typer.Exit(1)


@app.command()
def teardown(
    dsn: DsnOpt = None,
    slot: SlotOpt = None,
    publication: PubOpt = None,
    schema: SchemaOpt = None,
    sink: SinkOpt = None,
) -> None:
    """Drop the slot and the publication, so the server retains no WAL for us.

    Only those of the DSN's own database: a slot of another database, or one in use, is refused
    and nothing is dropped."""
    from .provision import teardown as do_teardown

    s = _settings(dsn=dsn, slot=slot, publication=publication, schema_name=schema, sink=sink)
    store_dsn = _store_dsn(s.sink)
    done = do_teardown(
        s.dsn.get_secret_value(),
        slot=s.slot,
        publication=s.publication,
        schema=s.schema_name,
        store_dsn=store_dsn,
    )
    for line in done or ["nothing to drop"]:
        _echo(line)


@app.command()
def tail(
    dsn: DsnOpt = None,
    slot: Annotated[
        str | None,
        typer.Option(
            "--slot",
            help="Consume this durable slot (what is printed is acknowledged); refused if it is the slot "
            "any watcher's slots or checkpoints table in the database names. Without it, tail reads through a temporary slot from the "
            "current position, which consumes nothing. [CDC_SLOT does not apply: it names the watcher's slot]",
        ),
    ] = None,
    publication: PubOpt = None,
    temporary: Annotated[
        bool,
        typer.Option(
            "--temporary",
            help="Make the slot temporary: the default without --slot; with --slot, a temporary slot of that name.",
        ),
    ] = False,
    max_changes: Annotated[
        int | None,
        typer.Option(
            "--max-changes",
            min=1,
            help="Stop after the transaction in which this many changes are printed.",
        ),
    ] = None,
    idle_exit: Annotated[
        float | None,
        typer.Option("--idle-exit", min=0.0, help="Stop when no transaction arrived for this many seconds."),
    ] = None,
    binary: Annotated[
        bool | None,
        typer.Option(
            "--binary/--text", help="pgoutput binary or text value format. [CDC_BINARY; default: text]"
        ),
    ] = None,
    endpos: Annotated[
        str | None, typer.Option("--endpos", help="Stop once this LSN (X/Y) is reached, like pg_recvlogical.")
    ] = None,
) -> None:
    """Print decoded row changes as JSON lines (a live view that consumes nothing, unless --slot)."""
    from .tail import StopFlag, TailOptions, run_tail

    s = _settings(dsn=dsn, publication=publication, binary=binary)
    stop = StopFlag()
    stop.install()
    run_tail(
        TailOptions(
            dsn=s.dsn.get_secret_value(),
            slot=slot,
            publication=s.publication,
            temporary=temporary,
            max_changes=max_changes,
            idle_exit=idle_exit,
            binary=s.binary,
            status_interval=s.status_interval_s,
            endpos=parse_lsn(endpos) if endpos else None,
        ),
        sys.stdout.buffer,
        stop,
    )


@app.command()
def watch(
    sink: SinkOpt = None,
    dsn: DsnOpt = None,
    slot: SlotOpt = None,
    publication: PubOpt = None,
    schema: SchemaOpt = None,
    once: Annotated[
        bool, typer.Option("--once", help="Deliver everything up to the WAL position at start, then exit.")
    ] = False,
    idle_exit: Annotated[
        float | None,
        typer.Option("--idle-exit", min=0.0, help="Exit when no transaction arrived for this long."),
    ] = None,
    heartbeat_interval: Annotated[
        float | None,
        typer.Option(
            "--heartbeat-interval",
            min=0.1,
            help="Seconds between watermark heartbeats. "
            f"[CDC_HEARTBEAT_INTERVAL_S; default: {DEFAULT_HEARTBEAT_INTERVAL_S}]",
        ),
    ] = None,
    batch_events: Annotated[
        int | None,
        typer.Option(
            "--batch-events",
            min=1,
            help=f"Deliver once this many events wait. [CDC_BATCH_EVENTS; default: {DEFAULT_BATCH_EVENTS}]",
        ),
    ] = None,
    batch_transactions: Annotated[
        int | None,
        typer.Option(
            "--batch-transactions",
            min=1,
            help="Deliver once this many source transactions wait. "
            f"[CDC_BATCH_TRANSACTIONS; default: {DEFAULT_BATCH_TRANSACTIONS}]",
        ),
    ] = None,
    batch_delay: Annotated[
        float | None,
        typer.Option(
            "--batch-delay",
            min=0.0,
            help="Deliver once the oldest waiting transaction is this many seconds old. "
            f"[CDC_BATCH_DELAY_S; default: {DEFAULT_BATCH_DELAY_S}]",
        ),
    ] = None,
    progress_interval: Annotated[
        float | None,
        typer.Option(
            "--progress-interval",
            min=0.1,
            help="Seconds between progress lines while busy. "
            f"[CDC_PROGRESS_INTERVAL_S; default: {DEFAULT_PROGRESS_INTERVAL_S}]",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            help=f"debug, info, warning or error. [CDC_LOG_LEVEL; default: {DEFAULT_LOG_LEVEL}]",
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            help="text, or json: one object per line (ts, level, logger, msg and fields such as "
            f"slot, lsn and counts). [CDC_LOG_FORMAT; default: {DEFAULT_LOG_FORMAT}]",
        ),
    ] = None,
    metrics_addr: Annotated[
        str | None,
        typer.Option(
            "--metrics-addr",
            metavar="HOST:PORT",
            help="Serve Prometheus /metrics, /healthz and /readyz here (health thresholds: "
            "CDC_HEALTH_GRACE_S, CDC_HEALTH_MAX_LAG_BYTES). [CDC_METRICS_ADDR; default: none]",
        ),
    ] = None,
    journal: Annotated[
        bool | None,
        typer.Option(
            "--journal/--no-journal",
            help="Record every consumed change in the change journal, for `cdc backfill`. "
            "[CDC_JOURNAL; default: on]",
        ),
    ] = None,
) -> None:
    """Run the derivers over the stream and deliver their events (the daemon).

    Logs to stderr: a start line, progress while busy, every retry and state change, and an
    exit summary. SIGTERM/SIGINT: deliver the pending batch, checkpoint, exit 0. SIGHUP: reload
    the log level, intervals and batch limits from the configuration (flags still win)."""
    from derivers import default_derivers

    from . import logs
    from .config import LIVE_SETTINGS
    from .lifecycle import LiveSettings, Signals
    from .sinks import open_sink
    from .watch import WatchOptions, run_watch

    if log_format == "json":  # the format of an error in the settings themselves
        logs.setup(fmt="json")
    flags: dict[str, object] = dict(
        dsn=dsn,
        slot=slot,
        publication=publication,
        schema_name=schema,
        sink=sink,
        heartbeat_interval_s=heartbeat_interval,
        batch_events=batch_events,
        batch_transactions=batch_transactions,
        batch_delay_s=batch_delay,
        progress_interval_s=progress_interval,
        log_level=log_level,
        log_format=log_format,
        metrics_addr=metrics_addr,
        journal=journal,
    )
    s = _settings(**flags)
    logs.setup(level=s.log_level, fmt=s.log_format)

    def live() -> LiveSettings:
        now = load_settings(**flags)
        restart = tuple(
            name
            for name in Settings.model_fields
            if name not in LIVE_SETTINGS and getattr(now, name) != getattr(s, name)
        )
        return LiveSettings(
            log_level=now.log_level,
            progress_interval=now.progress_interval_s,
            status_interval=now.status_interval_s,
            heartbeat_interval=now.heartbeat_interval_s,
            batch_max_events=now.batch_events,
            batch_max_transactions=now.batch_transactions,
            batch_max_delay=now.batch_delay_s,
            restart_needed=restart,
        )

    served = None
    if s.metrics_addr is not None:
        from .metrics import HealthLimits, serve

        served = serve(s.metrics_addr, HealthLimits(s.health_grace_s, s.health_max_lag_bytes))
    stop = Signals()
    stop.install()
    try:
        run_watch(
            WatchOptions(
                dsn=s.dsn.get_secret_value(),
                slot=s.slot,
                publication=s.publication,
                schema=s.schema_name,
                once=once,
                idle_exit=idle_exit,
                heartbeat_interval=s.heartbeat_interval_s,
                status_interval=s.status_interval_s,
                batch_max_events=s.batch_events,
                batch_max_transactions=s.batch_transactions,
                batch_max_delay=s.batch_delay_s,
                spill_changes=s.spill_changes,
                spill_bytes=s.spill_mb << 20,
                progress_interval=s.progress_interval_s,
                sink_label=logs.redact(s.sink or "postgres (the outbox in the watched database)"),
                reload=live,
                metrics=served.metrics if served is not None else None,
                journal=s.journal,
                reconnect_initial=s.reconnect_initial_s,
                reconnect_max=s.reconnect_max_s,
                standby_lease=s.standby_lease_s,
            ),
            open_sink(s.sink, schema=s.schema_name, stop=stop, max_event_bytes=s.max_event_bytes),
            default_derivers(sla_threshold_share=s.sla_threshold_share),
            stop,
        )
    finally:
        if served is not None:
            served.close()


JournalDsnOpt = Annotated[
    str | None,
    typer.Option(
        "--journal-dsn",
        help="The database of the watcher's own schema (its journal), when the live watcher's --sink "
        "was postgresql://… [default: that sink's database, else --dsn]",
    ),
]


@app.command()
def backfill(
    sink: SinkOpt = None,
    dsn: DsnOpt = None,
    slot: SlotOpt = None,
    schema: SchemaOpt = None,
    journal_dsn: JournalDsnOpt = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="From this LSN (X/Y, exclusive) or timestamp (inclusive). [default: the start]"
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="Up to this LSN (inclusive) or timestamp (exclusive). [default: the end]"
        ),
    ] = None,
    event_type: Annotated[
        list[str] | None, typer.Option("--event-type", help="Emit only this event type (repeatable).")
    ] = None,
    deriver: Annotated[
        list[str] | None, typer.Option("--deriver", help="Run only this deriver (repeatable).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the events by type; deliver nothing.")
    ] = False,
    max_rate: Annotated[
        float | None, typer.Option("--max-rate", min=0.001, help="At most this many events per second.")
    ] = None,
    resume: Annotated[
        int | None, typer.Option("--resume", metavar="ID", help="Go on with an interrupted run.")
    ] = None,
    from_audit_log: Annotated[
        bool,
        typer.Option(
            "--from-audit-log",
            help="History from before the watcher: map the application's ticket_audit_logs rows "
            "(in --dsn) to the ticket events they record, up to where the journal begins.",
        ),
    ] = False,
) -> None:
    """Replay the change journal through the derivers into a sink, byte-identical to the live run.

    Events already delivered are not delivered again (same keys and ids). Prints the run id
    first and a summary table by event type at the end. With --from-audit-log, the application's
    own ticket audit rows instead, and the event types they cannot give. See docs/backfill.md."""
    from derivers import default_derivers

    from . import logs
    from .backfill import BackfillOptions, run_backfill, summary
    from .sinks import open_sink
    from .sinks.factory import store_dsn_of

    s = _settings(dsn=dsn, slot=slot, schema_name=schema, sink=sink)
    logs.setup(level=s.log_level, fmt=s.log_format)
    if journal_dsn is not None:
        check_dsn(journal_dsn)
    watched = s.dsn.get_secret_value()
    if journal_dsn is None and sink is None:
        journal_dsn = store_dsn_of(s.sink)  # the configured live sink keeps the journal there
    opts = BackfillOptions(
        dsn=watched,
        journal_dsn=journal_dsn,
        slot=s.slot,
        schema=s.schema_name,
        since=since,
        until=until,
        event_types=tuple(event_type or ()),
        derivers=tuple(deriver or ()),
        dry_run=dry_run,
        max_rate=max_rate,
        resume=resume,
        sink_label=logs.redact(s.sink or "postgres"),
        batch_max_events=s.batch_events,
        batch_max_transactions=s.batch_transactions,
        spill_changes=s.spill_changes,
        spill_bytes=s.spill_mb << 20,
        progress_interval=s.progress_interval_s,
    )

    def sink_now() -> Sink:
        return open_sink(s.sink, schema=s.schema_name, max_event_bytes=s.max_event_bytes)

    if from_audit_log:
        from derivers import audit_history

        from .audit_history import AuditMapping, audit_summary, run_audit_history

        mapping = AuditMapping(audit_history.YIELDS, audit_history.audit_drafts)
        done = run_audit_history(opts, mapping, sink_now)
        _echo(audit_summary(done, audit_history.gaps(event_type or None), dry_run))
        return
    result = run_backfill(opts, default_derivers(sla_threshold_share=s.sla_threshold_share), sink_now)
    _echo(summary(result, dry_run))


journal_app = typer.Typer(help="The change journal: prune.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(journal_app, name="journal")


@journal_app.command("prune")
def journal_prune(
    dsn: DsnOpt = None,
    schema: SchemaOpt = None,
    journal_dsn: JournalDsnOpt = None,
    retention_days: Annotated[
        int | None,
        typer.Option(
            "--retention-days",
            min=1,
            help="Keep this many days. [CDC_JOURNAL_RETENTION_DAYS; default: "
            f"{DEFAULT_JOURNAL_RETENTION_DAYS}]",
        ),
    ] = None,
) -> None:
    """Drop the journal's whole days past the retention horizon (and record the range dropped).

    First, per slot, a state snapshot as of the last transaction those days hold, rebuilt from
    the journal: a backfill can then start after it. See docs/backfill.md."""
    from datetime import UTC, datetime

    from derivers import default_derivers

    from .backfill import BackfillOptions, take_snapshot
    from .connect import connect
    from .journal import prune
    from .lsn import format_lsn
    from .sinks.factory import store_dsn_of

    s = _settings(dsn=dsn, schema_name=schema, journal_retention_days=retention_days)
    target = journal_dsn or store_dsn_of(s.sink) or s.dsn.get_secret_value()
    registry = default_derivers(sla_threshold_share=s.sla_threshold_share)

    def snapshot(slot: str, lsn: int) -> None:
        opts = BackfillOptions(target, slot=slot, schema=s.schema_name, spill_changes=s.spill_changes)
        if take_snapshot(opts, registry, lsn):
            _echo(f"slot {slot}: state snapshot at {format_lsn(lsn)}")

    with connect(target, purpose="journal prune", bounded=True) as conn:
        try:
            dropped = prune(conn, s.schema_name, s.journal_retention_days, datetime.now(UTC), snapshot)
        except CdcError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
    if not dropped:
        _echo(f"nothing to prune: the journal holds no day older than {s.journal_retention_days} days")
    for day in dropped:
        held = "; ".join(f"slot {slot}: {a} to {b}" for slot, a, b, _t0, _t1 in day.ranges) or "empty"
        _echo(f"dropped {day.day.isoformat()} ({held})")


@app.command()
def lag(
    dsn: DsnOpt = None,
    slot: SlotOpt = None,
    schema: SchemaOpt = None,
    max_lag_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-lag-bytes",
            min=0,
            help="Exit 2 when the replication lag (current WAL − confirmed flush) is over this many bytes.",
        ),
    ] = None,
    max_lag_seconds: Annotated[
        float | None,
        typer.Option(
            "--max-lag-seconds",
            min=0.0,
            help="Exit 2 when the source lag (seconds since the last delivered commit, while WAL is "
            "pending) is over this.",
        ),
    ] = None,
    as_json: Annotated[
        bool | None,
        typer.Option(
            "--json/--table",
            help="JSON (one object; a line per refresh with --watch) or a table. "
            "[default: a table on a terminal, JSON otherwise]",
        ),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Refresh every SECONDS (default 2) until Ctrl-C; thresholds only print their line.",
        ),
    ] = False,
    seconds: Annotated[
        float | None,
        typer.Argument(metavar="SECONDS", min=0.1, help="The --watch refresh interval.", show_default=False),
    ] = None,
) -> None:
    """Show how far the watcher of a slot is behind, from the server alone (no daemon needed)."""
    from .lag import DEFAULT_WATCH_INTERVAL_S, LagOptions, Thresholds, run_lag

    if seconds is not None and not watch:
        raise typer.BadParameter("SECONDS is the refresh interval of --watch", param_hint="SECONDS")
    s = _settings(dsn=dsn, slot=slot, schema_name=schema)
    status = run_lag(
        LagOptions(
            dsn=s.dsn.get_secret_value(),
            slot=s.slot,
            schema=s.schema_name,
            limits=Thresholds(max_lag_bytes=max_lag_bytes, max_lag_seconds=max_lag_seconds),
            as_json=as_json if as_json is not None else not sys.stdout.isatty(),
            watch=(seconds or DEFAULT_WATCH_INTERVAL_S) if watch else None,
        ),
        sys.stdout,
        lambda line: typer.echo(line, err=True),
    )
    if status:
        raise typer.Exit(status)


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the throwaway server running (prints its DSN).")
    ] = False,
) -> None:
    """Embedded default: a throwaway Postgres, the sample PSA schema, a workload, its changes."""
    from .demo import run_demo

    run_demo(keep=keep)


def _mount_catalog() -> None:
    from .catalog_cli import app as catalog_app

    app.add_typer(catalog_app, name="catalog", help="The event catalog: list, export, sync.")


#: Subcommands that never need the catalog's own commands: skip importing them (its models, and
#: the rich tables of `cdc catalog`, ~150 ms for setup/teardown/tail; ~40 ms for watch, which
#: imports the models itself).
_CORE_COMMANDS = frozenset({"setup", "teardown", "tail", "watch", "lag", "backfill", "journal"})


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not (args and args[0] in _CORE_COMMANDS):
        _mount_catalog()
    try:
        app(args=argv, prog_name="cdc")  # usage errors: typer prints them and exits 2
    except CdcError as exc:
        error_line(f"cdc: error: {exc.one_line()}", exit_status=3 if exc.retryable else 1)
        sys.exit(3 if exc.retryable else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        err = translate(exc)
        if type(err) is CdcError and not hasattr(exc, "sqlstate"):
            # a bug: its traceback, through the log handler so that it is redacted (and JSON)
            from . import logs

            logs.unexpected(exc)
            sys.exit(1)
        error_line(f"cdc: error: {err.one_line()}", exit_status=3 if err.retryable else 1)
        sys.exit(3 if err.retryable else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
