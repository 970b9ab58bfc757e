"""Standby: two or more ``cdc watch`` of one slot; one streams, the others wait to take over.

**The lock.** The active watcher holds a Postgres session advisory lock keyed by the database and
the slot: a 64-bit hash of ``current_database() || '/' || slot``, taken as two int4 keys (its
high and low 32 bits; ``sql/standby.sql`` says how it shows in ``pg_locks``). Every watcher
takes it before anything else (:meth:`Leadership.acquire`, called by :func:`cdc.startup.start`
right after the store connection opens); one that cannot logs ``standby: waiting for the lock
held by pid N`` once, names its session ``cdc watch <slot>: standby`` (``cdc lag`` counts those)
and tries again every :data:`POLL_S` second, until it gets it or is told to stop.

**Why on the store connection.** The lock is held by the session whose transaction commits the
outbox rows, the state and the checkpoint. A watcher whose session is gone has lost the lock *and*
cannot commit anything any more: whatever it still has in hand dies with that session, so two
watchers never both deliver a batch, and the one that takes over resumes from the checkpoint
the other last committed (exactly once for the outbox; other sinks may see that batch again and
de-duplicate it by key). The store lives in the watched database by default; when the outbox is
in another database the lock (and the key's database name) is that database's, which is where
the checkpoint it protects lives.

**How the active watcher loses it.** The server releases a session lock when the session ends:

* the watcher dies (kill -9, a crash): the kernel closes its sockets, the server ends the
  sessions at once;
* its connections are cut (``pg_terminate_backend``, a network failure the server notices):
  the session ends; the watcher finds out at its next statement on it and starts over as a
  standby (:mod:`cdc.watch` treats it as a lost connection);
* it freezes (SIGSTOP, a hung host, a partition the server does not notice): its sockets stay
  open, so the server is told to end the session itself — :meth:`Leadership.lease` sets the
  session's ``idle_session_timeout`` and ``idle_in_transaction_session_timeout`` to the lease
  (``standby_lease_s``, 10 s by default) as soon as the lock is taken, and the active watcher
  sends a trivial statement on it every quarter lease (:meth:`Leadership.touch`): during its
  start-up from a thread of its own (the take-over's wait, the preflight, a late bootstrap copy
  leave the session idle meanwhile), then from its loop and from the keepalive that also keeps
  the replication connection within ``wal_sender_timeout`` between the steps of a long
  transaction — folding, deriving, delivering chunks. A waiting standby ends an idle holder
  itself once it was silent for a lease (the same rule, for a role whose settings reset it).
  (TCP keepalives would not do: the kernel of a stopped process still answers them.)

**A frozen COPY, not a long one.** The two timeouts do not apply while the server waits for the
rest of a statement: a watcher frozen in the middle of the outbox's (or the journal's, the
state's) COPY shows as ``active``, waiting for its client (``wait_event`` ClientRead) — and so
does a healthy watcher whose COPY of a big batch simply takes longer than the lease. What tells
them apart is the slot: a healthy watcher keeps its walsender (it answers it within
``wal_sender_timeout``: the keepalive runs between the steps of a long transaction), while a
frozen one stops answering, and the server ends its walsender after ``wal_sender_timeout`` (60 s
by default). So a standby ends such a holder only when it has been waiting on its client
for longer than the lease *and* the slot has no walsender any more
(``pg_replication_slots.active`` is false, read on the watched server: the store may be another
one) — :meth:`Leadership.acquire`, ``end_silent_holder`` in ``sql/standby.sql``. A watcher frozen
mid-COPY is thus taken over after ``max(lease, wal_sender_timeout)``; one that cannot say a word
for that long loses the lock: the price is a takeover, never a double delivery (its transaction
dies with its session).

**Taking over the slot.** The old watcher's walsender may outlive it: until its own
``wal_sender_timeout`` when the watcher froze, briefly when it died. Holding the lock proves
that watcher is not the active one any more, so the new one ends the slot's walsender at once
(``pg_terminate_backend``) — only when it is a watcher's: its application name is the one this
watcher's own stream would have (:meth:`Leadership.take_slot`), and waits up to
:data:`RELEASE_WAIT_S` for it to let go. Any other consumer of the slot (``pg_recvlogical``,
another tool) is left alone and stops the watcher with :class:`~cdc.errors.SlotHeldByOther`:
waiting would not end it. So does a slot that stays active for the whole wait under a process
without a session in ``pg_stat_activity``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict

from . import logs, queries
from .connect import Pool, conninfo
from .errors import CdcError, SlotHeldByOther, translate
from .lifecycle import pause
from .tail import StopFlag

log = logging.getLogger("cdc.watch")

#: Seconds between a standby's attempts at the lock.
POLL_S: Final = 1.0
#: Seconds the new active watcher waits for the walsender it ended to let go of the slot.
RELEASE_WAIT_S: Final = 5.0


class StoppedWaiting(CdcError):
    """A stop was asked for while this watcher waited as a standby (:mod:`cdc.watch` ends with
    exit 0 on it; it never reaches an operator as an error)."""

    hint = "nothing to do: the watcher was told to stop while it waited for the lock"


def stream_application_name(dsn: str, slot: str) -> str:
    """The application name a watcher's replication connection has (libpq's order: the DSN's
    own, then PGAPPNAME, then ours)."""
    params = conninfo_to_dict(conninfo(dsn, purpose=f"watch {slot}", replication=True))
    name = (
        params.get("application_name") or os.environ.get("PGAPPNAME") or params["fallback_application_name"]
    )
    return str(name)[:63]


class Leadership:
    """The lock of one slot on a store connection (see the module docstring)."""

    def __init__(
        self,
        slot: str,
        *,
        lease_s: float,
        on_wait: Callable[[int | None], None],
        on_lead: Callable[[float | None], None],
    ) -> None:
        self.slot = slot
        self.lease_s = lease_s
        self.on_wait, self.on_lead = on_wait, on_lead
        self._store: psycopg.Connection[Any] | None = None
        self._touch_every = max(0.2, lease_s / 4)
        self._touched = 0.0
        self._keeper: _Keeper | None = None  # touches the lease during the start-up

    def acquire(self, store: psycopg.Connection[Any], stop: StopFlag, reads: Pool) -> bool:
        """Return, whether it had to wait, once ``store``'s session holds the lock — under its lease, kept by a touch every
        quarter lease until :meth:`streaming` — or raise :class:`StoppedWaiting` when a stop comes
        first. ``reads`` reaches the watched database (whether the slot streams).
        ``on_wait(holder pid)`` is called when it has to wait, ``on_lead(seconds waited, or
        None)`` once it holds the lock."""
        params = {"slot": self.slot}
        waited_since: float | None = None
        previous_name: str | None = None
        try:
            while True:
                row = store.execute(queries.raw("standby", "try_lock"), params).fetchone()
                if row is not None and row[0]:
                    break
                found = store.execute(queries.raw("standby", "lock_holder"), params).fetchone()
                holder = int(found[0]) if found is not None else None
                if holder is not None:
                    self._end_silent_holder(store, reads, holder)
                if waited_since is None:
                    waited_since = time.monotonic()
                    named = store.execute(
                        queries.raw("standby", "set_application_name"),
                        {"name": f"cdc watch {self.slot}: standby"[:63]},
                    ).fetchone()
                    previous_name = str(named[0]) if named is not None else ""
                    self.on_wait(holder)
                if not pause(stop, POLL_S):
                    raise StoppedWaiting(f"stopped while waiting for the lock of slot {self.slot}")
            if previous_name is not None:
                store.execute(queries.raw("standby", "set_application_name"), {"name": previous_name})
        except psycopg.Error as exc:
            raise translate(exc, slot=self.slot) from exc
        self._store = store
        self.lease()  # at once: the start-up (take_slot's wait, preflight, loads) is under it too
        self._keeper = _Keeper(self)
        self.on_lead(None if waited_since is None else time.monotonic() - waited_since)
        return waited_since is not None

    def _end_silent_holder(self, store: psycopg.Connection[Any], reads: Pool, holder: int) -> None:
        """End the holder's session (pid ``holder``) when its client has been silent for a whole lease: idle, or
        in the middle of a statement while the slot has no walsender any more (the module
        docstring: a frozen watcher, not a busy one)."""
        try:
            ended = store.execute(
                queries.raw("standby", "end_silent_holder"),
                {"pid": holder, "lease_s": self.lease_s, "slot_streaming": self._slot_streams(reads)},
            ).fetchone()
        except psycopg.errors.InsufficientPrivilege:  # another role's session: its lease must do
            return
        if ended is not None and ended[0]:
            log.warning(
                "standby: ended the session of pid %d, which held the lock of slot %s without a word "
                "for more than %g s",
                holder,
                self.slot,
                self.lease_s,
                extra=logs.fields(slot=self.slot, holder_pid=holder),
            )

    def _slot_streams(self, reads: Pool) -> bool:
        """Whether a walsender streams from the slot now (on the watched server)."""
        try:
            with reads.connection() as conn:
                row = conn.execute(queries.raw("standby", "slot_holder"), {"slot": self.slot}).fetchone()
        except psycopg.Error as exc:
            raise translate(exc, slot=self.slot) from exc
        return row is not None and row[0] is not None

    def take_slot(self, reads: Pool, dsn: str) -> None:
        """End the slot's walsender if it is a watcher's, and wait (a little) until it let go.

        Raises :class:`~cdc.errors.SlotHeldByOther` (the watcher stops) when a process that is no
        watcher of this slot streams from it, or when the slot stays active for
        :data:`RELEASE_WAIT_S` under a process without a session. A watcher's walsender that
        is still on its way out after that is left to the stream's start (``SlotInUse``, retried)."""
        name = stream_application_name(dsn, self.slot)
        ended: set[int] = set()
        deadline = time.monotonic() + RELEASE_WAIT_S
        try:
            with reads.connection() as conn:
                while True:
                    row = conn.execute(queries.raw("standby", "slot_holder"), {"slot": self.slot}).fetchone()
                    if row is None or row[0] is None:
                        return  # no such slot (the preflight says so) or nobody streams
                    pid, application_name, has_session = int(row[0]), row[1], bool(row[2])
                    if has_session and pid not in ended:
                        if application_name != name:
                            raise SlotHeldByOther(
                                f"replication slot {self.slot} is streamed by pid {pid}, which is not "
                                f"a watcher of it (application_name {application_name!r})"
                            )
                        conn.execute(queries.raw("standby", "end_walsender"), {"slot": self.slot, "pid": pid})
                        ended.add(pid)
                    if time.monotonic() >= deadline:
                        if pid in ended:
                            return
                        raise SlotHeldByOther(
                            f"replication slot {self.slot} stays active under pid {pid}, which has no "
                            f"session any more, for more than {RELEASE_WAIT_S:g} s"
                        )
                    time.sleep(0.05)  # the lease is the keeper's (a thread of its own) meanwhile
        except psycopg.Error as exc:
            raise translate(exc, slot=self.slot) from exc

    def lease(self) -> None:
        """From now on the server ends the store session after ``lease_s`` of silence."""
        assert self._store is not None
        try:
            self._store.execute(queries.raw("standby", "lease"), {"ms": str(round(self.lease_s * 1000))})
        except psycopg.Error as exc:
            raise translate(exc, slot=self.slot) from exc
        self._touched = time.monotonic()

    def touch(self) -> None:
        """A trivial statement on the store session, at most every quarter lease: the lease
        holds. A session the server ended raises the lost connection."""
        store = self._store
        if store is None or time.monotonic() - self._touched < self._touch_every:
            return
        try:
            store.execute(queries.raw("standby", "touch"))
        except psycopg.Error as exc:
            raise translate(exc, slot=self.slot) from exc
        self._touched = time.monotonic()

    def streaming(self) -> None:
        """The loop touches the lease from now on (:meth:`touch`): the start-up's keeper stops."""
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None

    def release(self) -> None:
        """The store connection is closing (its session's end releases the lock)."""
        self.streaming()
        self._store = None


class _Keeper:
    """Touches the lease every quarter lease from a thread of its own while the new leader starts
    up: ``take_slot``'s wait, the preflight and a late bootstrap copy keep the store session idle
    for a while, and a session silent for a lease is ended (by the server, or by a standby). The
    statement waits its turn on the connection (psycopg serialises its users), so it never cuts
    into the start-up's own statements; a touch that fails ends the keeper — the start-up meets
    the same failure on its next statement."""

    def __init__(self, leadership: Leadership) -> None:
        self._leadership = leadership
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cdc standby lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._leadership._touch_every):
            try:
                self._leadership.touch()
            except CdcError:
                return

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
