"""A transaction's row changes: :class:`RowChange`, the fold, and a log that spills to disk.

The fold (:func:`fold`) collapses several changes of one row (the application often updates a
row three times in one transaction) per (table, primary key):

* insert + update(s)   → insert with the last after-image
* insert + … + delete  → nothing
* delete + insert      → update (before from the delete, after from the insert)
* update + delete      → delete with the first before-image
* update + update      → update, first before-image, last after-image

The watcher must go through a transaction of any size in bounded memory (a 1,000,000-row
``UPDATE`` is one transaction). A :class:`ChangeLog` keeps its :class:`RowChange` objects in a
list until :class:`SpillLimits` is reached — a number of changes, or an estimate of the memory
their images take (the pgoutput bytes plus a per-value overhead) — and from then on writes each
change to an anonymous temporary file (deleted when closed or when the process dies) as one
length-prefixed pickle of its raw values: row images stay the server's bytes, nothing is
converted. Reading goes through the file again, one change at a time, with its own offset, so
several passes may run one after the other and nothing of the file stays in memory.

The fold of a spilled log (:meth:`ChangeLog.folded`) is the same fold as :func:`fold` — per
(table, primary key) the first before-image and the last after-image, ordered by the position
of the net change — done without holding the transaction: a 64-bit hash of each change's key
is kept (8 bytes a change), the hashes seen more than once are found by sorting them, the
changes of those keys alone are folded in memory in a first pass, and a second pass yields
every change in order, a repeated key's net change at its position. A bulk ``UPDATE`` touches
each row once, so the second set is empty and one pass suffices.
"""

from __future__ import annotations

import os
import pickle
import struct
import tempfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice, pairwise
from typing import IO, Final, Literal, overload

from .config import DEFAULT_SPILL_CHANGES, DEFAULT_SPILL_MB
from .pgoutput.messages import RawValue
from .values import Row, RowShape

#: Memory a row value takes besides its bytes (a tuple slot and a bytes object's header).
VALUE_OVERHEAD: Final = 56
#: Memory a change takes besides its values (the RowChange, two Rows and their tuples).
CHANGE_OVERHEAD: Final = 400

DEFAULT_SPILL_BYTES: Final = DEFAULT_SPILL_MB << 20

_LENGTH = struct.Struct("<I")
_READ_AHEAD = 1 << 20
_TICK_EVERY = 10_000


def _nothing() -> None:
    pass


Op = Literal["insert", "update", "delete", "truncate"]
Key = tuple[str, tuple[RawValue, ...]]


@dataclass(frozen=True)
class SpillLimits:
    """When a transaction's changes go to a temporary file: past ``changes`` changes, or once
    their images take about ``memory_bytes``."""

    changes: int = DEFAULT_SPILL_CHANGES
    memory_bytes: int = DEFAULT_SPILL_BYTES


@dataclass(slots=True)
class RowChange:
    """One change of one row, in the order the server sent it."""

    table: str  # schema-qualified
    op: Op
    before: Row | None
    after: Row | None
    position: int = 0  # index of the change within its transaction
    unknown: tuple[str, ...] = ()  # columns whose value cannot be known (unchanged TOAST)

    @property
    def key(self) -> tuple[RawValue, ...]:
        row = self.after if self.after is not None else self.before
        return row.key() if row is not None else ()


def merge(first: RowChange, last: RowChange) -> RowChange | None:
    """Combine the net change so far (``first``) with a later change of the same row."""
    a, b = first.op, last.op
    if a == "insert":
        if b == "delete":
            return None
        return RowChange(first.table, "insert", None, last.after, first.position, last.unknown)
    if a == "delete":
        if b == "insert":
            return RowChange(first.table, "update", first.before, last.after, first.position, last.unknown)
        return last  # a key reused after delete-insert-…: keep the latest
    # a == "update"
    if b == "delete":
        return RowChange(first.table, "delete", first.before, None, first.position, ())
    if b == "insert":  # cannot happen for one key without a delete between; keep newest
        return last
    return RowChange(first.table, "update", first.before, last.after, first.position, last.unknown)


def change_key(change: RowChange) -> Key:
    """(table, primary-key raw values): the identity the fold groups by."""
    row = change.after if change.after is not None else change.before
    return (change.table, row.shape.key_of(row.data) if row is not None else ())


@dataclass
class _Fold:
    """The fold's running state: the net change per key, and the keys by first appearance."""

    net: dict[Key, RowChange | None] = field(default_factory=dict)
    order: list[Key] = field(default_factory=list)

    def add(self, change: RowChange, key: Key) -> None:
        if key not in self.net:
            self.net[key] = change
            self.order.append(key)
            return
        prev = self.net[key]
        # insert+delete vanished earlier: a new insert starts fresh at its own position
        self.net[key] = change if prev is None else merge(prev, change)


def _slices(it: Iterator[RowChange], size: int) -> Iterator[list[RowChange]]:
    while part := list(islice(it, size)):
        yield part


def fold(changes: Sequence[RowChange]) -> list[RowChange]:
    """The fold rules of the module docstring; truncates are kept where they come."""
    state = _Fold()
    truncates: list[RowChange] = []
    for change in changes:
        if change.op == "truncate":
            truncates.append(change)
            continue
        state.add(change, change_key(change))
    out = [c for k in state.order if (c := state.net[k]) is not None] + truncates
    out.sort(key=lambda c: c.position)
    return out


class ChangeLog(Sequence[RowChange]):
    """The ordered row changes of one transaction (see the module docstring)."""

    def __init__(self, limits: SpillLimits | None = None) -> None:
        self.limits = limits or SpillLimits()
        self._memory: list[RowChange] = []
        self._cost = 0  # estimated bytes of the changes held in memory
        self._file: IO[bytes] | None = None
        self._count = 0
        self._offsets = array("q")  # where each spilled change starts in the file
        self._hashes = array("q")  # hash(change_key) of each spilled change, in order
        self._end = 0
        self._shapes: list[RowShape] = []
        self._shape_ids: dict[int, int] = {}  # id(shape) → index in _shapes
        self._tables: set[str] = set()

    # -- writing ---------------------------------------------------------------------------------
    def append(self, change: RowChange, size: int = 0) -> None:
        """Add the next change; ``size``: the pgoutput bytes it came in (0: estimate from values)."""
        self._count += 1
        if self._file is not None:
            self._write(change)
            return
        self._memory.append(change)
        values = (len(change.before.data) if change.before is not None else 0) + (
            len(change.after.data) if change.after is not None else 0
        )
        self._cost += CHANGE_OVERHEAD + size + VALUE_OVERHEAD * values
        if len(self._memory) >= self.limits.changes or self._cost >= self.limits.memory_bytes:
            self._spill()

    def _spill(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="cdc-tx-")  # noqa: SIM115 - closed by close()
        held, self._memory = self._memory, []
        for change in held:
            self._write(change)

    def _write(self, change: RowChange) -> None:
        assert self._file is not None
        before, after = change.before, change.after
        record = (
            change.table,
            change.op,
            change.position,
            change.unknown,
            self._shape_id(before.shape) if before is not None else -1,
            tuple(before.data) if before is not None else None,  # the compiled decoder's Values: a tuple
            before.mask if before is not None else 0,
            self._shape_id(after.shape) if after is not None else -1,
            tuple(after.data) if after is not None else None,
            after.mask if after is not None else 0,
        )
        blob = pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
        self._file.write(_LENGTH.pack(len(blob)))
        self._file.write(blob)
        self._offsets.append(self._end)
        self._end += _LENGTH.size + len(blob)
        self._tables.add(change.table)
        # a truncate has no key: its own hash, never a repeated one
        self._hashes.append(
            hash(change_key(change)) if change.op != "truncate" else hash(("", change.position))
        )

    def _shape_id(self, shape: RowShape) -> int:
        index = self._shape_ids.get(id(shape))
        if index is None:
            index = self._shape_ids[id(shape)] = len(self._shapes)
            self._shapes.append(shape)  # kept alive, so its id() is not reused
        return index

    # -- reading ---------------------------------------------------------------------------------
    @property
    def spilled(self) -> bool:
        return self._file is not None

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> RowChange: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[RowChange]: ...
    def __getitem__(self, index: int | slice) -> RowChange | Sequence[RowChange]:
        if self._file is None:
            return self._memory[index]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(index)
        return next(self._read(index))

    def __iter__(self) -> Iterator[RowChange]:
        if self._file is None:
            return iter(self._memory)
        return self._read(0)

    def _read(self, start: int) -> Iterator[RowChange]:
        """Changes from the ``start``-th on, read ahead a megabyte at a time at an offset of
        this iteration's own (another pass may run later, or an index be read meanwhile)."""
        assert self._file is not None
        self._file.flush()
        fd, shapes, end = self._file.fileno(), self._shapes, self._end
        pos = self._offsets[start] if start < self._count else end
        buffer, base = b"", pos  # buffer holds the file's bytes from base on
        while pos < end:
            at = pos - base
            if at + _LENGTH.size > len(buffer):
                buffer, base, at = os.pread(fd, _READ_AHEAD, pos), pos, 0
            (length,) = _LENGTH.unpack_from(buffer, at)
            if at + _LENGTH.size + length > len(buffer):
                buffer, base, at = os.pread(fd, max(_READ_AHEAD, _LENGTH.size + length), pos), pos, 0
            body = memoryview(buffer)[at + _LENGTH.size : at + _LENGTH.size + length]
            pos += _LENGTH.size + length
            table, op, position, unknown, bs, bdata, bmask, as_, adata, amask = pickle.loads(body)
            before = Row(shapes[bs], bdata, bmask) if bdata is not None else None
            after = Row(shapes[as_], adata, amask) if adata is not None else None
            yield RowChange(table, op, before, after, position, unknown)

    def tables(self) -> set[str]:
        if self._file is None:
            return {c.table for c in self._memory}
        return set(self._tables)

    # -- the fold ----------------------------------------------------------------------------------
    def folded(self, tick: Callable[[], None] = _nothing) -> Sequence[RowChange] | Iterator[RowChange]:
        """The net change per (table, primary key), ordered by position (:func:`fold`): a list
        while in memory, an iterator over the file once spilled. ``tick`` is called now and
        then while the file is read ahead of the first change (to keep a stream alive)."""
        if self._file is None:
            return fold(self._memory)
        return self._folded_spilled(tick)

    def _repeated_hashes(self) -> set[int]:
        ordered = sorted(self._hashes)
        return {a for a, b in pairwise(ordered) if a == b}

    def _folded_spilled(self, tick: Callable[[], None]) -> Iterator[RowChange]:
        repeated = self._repeated_hashes()
        if not repeated:  # every key once: the fold is the changes themselves
            yield from self
            return
        hashes = self._hashes
        state = _Fold()
        for i, change in enumerate(self):
            if hashes[i] in repeated:
                state.add(change, change_key(change))
            if i % _TICK_EVERY == 0:
                tick()
        net = state.net
        for i, change in enumerate(self):
            if hashes[i] not in repeated:
                yield change
                continue
            result = net.get(change_key(change))
            if result is not None and result.position == change.position:
                yield result

    def windows(self, size: int, tick: Callable[[], None] = _nothing) -> Iterator[Sequence[RowChange]]:
        """The folded changes in consecutive windows: the whole fold at once while in memory,
        ``size`` changes at a time once spilled (what derivers see of a huge transaction)."""
        folded = self.folded(tick)
        if isinstance(folded, list):
            yield folded
        else:
            yield from _slices(iter(folded), size)

    def chunks(self, size: int) -> Iterator[Sequence[RowChange]]:
        """The changes as they came, all at once while in memory, ``size`` at a time once spilled."""
        if self._file is None:
            yield self._memory
        else:
            yield from _slices(iter(self), size)

    def close(self) -> None:
        """Give back the temporary file (also done when the log is collected)."""
        if self._file is not None:
            self._file.close()

    __del__ = close  # a transaction dropped by an error still gives its file back
