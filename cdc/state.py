"""Replicated reference state: in memory while running, persisted with the checkpoint.

:class:`StateStore` keeps the reference rows the derivers look up (statuses, users, bundle
settings, …) keyed by primary key, in canonical JSON forms.  It is filled once from the
snapshot exported when the slot was created (:func:`make_bootstrap_hook`, run by ``cdc setup``)
and then only from the replication stream, so every lookup is as of the transaction being
derived, never "now".  It records what changed since the last checkpoint and writes it in the
checkpoint's transaction.  The derivers' durable timers are :mod:`cdc.timers`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple

import orjson
import psycopg
from psycopg import sql

from derivers.base import Deriver, Image, StateIndex, StateTotal

from . import queries
from .assembler import RowChange
from .checkpoint import Pending, Position, PostgresCheckpoints
from .connect import connect
from .journal import Journal, history, record_bootstrap
from .pgoutput.messages import Column, Relation, pg_micros
from .provision import BootstrapContext, table_facts
from .values import JsonRowView, Row, RowShape

_MISSING = object()


def _q(name: str, schema: str) -> sql.Composed | sql.SQL:
    return queries.query("state", name, schema=sql.Identifier(schema))


class StateStore:
    """Reference rows per table and primary key; a ``derivers.base.StateView``."""

    def __init__(self, slot: str, schema: str, primary_keys: Mapping[str, tuple[str, ...]]) -> None:
        self.slot = slot
        self.schema = schema
        self.primary_keys = dict(primary_keys)  # only these tables are kept
        self.rows: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {t: {} for t in self.primary_keys}
        self._indexes: dict[tuple[str, str], dict[Any, set[tuple[str, ...]]]] = {}
        self._lookups: dict[StateIndex, dict[Hashable, set[tuple[str, ...]]]] = {}
        self._totals: dict[StateTotal, dict[Hashable, int]] = {}
        # what _put keeps current, by table: column indexes, StateIndex keys, StateTotal sums
        self._upkeep: dict[str, _Upkeep] = {}
        self._dirty: dict[tuple[str, tuple[str, ...]], dict[str, Any] | None] = {}

    # -- StateView ------------------------------------------------------------------------
    def get(self, table: str, key: tuple[str, ...]) -> Image | None:
        rows = self.rows.get(table)
        if rows is None:
            return None
        return rows.get(key if type(key) is tuple else tuple(key))

    def find(self, table: str, column: str, value: Any) -> list[Image]:
        index = self._indexes.get((table, column))
        if index is None:
            index = {}
            for k, row in self.rows.get(table, {}).items():
                index.setdefault(_hashable(row.get(column)), set()).add(k)
            self._indexes[(table, column)] = index
            self._upkeep_of(table).indexes.append((column, index))
        rows = self.rows.get(table, {})
        return [rows[k] for k in index.get(_hashable(value), ())]

    def lookup(self, index: StateIndex, key: Hashable) -> list[Image]:
        keyed = self._lookups.get(index)
        if keyed is None:  # built on first use, then kept current by _put
            keyed = {}
            for k, row in self.rows.get(index.table, {}).items():
                for found in index.keys(row):
                    keyed.setdefault(found, set()).add(k)
            self._lookups[index] = keyed
            self._upkeep_of(index.table).lookups.append((index, keyed))
        rows = self.rows.get(index.table, {})
        return [rows[k] for k in keyed.get(key, ())]

    def total(self, total: StateTotal, key: Hashable) -> int:
        sums = self._totals.get(total)
        if sums is None:  # built on first use, then kept current by _put
            sums = self._totals[total] = {}
            table = total.tables[0]
            for row in list(self.rows.get(table, {}).values()):
                _add(sums, total.contributions(self, table, row), 1)
            for of_table in dict.fromkeys(total.tables):
                self._upkeep_of(of_table).totals.append((total, sums))
        return sums.get(key, 0)

    def _upkeep_of(self, table: str) -> _Upkeep:
        upkeep = self._upkeep.get(table)
        if upkeep is None:
            upkeep = self._upkeep[table] = _Upkeep([], [], [])
        return upkeep

    # -- applying changes -------------------------------------------------------------------
    def _key(self, table: str, row: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple([str(row[c]) for c in self.primary_keys[table]])

    def _put(self, table: str, key: tuple[str, ...], row: dict[str, Any] | None) -> None:
        rows = self.rows.setdefault(table, {})
        old = rows.get(key)
        upkeep = self._upkeep.get(table) or _NO_UPKEEP
        if old is not None:  # the old row's combinations leave, with the rest as it is; a total
            for total, sums in upkeep.totals:  # first built meanwhile counted it: it leaves that too
                _add(sums, total.contributions(self, table, old), -1)
        # the totals that exist before the new row is in (one built while it comes in counts it)
        totals = tuple(upkeep.totals)
        for col, index in upkeep.indexes:
            if old is not None:
                index.get(_hashable(old.get(col)), set()).discard(key)
            if row is not None:
                index.setdefault(_hashable(row.get(col)), set()).add(key)
        for lookup, keyed in upkeep.lookups:
            if old is not None:
                for found in lookup.keys(old):
                    keyed.get(found, set()).discard(key)
            if row is not None:
                for found in lookup.keys(row):
                    keyed.setdefault(found, set()).add(key)
        if row is None:
            rows.pop(key, None)
        else:
            rows[key] = row
        if row is not None:  # ... and the new row's come in
            for total, sums in totals:
                _add(sums, total.contributions(self, table, row), 1)
        self._dirty[(table, key)] = row

    def apply(self, change: RowChange) -> None:
        table = change.table
        if table not in self.primary_keys:
            return
        if change.op == "truncate":
            for key in list(self.rows.get(table, {})):
                self._put(table, key, None)
            return
        if change.before is not None:
            old_key = self._key(table, JsonRowView(change.before))
            if change.after is None or old_key != self._key(table, JsonRowView(change.after)):
                self._put(table, old_key, None)
        if change.after is not None:
            view = JsonRowView(change.after)
            row = view.to_dict()
            key = self._key(table, view)
            if change.unknown:  # keep what we knew of columns the stream could not tell
                previous = self.rows.get(table, {}).get(key, {})
                row = {**{c: previous[c] for c in change.unknown if c in previous}, **row}
            self._put(table, key, row)

    def apply_all(self, changes: Iterable[RowChange]) -> None:
        for c in changes:
            if c.table in self.primary_keys:
                self.apply(c)

    # -- persistence ------------------------------------------------------------------------
    def load(self, conn: psycopg.Connection[Any]) -> int:
        """The rows the checkpoint's transaction last wrote; how many."""
        rows = conn.execute(_q("load_state", self.schema), {"slot": self.slot})
        return self.restore(
            (table, tuple(orjson.loads(key)), orjson.loads(data)) for table, key, data in rows
        )

    def restore(self, rows: Iterable[tuple[str, tuple[str, ...], dict[str, Any]]]) -> int:
        """Exactly ``rows`` (table, key, row) of the tables kept, as committed; how many."""
        self.rows = {t: {} for t in self.primary_keys}
        count = 0
        for table, key, row in rows:
            if table in self.primary_keys:
                self.rows[table][key] = row
                count += 1
        self._indexes.clear()
        self._lookups.clear()
        self._totals.clear()
        self._upkeep.clear()
        self._dirty.clear()
        return count

    def take_flush(self) -> Pending:
        """The rows that changed since the last commit, as they are now, to be written in a
        checkpoint's transaction: copied into a staging table (COPY), then upserted and deleted
        by one statement each — per checkpoint, not per row. (A row is never changed in place:
        a change puts a new dict, so the rows taken stay as they were.)"""
        taken = dict(self._dirty)
        return Pending(lambda conn: self._write(conn, taken), taken)

    def flush(self, conn: psycopg.Connection[Any]) -> None:
        """:meth:`take_flush`, written inside the caller's transaction now; :meth:`committed`
        once that is durable."""
        self.take_flush().write(conn)

    def _write(self, conn: psycopg.Connection[Any], rows: Mapping[tuple[str, tuple[str, ...]], Any]) -> None:
        if not rows:
            return
        dumps = orjson.dumps
        conn.execute(_q("create_state_stage", self.schema))
        with conn.cursor() as cur:
            with cur.copy(_q("copy_state_stage", self.schema)) as copy:
                for (table, key), row in rows.items():
                    data = None if row is None else dumps(row).decode()
                    copy.write_row((table, dumps(list(key)).decode(), data))
            params = {"slot": self.slot}
            cur.execute(_q("delete_state_staged", self.schema), params)
            cur.execute(_q("upsert_state_staged", self.schema), params)

    def committed(self, pending: Pending | None = None) -> None:
        """The transaction that wrote ``pending`` is durable: its rows are no longer pending,
        unless they changed again since. Without ``pending``: nothing is (the caller flushed
        and committed with nothing changed in between)."""
        if pending is None:
            self._dirty.clear()
            return
        dirty = self._dirty
        for key, row in pending.taken.items():
            if key in dirty and dirty[key] is row:
                del dirty[key]


class _Upkeep(NamedTuple):
    """What a table's changes keep current in a :class:`StateStore` (each built on first use)."""

    indexes: list[tuple[str, dict[Any, set[tuple[str, ...]]]]]  # column → its index
    lookups: list[tuple[StateIndex, dict[Hashable, set[tuple[str, ...]]]]]
    totals: list[tuple[StateTotal, dict[Hashable, int]]]


_NO_UPKEEP: Final = _Upkeep([], [], [])


def _add(sums: dict[Hashable, int], contributions: Iterable[tuple[Hashable, int]], sign: int) -> None:
    for key, amount in contributions:
        value = sums.get(key, 0) + sign * amount
        if value:
            sums[key] = value
        else:  # nothing left under the key: it goes (the totals stay as small as what is booked)
            sums.pop(key, None)


def _hashable(value: Any) -> Any:
    if isinstance(value, list | dict):
        return orjson.dumps(value)
    return value


# --- bootstrap under the slot's exported snapshot ----------------------------------------


def state_tables(derivers: Sequence[Deriver]) -> frozenset[str]:
    """The reference tables the derivers read."""
    out: set[str] = set()
    for d in derivers:
        out |= d.state_tables
    return frozenset(out)


def read_table_rows(conn: psycopg.Connection[Any], table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` in canonical JSON forms, through the same conversion as the stream.

    Values are read in text form (the session is pinned to ISO dates in UTC, like the
    replication session) and go through :class:`RowShape` exactly as streamed rows do.
    """
    shape, rows = read_table_raw(conn, table)
    return [JsonRowView(Row(shape, values)).to_dict() for values in rows]


def read_table_raw(
    conn: psycopg.Connection[Any], table: str, primary_key: tuple[str, ...] | None = None
) -> tuple[RowShape, list[tuple[bytes | None, ...]]]:
    """Every row of ``table`` as the server's text form of each value, with its shape: what
    :func:`read_table_rows` converts, and what the journal records of a snapshot."""
    schema, name = table.split(".", 1)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, name)))
        desc = cur.description or []
        rel = Relation(0, schema, name, "f", tuple(Column(0, d.name, d.type_code, -1) for d in desc))
        shape = RowShape(rel, primary_key)
        res = cur.pgresult
        assert res is not None
        rows = [tuple(res.get_value(r, c) for c in range(res.nfields)) for r in range(res.ntuples)]
    return shape, rows


def make_bootstrap_hook(derivers: Sequence[Deriver]) -> Callable[[BootstrapContext], tuple[str, ...]]:
    """The bootstrap for ``cdc setup`` over the registry's ``derivers``: copy the reference tables
    they read, as of the slot's consistent point, into the state store (and start with no timers). Returns the
    tables it copied; the slot's record keeps them."""

    def hook(ctx: BootstrapContext) -> tuple[str, ...]:
        return bootstrap(ctx, state_tables(derivers))

    return hook


def bootstrap(ctx: BootstrapContext, tables: frozenset[str]) -> tuple[str, ...]:
    """Copy ``tables`` (those of them the slot watches) into the state store, and record the
    copy as the slot's first journal entry (a snapshot at the consistent point, cdc.journal)."""
    wanted = tuple(t for t in ctx.tables if t in tables)
    journal = Journal(ctx.slot, ctx.schema)
    store, at = _read_tables(ctx.snapshot_conn, ctx.slot, ctx.schema, wanted, journal, ctx.consistent_point)
    with ctx.writer_conn.transaction():
        ctx.writer_conn.execute(_q("clear_state", ctx.schema), {"slot": ctx.slot})
        ctx.writer_conn.execute(_q("clear_timers", ctx.schema), {"slot": ctx.slot})
        store.flush(ctx.writer_conn)
        journal.flush(ctx.writer_conn, Position(ctx.consistent_point, 0, at))
        record_bootstrap(ctx.writer_conn, ctx.slot, ctx.schema, ctx.consistent_point, at)
    ctx.writer_conn.execute(_q("analyze_state", ctx.schema))
    return wanted


def _read_tables(
    conn: psycopg.Connection[Any],
    slot: str,
    schema: str,
    tables: tuple[str, ...],
    journal: Journal | None = None,
    lsn: int = 0,
) -> tuple[StateStore, datetime]:
    """The rows of ``tables`` as ``conn``'s transaction sees them, in a fresh store, and the
    transaction's time; with a ``journal``, also recorded there as a snapshot entry at ``lsn``."""
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    conn.execute("SET LOCAL DateStyle = 'ISO'")
    conn.execute("SET LOCAL IntervalStyle = 'postgres'")
    conn.execute("SET LOCAL extra_float_digits = 3")
    pks = {t.qualified: t.primary_key for t in table_facts(conn, tables)}
    store = StateStore(slot, schema, pks)
    now = conn.execute(queries.raw("journal", "snapshot_time")).fetchone()  # the snapshot's time
    assert now is not None
    for table in tables:
        shape, rows = read_table_raw(conn, table, pks[table])
        for values in rows:
            row = JsonRowView(Row(shape, values)).to_dict()
            store._put(table, store._key(table, row), row)
        if journal is not None:
            journal.record_snapshot(lsn, pg_micros(now[0]), table, shape, rows)
    return store, now[0]


def bootstrap_late(
    source_dsn: str, store_conn: psycopg.Connection[Any], slot: str, schema: str, table: str
) -> int:
    """Copy a reference table the slot's bootstrap did not cover (a deriver that reads it was
    added after ``cdc setup`` created the slot) from a snapshot taken now, and record it.

    The slot's snapshot is long gone, so this is the best there is: transactions replayed
    from the checkpoint see the table's rows as of now until the stream brings their own
    changes, which are applied as usual (a row image replayed over the same or a newer
    image converges to the stream's order). Returns the number of rows copied.
    """
    with (
        connect(source_dsn, purpose=f"watch {slot}: bootstrap", autocommit=False) as source,
        source.transaction(),
    ):
        source.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        journal = Journal(slot, schema)
        # the journal replays it where this watcher starts: after the checkpoint's transaction,
        # or (nothing delivered yet) with the slot's bootstrap, where a replay begins
        boots = [h.from_lsn for h in history(store_conn, slot, schema) if h.kind == "bootstrap"]
        at = max(PostgresCheckpoints(slot, schema).read(store_conn), boots[-1] if boots else 0)
        store, now = _read_tables(source, slot, schema, (table,), journal, at)
    with store_conn.transaction():
        store_conn.execute(_q("clear_state_table", schema), {"slot": slot, "table": table})
        store.flush(store_conn)
        journal.flush(store_conn, Position(at, 0, now))
        store_conn.execute(
            queries.query("setup", "add_bootstrapped_table", schema=sql.Identifier(schema)),
            {"slot": slot, "table": table},
        )
    store_conn.execute(_q("analyze_state", schema))
    store.committed()
    return len(store.rows.get(table, {}))


def forget_reference_table(store_conn: psycopg.Connection[Any], slot: str, schema: str, table: str) -> None:
    """Drop a reference table's rows and its place in the slot's bootstrap record (no deriver
    reads it now, so nothing keeps the rows current)."""
    with store_conn.transaction():
        store_conn.execute(_q("clear_state_table", schema), {"slot": slot, "table": table})
        store_conn.execute(
            queries.query("setup", "remove_bootstrapped_table", schema=sql.Identifier(schema)),
            {"slot": slot, "table": table},
        )
