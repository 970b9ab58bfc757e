"""``cdc catalog``: list the event catalog, export its JSON Schemas, sync it into Postgres.

``app`` is mounted by ``cdc/cli.py`` as the ``catalog`` sub-command. ``list`` computes its
``derived`` column from the registered derivers (what their declared reads feed); the catalog
itself does not know which types a deriver emits. Failures are CdcErrors: ``cdc`` prints them
as one line and exits 1 (3 for a server that cannot be reached).
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import psycopg
import typer
from rich.console import Console
from rich.table import Table

from catalog.jsonschema_export import export as export_schemas
from catalog.registry import specs

from .catalog_sync import sync as sync_catalog
from .config import DEFAULT_SCHEMA, load_settings
from .connect import connect, set_defaults
from .errors import ConfigError, translate

__all__ = ["app", "emitted_types", "not_derived"]


app = typer.Typer(
    name="catalog",
    help="The catalogued event types: list them, export their JSON Schemas, sync them to Postgres.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help, like the cdc command's
)


def not_derived() -> dict[str, str]:
    """Event type → why no registered deriver emits it (:mod:`derivers.not_derived`)."""
    from derivers.not_derived import NOT_DERIVED

    return NOT_DERIVED


def emitted_types() -> frozenset[str]:
    """Every event type a registered deriver emits: those its declared reads feed."""
    from derivers import default_derivers

    return frozenset(
        event_type
        for deriver in default_derivers()
        for columns in deriver.reads.values()
        for event_types in columns.values()
        for event_type in event_types
    )


class ExportFormat(StrEnum):
    jsonschema = "jsonschema"


@app.command("list")
def list_(
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")] = False,
) -> None:
    """List every catalogued event type; `derived`: a registered deriver emits it (else `why not`)."""
    emitted = emitted_types()
    reasons = not_derived()
    rows: list[dict[str, Any]] = [
        {
            "eventType": s.event_type,
            "name": s.name,
            "category": s.category,
            "description": s.description,
            "payloadSchemaRef": s.payload_schema_ref,
            "family": s.family,
            "schemaSource": s.schema_source,
            "inAppCatalog": s.in_app_catalog,
            "derivable": s.derivable,
            "derived": s.event_type in emitted,
            "whyNot": None if s.event_type in emitted else reasons.get(s.event_type),
        }
        for s in specs()
    ]
    if json_out:
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(title=f"{len(rows)} event types")
    for column in (
        "event type",
        "category",
        "payload schema ref",
        "schema",
        "app catalog",
        "derivable",
        "derived",
    ):
        table.add_column(column, no_wrap=True)
    table.add_column("why not", overflow="fold", min_width=40)
    for r in rows:
        table.add_row(
            r["eventType"],
            r["category"],
            r["payloadSchemaRef"],
            r["schemaSource"],
            "yes" if r["inAppCatalog"] else "no",
            "yes" if r["derivable"] else "no",
            "yes" if r["derived"] else "no",
            r["whyNot"] or "",
        )
    Console(width=max(220, Console().width)).print(table)


@app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the schema files into.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Export format.")] = ExportFormat.jsonschema,
) -> None:
    """Write one JSON Schema per payload ref, the envelope schema and an index."""
    try:
        written = export_schemas(out)
    except OSError as exc:
        raise ConfigError(
            f"cannot write to {out}: {exc.strerror}", hint="choose a writable --out directory"
        ) from None
    typer.echo(f"wrote {len(written)} files to {out}")


@app.command("sync")
def sync(
    dsn: Annotated[
        str | None,
        typer.Option("--dsn", help="libpq connection string or URI of the application's database. [CDC_DSN]"),
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(
            "--schema",
            help=f"The watcher's own schema (fallback table). [CDC_SCHEMA; default: {DEFAULT_SCHEMA}]",
        ),
    ] = None,
) -> None:
    """Upsert the catalog into system_event_catalog (or <schema>.event_catalog if it is absent)."""
    s = load_settings(dsn=dsn, schema_name=schema)
    set_defaults(connect_timeout_s=s.connect_timeout_s, statement_timeout_s=s.statement_timeout_s)
    with connect(s.dsn.get_secret_value(), purpose="catalog sync", bounded=True, autocommit=False) as conn:
        try:
            result = sync_catalog(conn, schema=s.schema_name)
        except psycopg.Error as exc:
            raise translate(exc) from exc
    typer.echo(result.summary())
