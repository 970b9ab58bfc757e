"""In-memory twins of the framework pieces, for table-driven deriver tests (no database).

Each twin passes the contract suite its real implementation passes
(tests/unit/test_twins_contract.py): a deriver test that passes against a twin holds in
production too.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .base import Change, Image, Op, StateIndex, StateTotal, Timer, TxView, scan_total


@dataclass
class FakeChange:
    """A folded row change (:class:`derivers.base.Change`) whose images hold canonical JSON forms.

    Like the real one, which compares the bytes the server sent, ``changed`` compares values as
    sent, not by Python equality: by their JSON text, so that jsonb ``true`` is not ``1`` nor
    ``1.0`` the integer ``1``. A column of the after-image that the before-image lacks (added
    since) has changed. What the canonical forms cannot tell apart the twin cannot either:
    timestamps that differ below the millisecond."""

    table: str
    op: Op
    before: Image | None = None
    after: Image | None = None
    position: int = 0

    def changed(self, column: str) -> bool:
        before, after = self.before, self.after
        if before is None or after is None or column not in after:
            return False
        return column not in before or _as_sent(before[column]) != _as_sent(after[column])

    def changed_columns(self) -> frozenset[str]:
        if self.before is None or self.after is None:
            return frozenset()
        return frozenset(c for c in self.after if self.changed(c))


def _as_sent(value: Any) -> str:
    """A canonical JSON value as text: equal exactly when the server's text forms are."""
    return json.dumps(value)


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
        """Rows whose ``column`` equals ``value``; json values compare as sent (as the real one)."""
        wanted = _comparable(value)
        return [r for r in self.rows.get(table, {}).values() if _comparable(r.get(column)) == wanted]

    def lookup(self, index: StateIndex, key: Hashable) -> list[Image]:
        return [r for r in self.rows.get(index.table, {}).values() if key in set(index.keys(r))]

    def total(self, total: StateTotal, key: Hashable) -> int:
        return scan_total(self, total, key, self.rows.get(total.tables[0], {}).values())


def _comparable(value: Any) -> Any:
    return _as_sent(value) if isinstance(value, list | dict) else value


@dataclass
class FakeTimers:
    timers: dict[str, Timer] = field(default_factory=dict)
    deriver: str = "tickets"  # the deriver these timers belong to, as the watcher binds them
    armed_by: dict[str, Change] = field(default_factory=dict)  # timer key → the change that armed it

    def get(self, key: str) -> Timer | None:
        return self.timers.get(key)

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
        current = self.timers.get(key)
        if current is not None and current.state in ("fired", "settled"):
            return
        if data is None:  # a move that says nothing of the data keeps what the timer carries
            data = current.data if current is not None else {}
        if (
            current is not None
            and current.state == "armed"
            and current.due_at == due_at
            and data == current.data
        ):
            return  # nothing moves: the change that armed it stays its source
        self.timers[key] = Timer(key, self.deriver, tenant, subject_id, stage, due_at, "armed", dict(data))
        self.armed_by[key] = change

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
