"""Begin … Commit → :class:`Transaction`, whose changes can be folded per row.

The assembler turns the decoded message stream into whole transactions: each row change
gets its relation's :class:`~cdc.values.RowShape`, its before-image (REPLICA IDENTITY FULL
sends the whole old row) and its after-image, with unchanged-TOAST columns of the
after-image filled from the before-image.  When neither image has the value it stays
*unknown* (never NULL) and the column is listed in ``RowChange.unknown``.

A transaction's changes are a :class:`~cdc.changelog.ChangeLog`: in memory while small,
spilled to a temporary file past :class:`~cdc.changelog.SpillLimits`, so a transaction of any
size is assembled in bounded memory.  :meth:`Transaction.folded` is the net effect per
(table, primary key) by the fold rules of :mod:`cdc.changelog`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .changelog import ChangeLog, Op, RowChange, SpillLimits, fold
from .errors import DecodeError
from .pgoutput.decoder import has_unchanged
from .pgoutput.messages import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    RawValue,
    Relation,
    Truncate,
    TupleData,
    Update,
    pg_timestamp,
)
from .values import Row, RowShape

__all__ = ["Assembler", "Op", "RowChange", "Transaction", "fold"]


@dataclass(slots=True)
class Transaction:
    xid: int
    begin_lsn: int  # Begin.final_lsn: the commit record's LSN
    commit_lsn: int
    end_lsn: int  # what is confirmed once delivered
    commit_ts: int  # microseconds since 2000-01-01 UTC
    origin: str | None = None
    changes: ChangeLog = field(default_factory=ChangeLog)
    messages: list[LogicalMessage] = field(default_factory=list)
    truncated: tuple[str, ...] = ()  # tables a TRUNCATE emptied, in order

    @property
    def commit_time(self) -> datetime:
        return pg_timestamp(self.commit_ts)

    def folded(self) -> Sequence[RowChange] | Iterator[RowChange]:
        """Net effect per (table, primary key), ordered by each row's first change: a list
        while the changes are in memory, an iterator over the spill file once spilled."""
        return self.changes.folded()

    def tables(self) -> set[str]:
        return self.changes.tables()

    def close(self) -> None:
        """Give back the spill file, if any (the transaction is delivered)."""
        self.changes.close()


def _fill_toast(
    shape: RowShape, new: TupleData, old: TupleData | None
) -> tuple[tuple[RawValue, ...], tuple[str, ...]]:
    values = new.values
    if not has_unchanged(values):
        return values, ()
    filled = list(values)
    unknown: list[str] = []
    old_values = old.values if old is not None else None
    for i, v in enumerate(values):
        if v is UNCHANGED_TOAST:
            if old_values is not None and i < len(old_values) and old_values[i] is not UNCHANGED_TOAST:
                filled[i] = old_values[i]
            else:
                unknown.append(shape.names[i])
    return tuple(filled), tuple(unknown)


class Assembler:
    """Feeds on decoded messages; returns a Transaction at each Commit.

    ``primary_keys`` maps a schema-qualified table to its primary-key columns (the stream
    cannot tell them under REPLICA IDENTITY FULL, where every column is flagged).
    ``on_relation`` sees each Relation message with the transaction it arrived in (pgoutput
    sends one before a table's first change, so before any change it describes is assembled):
    raising there abandons that transaction.  ``spill``: when a transaction's changes go to
    disk (:class:`~cdc.changelog.SpillLimits`).
    """

    def __init__(
        self,
        primary_keys: dict[str, tuple[str, ...]] | None = None,
        on_relation: Callable[[Relation, Transaction | None], None] | None = None,
        spill: SpillLimits | None = None,
    ) -> None:
        self.primary_keys = primary_keys or {}
        self.spill = spill or SpillLimits()
        self.shapes: dict[int, RowShape] = {}
        self._on_relation = on_relation
        self._tx: Transaction | None = None

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    def _shape(self, oid: int) -> RowShape:
        try:
            return self.shapes[oid]
        except KeyError:
            raise DecodeError(f"row for relation oid {oid} before its Relation message") from None

    def _require_tx(self) -> Transaction:
        if self._tx is None:
            raise DecodeError("row change outside a transaction")
        return self._tx

    def feed(self, msg: Message, size: int = 0) -> Transaction | None:
        """The transaction ``msg`` completes, if it is a Commit. ``size``: the message's bytes
        on the wire, which the spill limit counts (0: estimated from the values)."""
        # `type(msg) is X` rather than isinstance: this runs once per message.
        if type(msg) is Update:
            tx = self._require_tx()
            shape = self._shape(msg.relation_oid)
            old, new = msg.old, msg.new
            # Only a full old row ('O') can fill an unchanged TOAST value; a key-only one ('K')
            # carries NULL for every other column, which must not be taken for a value.
            values, unknown = _fill_toast(shape, new, old if msg.old_kind == "O" else None)
            before = Row(shape, old.values, old.binary_mask) if old is not None else None
            after = Row(shape, values, new.binary_mask)
            tx.changes.append(RowChange(shape.table, "update", before, after, len(tx.changes), unknown), size)
        elif type(msg) is Insert:
            tx = self._require_tx()
            shape = self._shape(msg.relation_oid)
            values, unknown = _fill_toast(shape, msg.new, None)
            after = Row(shape, values, msg.new.binary_mask)
            tx.changes.append(RowChange(shape.table, "insert", None, after, len(tx.changes), unknown), size)
        elif type(msg) is Delete:
            tx = self._require_tx()
            shape = self._shape(msg.relation_oid)
            before = Row(shape, msg.old.values, msg.old.binary_mask)
            tx.changes.append(RowChange(shape.table, "delete", before, None, len(tx.changes)), size)
        elif type(msg) is Begin:
            if self._tx is not None:
                raise DecodeError("Begin inside an open transaction")
            self._tx = Transaction(
                msg.xid, msg.final_lsn, msg.final_lsn, 0, msg.commit_ts, changes=ChangeLog(self.spill)
            )
        elif type(msg) is Commit:
            tx = self._require_tx()
            tx.commit_lsn = msg.commit_lsn
            tx.end_lsn = msg.end_lsn
            tx.commit_ts = msg.commit_ts
            self._tx = None
            return tx
        elif type(msg) is Relation:
            self.shapes[msg.oid] = RowShape(msg, self.primary_keys.get(msg.qualified_name))
            if self._on_relation is not None:
                self._on_relation(msg, self._tx)
        elif type(msg) is Truncate:
            tx = self._require_tx()
            for oid in msg.relation_oids:
                table = self._shape(oid).table
                tx.changes.append(RowChange(table, "truncate", None, None, len(tx.changes)))
                tx.truncated += (table,)
        elif type(msg) is LogicalMessage:
            # Non-transactional messages are not ours (heartbeats are transactional).
            if self._tx is not None and msg.transactional:
                self._tx.messages.append(msg)
        elif type(msg) is Origin and self._tx is not None:
            self._tx.origin = msg.name
        return None
