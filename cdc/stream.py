"""The replication socket: START_REPLICATION over psycopg 3.3's COPY_BOTH, and nothing else.

This is the only module that talks to the walsender (the connection itself is opened by
:func:`cdc.connect.connect`).  It reads CopyData frames through
the low-level ``pgconn`` without ever blocking inside libpq (so signals and the other
threads stay responsive), answers keepalives that ask for a reply, and sends standby
status updates on its own timer (every ``min(10 s, wal_sender_timeout / 2)``), never
one per message.

Positions it reports (:class:`FlushPosition`, a small state machine):

* **write** — the highest LSN received (XLogData end or keepalive ``wal_end``);
* **flush / apply** — the end LSN of the last transaction the consumer declared durable
  (:meth:`ReplicationStream.confirm`).  When the consumer has delivered everything it
  received, flush follows the keepalive ``wal_end`` so a slot on quiet tables never holds
  WAL; while anything handed out is not durable, a keepalive never moves it.  Confirming a
  commit record's *start* LSN instead would make the server resend that transaction after
  every reconnect.

A consumer busy with one long transaction (spilling, deriving, delivering it in chunks) calls
:meth:`ReplicationStream.keepalive` between its steps: a status update with the old flush
position, so the server's ``wal_sender_timeout`` never drops the connection meanwhile.
"""

from __future__ import annotations

import contextlib
import select
import struct
import time
from datetime import UTC, datetime

import psycopg
from psycopg import pq, sql

from . import queries
from .connect import connect
from .errors import CdcError, ConnectionLost, StreamProtocolError, translate
from .lsn import format_lsn
from .pgoutput.messages import pg_micros

_XLOG_END = struct.Struct(">Q").unpack_from  # the end LSN alone, at offset 9
_KEEPALIVE = struct.Struct(">QqB")  # wal_end, send time, reply requested
_STATUS = struct.Struct(">cQQQqB")  # 'r', write, flush, apply, time, reply
_W, _K = ord("w"), ord("k")


def now_micros() -> int:
    """Now, as microseconds since 2000-01-01 UTC (the protocol's clock)."""
    return pg_micros(datetime.now(UTC))


def start_replication_command(
    slot: str, publication: str, start_lsn: int = 0, *, binary: bool = False, messages: bool = True
) -> str:
    """START_REPLICATION text (the replication protocol takes no parameters)."""
    options = [
        ("proto_version", "1"),
        ("publication_names", sql.Identifier(publication).as_string(None)),
    ]
    if messages:
        options.append(("messages", "true"))
    if binary:
        options.append(("binary", "true"))
    opts = ", ".join(f"{k} {sql.Literal(v).as_string(None)}" for k, v in options)
    return (
        f"START_REPLICATION SLOT {sql.Identifier(slot).as_string(None)} LOGICAL "
        f"{format_lsn(start_lsn)} ({opts})"
    )


class FlushPosition:
    """What a standby status update reports; the flush position never passes a transaction
    that is not yet durable.

    Two states. *Delivered*: everything handed to the consumer is durable, so a keepalive's
    ``wal_end`` moves flush (no change of ours lies before it) and an idle slot holds no WAL.
    *Pending*: something handed out is not durable yet, so flush moves only when the consumer
    confirms an end LSN, and a keepalive moves ``write`` alone — also one that arrives in the
    middle of a batch or of a transaction. Handing out data makes it pending; a confirmation
    that says the consumer caught up makes it delivered. Neither position moves backward.
    """

    __slots__ = ("flush", "pending", "write")

    def __init__(self, flush: int = 0) -> None:
        self.write = 0  # the highest LSN received
        self.flush = flush  # the highest LSN the server may forget
        self.pending = False

    def received(self, lsn: int) -> None:
        if lsn > self.write:
            self.write = lsn

    def handed_out(self) -> None:
        """Data went to the consumer: nothing follows keepalives until it is confirmed."""
        self.pending = True

    def keepalive(self, wal_end: int) -> None:
        self.received(wal_end)
        if not self.pending and wal_end > self.flush:
            self.flush = wal_end

    def confirm(self, lsn: int, *, caught_up: bool) -> None:
        """Everything up to ``lsn`` is durable; ``caught_up``: nothing handed out after it is
        still waiting (no later transaction, nor part of one, held by the consumer)."""
        if lsn > self.flush:
            self.flush = lsn
        self.pending = not caught_up


class ReplicationStream:
    """One START_REPLICATION session.  Not thread-safe; one consumer loop drives it."""

    def __init__(
        self,
        dsn: str,
        slot: str,
        publication: str,
        *,
        start_lsn: int = 0,
        binary: bool = False,
        temporary: bool = False,
        status_interval: float = 10.0,
        purpose: str = "stream",
    ) -> None:
        self.dsn = dsn
        self.purpose = purpose  # the connection's application name after "cdc "
        self.slot = slot
        self.publication = publication
        self.start_lsn = start_lsn
        self.binary = binary
        self.temporary = temporary
        self.status_interval = status_interval
        self.conn: psycopg.Connection[tuple[object, ...]] | None = None
        self.position = FlushPosition()
        self.server_wal_end = 0
        self._next_status = 0.0
        self._copy_ended = False  # the end of the COPY came behind messages not yet handed out

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> ReplicationStream:
        conn = connect(self.dsn, purpose=self.purpose, replication=True, slot=self.slot)
        self.conn = conn
        try:
            timeout_ms = self._wal_sender_timeout_ms(conn)
            if timeout_ms > 0:
                self.status_interval = max(0.2, min(self.status_interval, timeout_ms / 2000.0))
            if self.temporary:
                conn.execute(
                    f"CREATE_REPLICATION_SLOT {sql.Identifier(self.slot).as_string(conn)} "
                    "TEMPORARY LOGICAL pgoutput (SNAPSHOT 'nothing')"
                )
            conn.execute(
                start_replication_command(self.slot, self.publication, self.start_lsn, binary=self.binary)
            )
        except psycopg.Error as exc:
            self._close_quietly()
            raise translate(exc, slot=self.slot) from exc
        except BaseException:
            self._close_quietly()
            raise
        self.position.confirm(self.start_lsn, caught_up=not self.position.pending)
        self._next_status = time.monotonic() + self.status_interval
        return self

    @staticmethod
    def _wal_sender_timeout_ms(conn: psycopg.Connection[tuple[object, ...]]) -> int:
        row = conn.execute(queries.raw("stream", "wal_sender_timeout")).fetchone()
        text = str(row[0]) if row else "60s"
        units = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}
        for unit in ("ms", "min", "s", "h"):
            if text.endswith(unit):
                return int(float(text[: -len(unit)]) * units[unit])
        return int(text or 0)

    def _close_quietly(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    @property
    def pgconn(self) -> pq.abc.PGconn:
        if self.conn is None:
            raise ConnectionLost("replication stream is not started")
        return self.conn.pgconn

    # -- positions ----------------------------------------------------------------------
    @property
    def received_lsn(self) -> int:
        """The write position."""
        return self.position.write

    @property
    def flushed_lsn(self) -> int:
        """The flush (= apply) position."""
        return self.position.flush

    def confirm(self, lsn: int, *, caught_up: bool = True) -> None:
        """The consumer made everything up to ``lsn`` durable.

        ``caught_up`` says nothing handed out so far is still waiting for delivery (false
        while the consumer holds later messages), so the flush position may follow
        keepalives until the next change arrives (:class:`FlushPosition`).
        """
        self.position.confirm(lsn, caught_up=caught_up)

    def keepalive(self) -> None:
        """A status update (with the flush position as it is) once the status interval has
        passed: what a consumer busy with a long transaction calls between its steps."""
        if time.monotonic() >= self._next_status:
            self.send_status()

    # -- reading -------------------------------------------------------------------------
    def read(self, timeout: float) -> bytes | None:
        """The next pgoutput message, or None when ``timeout`` seconds pass without one.

        The socket is always polled at least once, so ``read(0)`` returns whatever has
        already arrived without waiting.
        """
        batch = self.read_batch(timeout, limit=1)
        return batch[0] if batch else None

    def read_batch(self, timeout: float, limit: int = 1000) -> list[bytes]:
        """Every pgoutput message already received (at most ``limit``), waiting up to
        ``timeout`` seconds for the first; an empty list when none came.

        What :meth:`read` does per message, done for a run of them: a busy stream's consumer
        pays the per-call overhead once per batch instead of once per row change."""
        pgconn = self.pgconn
        if self._copy_ended:
            self._raise_end_of_copy()
        get = pgconn.get_copy_data
        out: list[bytes] = []
        append = out.append
        position = self.position
        received = position.write
        deadline = time.monotonic() + timeout
        polled = False
        try:
            while True:
                n, buf = get(1)
                if n > 0:
                    kind = buf[0]
                    if kind == _W:
                        end = _XLOG_END(buf, 9)[0]
                        if end > received:
                            received = end
                        append(bytes(buf[25:]))
                        if len(out) >= limit:
                            break
                        continue
                    if kind == _K:
                        position.received(received)
                        if out:  # undelivered changes: the flush position must not follow wal_end
                            position.handed_out()
                        wal_end, ts, reply = _KEEPALIVE.unpack_from(buf, 1)
                        self._on_keepalive(wal_end, ts, reply)
                        received = position.write
                        continue
                    raise StreamProtocolError(f"unexpected CopyData frame kind 0x{kind:02x}")
                if out:
                    # deliver these first; the end of the stream is raised at the next call (libpq
                    # says it once: asked again, it only knows that no COPY is in progress)
                    self._copy_ended = n == -1
                    break
                if n == -1:
                    self._raise_end_of_copy()
                self.keepalive()
                now = time.monotonic()
                if polled and now >= deadline:
                    return out
                self._wait_readable(max(0.0, min(deadline, self._next_status) - now))
                self._consume()
                polled = True
        except psycopg.Error as exc:  # get_copy_data: the connection died under libpq
            raise translate(exc, slot=self.slot) from exc
        finally:
            position.received(received)
        position.handed_out()
        self.keepalive()  # a busy stream still reports
        return out

    def _wait_readable(self, timeout: float) -> None:
        try:
            select.select([self.pgconn.socket], [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            pass
        except psycopg.Error as exc:  # the socket of a connection libpq has closed
            raise translate(exc, slot=self.slot) from exc
        except (OSError, ValueError) as exc:
            raise ConnectionLost(f"lost the replication connection (slot {self.slot}): {exc}") from exc

    def _consume(self) -> None:
        try:
            self.pgconn.consume_input()
        except psycopg.Error as exc:
            raise translate(exc, slot=self.slot) from exc

    def _on_keepalive(self, wal_end: int, ts: int, reply: int) -> None:
        self.server_wal_end = max(self.server_wal_end, wal_end)
        self.position.keepalive(wal_end)
        if reply:
            self.send_status()

    def send_status(self, reply: bool = False) -> None:
        position = self.position
        data = _STATUS.pack(
            b"r",
            position.write,
            position.flush,
            position.flush,
            now_micros(),
            1 if reply else 0,
        )
        pgconn = self.pgconn
        try:
            while pgconn.put_copy_data(data) == 0:
                select.select([], [pgconn.socket], [], 1.0)
            while pgconn.flush() == 1:
                select.select([pgconn.socket], [pgconn.socket], [], 1.0)
                pgconn.consume_input()
        except psycopg.Error as exc:
            raise translate(exc, slot=self.slot) from exc
        except OSError as exc:  # select on the socket of a connection that just closed
            raise ConnectionLost(f"lost the replication connection (slot {self.slot}): {exc}") from exc
        self._next_status = time.monotonic() + self.status_interval

    def _raise_end_of_copy(self) -> None:
        """The COPY ended: the server's error (a terminated walsender, a shutdown, an invalidated
        slot), libpq's own (the connection died; it carries no SQLSTATE), or an end of stream."""
        pgconn = self.pgconn
        error: CdcError | None = None
        while (res := pgconn.get_result()) is not None:
            if res.status == pq.ExecStatus.FATAL_ERROR and error is None:
                exc = psycopg.errors.error_from_result(res)
                error = translate(exc, slot=self.slot)
        raise error or ConnectionLost(f"the server ended the replication stream (slot {self.slot})")

    # -- stopping -------------------------------------------------------------------------
    def stop(self) -> None:
        """Send a final status, end the COPY cleanly (CopyDone) and close the connection."""
        if self.conn is None:
            return
        pgconn = self.conn.pgconn
        try:
            if pgconn.status == pq.ConnStatus.OK:
                self.send_status()
                pgconn.put_copy_end()
                while pgconn.flush() == 1:
                    select.select([], [pgconn.socket], [], 1.0)
                deadline = time.monotonic() + 5.0
                while time.monotonic() < deadline:
                    n, _ = pgconn.get_copy_data(1)
                    if n == -1:
                        break
                    if n == 0:
                        select.select([pgconn.socket], [], [], 0.2)
                        pgconn.consume_input()
                while pgconn.get_result() is not None:
                    pass
        except (psycopg.Error, OSError, CdcError):
            pass
        finally:
            self._close_quietly()

    def __enter__(self) -> ReplicationStream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
