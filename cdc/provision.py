"""``cdc setup`` / ``cdc teardown``: the watcher's schema, publication, replica identity and slot.

Everything is idempotent and reports what it changed.  The slot is created on a
replication connection with an exported snapshot; that snapshot lives only while the
replication connection stays idle, so this module keeps it idle while a second,
ordinary connection runs ``SET TRANSACTION SNAPSHOT`` and hands itself to the
*bootstrap hook* (the reference-state copy), then closes both.  Tables are validated
first: each must exist and have a primary key (events need a row identity).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from . import queries
from .errors import (
    CdcError,
    InsufficientPrivilege,
    NoPrimaryKey,
    SlotInUse,
    TableMissing,
    WalLevelNotLogical,
    translate,
)
from .lsn import format_lsn, parse_lsn
from .stream import connect_replication

if TYPE_CHECKING:
    from .state import BootstrapContext

#: Called inside a REPEATABLE READ transaction that sees the slot's exported snapshot.
BootstrapHook = Callable[["BootstrapContext"], Sequence[str] | None]
"""Copies reference state under the slot's snapshot; returns the tables it copied (None: not
known, taken as every reference table)."""


@dataclass
class TableFacts:
    name: str
    schema: str
    table: str
    replica_identity: str
    primary_key: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)


@dataclass
class SetupReport:
    changes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    slot_created: bool = False
    consistent_point: int | None = None

    def note(self, text: str) -> None:
        self.changes.append(text)


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=True, **kwargs)
    except psycopg.Error as exc:
        raise translate(exc) from exc


def check_server(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(queries.raw("setup", "server_facts")).fetchone()
    assert row is not None
    facts = {
        "wal_level": row[0],
        "version_num": row[1],
        "database": row[2],
        "can_replicate": row[3],
    }
    if facts["wal_level"] != "logical":
        raise WalLevelNotLogical(f"the server's wal_level is {facts['wal_level']!r}, not 'logical'")
    return facts


def table_facts(conn: psycopg.Connection[Any], names: tuple[str, ...]) -> list[TableFacts]:
    """Validate the watched tables: each exists and has a primary key."""
    rows = conn.execute(queries.raw("setup", "table_facts"), {"names": list(names)}).fetchall()
    out: list[TableFacts] = []
    for name, found, schema, table, ident, pk in rows:
        if not found:
            raise TableMissing(f"watched table {name} does not exist in this database")
        if not pk:
            raise NoPrimaryKey(f"watched table {schema}.{table} has no primary key")
        out.append(TableFacts(name, schema, table, ident, tuple(pk)))
    return out


def primary_keys(dsn: str, names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    with connect(dsn) as conn:
        return {t.qualified: t.primary_key for t in table_facts(conn, names)}


def _q(name: str, schema: str, **more: sql.Composable) -> sql.Composed | sql.SQL:
    return queries.query("setup", name, schema=sql.Identifier(schema), **more)


def _store(
    conn: psycopg.Connection[Any], store_dsn: str | None
) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
    """The connection to the database of the watcher's own schema: ``conn`` unless elsewhere."""
    return connect(store_dsn) if store_dsn else contextlib.nullcontext(conn)


def slot_facts(conn: psycopg.Connection[Any], slot: str) -> dict[str, Any] | None:
    cur = conn.execute(queries.raw("setup", "slot_facts"), {"slot": slot})
    row = cur.fetchone()
    if row is None:
        return None
    cols = [d.name for d in cur.description or ()]
    return dict(zip(cols, row, strict=True))


def setup(
    dsn: str,
    *,
    slot: str,
    publication: str,
    tables: tuple[str, ...],
    schema: str = "cdc",
    check_only: bool = False,
    bootstrap: BootstrapHook | None = None,
    create_slot: bool = True,
    store_dsn: str | None = None,
) -> SetupReport:
    """Make the database ready for streaming; with ``check_only`` just report what is missing.

    ``store_dsn`` names the database that keeps the watcher's own schema when it is not the
    watched one (an outbox in another database, ``--sink postgresql://…``): the schema, the
    slot record, the checkpoint check and the state bootstrap go there.
    """
    report = SetupReport()
    with connect(dsn) as conn, _store(conn, store_dsn) as store:
        facts = check_server(conn)
        if not facts["can_replicate"]:
            raise InsufficientPrivilege("the role has neither REPLICATION nor superuser")
        watched = table_facts(conn, tables)
        schema_exists = store.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,)
        ).fetchone()
        if not (schema_exists and schema_exists[0]):
            report.note(f"create schema {schema}")
        if not check_only:
            from .state import create_tables

            create_tables(store, schema)

        for t in watched:
            if t.replica_identity != "f":
                report.note(f"set REPLICA IDENTITY FULL on {t.qualified}")
                if not check_only:
                    try:
                        conn.execute(queries.query("setup", "set_replica_identity_full", table=t.ident))
                    except psycopg.Error as exc:
                        raise translate(exc) from exc

        wanted = {t.qualified for t in watched}
        table_list = sql.SQL(", ").join(t.ident for t in watched)
        pub = sql.Identifier(publication)
        exists_row = conn.execute(
            queries.raw("setup", "publication_exists"), {"publication": publication}
        ).fetchone()
        if not (exists_row and exists_row[0]):
            report.note(f"create publication {publication} for {len(watched)} tables")
            if not check_only:
                conn.execute(queries.query("setup", "create_publication", publication=pub, tables=table_list))
        else:
            have = {
                r[0]
                for r in conn.execute(
                    queries.raw("setup", "publication_tables"), {"publication": publication}
                )
            }
            if have != wanted:
                added, removed = sorted(wanted - have), sorted(have - wanted)
                report.note(f"set publication {publication} tables (+{len(added)} -{len(removed)})")
                if not check_only:
                    conn.execute(
                        queries.query("setup", "set_publication_tables", publication=pub, tables=table_list)
                    )

        existing = slot_facts(conn, slot)
        recorded = None
        if not check_only or (schema_exists and schema_exists[0]):
            try:
                recorded = store.execute(
                    sql.SQL("SELECT bootstrapped_at IS NOT NULL FROM {}.slots WHERE slot_name = %s").format(
                        sql.Identifier(schema)
                    ),
                    (slot,),
                ).fetchone()
            except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                recorded = None
        needs_bootstrap = bootstrap is not None and not (recorded and recorded[0])
        if existing is not None and existing["database"] != facts["database"]:
            raise CdcError(
                f"slot {slot} belongs to database {existing['database']}",
                hint="pass a different --slot",
            )
        if existing is not None and needs_bootstrap:
            # A slot without its bootstrapped state: nothing was consumed yet if the
            # checkpoint is empty, so it is safe to recreate it under a fresh snapshot.
            ck = (
                store.execute(
                    sql.SQL("SELECT 1 FROM {}.checkpoints WHERE slot_name = %s").format(
                        sql.Identifier(schema)
                    ),
                    (slot,),
                ).fetchone()
                if not check_only
                else None
            )
            if ck is not None:
                raise CdcError(
                    f"slot {slot} has consumed changes but its reference state was never bootstrapped",
                    hint="run `cdc teardown` then `cdc setup` and backfill",
                )
            report.note(f"recreate slot {slot} (its state bootstrap never completed)")
            if not check_only:
                drop_slot(conn, slot)
                existing = None
        if existing is None and create_slot:
            report.note(f"create logical slot {slot} (pgoutput) with exported snapshot")
            if not check_only:
                report.consistent_point = _create_slot_with_snapshot(
                    dsn,
                    conn,
                    slot,
                    publication,
                    schema,
                    bootstrap,
                    tuple(t.qualified for t in watched),
                    writer=store,
                )
                report.slot_created = True
                # A checkpoint left from an earlier slot of this name (dropped, or lost in a
                # failover) would make the new slot skip or never reach its changes: start
                # over at the new slot's consistent point and say what cannot be replayed.
                old = store.execute(
                    sql.SQL("DELETE FROM {}.checkpoints WHERE slot_name = %s RETURNING lsn::text").format(
                        sql.Identifier(schema)
                    ),
                    (slot,),
                ).fetchone()
                if old is not None:
                    report.note(
                        f"discard the old checkpoint {old[0]} of a previous slot {slot}: changes between it "
                        f"and {format_lsn(report.consistent_point)} are not in the new slot (backfill them)"
                    )
    return report


def _create_slot_with_snapshot(
    dsn: str,
    conn: psycopg.Connection[Any],
    slot: str,
    publication: str,
    schema: str,
    bootstrap: BootstrapHook | None,
    tables: tuple[str, ...] = (),
    *,
    writer: psycopg.Connection[Any] | None = None,
) -> int:
    """Create the slot; bootstrap the state and record the slot through ``writer`` (the
    connection to the database of the watcher's own schema; ``conn`` when None)."""
    writer = writer if writer is not None else conn
    repl = connect_replication(dsn)
    try:
        try:
            row = repl.execute(
                f"CREATE_REPLICATION_SLOT {sql.Identifier(slot).as_string(repl)} LOGICAL pgoutput (SNAPSHOT 'export')"
            ).fetchone()
        except psycopg.Error as exc:
            raise translate(exc, slot=slot) from exc
        assert row is not None
        consistent_point = parse_lsn(str(row[1]))
        snapshot = str(row[2])
        # The replication connection must stay idle from here until the snapshot is used.
        with psycopg.connect(dsn) as snap_conn, snap_conn.transaction():
            snap_conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snap_conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            copied: Sequence[str] | None = None
            if bootstrap is not None:
                from .state import BootstrapContext

                copied = bootstrap(
                    BootstrapContext(snap_conn, writer, slot, schema, consistent_point, tables)
                )
        writer.execute(
            _q("record_slot", schema),
            {"slot": slot, "publication": publication, "lsn": str(row[1]), "snapshot": snapshot},
        )
        if bootstrap is not None:
            writer.execute(
                _q("mark_bootstrapped", schema),
                {"slot": slot, "tables": list(copied) if copied is not None else None},
            )
        return consistent_point
    finally:
        repl.close()


def drop_slot(conn: psycopg.Connection[Any], slot: str) -> None:
    try:
        conn.execute(queries.raw("setup", "drop_slot"), {"slot": slot})
    except psycopg.errors.ObjectInUse as exc:
        raise SlotInUse(f"replication slot {slot} is active in another process") from exc
    except psycopg.Error as exc:
        raise translate(exc, slot=slot) from exc


def teardown(
    dsn: str, *, slot: str, publication: str, schema: str = "cdc", store_dsn: str | None = None
) -> list[str]:
    """Drop the slot (so no WAL is retained) and the publication; keep the cdc schema.

    The slot's record and checkpoint are forgotten in ``store_dsn`` when the watcher's own
    schema lives there (see :func:`setup`)."""
    done: list[str] = []
    with connect(dsn) as conn, _store(conn, store_dsn) as store:
        if slot_facts(conn, slot) is not None:
            drop_slot(conn, slot)
            done.append(f"dropped slot {slot}")
        exists_row = conn.execute(
            queries.raw("setup", "publication_exists"), {"publication": publication}
        ).fetchone()
        if exists_row and exists_row[0]:
            conn.execute(queries.query("setup", "drop_publication", publication=sql.Identifier(publication)))
            done.append(f"dropped publication {publication}")
        try:
            store.execute(_q("forget_slot", schema), {"slot": slot})
            store.execute(
                sql.SQL("DELETE FROM {}.checkpoints WHERE slot_name = %s").format(sql.Identifier(schema)),
                (slot,),
            )
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            pass
    return done
