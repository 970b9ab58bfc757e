"""The ``cdc`` command line: setup, teardown, tail, catalog, demo.

Errors an operator can cause or meet (bad DSN, server down, wal_level, missing slot,
slot in use, missing table, table without a primary key, …) end the command with one
line on stderr — the cause and what to do — and a non-zero exit, never a traceback.
Exit codes: 0 ok, 1 error that needs a change, 3 error worth retrying, 2 usage.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .config import DEFAULT_PUBLICATION, DEFAULT_SCHEMA, DEFAULT_SLOT, Settings, check_dsn
from .errors import CdcError, ConfigError, translate
from .lsn import parse_lsn

app = typer.Typer(
    name="cdc",
    help="Derive Alga PSA domain events from the Postgres write-ahead log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DsnOpt = Annotated[
    str,
    typer.Option(
        "--dsn", envvar="CDC_DSN", help="libpq connection string or URI (PG* variables also apply)."
    ),
]
SlotOpt = Annotated[str, typer.Option("--slot", envvar="CDC_SLOT", help="Logical replication slot.")]
PubOpt = Annotated[str, typer.Option("--publication", envvar="CDC_PUBLICATION", help="Publication name.")]
SchemaOpt = Annotated[
    str, typer.Option("--schema", envvar="CDC_SCHEMA", help="Schema of the watcher's own tables.")
]
TablesOpt = Annotated[
    str | None,
    typer.Option(
        "--tables",
        envvar="CDC_TABLES",
        help="Comma-separated watched tables (default: the PSA set).",
    ),
]

SinkOpt = Annotated[
    str | None,
    typer.Option(
        "--sink",
        envvar="CDC_SINK",
        help="Where events go: postgres (the outbox in the watched database, the default), "
        "postgresql://… (an outbox in another database, which then also keeps the watcher's own "
        "schema), redis://host:port/db, nats://host:port, jsonl:PATH (- for stdout). See docs/sinks.md.",
    ),
]


def _store_dsn(sink: str | None) -> str | None:
    from .sinks.base import store_dsn_of

    store = store_dsn_of(sink)
    if store is not None:
        check_dsn(store)
    return store


def _settings(**kw: object) -> Settings:
    from pydantic import ValidationError

    clean = {k: v for k, v in kw.items() if v is not None}
    if isinstance(clean.get("dsn"), str):
        check_dsn(str(clean["dsn"]))
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc


def _echo(line: str) -> None:
    typer.echo(line)


@app.command()
def setup(
    dsn: DsnOpt = "",
    slot: SlotOpt = DEFAULT_SLOT,
    publication: PubOpt = DEFAULT_PUBLICATION,
    schema: SchemaOpt = DEFAULT_SCHEMA,
    tables: TablesOpt = None,
    check: Annotated[bool, typer.Option("--check", help="Only report what would change.")] = False,
    sink: SinkOpt = None,
) -> None:
    """Create the cdc schema, publication, REPLICA IDENTITY FULL and the slot (idempotent)."""
    from .provision import setup as do_setup
    from .state import bootstrap_hook

    store_dsn = _store_dsn(sink)

    s = _settings(dsn=dsn, slot=slot, publication=publication, schema_name=schema, tables=tables)
    report = do_setup(
        s.dsn.get_secret_value(),
        slot=s.slot,
        publication=s.publication,
        tables=s.qualified_tables(),
        schema=s.schema_name,
        check_only=check,
        bootstrap=bootstrap_hook,  # the reference-state copy under the slot's snapshot
        store_dsn=store_dsn,
    )
    verb = "would" if check else "did"
    if not report.changes:
        _echo("nothing to do: schema, publication, replica identity and slot are in place")
    for line in report.changes:
        _echo(f"{verb}: {line}")
    if check and report.changes:
        raise typer.Exit(1)


@app.command()
def teardown(
    dsn: DsnOpt = "",
    slot: SlotOpt = DEFAULT_SLOT,
    publication: PubOpt = DEFAULT_PUBLICATION,
    schema: SchemaOpt = DEFAULT_SCHEMA,
    sink: SinkOpt = None,
) -> None:
    """Drop the slot and the publication, so the server retains no WAL for us."""
    from .provision import teardown as do_teardown

    store_dsn = _store_dsn(sink)
    s = _settings(dsn=dsn, slot=slot, publication=publication, schema_name=schema)
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
    dsn: DsnOpt = "",
    slot: SlotOpt = DEFAULT_SLOT,
    publication: PubOpt = DEFAULT_PUBLICATION,
    temporary: Annotated[
        bool,
        typer.Option("--temporary", help="Use a temporary slot at the current position; consumes nothing."),
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
        bool, typer.Option("--binary/--text", help="pgoutput binary or text value format.")
    ] = False,
    endpos: Annotated[
        str | None, typer.Option("--endpos", help="Stop once this LSN (X/Y) is reached, like pg_recvlogical.")
    ] = None,
) -> None:
    """Print decoded row changes as JSON lines."""
    import uuid

    from .tail import StopFlag, TailOptions, run_tail

    s = _settings(dsn=dsn, slot=slot, publication=publication)
    slot_name = f"cdc_tail_{uuid.uuid4().hex[:12]}" if temporary and slot == DEFAULT_SLOT else s.slot
    stop = StopFlag()
    stop.install()
    run_tail(
        TailOptions(
            dsn=s.dsn.get_secret_value(),
            slot=slot_name,
            publication=s.publication,
            temporary=temporary,
            max_changes=max_changes,
            idle_exit=idle_exit,
            binary=binary,
            status_interval=s.status_interval_s,
            endpos=parse_lsn(endpos) if endpos else None,
        ),
        sys.stdout.buffer,
        stop,
    )


@app.command()
def watch(
    sink: SinkOpt = None,
    dsn: DsnOpt = "",
    slot: SlotOpt = DEFAULT_SLOT,
    publication: PubOpt = DEFAULT_PUBLICATION,
    schema: SchemaOpt = DEFAULT_SCHEMA,
    once: Annotated[
        bool, typer.Option("--once", help="Deliver everything up to the WAL position at start, then exit.")
    ] = False,
    idle_exit: Annotated[
        float | None,
        typer.Option("--idle-exit", min=0.0, help="Exit when no transaction arrived for this long."),
    ] = None,
    heartbeat_interval: Annotated[
        float, typer.Option("--heartbeat-interval", min=0.1, help="Seconds between watermark heartbeats.")
    ] = 5.0,
    batch_events: Annotated[
        int,
        typer.Option(
            "--batch-events", min=1, envvar="CDC_BATCH_EVENTS", help="Deliver once this many events wait."
        ),
    ] = 5000,
    batch_transactions: Annotated[
        int,
        typer.Option(
            "--batch-transactions",
            min=1,
            envvar="CDC_BATCH_TRANSACTIONS",
            help="Deliver once this many source transactions wait.",
        ),
    ] = 1000,
    batch_delay: Annotated[
        float,
        typer.Option(
            "--batch-delay",
            min=0.0,
            envvar="CDC_BATCH_DELAY",
            help="Deliver once the oldest waiting transaction is this many seconds old.",
        ),
    ] = 0.5,
) -> None:
    """Run the derivers over the stream and deliver their events (the daemon)."""
    import logging

    from .sinks import open_sink
    from .tail import StopFlag
    from .watch import WatchOptions, run_watch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    s = _settings(dsn=dsn, slot=slot, publication=publication, schema_name=schema)
    stop = StopFlag()
    stop.install()
    stats = run_watch(
        WatchOptions(
            dsn=s.dsn.get_secret_value(),
            slot=s.slot,
            publication=s.publication,
            schema=s.schema_name,
            once=once,
            idle_exit=idle_exit,
            heartbeat_interval=heartbeat_interval,
            status_interval=s.status_interval_s,
            batch_max_events=batch_events,
            batch_max_transactions=batch_transactions,
            batch_max_delay=batch_delay,
        ),
        open_sink(sink, schema=s.schema_name, stop=stop),
        stop,
    )
    typer.echo(
        f"delivered {stats.events} events from {stats.transactions} transactions "
        f"({stats.timers_fired} timers fired, {stats.dead_letters} dead letters)",
        err=True,
    )


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
    try:
        from catalog.cli import app as catalog_app
    except ImportError:  # pragma: no cover - the catalog package ships with this one
        return
    app.add_typer(catalog_app, name="catalog", help="The event catalog: list, export, sync.")


#: Subcommands that never need the catalog's own commands: skip importing them (its models, and
#: the rich tables of `cdc catalog`, ~150 ms for setup/teardown/tail; ~40 ms for watch, which
#: imports the models itself).
_CORE_COMMANDS = frozenset({"setup", "teardown", "tail", "watch"})


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not (args and args[0] in _CORE_COMMANDS):
        _mount_catalog()
    try:
        app(args=argv, prog_name="cdc")  # usage errors: typer prints them and exits 2
    except CdcError as exc:
        print(f"cdc: error: {exc.one_line()}", file=sys.stderr)
        sys.exit(3 if exc.retryable else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        err = translate(exc)
        if type(err) is CdcError and not hasattr(exc, "sqlstate"):
            raise
        print(f"cdc: error: {err.one_line()}", file=sys.stderr)
        sys.exit(3 if err.retryable else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
