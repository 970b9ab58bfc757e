"""Catalog sync: make the application's ``system_event_catalog`` (SPEC §6) list every event type
of the registry, with its name, description, category and ``payload_schema_ref``.

Where the application's table exists (found through the connection's ``search_path``), rows are
upserted there by ``event_type``, as the application's own catalog migrations do: ``event_id``,
``created_at`` and the legacy inline ``payload_schema`` of existing rows are left alone, rows of
other event types are never touched. Where it does not exist, the same rows go to the watcher's
copy ``<schema>.event_catalog`` (created if missing, same columns). A row is written only when
one of the four synced columns differs, so a second run reports every row unchanged and does not
bump ``updated_at``. Everything happens in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from catalog.registry import specs

from . import queries
from .errors import ConfigError

__all__ = ["CatalogRow", "CatalogSyncError", "SyncPlan", "SyncResult", "catalog_rows", "plan", "sync"]

APP_TABLE = "system_event_catalog"
_REQUIRED_COLUMNS = frozenset(
    {"event_type", "name", "description", "category", "payload_schema_ref", "created_at", "updated_at"}
)


class CatalogSyncError(ConfigError):
    """The catalog cannot be synced: the application's table lacks columns."""

    hint = "run the application's migrations, then sync again"


@dataclass(frozen=True, slots=True)
class CatalogRow:
    """The synced columns of one catalog row."""

    event_type: str
    name: str
    description: str | None
    category: str | None
    payload_schema_ref: str | None


@dataclass(frozen=True, slots=True)
class SyncPlan:
    inserts: tuple[CatalogRow, ...]
    updates: tuple[CatalogRow, ...]
    unchanged: tuple[CatalogRow, ...]


@dataclass(frozen=True, slots=True)
class SyncResult:
    table: str
    inserted: int
    updated: int
    unchanged: int

    def summary(self) -> str:
        return f"{self.table}: {self.inserted} inserted, {self.updated} updated, {self.unchanged} unchanged"


def catalog_rows() -> tuple[CatalogRow, ...]:
    """The rows the registry wants in the catalog."""
    return tuple(
        CatalogRow(s.event_type, s.name, s.description, s.category, s.payload_schema_ref) for s in specs()
    )


def plan(wanted: Iterable[CatalogRow], existing: Mapping[str, CatalogRow]) -> SyncPlan:
    """Split ``wanted`` into rows to insert, rows to update and rows already as wanted."""
    inserts, updates, unchanged = [], [], []
    for row in wanted:
        current = existing.get(row.event_type)
        if current is None:
            inserts.append(row)
        elif current != row:
            updates.append(row)
        else:
            unchanged.append(row)
    return SyncPlan(tuple(inserts), tuple(updates), tuple(unchanged))


def _target(conn: psycopg.Connection[Any], schema: str) -> tuple[sql.Composable, str]:
    found = conn.execute(queries.query("catalog", "find_app_catalog")).fetchone()
    if found is not None:
        table_schema, table_name, columns = found
        missing = _REQUIRED_COLUMNS - set(columns)
        if missing:
            raise CatalogSyncError(
                f"{table_schema}.{table_name} lacks column(s) {', '.join(sorted(missing))}"
            )
        return sql.Identifier(table_schema, table_name), f"{table_schema}.{table_name}"
    conn.execute(queries.query("catalog", "create_event_catalog", schema=sql.Identifier(schema)))
    return sql.Identifier(schema, "event_catalog"), f"{schema}.event_catalog"


def sync(conn: psycopg.Connection[Any], *, schema: str = "cdc") -> SyncResult:
    """Upsert the registry into the catalog table (see the module docstring); one transaction."""
    wanted = catalog_rows()
    now = datetime.now(UTC)
    with conn.transaction():
        table, label = _target(conn, schema)
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(
                queries.query("catalog", "select_catalog_rows", table=table),
                {"event_types": [r.event_type for r in wanted]},
            )
            existing = {r[0]: CatalogRow(*r) for r in cur}
            todo = plan(wanted, existing)
            changed = todo.inserts + todo.updates
            if changed:
                cur.executemany(
                    queries.query("catalog", "upsert_catalog_row", table=table),
                    [
                        {
                            "event_type": r.event_type,
                            "name": r.name,
                            "description": r.description,
                            "category": r.category,
                            "payload_schema_ref": r.payload_schema_ref,
                            "now": now,
                        }
                        for r in changed
                    ],
                )
    return SyncResult(label, len(todo.inserts), len(todo.updates), len(todo.unchanged))
