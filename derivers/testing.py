"""In-memory twins of the framework pieces, for table-driven deriver tests (no database)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .base import Image, Op, Timer, TxView


@dataclass
class FakeChange:
    table: str
    op: Op
    before: Image | None = None
    after: Image | None = None
    position: int = 0

    def changed(self, column: str) -> bool:
        if self.before is None or self.after is None:
            return False
        return self.before.get(column) != self.after.get(column)

    def changed_columns(self) -> frozenset[str]:
        if self.before is None or self.after is None:
            return frozenset()
        return frozenset(c for c in {*self.before, *self.after} if self.changed(c))


def make_tx(
    changes: Sequence[FakeChange],
    *,
    commit_time: datetime,
    end_lsn: int = 0x16B3748,
    xid: int = 1000,
    messages: Sequence[tuple[str, bytes]] = (),
) -> TxView:
    numbered = [replace(c, position=i) for i, c in enumerate(changes)]
    return TxView(xid=xid, end_lsn=end_lsn, commit_time=commit_time, changes=numbered, messages=messages)


@dataclass
class FakeState:
    """Rows per table, keyed by the primary key tuple given to ``put``."""

    rows: dict[str, dict[tuple[str, ...], Image]] = field(default_factory=dict)

    def put(self, table: str, key: tuple[str, ...], row: Image) -> FakeState:
        self.rows.setdefault(table, {})[key] = row
        return self

    def get(self, table: str, key: tuple[str, ...]) -> Image | None:
        return self.rows.get(table, {}).get(key)

    def find(self, table: str, column: str, value: Any) -> list[Image]:
        return [r for r in self.rows.get(table, {}).values() if r.get(column) == value]


@dataclass
class FakeTimers:
    timers: dict[str, Timer] = field(default_factory=dict)
    deriver: str = "tickets"
    tables: dict[str, str] = field(default_factory=dict)  # timer key → the table that armed it

    def get(self, key: str) -> Timer | None:
        return self.timers.get(key)

    def arm(
        self,
        key: str,
        *,
        table: str = "",
        tenant: str,
        subject_id: str,
        stage: str,
        due_at: datetime,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        current = self.timers.get(key)
        if current is not None and current.state in ("fired", "settled"):
            return
        self.timers[key] = Timer(
            key, self.deriver, tenant, subject_id, stage, due_at, "armed", dict(data or {})
        )
        self.tables[key] = table

    def pause(self, key: str) -> None:
        t = self.timers.get(key)
        if t is not None and t.state == "armed":
            self.timers[key] = replace(t, state="paused")

    def settle(self, key: str) -> None:
        t = self.timers.get(key)
        if t is not None and t.state in ("armed", "paused"):
            self.timers[key] = replace(t, state="settled")

    def forget(self, key: str) -> None:
        self.timers.pop(key, None)

    def mark_fired(self, key: str) -> None:
        t = self.timers[key]
        self.timers[key] = replace(t, state="fired")
