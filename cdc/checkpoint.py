"""The checkpoint: how far the slot's stream is durably delivered, per slot.

A :class:`CheckpointStore` reads the position a restart resumes after and advances it inside
the caller's transaction — the one that also commits the batch's state, timers and dead
letters (and, for the outbox, its events). What the stored LSN means and the rule it obeys
are written next to the table, in ``sql/checkpoints.sql``: the end LSN of the last
transaction whose events are durable; it moves only after durable hand-off, never backward.

:class:`PostgresCheckpoints` keeps it in ``<schema>.checkpoints``; :class:`MemoryCheckpoints`
is its in-memory twin (the same contract suite runs against both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg import sql

from . import queries
from .lsn import format_lsn, parse_lsn


@dataclass(frozen=True)
class Position:
    """A committed transaction the stream can resume after: its end LSN, xid and commit time."""

    end_lsn: int
    xid: int
    commit_time: datetime


@dataclass(frozen=True)
class Pending:
    """What one of the watcher's own tables hands over for a checkpoint's transaction, as it was
    when taken (``take_flush``): ``write(conn)`` writes it inside the caller's transaction — on
    the committer thread (cdc.batch), so it reads nothing the watcher goes on changing — and
    ``taken`` is what the store's ``committed(pending)`` no longer counts as pending once that
    transaction is durable (what changed again since stays pending)."""

    write: Callable[[psycopg.Connection[Any]], None]
    taken: Any = None


class CheckpointStore(Protocol):
    def read(self, conn: psycopg.Connection[Any]) -> int:
        """The end LSN the stream resumes after (0: nothing delivered yet)."""
        ...

    def advance(self, conn: psycopg.Connection[Any], position: Position) -> None:
        """Move the checkpoint to ``position`` in the caller's open transaction. A position
        behind the stored one leaves it where it is (monotonic)."""
        ...


class PostgresCheckpoints:
    """The checkpoint row of one slot in ``<schema>.checkpoints``."""

    def __init__(self, slot: str, schema: str) -> None:
        self.slot = slot
        self._schema = sql.Identifier(schema)

    def read(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            queries.query("checkpoints", "read_checkpoint", schema=self._schema), {"slot": self.slot}
        ).fetchone()
        return parse_lsn(row[0]) if row else 0

    def advance(self, conn: psycopg.Connection[Any], position: Position) -> None:
        conn.execute(
            queries.query("checkpoints", "advance_checkpoint", schema=self._schema),
            {
                "slot": self.slot,
                "lsn": format_lsn(position.end_lsn),
                "xid": position.xid,
                "commit_time": position.commit_time,
            },
        )


class MemoryCheckpoints:
    """The in-memory twin; ``conn`` is ignored (there is no transaction to join)."""

    def __init__(self) -> None:
        self.position: Position | None = None

    def read(self, conn: object) -> int:
        return self.position.end_lsn if self.position is not None else 0

    def advance(self, conn: object, position: Position) -> None:
        if self.position is None or position.end_lsn > self.position.end_lsn:
            self.position = position
