"""Replicated reference state and durable timers: in memory while running, persisted with the checkpoint.

:class:`StateStore` keeps the reference rows the derivers look up (statuses, users, bundle
settings, …) keyed by primary key, in canonical JSON forms.  It is filled once from the
snapshot exported when the slot was created (:func:`bootstrap_hook`, run by ``cdc setup``)
and then only from the replication stream, so every lookup is as of the transaction being
derived, never "now".  :class:`TimerStore` holds the derivers' durable timers.  Both record
what changed since the last checkpoint and write it in the checkpoint's transaction.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from derivers.base import Deriver, Image, Timer, TimerState

from . import queries
from .assembler import RowChange
from .connect import connect
from .lsn import format_lsn, parse_lsn
from .pgoutput.messages import Column, Relation
from .values import JsonRowView, Row, RowShape

_MISSING = object()


def _q(name: str, schema: str) -> sql.Composed | sql.SQL:
    return queries.query("state", name, schema=sql.Identifier(schema))


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
    conn.execute(queries.query("setup", "create_checkpoints", schema=ident))
    conn.execute(queries.query("setup", "create_slots", schema=ident))
    conn.execute(queries.query("setup", "add_bootstrapped_tables", schema=ident))
    conn.execute(_q("create_state", schema))
    conn.execute(_q("create_timers", schema))
    conn.execute(queries.query("dead_letters", "create_dead_letters", schema=ident))
    conn.execute(queries.query("relations", "create_derivation_gaps", schema=ident))
    conn.execute(queries.query("setup", "create_slot_gaps", schema=ident))
    conn.execute(queries.query("setup", "create_slot_gaps_open", schema=ident))
    for table, owner in conn.execute(queries.raw("setup", "tables_for_the_schema_owner"), {"schema": schema}):
        conn.execute(
            queries.query(
                "setup", "give_table_to", table=sql.Identifier(schema, table), owner=sql.Identifier(owner)
            )
        )


class StateStore:
    """Reference rows per table and primary key; a ``derivers.base.StateView``."""

    def __init__(self, slot: str, schema: str, primary_keys: Mapping[str, tuple[str, ...]]) -> None:
        self.slot = slot
        self.schema = schema
        self.primary_keys = dict(primary_keys)  # only these tables are kept
        self.rows: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {t: {} for t in self.primary_keys}
        self._indexes: dict[tuple[str, str], dict[Any, set[tuple[str, ...]]]] = {}
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
        rows = self.rows.get(table, {})
        return [rows[k] for k in index.get(_hashable(value), ())]

    # -- applying changes -------------------------------------------------------------------
    def watches(self, table: str) -> bool:
        return table in self.primary_keys

    def _key(self, table: str, row: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in self.primary_keys[table])

    def _put(self, table: str, key: tuple[str, ...], row: dict[str, Any] | None) -> None:
        rows = self.rows.setdefault(table, {})
        old = rows.get(key)
        for (t, col), index in self._indexes.items():
            if t != table:
                continue
            if old is not None:
                index.get(_hashable(old.get(col)), set()).discard(key)
            if row is not None:
                index.setdefault(_hashable(row.get(col)), set()).add(key)
        if row is None:
            rows.pop(key, None)
        else:
            rows[key] = row
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
        self.rows = {t: {} for t in self.primary_keys}
        count = 0
        for table, key, data in conn.execute(_q("load_state", self.schema), {"slot": self.slot}):
            if table in self.primary_keys:
                self.rows[table][tuple(orjson.loads(key))] = orjson.loads(data)
                count += 1
        self._indexes.clear()
        self._dirty.clear()
        return count

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def flush(self, conn: psycopg.Connection[Any]) -> None:
        """Write what changed since the last flush (inside the caller's transaction)."""
        if not self._dirty:
            return
        upserts = []
        deletes = []
        for (table, key), row in self._dirty.items():
            params = {"slot": self.slot, "table": table, "key": orjson.dumps(list(key)).decode()}
            if row is None:
                deletes.append(params)
            else:
                upserts.append({**params, "row": orjson.dumps(row).decode()})
        with conn.cursor() as cur:
            if deletes:
                cur.executemany(_q("delete_state", self.schema), deletes)
            if upserts:
                cur.executemany(_q("upsert_state", self.schema), upserts)
        # cleared by committed(), once the caller's transaction is durable

    def committed(self) -> None:
        """The transaction that flushed the changes committed: nothing is pending any more."""
        self._dirty.clear()


def _hashable(value: Any) -> Any:
    if isinstance(value, list | dict):
        return orjson.dumps(value)
    return value


@dataclass(frozen=True)
class ArmedBy:
    """The change that armed a timer: the timer event's source. ``table`` is the table of the
    row the timer is about (``TimerOps.arm``); a TRUNCATE of it forgets the timer."""

    lsn: int
    xid: int
    commit_time: datetime
    table: str


class TimerStore:
    """Durable timers (a ``derivers.base.TimerOps`` for the deriver whose turn it is)."""

    def __init__(self, slot: str, schema: str) -> None:
        self.slot = slot
        self.schema = schema
        self.timers: dict[str, Timer] = {}
        self.armed_by: dict[str, ArmedBy] = {}
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()
        # The transaction being derived (lsn, xid, commit time), set by the watcher.
        self.context: tuple[int, int, datetime] | None = None
        self.deriver = ""
        # (due_at, key) of armed timers; stale entries (moved, paused, settled) are skipped
        # when they surface, so arming is O(log n) and finding due timers is not a scan.
        self._heap: list[tuple[datetime, str]] = []

    # -- TimerOps -----------------------------------------------------------------------------
    def get(self, key: str) -> Timer | None:
        return self.timers.get(key)

    def arm(
        self,
        key: str,
        *,
        table: str,
        tenant: str,
        subject_id: str,
        stage: str,
        due_at: datetime,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        current = self.timers.get(key)
        if current is not None and current.state in ("fired", "settled"):
            return
        if (
            current is not None
            and current.state == "armed"
            and current.due_at == due_at
            and (data is None or dict(data) == dict(current.data))
        ):
            return
        self.timers[key] = Timer(
            key, self.deriver, tenant, subject_id, stage, due_at, "armed", dict(data or {})
        )
        heapq.heappush(self._heap, (due_at, key))
        if self.context is not None:
            self.armed_by[key] = ArmedBy(*self.context, table)
        self._touch(key)

    def pause(self, key: str) -> None:
        self._set_state(key, "paused", ("armed",))

    def settle(self, key: str) -> None:
        self._set_state(key, "settled", ("armed", "paused"))

    def forget(self, key: str) -> None:
        if self.timers.pop(key, None) is not None:
            self.armed_by.pop(key, None)
            self._dirty.discard(key)
            self._deleted.add(key)

    def forget_table(self, table: str) -> int:
        """A TRUNCATE of ``table``: every timer its rows armed goes, whatever its state (the
        rows are gone, as if each was deleted). Returns how many."""
        keys = [key for key, by in self.armed_by.items() if by.table == table]
        for key in keys:
            self.forget(key)
        return len(keys)

    def _set_state(self, key: str, state: TimerState, allowed: tuple[str, ...]) -> None:
        t = self.timers.get(key)
        if t is not None and t.state in allowed:
            self.timers[key] = replace(t, state=state)
            self._touch(key)
        # re-arming a paused timer pushes a fresh heap entry in arm()

    def _touch(self, key: str) -> None:
        self._dirty.add(key)
        self._deleted.discard(key)

    # -- the watcher's side ---------------------------------------------------------------
    def _live(self, entry: tuple[datetime, str]) -> bool:
        t = self.timers.get(entry[1])
        return t is not None and t.state == "armed" and t.due_at == entry[0]

    def due(self, watermark: datetime) -> list[Timer]:
        """Armed timers whose due time the watermark has passed, earliest first."""
        heap = self._heap
        out: list[Timer] = []
        while heap and heap[0][0] < watermark:
            entry = heapq.heappop(heap)
            if self._live(entry) and all(t.key != entry[1] for t in out):
                out.append(self.timers[entry[1]])
        return out

    def next_due(self) -> datetime | None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def mark_fired(self, key: str) -> None:
        self._set_state(key, "fired", ("armed",))

    def load(self, conn: psycopg.Connection[Any]) -> int:
        self.timers.clear()
        self.armed_by.clear()
        for key, deriver, tenant, subject, stage, due_at, state, data, lsn, xid, ct, table in conn.execute(
            _q("load_timers", self.schema), {"slot": self.slot}
        ):
            self.timers[key] = Timer(key, deriver, tenant, subject, stage, due_at, state, orjson.loads(data))
            self.armed_by[key] = ArmedBy(parse_lsn(lsn), xid, ct, table)
        self._heap = [(t.due_at, k) for k, t in self.timers.items() if t.state == "armed"]
        heapq.heapify(self._heap)
        self._dirty.clear()
        self._deleted.clear()
        return len(self.timers)

    def flush(self, conn: psycopg.Connection[Any]) -> None:
        with conn.cursor() as cur:
            if self._deleted:
                cur.executemany(
                    _q("delete_timer", self.schema), [{"slot": self.slot, "key": k} for k in self._deleted]
                )
            rows = []
            for k in self._dirty:
                t = self.timers[k]
                by = self.armed_by[k]
                rows.append(
                    {
                        "slot": self.slot,
                        "key": k,
                        "deriver": t.deriver,
                        "tenant": t.tenant,
                        "subject_id": t.subject_id,
                        "stage": t.stage,
                        "due_at": t.due_at,
                        "state": t.state,
                        "data": orjson.dumps(dict(t.data)).decode(),
                        "armed_lsn": format_lsn(by.lsn),
                        "armed_xid": by.xid,
                        "armed_commit_time": by.commit_time,
                        "armed_table": by.table,
                    }
                )
            if rows:
                cur.executemany(_q("upsert_timer", self.schema), rows)
        # cleared by committed(), once the caller's transaction is durable

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._deleted)

    def committed(self) -> None:
        """The transaction that flushed the changes committed: nothing is pending any more."""
        self._dirty.clear()
        self._deleted.clear()


# --- bootstrap under the slot's exported snapshot ----------------------------------------


def state_tables(derivers: Sequence[Deriver] | None = None) -> frozenset[str]:
    """The reference tables the derivers (default: the registry's) read."""
    if derivers is None:
        from derivers import default_derivers

        derivers = default_derivers()
    out: set[str] = set()
    for d in derivers:
        out |= d.state_tables
    return frozenset(out)


def read_table_rows(conn: psycopg.Connection[Any], table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` in canonical JSON forms, through the same conversion as the stream.

    Values are read in text form (the session is pinned to ISO dates in UTC, like the
    replication session) and go through :class:`RowShape` exactly as streamed rows do.
    """
    schema, name = table.split(".", 1)
    out: list[dict[str, Any]] = []
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, name)))
        desc = cur.description or []
        rel = Relation(0, schema, name, "f", tuple(Column(0, d.name, d.type_code, -1) for d in desc))
        shape = RowShape(rel)
        res = cur.pgresult
        assert res is not None
        for r in range(res.ntuples):
            values = tuple(res.get_value(r, c) for c in range(res.nfields))
            out.append(JsonRowView(Row(shape, values)).to_dict())
    return out


@dataclass(frozen=True)
class BootstrapContext:
    snapshot_conn: psycopg.Connection[Any]  # REPEATABLE READ, under the slot's snapshot
    writer_conn: psycopg.Connection[Any]  # autocommit, to write the watcher's own tables
    slot: str
    schema: str
    consistent_point: int
    tables: tuple[str, ...]  # the watched tables


def make_bootstrap_hook(
    derivers: Sequence[Deriver] | None = None,
) -> Callable[[BootstrapContext], tuple[str, ...]]:
    """The bootstrap for ``cdc setup``: copy the reference tables the derivers read, as of the
    slot's consistent point, into the state store (and start with no timers). Returns the
    tables it copied; the slot's record keeps them."""

    def hook(ctx: BootstrapContext) -> tuple[str, ...]:
        return bootstrap(ctx, state_tables(derivers))

    return hook


def bootstrap(ctx: BootstrapContext, tables: frozenset[str]) -> tuple[str, ...]:
    wanted = tuple(t for t in ctx.tables if t in tables)
    store = _read_tables(ctx.snapshot_conn, ctx.slot, ctx.schema, wanted)
    with ctx.writer_conn.transaction():
        ctx.writer_conn.execute(_q("clear_state", ctx.schema), {"slot": ctx.slot})
        ctx.writer_conn.execute(_q("clear_timers", ctx.schema), {"slot": ctx.slot})
        store.flush(ctx.writer_conn)
    return wanted


def _read_tables(
    conn: psycopg.Connection[Any], slot: str, schema: str, tables: tuple[str, ...]
) -> StateStore:
    """The rows of ``tables`` as ``conn``'s transaction sees them, in a fresh store."""
    from .provision import table_facts

    conn.execute("SET LOCAL TimeZone = 'UTC'")
    conn.execute("SET LOCAL DateStyle = 'ISO'")
    conn.execute("SET LOCAL IntervalStyle = 'postgres'")
    conn.execute("SET LOCAL extra_float_digits = 3")
    pks = {t.qualified: t.primary_key for t in table_facts(conn, tables)}
    store = StateStore(slot, schema, pks)
    for table in tables:
        for row in read_table_rows(conn, table):
            store._put(table, store._key(table, row), row)
    return store


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
        store = _read_tables(source, slot, schema, (table,))
    with store_conn.transaction():
        store_conn.execute(_q("clear_state_table", schema), {"slot": slot, "table": table})
        store.flush(store_conn)
        store_conn.execute(
            queries.query("setup", "add_bootstrapped_table", schema=sql.Identifier(schema)),
            {"slot": slot, "table": table},
        )
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


bootstrap_hook = make_bootstrap_hook()
