"""``cdc catalog``: list the event catalog, export its JSON Schemas, sync it into Postgres.

``app`` is mounted by ``cdc/cli.py`` as the ``catalog`` sub-command and also runs on its own
(``python -m catalog.cli``). Which types a registered deriver emits is not the catalog's
knowledge (derivers depend on the catalog, not the reverse): the command that mounts ``app``
puts an :class:`Emitted` into the root context object, and ``list`` shows its answer in the
``derived`` column (``?`` when run on its own). Failures print one line to stderr, naming the cause and what to do,
and exit with status 1; no traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Set
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import psycopg
import typer
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.table import Table

from catalog.jsonschema_export import export as export_schemas
from catalog.registry import specs
from catalog.sync import CatalogSyncError
from catalog.sync import sync as sync_catalog

__all__ = ["Emitted", "app"]


@dataclass(frozen=True)
class Emitted:
    """The event types the registered derivers emit, asked only when needed."""

    types: Callable[[], Set[str]]


app = typer.Typer(
    name="catalog",
    help="The catalogued event types: list them, export their JSON Schemas, sync them to Postgres.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help, like the cdc command's
)

CONNECT_TIMEOUT_S = 10
"""Used when neither the DSN nor PGCONNECT_TIMEOUT sets one, so a dead host fails quickly."""


class ExportFormat(StrEnum):
    jsonschema = "jsonschema"


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@app.command("list")
def list_(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")] = False,
) -> None:
    """List every catalogued event type; `derived`: a registered deriver emits it."""
    given = ctx.find_root().obj
    emitted = given.types() if isinstance(given, Emitted) else None
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
            "derived": None if emitted is None else s.event_type in emitted,
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
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["eventType"],
            r["category"],
            r["payloadSchemaRef"],
            r["schemaSource"],
            "yes" if r["inAppCatalog"] else "no",
            "yes" if r["derivable"] else "no",
            "?" if r["derived"] is None else "yes" if r["derived"] else "no",
        )
    Console(width=max(160, Console().width)).print(table)


@app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the schema files into.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Export format.")] = ExportFormat.jsonschema,
) -> None:
    """Write one JSON Schema per payload ref, the envelope schema and an index."""
    try:
        written = export_schemas(out)
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc.strerror or _one_line(exc)}; choose a writable --out directory")
    typer.echo(f"wrote {len(written)} files to {out}")


@app.command("sync")
def sync(
    dsn: Annotated[
        str,
        typer.Option(
            "--dsn",
            envvar="CDC_DSN",
            help="libpq connection string of the application database (PG* variables apply).",
        ),
    ] = "",
    schema: Annotated[
        str,
        typer.Option("--schema", envvar="CDC_SCHEMA", help="The watcher's own schema (fallback table)."),
    ] = "cdc",
) -> None:
    """Upsert the catalog into system_event_catalog (or <schema>.event_catalog if it is absent)."""
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        _fail(f"invalid connection string ({_one_line(exc)}); fix --dsn or CDC_DSN")
    options: dict[str, Any] = {}
    if "connect_timeout" not in given and "PGCONNECT_TIMEOUT" not in os.environ:
        options["connect_timeout"] = CONNECT_TIMEOUT_S
    if "application_name" not in given:
        options["application_name"] = "cdc catalog sync"
    try:
        conn = psycopg.connect(dsn, **options)
    except psycopg.Error as exc:
        _fail(f"cannot connect to Postgres ({_one_line(exc)}); check --dsn or CDC_DSN")
    with conn:
        try:
            result = sync_catalog(conn, schema=schema)
        except CatalogSyncError as exc:
            _fail(str(exc))
        except psycopg.errors.InsufficientPrivilege as exc:
            _fail(
                f"permission denied ({_one_line(exc)}); run sync as a role that may write the "
                "catalog table (or create the watcher's schema)"
            )
        except psycopg.OperationalError as exc:
            _fail(f"lost the connection to Postgres ({_one_line(exc)}); run sync again")
        except psycopg.Error as exc:
            _fail(f"catalog sync failed [{exc.sqlstate}] ({_one_line(exc)})")
    typer.echo(result.summary())


if __name__ == "__main__":
    app()
