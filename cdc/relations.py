"""Watched tables that change shape under the watcher: replica identity, and the columns rules read.

Postgres decodes each change with the table's definition *as of that change*: pgoutput sends a
Relation message before a table's first change on each connection and again after its
definition changed, and a change written under REPLICA IDENTITY DEFAULT stays that way in the
WAL even once the table is FULL again. So the Relation messages, not today's catalog, say what
the changes that follow them carry.

* **Replica identity.** Without FULL an UPDATE carries no before-image (the key alone when the
  key changed) and a DELETE only its key: rules would read NULL for every old value. A watched
  table that is not FULL now stops the watcher with :class:`~cdc.errors.ReplicaIdentityNotFull`
  — at start (:func:`require_full_identity`) and on a Relation message, which comes before the
  table's first change in its transaction, so nothing of that transaction is derived, delivered
  or checkpointed. A Relation that is not FULL while the table is FULL again (``cdc setup``
  restored it) marks changes written in between: they cannot be repaired, so nothing is derived
  from that table's changes until the stream shows it FULL, and the range becomes a gap.
* **Columns.** Each deriver declares the columns its rules read (``Deriver.reads``). A Relation
  that lacks some of them opens a gap: one ERROR names the table, the columns and the event
  types that can no longer be derived; events of those types are not emitted (never from a
  guessed value) while every other event streams on; a Relation with the columns back closes it.

Gaps are rows of ``<schema>.derivation_gaps`` (``sql/relations.sql``), written in the
checkpoint's transaction, so after a restart they are exactly as of the checkpoint: what an
operator reads, and what a backfill would have to derive again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

import psycopg
from psycopg import sql

from derivers.base import Reads

from . import queries
from .checkpoint import Pending
from .errors import ReplicaIdentityNotFull
from .lsn import format_lsn, parse_lsn
from .pgoutput.messages import Relation

log = logging.getLogger("cdc.relations")

IDENTITY_NAMES: Final = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "USING INDEX"}

Reason = Literal["columns_missing", "replica_identity"]


@dataclass(frozen=True)
class TableShape:
    """A table's definition as the catalog has it now."""

    table: str  # schema-qualified
    replica_identity: str  # pg_class.relreplident: 'd', 'n', 'f' or 'i'
    columns: tuple[str, ...]


def table_shapes(conn: psycopg.Connection[Any], tables: Iterable[str]) -> list[TableShape]:
    """The current definitions of those of ``tables`` that exist."""
    rows = conn.execute(queries.raw("relations", "table_shapes"), {"names": list(tables)})
    return [TableShape(table, ident, tuple(columns)) for table, ident, columns in rows]


def not_full(table: str, identity: str) -> ReplicaIdentityNotFull:
    name = IDENTITY_NAMES.get(identity, identity)
    return ReplicaIdentityNotFull(
        f"watched table {table} has REPLICA IDENTITY {name}, not FULL: its updates and deletes "
        "would arrive without their before-images and events would be lost"
    )


def require_full_identity(shapes: Iterable[TableShape]) -> None:
    """Refuse to start while a watched table is not REPLICA IDENTITY FULL."""
    for shape in shapes:
        if shape.replica_identity != "f":
            raise not_full(shape.table, shape.replica_identity)


def merge_reads(declarations: Iterable[Reads]) -> dict[str, dict[str, frozenset[str]]]:
    """Several derivers' ``reads`` as one: the event types of a column add up."""
    out: dict[str, dict[str, frozenset[str]]] = {}
    for reads in declarations:
        for table, columns in reads.items():
            merged = out.setdefault(table, {})
            for column, types in columns.items():
                merged[column] = merged.get(column, frozenset()) | types
    return out


def missing_reads(reads: Reads, table: str, columns: Iterable[str]) -> dict[str, frozenset[str]]:
    """The columns of ``table`` that rules read and a definition with ``columns`` lacks, each
    with the event types that depend on it."""
    wanted = reads.get(table)
    if not wanted:
        return {}
    have = set(columns)
    return {column: types for column, types in wanted.items() if column not in have}


@dataclass
class Gap:
    table: str
    reason: Reason
    missing_columns: tuple[str, ...]
    event_types: tuple[str, ...]
    from_lsn: int  # commit LSN of the first transaction in the gap
    to_lsn: int | None = None  # commit LSN of the first transaction after it

    def params(self, slot: str) -> dict[str, Any]:
        return {
            "slot": slot,
            "table": self.table,
            "reason": self.reason,
            "missing_columns": list(self.missing_columns),
            "event_types": list(self.event_types),
            "from_lsn": format_lsn(self.from_lsn),
            "to_lsn": format_lsn(self.to_lsn) if self.to_lsn is not None else None,
        }


class RelationGuard:
    """Follows the definitions of the watched tables through the stream's Relation messages.

    :attr:`blocked` holds the event types that are not emitted while their columns are missing,
    :attr:`withheld` the tables whose changes the derivers do not see (written without FULL
    identity); both are empty in the common case, so the per-transaction cost is a truth test.
    """

    def __init__(self, slot: str, schema: str, reads: Reads) -> None:
        self.slot = slot
        self.schema = schema
        self.reads = reads
        self.open: dict[tuple[str, Reason], Gap] = {}
        self.blocked: frozenset[str] = frozenset()
        self.withheld: frozenset[str] = frozenset()
        self._opened: list[Gap] = []  # not written yet
        self._closed: list[Gap] = []  # closed since the last flush

    def _q(self, name: str) -> sql.Composed | sql.SQL:
        return queries.query("relations", name, schema=sql.Identifier(self.schema))

    # -- the stream ---------------------------------------------------------------------------
    def observe(self, relation: Relation, at_lsn: int, identity_now: Callable[[str], str]) -> None:
        """A Relation message, sent before the table's first change in the transaction whose
        commit LSN is ``at_lsn``. ``identity_now`` reads the table's replica identity from the
        catalog (only asked when the stream shows one that is not FULL)."""
        table = relation.qualified_name
        self._identity(table, relation.replica_identity, at_lsn, identity_now)
        self._columns(table, missing_reads(self.reads, table, (c.name for c in relation.columns)), at_lsn)

    def _identity(self, table: str, identity: str, at_lsn: int, identity_now: Callable[[str], str]) -> None:
        gap = self.open.get((table, "replica_identity"))
        if identity == "f":
            if gap is not None:
                self._close(gap, at_lsn)
                log.warning(
                    "%s is REPLICA IDENTITY FULL again in the stream from LSN %s: its changes are derived again",
                    table,
                    format_lsn(at_lsn),
                )
            return
        if gap is not None:
            return  # the same stretch of changes, announced again (a new connection)
        now = identity_now(table)
        if now != "f":
            raise not_full(table, now)
        # Written while the table was not FULL; it is FULL again now (the operator ran `cdc setup`).
        types = sorted({t for types in self.reads.get(table, {}).values() for t in types})
        self._open(Gap(table, "replica_identity", (), tuple(types), at_lsn))
        log.error(
            "changes of %s from LSN %s were written under REPLICA IDENTITY %s, without their "
            "before-images: nothing is derived from them until the stream shows the table FULL "
            "again, so %s may be missing; the range is recorded in %s.derivation_gaps",
            table,
            format_lsn(at_lsn),
            IDENTITY_NAMES.get(identity, identity),
            ", ".join(types) or "no event type",
            self.schema,
        )

    def _columns(self, table: str, missing: dict[str, frozenset[str]], at_lsn: int) -> None:
        gap = self.open.get((table, "columns_missing"))
        columns = tuple(sorted(missing))
        if gap is not None:
            if gap.missing_columns == columns:
                return  # the same definition, announced again
            self._close(gap, at_lsn)
            if not columns:
                log.warning(
                    "%s has the columns %s again from LSN %s: %s are derived again",
                    table,
                    ", ".join(gap.missing_columns),
                    format_lsn(at_lsn),
                    ", ".join(gap.event_types),
                )
        if not columns:
            return
        types = tuple(sorted(frozenset().union(*missing.values())))
        self._open(Gap(table, "columns_missing", columns, types, at_lsn))
        log.error(
            "%s has no column %s from LSN %s, which the derivers read: %s can no longer be derived "
            "and are not emitted until the columns are back; the range is recorded in %s.derivation_gaps",
            table,
            ", ".join(columns),
            format_lsn(at_lsn),
            ", ".join(types),
            self.schema,
        )

    def _open(self, gap: Gap) -> None:
        self.open[(gap.table, gap.reason)] = gap
        self._opened.append(gap)
        self._refresh()

    def _close(self, gap: Gap, at_lsn: int) -> None:
        gap.to_lsn = at_lsn
        del self.open[(gap.table, gap.reason)]
        self._closed.append(gap)
        self._refresh()

    def _refresh(self) -> None:
        self.blocked = frozenset(
            t for gap in self.open.values() if gap.reason == "columns_missing" for t in gap.event_types
        )
        self.withheld = frozenset(gap.table for gap in self.open.values() if gap.reason == "replica_identity")

    # -- persistence --------------------------------------------------------------------------
    def load(self, conn: psycopg.Connection[Any]) -> None:
        """The gaps left open at the checkpoint: they go on until the stream closes them."""
        self.open.clear()
        self._opened.clear()
        self._closed.clear()
        for table, reason, columns, types, from_lsn in conn.execute(
            self._q("load_open_gaps"), {"slot": self.slot}
        ):
            gap = Gap(table, reason, tuple(columns), tuple(types), parse_lsn(from_lsn))
            self.open[(table, reason)] = gap
            log.warning(
                "derivation gap open on %s since LSN %s (%s%s): %s are not derived",
                table,
                from_lsn,
                reason.replace("_", " "),
                f" {', '.join(gap.missing_columns)}" if gap.missing_columns else "",
                ", ".join(gap.event_types) or "no event type",
            )
        self._refresh()

    def take_flush(self, checkpoint: int) -> Pending:
        """For the checkpoint's transaction: new gaps, closed gaps, and how far open ones reach."""
        opened, closed = list(self._opened), list(self._closed)
        opened_params = [g.params(self.slot) for g in opened]
        closed_params = [g.params(self.slot) for g in closed]
        advance = bool(self.open)

        def write(conn: psycopg.Connection[Any]) -> None:
            if not (advance or opened or closed):
                return
            with conn.cursor() as cur:
                if opened_params:
                    cur.executemany(self._q("open_gap"), opened_params)
                if closed_params:
                    cur.executemany(self._q("close_gap"), closed_params)
                if advance:
                    cur.execute(
                        self._q("advance_open_gaps"), {"slot": self.slot, "lsn": format_lsn(checkpoint)}
                    )

        return Pending(write, (opened, closed))

    def committed(self, pending: Pending | None = None) -> None:
        """The transaction that wrote ``pending`` is durable: the gaps it opened and closed are
        written (those opened or closed since stay pending). Without ``pending``: all are."""
        if pending is None:
            self._opened.clear()
            self._closed.clear()
            return
        opened, closed = (set(map(id, gaps)) for gaps in pending.taken)
        self._opened = [g for g in self._opened if id(g) not in opened]
        self._closed = [g for g in self._closed if id(g) not in closed]
