"""The watcher's own schema (``cdc`` by default) and every table in it.

Checkpoints, slots and slot gaps, state rows, timers, dead letters, derivation gaps, the change
journal (:mod:`cdc.journal`) and backfill runs (:mod:`cdc.backfill`): their
DDL is in ``sql/`` beside the queries that use them. :func:`create_tables` is idempotent; ``cdc
setup`` and ``cdc watch`` both run it, and a sink that keeps tables of its own in the schema (the
outbox) calls :func:`ensure_schema` first.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from . import journal, queries


def ensure_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the watcher's schema unless it exists (see the create_schema query for why)."""
    row = conn.execute(queries.raw("setup", "schema_exists"), {"schema": schema}).fetchone()
    if not (row and row[0]):
        conn.execute(queries.query("setup", "create_schema", schema=sql.Identifier(schema)))


def create_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """Every table of the watcher's own schema (idempotent).

    Tables are owned by the schema's owner: when the tables' owner runs `cdc setup` into a
    schema made for a least-privilege watcher role, the new tables are handed to that role, so
    the watcher may write them and add what a later version needs."""
    ident = sql.Identifier(schema)
    ensure_schema(conn, schema)
    conn.execute(queries.query("checkpoints", "create_checkpoints", schema=ident))
    conn.execute(queries.query("setup", "create_slots", schema=ident))
    conn.execute(queries.query("setup", "add_bootstrapped_tables", schema=ident))
    conn.execute(queries.query("state", "create_state", schema=ident))
    conn.execute(queries.query("state", "create_timers", schema=ident))
    conn.execute(queries.query("dead_letters", "create_dead_letters", schema=ident))
    conn.execute(queries.query("relations", "create_derivation_gaps", schema=ident))
    conn.execute(queries.query("setup", "create_slot_gaps", schema=ident))
    conn.execute(queries.query("setup", "create_slot_gaps_open", schema=ident))
    journal.create_tables(conn, schema)
    conn.execute(queries.query("backfill", "create_backfill_runs", schema=ident))
    for table, owner in conn.execute(queries.raw("setup", "tables_for_the_schema_owner"), {"schema": schema}):
        conn.execute(
            queries.query(
                "setup", "give_table_to", table=sql.Identifier(schema, table), owner=sql.Identifier(owner)
            )
        )
