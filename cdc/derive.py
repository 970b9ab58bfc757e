"""Running the derivers: folded row changes in, ordered drafts out, and fired timers.

The engine reaches the rules only through the protocols of ``derivers/base.py`` and the
registry it is handed. :class:`Derivation` turns a window of a transaction's folded changes
(all of them, unless the transaction was too large to hold: :meth:`cdc.changelog.ChangeLog.windows`)
into a :class:`~derivers.base.TxView` of :class:`DeriverChange` and asks each deriver whose
tables it touches, handing it the timers bound to it and to that transaction
(:meth:`cdc.timers.TimerStore.bound`). Drafts come back ordered by the position of each row's
first change, then in each deriver's own order. :meth:`Derivation.fire` asks the owner of each
timer the watermark passed for its timer-driven drafts, with the change that armed it.

What :class:`~cdc.relations.RelationGuard` says cannot be derived is never derived: changes of a
table written without FULL identity are not shown, and drafts of event types whose input
columns are gone are dropped — also those of fired timers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from typing import NamedTuple

from catalog.envelope import EventDraft
from derivers.base import Derived, Deriver, StateView, Timer, TxView

from .assembler import RowChange, Transaction
from .pgoutput.decoder import changed_names
from .relations import RelationGuard
from .timers import ArmedBy, TimerStore
from .values import JsonRowView

_NONE: frozenset[str] = frozenset()
_POSITION = itemgetter(1)  # Derived.position, without a Python frame per item


class DeriverChange:
    """A folded RowChange as derivers see it: canonical JSON images, raw-byte ``changed``.

    Plain attributes rather than properties: derivers read them for every row."""

    __slots__ = ("_changed", "after", "before", "op", "position", "table")

    def __init__(self, rc: RowChange) -> None:
        self.table = rc.table
        self.op = rc.op
        self.position = rc.position
        b, a = rc.before, rc.after
        self.before = JsonRowView(b) if b is not None else None
        self.after = JsonRowView(a) if a is not None else None
        # Every column whose raw value differs between the images, found in one (compiled) pass.
        if a is None or b is None:
            self._changed: frozenset[str] = _NONE
        elif a.shape is b.shape:  # Row.changed_columns inlined: this runs for every change
            self._changed = changed_names(a.shape.names, b.data, a.data)
        else:
            self._changed = a.changed_columns(b)

    def changed(self, column: str) -> bool:
        return column in self._changed

    def changed_columns(self) -> frozenset[str]:
        return self._changed


class Fired(NamedTuple):
    """A timer the watermark passed: its drafts, whose source is the change that armed it."""

    timer: Timer
    armed_by: ArmedBy
    drafts: list[EventDraft]


class Derivation:
    """The registry's derivers over the stream's transactions."""

    def __init__(
        self, derivers: Sequence[Deriver], state: StateView, timers: TimerStore, relations: RelationGuard
    ) -> None:
        self.derivers = list(derivers)
        self.by_name = {d.name: d for d in self.derivers}
        self.state = state
        self.timers = timers
        self.relations = relations

    def derive(self, tx: Transaction, changes: Sequence[RowChange]) -> list[Derived]:
        """The drafts of ``changes`` (folded, in position order) of ``tx``, in delivery order."""
        withheld = self.relations.withheld
        tables = {c.table for c in changes}
        if withheld:  # written without before-images: nothing is derived from them
            tables -= withheld
            changes = [c for c in changes if c.table not in withheld]
        active = [d for d in self.derivers if d.tables & tables]
        if not active:
            return []
        view = TxView(
            tx.xid,
            tx.end_lsn,
            tx.commit_time,
            [DeriverChange(c) for c in changes],
            [(m.prefix, m.content) for m in tx.messages],
        )
        derived: list[Derived] = []
        for d in active:
            derived.extend(d.derive(view, self.state, self.timers.bound(d.name, view)))
        blocked = self.relations.blocked
        if blocked:  # columns they read are missing: never emit from a guessed value
            derived = [item for item in derived if item.draft.event_type not in blocked]
        derived.sort(key=_POSITION)  # stable: within a row, the deriver's order
        return derived

    def fire(self, watermark: datetime) -> list[Fired]:
        """Every timer the watermark passed, earliest first, with its owner's drafts, each
        marked fired (one verdict per stage instance)."""
        relations = self.relations
        out: list[Fired] = []
        for timer in self.timers.due(watermark):
            deriver = self.by_name.get(timer.deriver)
            by = self.timers.armed_by[timer.key]
            drafts = deriver.fire(timer, self.state) if deriver is not None else []
            # Whether the verdict still holds is unknown while its inputs are (cdc.relations).
            if relations.blocked or relations.withheld:
                drafts = [
                    d
                    for d in drafts
                    if d.event_type not in relations.blocked and by.table not in relations.withheld
                ]
            out.append(Fired(timer, by, drafts))
            self.timers.mark_fired(timer.key)
        return out
