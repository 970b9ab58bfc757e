"""The change journal: every row change the watcher consumed, replayable into the same values.

DESIGN §4 "Journal". ``cdc watch`` hands each transaction it processed to :meth:`Journal.record`
and writes what was recorded with :meth:`Journal.flush` inside the checkpoint's transaction, so
the journal holds exactly the transactions the checkpoint covers — never one twice, never one
the checkpoint does not cover. The table, its columns and its day partitions are described in
``sql/journal.sql``.

**What a row holds.** The change as the assembler built it: the transaction's end LSN, xid and
commit time, the change's position, table and op, and both images: a whole image is a JSON
array of the server's text form of each value in column order (null for NULL, false for a
value the server did not send — an unchanged TOAST value nobody knew, also listed in
``unknown`` for the after-image); an update's after-image is an object of the columns that
changed. The view ``change_log_rows`` shows both as objects keyed by column.
The images are the raw values the derivers read through :class:`~cdc.values.Row`, so a replay
(:func:`replay`) rebuilds :class:`~cdc.changelog.RowChange` objects equal to the live ones —
same bytes, same column order and types (the table's shape, from its Relation message, is kept
once in ``change_log_shapes``) — and the derivers, the state and the catalog see what they saw
live. The transaction's logical messages (the heartbeat that moves the watermark, the
application's ``cdc.context``) are rows too, so timers fire where they fired live.

**Cost.** The rows go in with one binary ``COPY`` per batch: each image is one ``orjson.dumps``
of a dict built by a function generated per table shape, and the rest of a row is packed bytes
(the commit time is the pgoutput microseconds, the LSN an integer). What waits for the
checkpoint is kept in a spooled temporary file (in memory up to :data:`SPOOL_BYTES`, on disk
past that), and a spilled transaction is read from its own spill file one change at a time,
so a transaction of any size is journaled in bounded memory.

**Snapshot entries.** ``cdc setup`` copies the reference tables under the slot's exported
snapshot (:mod:`cdc.state`); those rows are recorded too, as inserts of a transaction with xid 0
at the slot's consistent point (:meth:`Journal.record_snapshot`), so that the state can be
rebuilt from the journal alone. A replay applies a snapshot entry to the state and derives
nothing from it, as the live watcher did.

**State snapshots.** Before :func:`prune` drops days, a callback may record the state and the
timers as of the last transaction they hold (:func:`write_snapshot`; ``cdc journal prune`` has
:func:`cdc.backfill.take_snapshot` replay the journal up to there): a backfill then starts at
the latest snapshot at or before its range, and only history before that snapshot is gone.

**Coverage** (``journal_history``): where the journal of a slot starts (``bootstrap``, and
``snapshot`` entries where a replay may start instead), where a
watcher ran with ``--no-journal`` (``off``, kept current by its checkpoints) and what
:func:`prune` dropped (``pruned``) — what ``cdc backfill`` reads to say which history it has.
"""

from __future__ import annotations

import hashlib
import re
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, Final

import orjson
import psycopg
from psycopg import errors as pgerr
from psycopg import sql

from derivers.base import Timer

from . import queries
from .assembler import Transaction
from .changelog import ChangeLog, RowChange, SpillLimits
from .checkpoint import Pending, Position
from .errors import CdcError
from .lsn import format_lsn, parse_lsn
from .pgoutput.decoder import changed_names, has_unchanged
from .pgoutput.messages import (
    POSTGRES_EPOCH,
    UNCHANGED_TOAST,
    Column,
    LogicalMessage,
    RawValue,
    Relation,
    pg_micros,
)
from .timers import ArmedBy
from .values import Row, RowShape

#: What waits for the checkpoint stays in memory up to this many bytes, then goes to a file.
SPOOL_BYTES: Final = 64 << 20
#: Positions of a transaction's logical messages (after its changes) and of snapshot entries.
MESSAGE_BASE: Final = 1 << 32
SNAPSHOT_BASE: Final = 1 << 40

_DAY_US: Final = 86_400_000_000
#: How long :func:`prune` waits for the lock a partition's DROP takes (a Postgres interval).
DROP_LOCK_TIMEOUT: Final = "3s"
_PARTITION_RE: Final = re.compile(r"^change_log_p(\d{8})$")

# Binary COPY framing (PostgreSQL "COPY … (FORMAT BINARY)").
_SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER: Final = b"\xff\xff"
_NULL: Final = b"\xff\xff\xff\xff"
_FIELDS: Final = struct.pack(">h", 12)
_INT8 = struct.Struct(">iq")
_UINT8 = struct.Struct(">iQ")
_LEN = struct.Struct(">i")
_PARTS_PER_WRITE: Final = 4096


class JournalBusy(CdcError):
    """A day partition could not be dropped: a backfill's read holds its lock."""

    hint = "a backfill is reading the journal; try again later"
    retryable = True  # exit 3: nothing to change, the reader ends by itself


def _q(file: str, name: str, schema: str, **more: sql.Composable) -> sql.Composed | sql.SQL:
    return queries.query(file, name, schema=sql.Identifier(schema), **more)


def _text(value: str) -> bytes:
    data = value.encode()
    return _LEN.pack(len(data)) + data


def _jsonb(data: bytes) -> bytes:
    # jsonb's binary form: a version byte, then the JSON text
    return _LEN.pack(len(data) + 1) + b"\x01" + data


def create_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """The journal's tables (idempotent; :func:`cdc.schema.create_tables` calls it)."""
    for name in (
        "create_change_log",
        "create_change_log_order",
        "create_change_log_shapes",
        "create_journal_history",
        "create_journal_snapshots",
    ):
        conn.execute(_q("journal", name, schema))
    row = conn.execute(queries.raw("journal", "change_log_rows_exists"), {"schema": schema}).fetchone()
    if not (row and row[0]):  # created once: a role that does not own it may not replace it
        conn.execute(_q("journal", "create_change_log_rows", schema))


# --- shapes ------------------------------------------------------------------------------------


def shape_columns(shape: RowShape) -> list[list[Any]]:
    """A shape's columns as ``change_log_shapes.columns`` keeps them."""
    return [[c.name, c.type_oid, c.type_modifier, c.flags] for c in shape.relation.columns]


def shape_id(shape: RowShape) -> int:
    """A stable 64-bit id of a table's shape (table, columns, primary key)."""
    text = orjson.dumps([shape.table, shape_columns(shape), list(shape.primary_key)])
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


def shape_of(table: str, columns: Sequence[Sequence[Any]], primary_key: Sequence[str]) -> RowShape:
    """The :class:`RowShape` a journal shape describes (as the Relation message built it)."""
    namespace, name = table.split(".", 1)
    cols = tuple(Column(int(flags), str(n), int(oid), int(mod)) for n, oid, mod, flags in columns)
    return RowShape(Relation(0, namespace, name, "f", cols), tuple(primary_key))


def _image_encoder(shape: RowShape) -> Callable[[tuple[RawValue, ...]], bytes]:
    """The JSON array of a row without unknown columns: one generated expression per column
    (the watcher's path encodes a whole image per change; of the ways measured — an object
    keyed by column, a per-column loop, raw-bytes concatenation — the fastest, and the
    smallest to write: the column names are in the shape, once)."""
    items = ", ".join(f"None if d[{i}] is None else d[{i}].decode()" for i in range(len(shape.names)))
    env: dict[str, Any] = {"dumps": orjson.dumps}
    exec(compile(f"def enc(d):\n    return dumps([{items}])\n", f"<journal {shape.table}>", "exec"), env)
    encode: Callable[[tuple[RawValue, ...]], bytes] = env["enc"]
    return encode


def _encode_image(row: Row, encoders: dict[RowShape, Callable[[tuple[RawValue, ...]], bytes]]) -> bytes:
    """A whole image: its values in column order, text or null, ``false`` for an unknown one."""
    if row.mask:
        raise ValueError("the journal records text-format values only (cdc watch streams text)")
    data = row.data
    if has_unchanged(data):
        return orjson.dumps(
            [False if v is UNCHANGED_TOAST else None if v is None else v.decode() for v in data]  # type: ignore[union-attr]
        )
    encode = encoders.get(row.shape)
    if encode is None:
        encode = encoders[row.shape] = _image_encoder(row.shape)
    return encode(data)


def _encode_diff(before: Row, after: Row) -> bytes:
    """An update's after-image as the columns whose raw value differs from the before-image
    (``before || after`` in SQL is the whole image); unknown columns are left out."""
    if after.mask or after.shape is not before.shape:
        raise ValueError("an update's images must share their relation and be in text format")
    data = after.data
    index = after.shape.index
    return orjson.dumps(
        {
            n: None if (v := data[index[n]]) is None else v.decode()  # type: ignore[union-attr]
            for n in changed_names(after.shape.names, before.data, data)
            if data[index[n]] is not UNCHANGED_TOAST
        }
    )


def _apply_diff(
    shape: RowShape, before: tuple[RawValue, ...], text: str, unknown: tuple[str, ...]
) -> tuple[RawValue, ...]:
    """The after-image an update's diff (:func:`_encode_diff`) and before-image make."""
    diff = orjson.loads(text)
    values = list(before)
    for name, v in diff.items():
        values[shape.index[name]] = None if v is None else v.encode()
    for name in unknown:
        values[shape.index[name]] = UNCHANGED_TOAST
    return tuple(values)


def _decode_image(text: str) -> tuple[RawValue, ...]:
    """The raw values of a whole image (:func:`_encode_image`)."""
    return tuple(
        [None if v is None else UNCHANGED_TOAST if v is False else v.encode() for v in orjson.loads(text)]
    )


# --- recording ---------------------------------------------------------------------------------


def _nothing(_conn: psycopg.Connection[Any]) -> None:
    pass  # nothing recorded since the last checkpoint


class _Spool:
    """Bytes waiting for the checkpoint: in memory up to :data:`SPOOL_BYTES`, then in an
    anonymous temporary file (deleted when closed, or when the process dies)."""

    def __init__(self) -> None:
        self._memory: list[bytes] = []
        self._size = 0
        self._file: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._file is not None:
            self._file.write(data)
            return
        self._memory.append(data)
        self._size += len(data)
        if self._size > SPOOL_BYTES:
            self._file = tempfile.TemporaryFile(prefix="cdc-journal-")  # noqa: SIM115 - closed by close()
            for block in self._memory:
                self._file.write(block)
            self._memory = []

    def blocks(self) -> Iterator[bytes]:
        if self._file is None:
            yield from self._memory
            return
        self._file.seek(0)
        while block := self._file.read(1 << 20):
            yield block

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = []

    __del__ = close


class Journal:
    """What the watcher recorded since its last checkpoint, for the checkpoint's transaction.

    ``enabled`` False (``--no-journal``): nothing is recorded, and every checkpoint extends
    the slot's ``off`` range from ``checkpoint`` (where this watcher started) on, so a backfill
    knows which history is missing."""

    def __init__(self, slot: str, schema: str, *, enabled: bool = True, checkpoint: int = 0) -> None:
        self.slot = slot
        self.schema = schema
        self.enabled = enabled
        self.started_at = checkpoint
        self.rows = 0  # rows waiting for the checkpoint
        self._slot_field = _text(slot)
        self._buffer = _Spool()
        self._days: set[int] = set()
        self._tables: dict[str, bytes] = {}
        self._ops = {op: _text(op) for op in ("insert", "update", "delete", "truncate", "message", "commit")}
        self._shape_fields: dict[RowShape, bytes] = {}
        self._encoders: dict[RowShape, Callable[[tuple[RawValue, ...]], bytes]] = {}
        self._new_shapes: list[dict[str, Any]] = []
        self._known_shapes: set[int] | None = None  # read at the first flush
        self._partitions: set[int] | None = None  # days with a partition, read at the first flush
        self._off_id: int | None = None

    # -- what one transaction adds ----------------------------------------------------------------
    def record(self, tx: Transaction) -> None:
        """Every change and logical message of ``tx`` (one ``commit`` row if it has neither)."""
        if not self.enabled:
            return
        prefix = self._prefix(tx.end_lsn, tx.xid, tx.commit_ts)
        parts: list[bytes] = []
        count = 0
        for change in tx.changes:  # a spilled transaction: read from its file, one at a time
            self._change(parts, prefix, change, change.position)
            count += 1
            if len(parts) >= _PARTS_PER_WRITE:
                self._buffer.write(b"".join(parts))
                parts.clear()
        for i, message in enumerate(tx.messages):
            parts += (
                prefix,
                _INT8.pack(8, MESSAGE_BASE + i),
                self._table(message.prefix),
                self._ops["message"],
                _NULL * 4,  # shape, before, after, unknown
                _LEN.pack(len(message.content)),
                bytes(message.content),
            )
            count += 1
        if count == 0:
            parts += (prefix, _INT8.pack(8, 0), self._table(""), self._ops["commit"], _NULL * 5)
            count = 1
        self._buffer.write(b"".join(parts))
        self.rows += count
        self._days.add(tx.commit_ts // _DAY_US)

    def record_snapshot(
        self, lsn: int, commit_ts: int, table: str, shape: RowShape, rows: Iterable[tuple[RawValue, ...]]
    ) -> int:
        """A reference table as a snapshot saw it at ``lsn``: a truncate of the table, then
        an insert per row (xid 0; a replay applies it to the state only). Returns the rows."""
        prefix = self._prefix(lsn, 0, commit_ts)
        position = SNAPSHOT_BASE + self.rows
        parts = [prefix, _INT8.pack(8, position), self._table(table), self._ops["truncate"], _NULL * 5]
        count = 1
        for values in rows:
            change = RowChange(table, "insert", None, Row(shape, values), 0)
            self._change(parts, prefix, change, position + count)
            count += 1
        self._buffer.write(b"".join(parts))
        self.rows += count
        self._days.add(commit_ts // _DAY_US)
        return count - 1

    def _prefix(self, end_lsn: int, xid: int, commit_ts: int) -> bytes:
        return (
            _FIELDS
            + self._slot_field
            + _UINT8.pack(8, end_lsn)
            + _INT8.pack(8, xid)
            + _INT8.pack(8, commit_ts)  # timestamptz: microseconds since 2000-01-01, as pgoutput
        )

    def _change(self, parts: list[bytes], prefix: bytes, change: RowChange, position: int) -> None:
        before, after = change.before, change.after
        row = after if after is not None else before
        if before is not None and after is not None:
            after_image = _jsonb(_encode_diff(before, after))
        else:
            after_image = _jsonb(_encode_image(after, self._encoders)) if after is not None else _NULL
        parts += (
            prefix,
            _INT8.pack(8, position),
            self._table(change.table),
            self._ops[change.op],
            self._shape(row.shape) if row is not None else _NULL,
            _jsonb(_encode_image(before, self._encoders)) if before is not None else _NULL,
            after_image,
            _jsonb(orjson.dumps(change.unknown)) if change.unknown else _NULL,
            _NULL,
        )

    def _table(self, table: str) -> bytes:
        field = self._tables.get(table)
        if field is None:
            field = self._tables[table] = _text(table)
        return field

    def _shape(self, shape: RowShape) -> bytes:
        field = self._shape_fields.get(shape)
        if field is None:
            sid = shape_id(shape)
            self._new_shapes.append(  # once per process; the write skips those the table has
                {
                    "slot": self.slot,
                    "shape_id": sid,
                    "table": shape.table,
                    "columns": orjson.dumps(shape_columns(shape)).decode(),
                    "primary_key": list(shape.primary_key),
                }
            )
            field = self._shape_fields[shape] = _INT8.pack(8, sid)
        return field

    # -- the checkpoint's transaction -------------------------------------------------------------
    def take_flush(self, position: Position) -> Pending:
        """What was recorded, handed over to be written in the checkpoint's transaction at
        ``position``; recording starts over (a checkpoint that fails ends the watcher, which
        streams it all again). Off: the history's "off" span reaches ``position``."""
        if not self.enabled:
            return Pending(lambda conn: self._extend_off(conn, position))
        if not self.rows:
            return Pending(_nothing)
        buffer, days, shapes = self._buffer, set(self._days), self._new_shapes
        self._buffer, self._new_shapes = _Spool(), []
        self.rows = 0
        self._days.clear()

        def write(conn: psycopg.Connection[Any]) -> None:
            try:
                self._write(conn, buffer, days, shapes)
            finally:
                buffer.close()

        return Pending(write)

    def flush(self, conn: psycopg.Connection[Any], position: Position) -> None:
        """:meth:`take_flush`, written inside the caller's transaction now."""
        self.take_flush(position).write(conn)

    def _write(
        self, conn: psycopg.Connection[Any], buffer: _Spool, days: set[int], shapes: list[dict[str, Any]]
    ) -> None:
        # The caches of partitions and known shapes are this method's alone (the committer's).
        # They are updated before the commit is known: a failed commit ends the attempt, and the
        # next one starts with a fresh Journal (Watcher.use), so a rolled-back entry never stays.
        if self._partitions is None:
            self._partitions = {day_number(d) for d, _ in partitions(conn, self.schema)}
            self._known_shapes = {
                r[0] for r in conn.execute(_q("journal", "known_shapes", self.schema), {"slot": self.slot})
            }
        assert self._known_shapes is not None
        missing = sorted(days - self._partitions)
        if missing:
            conn.execute(queries.raw("journal", "lock_partitions"), {"schema": self.schema})
        for day in missing:
            create_partition(conn, self.schema, POSTGRES_EPOCH.date() + timedelta(days=day))
            self._partitions.add(day)
        new = [s for s in shapes if s["shape_id"] not in self._known_shapes]
        with conn.cursor() as cur:
            if new:
                cur.executemany(_q("journal", "insert_shape", self.schema), new)
                self._known_shapes.update(s["shape_id"] for s in new)
            with cur.copy(_q("journal", "copy_change_log", self.schema)) as copy:
                copy.write(_SIGNATURE)
                for block in buffer.blocks():
                    copy.write(block)
                copy.write(_TRAILER)

    def _extend_off(self, conn: psycopg.Connection[Any], position: Position) -> None:
        if self._off_id is None:
            row = conn.execute(
                _q("journal", "record_history", self.schema),
                {
                    "slot": self.slot,
                    "kind": "off",
                    "from_lsn": format_lsn(self.started_at),
                    "to_lsn": format_lsn(position.end_lsn),
                    "from_time": None,
                    "to_time": position.commit_time,
                },
            ).fetchone()
            assert row is not None
            self._off_id = int(row[0])
        else:
            conn.execute(
                _q("journal", "extend_off", self.schema),
                {"id": self._off_id, "to_lsn": format_lsn(position.end_lsn), "to_time": position.commit_time},
            )


def record_bootstrap(conn: psycopg.Connection[Any], slot: str, schema: str, lsn: int, at: datetime) -> None:
    """The slot's journal starts here (its snapshot entry), in the caller's transaction."""
    conn.execute(
        _q("journal", "record_history", schema),
        {
            "slot": slot,
            "kind": "bootstrap",
            "from_lsn": format_lsn(lsn),
            "to_lsn": format_lsn(lsn),
            "from_time": at,
            "to_time": at,
        },
    )


# --- day partitions and retention ----------------------------------------------------------------


def day_number(day: date) -> int:
    return (day - POSTGRES_EPOCH.date()).days


def partition_name(day: date) -> str:
    return f"change_log_p{day:%Y%m%d}"


def partitions(conn: psycopg.Connection[Any], schema: str) -> list[tuple[date, str]]:
    """The journal's day partitions (day, table name), oldest first."""
    out = []
    for (name,) in conn.execute(queries.raw("journal", "partitions"), {"schema": schema}):
        m = _PARTITION_RE.match(name)
        if m:
            out.append((datetime.strptime(m.group(1), "%Y%m%d").date(), name))
    return sorted(out)


def create_partition(conn: psycopg.Connection[Any], schema: str, day: date) -> None:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    conn.execute(
        _q(
            "journal",
            "create_partition",
            schema,
            partition=sql.Identifier(schema, partition_name(day)),
            start=sql.Literal(start.isoformat()),
            end=sql.Literal((start + timedelta(days=1)).isoformat()),
        )
    )


@dataclass(frozen=True)
class Pruned:
    """One day partition :func:`prune` dropped, and per slot the range it held."""

    day: date
    ranges: list[tuple[str, str, str, datetime, datetime]]  # slot, from/to LSN, from/to time


def prune(
    conn: psycopg.Connection[Any],
    schema: str,
    retention_days: int,
    now: datetime,
    snapshot: Callable[[str, int], None] | None = None,
    lock_timeout: str = DROP_LOCK_TIMEOUT,
) -> list[Pruned]:
    """Drop every day partition that ended ``retention_days`` or more before ``now``, each in
    a transaction of its own that also records, per slot, the range it held (``pruned``).
    ``snapshot(slot, lsn)`` is called first, per slot, with the last end LSN the dropped days
    hold (a state snapshot there lets a backfill start after them). A drop waits at most
    ``lock_timeout`` for its lock (a backfill reading the journal holds it off, and the live
    watcher's journal writes would queue behind the waiting drop): :class:`JournalBusy` then,
    with the days dropped before it kept dropped."""
    horizon = (now.astimezone(UTC) - timedelta(days=retention_days)).date()
    doomed = [(day, name) for day, name in partitions(conn, schema) if day + timedelta(days=1) <= horizon]
    extents = {
        name: conn.execute(
            _q("journal", "partition_extent", schema, partition=sql.Identifier(schema, name))
        ).fetchall()
        for _day, name in doomed
    }
    if snapshot is not None:
        ends: dict[str, int] = {}
        for ranges in extents.values():
            for slot, _from_lsn, to_lsn, _from_time, _to_time in ranges:
                ends[slot] = max(ends.get(slot, 0), parse_lsn(to_lsn))
        for slot, lsn in sorted(ends.items()):
            snapshot(slot, lsn)
    out = []
    for day, name in doomed:
        with conn.transaction():
            ranges = extents[name]
            for slot, from_lsn, to_lsn, from_time, to_time in ranges:
                conn.execute(
                    _q("journal", "record_history", schema),
                    {
                        "slot": slot,
                        "kind": "pruned",
                        "from_lsn": from_lsn,
                        "to_lsn": to_lsn,
                        "from_time": from_time,
                        "to_time": to_time,
                    },
                )
            conn.execute(_q("journal", "drop_lock_timeout", schema), {"timeout": lock_timeout})
            try:
                conn.execute(_q("journal", "drop_partition", schema, partition=sql.Identifier(schema, name)))
            except pgerr.LockNotAvailable as exc:
                raise JournalBusy(
                    f"journal day {day.isoformat()} not dropped: a backfill is reading the journal",
                    sqlstate=exc.sqlstate,
                ) from exc
        out.append(Pruned(day, [tuple(r) for r in ranges]))
    return out


# --- state snapshots -----------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The state and timers as of an end LSN, and the watermark then."""

    lsn: int
    watermark: datetime | None
    rows: list[tuple[str, tuple[str, ...], dict[str, Any]]]  # table, key, row
    timers: list[tuple[Timer, ArmedBy]]


def write_snapshot(conn: psycopg.Connection[Any], slot: str, schema: str, snap: Snapshot) -> None:
    """Record ``snap`` (and its ``snapshot`` history entry) in one transaction."""
    base = {"slot": slot, "lsn": format_lsn(snap.lsn), "watermark": snap.watermark}
    params = [
        {
            **base,
            "kind": "state",
            "table": table,
            "key": orjson.dumps(list(key)).decode(),
            "data": orjson.dumps(row).decode(),
        }
        for table, key, row in snap.rows
    ]
    for timer, by in snap.timers:
        data = {
            "deriver": timer.deriver,
            "tenant": timer.tenant,
            "subject": timer.subject_id,
            "stage": timer.stage,
            "due_at": timer.due_at.isoformat(),
            "state": timer.state,
            "data": dict(timer.data),
            "armed": [by.lsn, by.xid, by.commit_time.isoformat(), by.table],
        }
        params.append(
            {**base, "kind": "timer", "table": "", "key": timer.key, "data": orjson.dumps(data).decode()}
        )
    with conn.transaction(), conn.cursor() as cur:
        if params:
            cur.executemany(_q("journal", "insert_snapshot_row", schema), params)
        cur.execute(
            _q("journal", "record_history", schema),
            {
                "slot": slot,
                "kind": "snapshot",
                "from_lsn": format_lsn(snap.lsn),
                "to_lsn": format_lsn(snap.lsn),
                "from_time": snap.watermark,
                "to_time": snap.watermark,
            },
        )
        cur.execute(
            _q("journal", "drop_snapshots_before", schema), {"slot": slot, "lsn": format_lsn(snap.lsn)}
        )


def load_snapshot(conn: psycopg.Connection[Any], slot: str, schema: str, lsn: int) -> Snapshot:
    """The snapshot :func:`write_snapshot` recorded at ``lsn``."""
    snap = Snapshot(lsn, None, [], [])
    for kind, table, key, data, watermark in conn.execute(
        _q("journal", "load_snapshot", schema), {"slot": slot, "lsn": format_lsn(lsn)}
    ):
        snap.watermark = watermark
        value = orjson.loads(data)
        if kind == "state":
            snap.rows.append((table, tuple(orjson.loads(key)), value))
            continue
        armed_lsn, xid, commit_time, armed_table = value["armed"]
        timer = Timer(
            key,
            value["deriver"],
            value["tenant"],
            value["subject"],
            value["stage"],
            datetime.fromisoformat(value["due_at"]),
            value["state"],
            value["data"],
        )
        snap.timers.append((timer, ArmedBy(armed_lsn, xid, datetime.fromisoformat(commit_time), armed_table)))
    return snap


# --- coverage and replay -------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryEntry:
    kind: str  # bootstrap, off, pruned
    from_lsn: int
    to_lsn: int
    from_time: datetime | None
    to_time: datetime | None
    recorded_at: datetime


def history(conn: psycopg.Connection[Any], slot: str, schema: str) -> list[HistoryEntry]:
    """The slot's ``journal_history``, oldest first."""
    return [
        HistoryEntry(kind, parse_lsn(a), parse_lsn(b), ft, tt, at)
        for kind, a, b, ft, tt, at in conn.execute(_q("journal", "read_history", schema), {"slot": slot})
    ]


def load_shapes(conn: psycopg.Connection[Any], slot: str, schema: str) -> dict[int, RowShape]:
    """Every shape the slot's journal names, as the :class:`RowShape` a replay builds rows of."""
    return {
        sid: shape_of(table, orjson.loads(columns), pk)
        for sid, table, columns, pk in conn.execute(_q("journal", "load_shapes", schema), {"slot": slot})
    }


def lsn_before(conn: psycopg.Connection[Any], slot: str, schema: str, at: datetime) -> int:
    """The end LSN of the last transaction committed before ``at`` that the journal knows of —
    journaled, or the end of a pruned stretch or a state snapshot before ``at`` (0: none)."""
    row = conn.execute(_q("journal", "lsn_at", schema), {"slot": slot, "time": at}).fetchone()
    return parse_lsn(row[0]) if row and row[0] else 0


def last_lsn(conn: psycopg.Connection[Any], slot: str, schema: str) -> int:
    """The end LSN of the slot's last journaled transaction (0: none)."""
    row = conn.execute(_q("journal", "last_lsn", schema), {"slot": slot}).fetchone()
    return parse_lsn(row[0]) if row and row[0] else 0


def count_rows(conn: psycopg.Connection[Any], slot: str, schema: str, after: int, until: int) -> int:
    """How many journal rows have an end LSN from ``after`` to ``until`` (a scan of them all:
    use a connection without a statement timeout)."""
    params = {"slot": slot, "after": format_lsn(after), "until": format_lsn(until)}
    row = conn.execute(_q("journal", "count_rows", schema), params).fetchone()
    return int(row[0]) if row else 0


def replay(
    conn: psycopg.Connection[Any],
    slot: str,
    schema: str,
    after: int,
    until: int,
    spill: SpillLimits | None = None,
    itersize: int = 5000,
) -> Iterator[Transaction]:
    """The journaled transactions with an end LSN from ``after`` to ``until``, in commit
    order, rebuilt as the assembler built them live (a large one spills as it did live).
    Snapshot entries come as transactions with xid 0. ``conn`` must not be in autocommit
    mode: the rows come through a server-side cursor, a few thousand at a time."""
    shapes = load_shapes(conn, slot, schema)
    spill = spill or SpillLimits()
    params = {"slot": slot, "after": format_lsn(after), "until": format_lsn(until)}
    current: Transaction | None = None
    lsn_text, end_lsn = "", 0
    with conn.cursor(name="cdc_journal_replay") as cur:
        cur.itersize = itersize
        cur.execute(_q("journal", "replay", schema), params)
        for lsn, xid, at, position, table, op, sid, before, after_image, unknown, message in cur:
            if lsn != lsn_text:
                lsn_text, end_lsn = lsn, parse_lsn(lsn)
            if current is None or end_lsn != current.end_lsn or xid != current.xid:
                if current is not None:
                    yield current
                ts = pg_micros(at)
                current = Transaction(xid, end_lsn, end_lsn, end_lsn, ts, changes=ChangeLog(spill))
            if op == "message":
                current.messages.append(LogicalMessage(True, end_lsn, table, bytes(message)))
            elif op == "commit":
                continue
            elif op == "truncate":
                current.changes.append(RowChange(table, "truncate", None, None, position))
                current.truncated += (table,)
            else:
                shape = shapes[sid]
                gone = tuple(orjson.loads(unknown)) if unknown is not None else ()
                b = a = None
                if before is not None:
                    b = Row(shape, _decode_image(before))
                    if after_image is not None:  # an update: its after-image is a diff
                        a = Row(shape, _apply_diff(shape, b.data, after_image, gone))
                elif after_image is not None:
                    a = Row(shape, _decode_image(after_image))
                current.changes.append(RowChange(table, op, b, a, position, gone))
    if current is not None:
        yield current
