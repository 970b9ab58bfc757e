"""``cdc tail``: decoded row changes as JSON lines, one per change, acknowledged per transaction.

Each line is ``{"lsn","xid","commitTime","table","op","before","after","unknown"}`` with
``lsn`` the transaction's end LSN.  A transaction's lines are written and flushed
before its end LSN is confirmed to the server (like pg_recvlogical), so a crash between
the two repeats at most the unconfirmed transactions.

A debugging command must never take a watcher's changes.  By default tail reads through a
temporary slot created at the current WAL position: a live view that consumes nothing and
disappears with the connection.  Consuming a durable slot takes an explicit slot name, and
:func:`preflight` refuses one that the watcher's own schema names (its slot record or its
checkpoint), one of another database, and one the server invalidated.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import IO, Any

import psycopg
from psycopg import sql

from . import faults, queries
from .assembler import Assembler, RowChange, Transaction
from .connect import connect
from .errors import (
    SlotExists,
    SlotInvalidated,
    SlotMissing,
    SlotOfWatcher,
    translate,
)
from .lsn import format_lsn
from .pgoutput import Decoder
from .provision import check_server, refuse_foreign_slot, slot_facts
from .stream import ReplicationStream
from .values import canonical_timestamp, dumps


@dataclass
class TailOptions:
    dsn: str
    slot: str | None  # a durable slot to consume; None: a temporary slot that consumes nothing
    publication: str
    temporary: bool = False  # make ``slot`` a temporary slot of that name
    max_changes: int | None = None
    idle_exit: float | None = None
    binary: bool = False
    status_interval: float = 10.0
    endpos: int | None = None  # stop once the stream reaches this LSN (like pg_recvlogical)


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between reads."""

    def __init__(self) -> None:
        self.stopped = False

    def install(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stopped = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def change_record(
    tx: Transaction, change: RowChange, lsn: str | None = None, commit_time: str | None = None
) -> dict[str, Any]:
    return {
        "lsn": lsn or format_lsn(tx.end_lsn),
        "xid": tx.xid,
        "commitTime": commit_time or canonical_timestamp(tx.commit_time),
        "table": change.table,
        "op": change.op,
        "before": change.before.to_json_dict() if change.before is not None else None,
        "after": change.after.to_json_dict() if change.after is not None else None,
        "unknown": list(change.unknown),
    }


def encode_transaction(tx: Transaction) -> bytes:
    # One orjson call per line measured faster than assembling lines from encoded parts.
    lsn = format_lsn(tx.end_lsn)
    commit_time = canonical_timestamp(tx.commit_time)
    return b"".join([dumps(change_record(tx, c, lsn, commit_time)) + b"\n" for c in tx.changes])


def preflight(dsn: str, slot: str, temporary: bool) -> None:
    """Clear errors before opening the replication connection; refuse a slot tail must not consume."""
    try:
        with connect(dsn, purpose="tail", bounded=True) as conn:
            database = check_server(conn)["database"]  # and wal_level = logical
            if not temporary:
                _check_durable_slot(conn, slot, database)
            elif slot_facts(conn, slot) is not None:
                raise SlotExists(f"replication slot {slot} already exists")
    except psycopg.Error as exc:
        raise translate(exc, slot=slot) from exc


def _watcher_naming(conn: psycopg.Connection[Any], slot: str) -> str | None:
    """The first watcher table (``schema.slots`` or ``schema.checkpoints``, any schema) that
    names ``slot``. A table this role may not read counts as naming it: tail cannot tell."""
    tables = conn.execute(queries.raw("setup", "watcher_record_tables")).fetchall()
    for schema, table in tables:
        try:
            with conn.transaction():
                row = conn.execute(
                    queries.query("setup", "names_slot", table=sql.Identifier(schema, table)), {"slot": slot}
                ).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return f"{schema}.{table} (not readable by this role)"
        if row is not None and row[0]:
            return f"{schema}.{table}"
    return None


def _check_durable_slot(conn: psycopg.Connection[Any], slot: str, database: str) -> None:
    facts = slot_facts(conn, slot)
    if facts is None:
        raise SlotMissing(
            f"replication slot {slot} does not exist",
            hint="create it (pg_create_logical_replication_slot(name, 'pgoutput')), "
            "or leave out --slot to read through a temporary slot",
        )
    refuse_foreign_slot(facts, slot, database)
    named_in = _watcher_naming(conn, slot)
    if named_in is not None:
        raise SlotOfWatcher(f"replication slot {slot} is a watcher's slot ({named_in} names it)")
    if facts["wal_status"] == "lost":
        raise SlotInvalidated(
            f"replication slot {slot} was invalidated (wal_status lost)",
            hint="drop it (pg_drop_replication_slot) and create it again, "
            "or leave out --slot to read through a temporary slot",
        )


def temporary_slot_name() -> str:
    """A name no other tail of the cluster uses (temporary slots are cluster-wide too)."""
    return f"cdc_tail_{uuid.uuid4().hex[:12]}"


def run_tail(
    opts: TailOptions,
    out: IO[bytes],
    stop: StopFlag | None = None,
    on_transaction: Callable[[Transaction], None] | None = None,
) -> int:
    """Stream until a stop condition; return the number of changes printed."""
    temporary = opts.temporary or opts.slot is None
    slot = opts.slot or temporary_slot_name()
    preflight(opts.dsn, slot, temporary)
    stop = stop or StopFlag()
    decoder = Decoder()
    assembler = Assembler()
    stream = ReplicationStream(
        opts.dsn,
        slot,
        opts.publication,
        binary=opts.binary,
        temporary=temporary,
        status_interval=opts.status_interval,
        purpose="tail",
    )
    printed = 0
    last_tx = time.monotonic()
    fd_out = out
    with stream:
        while not stop.stopped:
            poll = 0.5
            if opts.idle_exit is not None:
                poll = max(0.01, min(poll, opts.idle_exit - (time.monotonic() - last_tx)))
            data = stream.read(poll)
            if data is None:
                if (
                    opts.endpos is not None
                    and not assembler.in_transaction
                    and stream.server_wal_end >= opts.endpos
                ):
                    break
                if (
                    opts.idle_exit is not None
                    and not assembler.in_transaction
                    and time.monotonic() - last_tx >= opts.idle_exit
                ):
                    break
                continue
            tx = assembler.feed(decoder.decode(data))
            if tx is None:
                continue
            last_tx = time.monotonic()
            if tx.changes:
                fd_out.write(encode_transaction(tx))
                fd_out.flush()
                printed += len(tx.changes)
            if on_transaction is not None:
                on_transaction(tx)
            faults.reached("tail.after_print")
            # Acknowledge what was printed before printing more: a crash repeats at most
            # this one transaction.
            stream.confirm(tx.end_lsn)
            if tx.changes:
                stream.send_status()
            if opts.max_changes is not None and printed >= opts.max_changes:
                break
            if opts.endpos is not None and tx.end_lsn >= opts.endpos:
                break
        # Tell the server where we are before leaving, so a restart resumes right here.
        stream.send_status()
    return printed
