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
from typing import Any

import psycopg
from psycopg import sql

from . import faults, queries
from .connect import connect as open_connection
from .errors import (
    CdcError,
    InsufficientPrivilege,
    NoPrimaryKey,
    SlotInUse,
    SlotInvalidated,
    SlotNotLost,
    SlotOfAnotherDatabase,
    SlotStillActive,
    TableMissing,
    WalLevelNotLogical,
    translate,
)
from .lsn import format_lsn, parse_lsn
from .values import canonical_timestamp


@dataclass(frozen=True)
class BootstrapContext:
    """What a bootstrap hook is handed (``cdc.state.make_bootstrap_hook`` is the watcher's)."""

    snapshot_conn: psycopg.Connection[Any]  # REPEATABLE READ, under the slot's snapshot
    writer_conn: psycopg.Connection[Any]  # autocommit, to write the watcher's own tables
    slot: str
    schema: str
    consistent_point: int
    tables: tuple[str, ...]  # the watched tables


#: Called inside a REPEATABLE READ transaction that sees the slot's exported snapshot.
BootstrapHook = Callable[[BootstrapContext], Sequence[str] | None]
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


def connect(dsn: str, purpose: str = "setup") -> psycopg.Connection[Any]:
    """An ordinary connection for setup, teardown and the table checks, its statements bounded
    by the statement timeout (a held lock ends the command rather than hangs it; cdc/connect.py)."""
    return open_connection(dsn, purpose=purpose, bounded=True)


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


def _q(name: str, schema: str, **more: sql.Composable) -> sql.Composed | sql.SQL:
    return queries.query("setup", name, schema=sql.Identifier(schema), **more)


def _store(
    conn: psycopg.Connection[Any], store_dsn: str | None, purpose: str = "setup"
) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
    """The connection to the database of the watcher's own schema: ``conn`` unless elsewhere."""
    return connect(store_dsn, f"{purpose}: store") if store_dsn else contextlib.nullcontext(conn)


def slot_facts(conn: psycopg.Connection[Any], slot: str) -> dict[str, Any] | None:
    cur = conn.execute(queries.raw("setup", "slot_facts"), {"slot": slot})
    row = cur.fetchone()
    if row is None:
        return None
    cols = [d.name for d in cur.description or ()]
    return dict(zip(cols, row, strict=True))


def refuse_foreign_slot(existing: dict[str, Any] | None, slot: str, database: str) -> None:
    """A logical slot serves only the database it was created in: never act on another's."""
    if existing is not None and existing["database"] != database:
        raise SlotOfAnotherDatabase(
            f"replication slot {slot} belongs to database {existing['database']}, not {database}"
        )


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
    recreate_lost_slot: bool = False,
) -> SetupReport:
    """Make the database ready for streaming; with ``check_only`` just report what is missing.

    ``store_dsn`` names the database that keeps the watcher's own schema when it is not the
    watched one (an outbox in another database, ``--sink postgresql://…``): the schema, the
    slot record, the checkpoint check and the state bootstrap go there.

    A slot the server invalidated (``wal_status`` lost) is a problem to fix, never "in
    place": it is replaced only with ``recreate_lost_slot``, which records the range of
    changes that were lost in ``slot_gaps`` (see :func:`_close_gap`).
    """
    report = SetupReport()
    with connect(dsn) as conn, _store(conn, store_dsn) as store:
        facts = check_server(conn)
        if not facts["can_replicate"]:
            raise InsufficientPrivilege("the role has neither REPLICATION nor superuser")
        # The slot is judged before anything changes: a refusal leaves the database as it was.
        existing = slot_facts(conn, slot)
        refuse_foreign_slot(existing, slot, facts["database"])
        lost = existing is not None and existing["wal_status"] == "lost"
        if lost and not recreate_lost_slot:
            if not check_only:
                raise SlotInvalidated(f"replication slot {slot} was invalidated (wal_status lost)")
            report.problems.append(
                f"replication slot {slot} was invalidated (wal_status lost): the changes since its "
                "checkpoint are gone — run `cdc setup --recreate-slot`"
            )
        if recreate_lost_slot and existing is not None and not lost:
            raise SlotNotLost(f"replication slot {slot} is not lost (wal_status {existing['wal_status']})")
        watched = table_facts(conn, tables)
        schema_exists = store.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,)
        ).fetchone()
        if not (schema_exists and schema_exists[0]):
            report.note(f"create schema {schema}")
        if not check_only:
            from .schema import create_tables

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
        # A slot that replaces an earlier one of the same name leaves a gap: the changes
        # between the earlier slot's last delivered position and the new slot's start.
        gap_reason = "missing" if existing is None else None
        interrupted = existing is not None and not lost and _gap_is_open(store, schema, slot)
        if (lost and recreate_lost_slot) or interrupted:
            if interrupted:  # a crash between dropping the lost slot and closing its gap
                report.note(
                    f"finish replacing slot {slot} (an earlier `cdc setup` stopped before recording where "
                    "the new slot starts): drop and create it again"
                )
            else:
                report.note(f"drop the invalidated slot {slot} and create it again")
            if not check_only:
                # The start of the gap is written before the old slot goes (kept if already open).
                store.execute(_q("open_slot_gap", schema), {"slot": slot, "reason": "lost"})
                drop_slot(conn, slot)
                existing, gap_reason = None, "lost"
        elif existing is not None and needs_bootstrap and not lost:
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
                    hint="run `cdc teardown` then `cdc setup` (the changes it consumed are not replayed)",
                )
            report.note(f"recreate slot {slot} (its state bootstrap never completed)")
            if not check_only:
                drop_slot(conn, slot)
                existing = None
        if existing is None and create_slot:
            report.note(f"create logical slot {slot} (pgoutput) with exported snapshot")
            if not check_only:
                if gap_reason == "missing":  # a checkpoint or record of an earlier slot of this name
                    store.execute(_q("open_slot_gap", schema), {"slot": slot, "reason": "missing"})

                def close_gap(consistent_point: int) -> None:
                    report.changes.extend(_close_gap(conn, store, schema, slot, consistent_point))

                report.consistent_point = _create_slot_with_snapshot(
                    dsn,
                    conn,
                    slot,
                    publication,
                    schema,
                    bootstrap,
                    tuple(t.qualified for t in watched),
                    writer=store,
                    on_created=close_gap,
                )
                report.slot_created = True
    return report


def _gap_is_open(store: psycopg.Connection[Any], schema: str, slot: str) -> bool:
    try:
        row = store.execute(_q("slot_gap_is_open", schema), {"slot": slot}).fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return False  # no slot_gaps table yet: no gap was ever opened
    return bool(row and row[0])


def _close_gap(
    conn: psycopg.Connection[Any],
    store: psycopg.Connection[Any],
    schema: str,
    slot: str,
    consistent_point: int,
) -> list[str]:
    """Start a new slot at its consistent point, and say which changes it cannot deliver.

    Runs as soon as the slot exists, before the bootstrap.  A checkpoint left from an earlier
    slot of this name (invalidated, dropped, or lost in a failover) would make the new slot
    skip or never reach its changes, so it goes, in the transaction that closes the gap opened
    before the old slot went (``open_slot_gap``): the start of the lost range outlives the
    checkpoint it came from.  Returns what to report.
    """
    row = conn.execute("SELECT now()").fetchone()  # the watched server's clock: commit times are its
    assert row is not None
    with store.transaction():
        gaps = store.execute(
            _q("close_slot_gap", schema),
            {"slot": slot, "lsn": format_lsn(consistent_point), "time": row[0]},
        ).fetchall()
        store.execute(_q("forget_checkpoint", schema), {"slot": slot})
    notes = []
    for reason, from_lsn, from_time, to_lsn, to_time in gaps:
        what = "was invalidated" if reason == "lost" else "was missing"
        since = f" (commit time {canonical_timestamp(from_time)})" if from_time is not None else ""
        notes.append(
            f"discard the old checkpoint of slot {slot}, which {what}: changes committed after {from_lsn}"
            f"{since} and before {to_lsn} ({canonical_timestamp(to_time)}) are not in the new slot; "
            f"the range is kept in {schema}.slot_gaps"
        )
    return notes


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
    on_created: Callable[[int], None] | None = None,
) -> int:
    """Create the slot; bootstrap the state and record the slot through ``writer`` (the
    connection to the database of the watcher's own schema; ``conn`` when None).

    ``on_created`` gets the consistent point as soon as the slot exists (other connections
    may work while the replication connection waits)."""
    writer = writer if writer is not None else conn
    repl = open_connection(dsn, purpose="setup", replication=True, slot=slot)
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
        faults.reached("setup.after_slot_created")  # a crash before the gap is closed (tests)
        if on_created is not None:
            on_created(consistent_point)
        # The replication connection must stay idle from here until the snapshot is used.
        with (
            open_connection(dsn, purpose="setup: snapshot", autocommit=False) as snap_conn,
            snap_conn.transaction(),
        ):
            snap_conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snap_conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            copied: Sequence[str] | None = None
            if bootstrap is not None:
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

    Only the DSN's own database is touched: a slot of that name created in another database
    (slot names are cluster-wide) or one a process is streaming from is refused before
    anything is dropped, so the publication and the checkpoint stay as they were too.  The
    slot's record and checkpoint are forgotten in ``store_dsn`` when the watcher's own schema
    lives there (see :func:`setup`); the ``slot_gaps`` history is kept."""
    done: list[str] = []
    with connect(dsn, "teardown") as conn, _store(conn, store_dsn, "teardown") as store:
        existing = slot_facts(conn, slot)
        refuse_foreign_slot(existing, slot, conn.info.dbname)
        if existing is not None and existing["active_pid"] is not None:
            raise SlotStillActive(f"replication slot {slot} is in use by process {existing['active_pid']}")
        if existing is not None:
            if existing["wal_status"] == "lost":
                # The changes since the checkpoint are gone with the slot's WAL: keep where that
                # range starts (a later `cdc setup` closes it) before the checkpoint is forgotten.
                from .schema import create_tables

                create_tables(store, schema)
                store.execute(_q("open_slot_gap", schema), {"slot": slot, "reason": "lost"})
                done.append(f"recorded in {schema}.slot_gaps where the changes slot {slot} lost begin")
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
            store.execute(_q("forget_checkpoint", schema), {"slot": slot})
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            pass
    return done
