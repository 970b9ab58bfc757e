"""Durable timers: armed by derivers with the change that arms them, fired by the watermark.

:class:`TimerStore` holds every timer of the slot in memory while the watcher runs and writes
what changed in the checkpoint's transaction (``sql/state.sql``), so that after a restart the
timers are exactly as of the checkpoint.

A deriver never sees the store: it is handed :meth:`TimerStore.bound` — the ``TimerOps`` of one
deriver for one transaction. Its ``arm(key, change, …)`` records :class:`ArmedBy`, the change
that armed the timer (its table, and its transaction's end LSN, xid and commit time); that is
the source a fired timer's event names (DESIGN §4, ``"timer": true``), and a TRUNCATE of the
change's table forgets the timer as a DELETE of its row would. The deriver a timer belongs to
is the one it was bound for — nothing is set on the store behind a deriver's back.

:class:`Watermark` is the time up to which every transaction has been received: commit times
and the watcher's heartbeat messages move it, never keepalives. :meth:`TimerStore.due` yields
the armed timers it has passed, earliest first.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from derivers.base import Change, Timer, TimerState, TxView

from . import queries
from .checkpoint import Pending
from .lsn import format_lsn, parse_lsn


def _q(name: str, schema: str) -> sql.Composed | sql.SQL:
    return queries.query("state", name, schema=sql.Identifier(schema))


@dataclass(frozen=True)
class ArmedBy:
    """The change that armed a timer: the source of the timer's event."""

    lsn: int  # end LSN of the change's transaction
    xid: int
    commit_time: datetime
    table: str  # the change's table; a TRUNCATE of it forgets the timer

    @classmethod
    def of(cls, change: Change, tx: TxView) -> ArmedBy:
        return cls(tx.end_lsn, tx.xid, tx.commit_time, change.table)


class Watermark:
    """The commit time up to which every transaction has been received (DESIGN §4)."""

    def __init__(self) -> None:
        self.time: datetime | None = None

    def advance(self, commit_time: datetime) -> datetime:
        """Take a received commit time into account; returns the watermark."""
        if self.time is None or commit_time > self.time:
            self.time = commit_time
        return self.time


class TimerStore:
    """Every timer of one slot; the derivers' ``TimerOps`` through :meth:`bound`."""

    def __init__(self, slot: str, schema: str) -> None:
        self.slot = slot
        self.schema = schema
        self.timers: dict[str, Timer] = {}
        self.armed_by: dict[str, ArmedBy] = {}
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()
        # (due_at, key) of armed timers; stale entries (moved, paused, settled) are skipped
        # when they surface, so arming is O(log n) and finding due timers is not a scan.
        self._heap: list[tuple[datetime, str]] = []

    def bound(self, deriver: str, tx: TxView) -> DeriverTimers:
        """The ``TimerOps`` of ``deriver`` while it derives ``tx``."""
        return DeriverTimers(self, deriver, tx)

    # -- what a deriver may do (through DeriverTimers) ------------------------------------------
    def get(self, key: str) -> Timer | None:
        return self.timers.get(key)

    def arm(self, timer: Timer, by: ArmedBy) -> None:
        """Create ``timer``, or move an armed or paused one (see ``TimerOps.arm``)."""
        key = timer.key
        current = self.timers.get(key)
        if current is not None and current.state in ("fired", "settled"):
            return
        if (
            current is not None
            and current.state == "armed"
            and current.due_at == timer.due_at
            and timer.data == current.data
        ):
            return  # nothing moves: the change that armed it stays its source
        self.timers[key] = timer
        self.armed_by[key] = by
        heapq.heappush(self._heap, (timer.due_at, key))
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

    # -- the watcher's side ---------------------------------------------------------------------
    def forget_table(self, table: str) -> int:
        """A TRUNCATE of ``table``: every timer its rows armed goes, whatever its state (the
        rows are gone, as if each was deleted). Returns how many."""
        keys = [key for key, by in self.armed_by.items() if by.table == table]
        for key in keys:
            self.forget(key)
        return len(keys)

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

    def _live(self, entry: tuple[datetime, str]) -> bool:
        t = self.timers.get(entry[1])
        return t is not None and t.state == "armed" and t.due_at == entry[0]

    def _set_state(self, key: str, state: TimerState, allowed: tuple[str, ...]) -> None:
        t = self.timers.get(key)
        if t is not None and t.state in allowed:
            self.timers[key] = replace(t, state=state)
            self._touch(key)
        # re-arming a paused timer pushes a fresh heap entry in arm()

    def _touch(self, key: str) -> None:
        self._dirty.add(key)
        self._deleted.discard(key)

    # -- persistence ------------------------------------------------------------------------------
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

    def take_flush(self) -> Pending:
        """The timers that changed since the last commit, as they are now (rows built here), to
        be written in a checkpoint's transaction. (A timer is never changed in place: a change
        puts a new one.)"""
        taken = ({k: self.timers[k] for k in self._dirty}, set(self._deleted))
        deleted = [{"slot": self.slot, "key": k} for k in self._deleted]
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

        def write(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                if deleted:
                    cur.executemany(_q("delete_timer", self.schema), deleted)
                if rows:
                    cur.executemany(_q("upsert_timer", self.schema), rows)

        return Pending(write, taken)

    def flush(self, conn: psycopg.Connection[Any]) -> None:
        """:meth:`take_flush`, written inside the caller's transaction now; :meth:`committed`
        once that is durable."""
        self.take_flush().write(conn)

    def committed(self, pending: Pending | None = None) -> None:
        """The transaction that wrote ``pending`` is durable: its timers are no longer pending,
        unless they changed again since. Without ``pending``: nothing is."""
        if pending is None:
            self._dirty.clear()
            self._deleted.clear()
            return
        changed, deleted = pending.taken
        for key, timer in changed.items():
            if self.timers.get(key) is timer:
                self._dirty.discard(key)
        for key in deleted:
            if key not in self.timers:
                self._deleted.discard(key)


class DeriverTimers:
    """The ``derivers.base.TimerOps`` of one deriver while it derives one transaction."""

    __slots__ = ("_store", "_tx", "deriver")

    def __init__(self, store: TimerStore, deriver: str, tx: TxView) -> None:
        self._store = store
        self._tx = tx
        self.deriver = deriver

    def get(self, key: str) -> Timer | None:
        return self._store.get(key)

    def arm(
        self,
        key: str,
        change: Change,
        *,
        tenant: str,
        subject_id: str,
        stage: str,
        due_at: datetime,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        if data is None:  # a move that says nothing of the data keeps what the timer carries
            current = self._store.get(key)
            data = current.data if current is not None else {}
        timer = Timer(key, self.deriver, tenant, subject_id, stage, due_at, "armed", dict(data))
        self._store.arm(timer, ArmedBy.of(change, self._tx))

    def pause(self, key: str) -> None:
        self._store.pause(key)

    def settle(self, key: str) -> None:
        self._store.settle(key)

    def forget(self, key: str) -> None:
        self._store.forget(key)
