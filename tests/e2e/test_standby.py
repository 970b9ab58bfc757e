"""Two `cdc watch` on one slot: one streams, the other waits as a standby and takes over.

Through the real CLI against a real Postgres, under the ticket workload of
tests/e2e/test_reconnect.py:

* the second watcher logs `standby: waiting for the lock held by pid N` once (N: the first's
  store session), `cdc lag` counts it as a standby, its /readyz is 503 and its /healthz 200 with
  `cdc_standby_role` standby;
* kill -9 of the active watcher: the standby takes over (`standby: took over the lock …`, then
  its start line) and the outbox holds every event of the workload exactly once;
* SIGSTOP of the active watcher: the server ends its silent lock session after the lease
  (`standby_lease_s`, 2 s here), the standby takes over and ends the frozen one's walsender,
  every event exactly once; the frozen one is killed at the end;
* the active watcher's lock session terminated: it stops delivering, reconnects, and whichever
  gets the lock streams while the other waits — every event exactly once;
* SIGTERM of a waiting standby: exit 0, and the active one streams on;
* a slot that pg_recvlogical streams from (no watcher's): `cdc watch` exits 1 with one line;
* a lock holder in the middle of a COPY for longer than the lease is left alone while the slot
  streams (a busy leader), and ended once it does not (a frozen one).
* SIGSTOP of the active watcher in the middle of its outbox COPY (the server waits for rows it
  will not send: `active`, not idle, so no lease ends it): the standby leaves it alone past the
  lease while its walsender holds the slot, ends it once wal_sender_timeout ended that walsender
  and takes over, every event exactly once.

In each, no watcher logs the outbox's `… were already there` (a batch delivered twice).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from cdc import queries
from cdc.localpg import find_bindir, free_port
from tests.e2e.test_cli_errors import assert_one_line_error
from tests.e2e.test_connection_errors import cdc, one_error_line
from tests.e2e.test_metrics import by_label, get, scrape
from tests.e2e.test_reconnect import Workload, assert_exactly_once, assert_no_replay, rows
from tests.e2e.test_watch_lifecycle import Watch, seeded  # noqa: F401 - the fixture
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ENV = {"CDC_RECONNECT_INITIAL_S": "0.2", "CDC_RECONNECT_MAX_S": "1", "CDC_STANDBY_LEASE_S": "2"}
ARGS = ("--log-format", "json", "--heartbeat-interval", "1", "--batch-delay", "0.05")


def store_pid(dsn: str, exclude: set[int] = frozenset()) -> int:  # type: ignore[assignment]
    """The pid of the store session of the watcher that streams."""
    found = [
        pid
        for (pid,) in rows(
            dsn,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'cdc watch cdc_events: store'",
        )
        if pid not in exclude
    ]
    assert len(found) == 1, found
    return int(found[0])


def standby_line(watch: Watch) -> dict[str, Any]:
    return watch.wait_record(lambda r: r["msg"].startswith("standby: waiting for the lock held by pid "))


def took_over(watch: Watch) -> None:
    watch.wait_record(lambda r: r["msg"].startswith("standby: took over the lock after "))
    watch.wait_record(lambda r: r["msg"].startswith("watch started"))


def lag(dsn: str) -> dict[str, Any]:
    res = cdc("lag", "--dsn", dsn, "--json")
    assert res.returncode == 0, res.stderr
    return dict(orjson.loads(res.stdout))


def slot_streamer(dsn: str) -> int | None:
    found = rows(dsn, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'cdc_events'")
    return found[0][0] if found else None


@pytest.fixture
def pair(seeded: str) -> Iterator[tuple[Watch, Watch, int]]:  # noqa: F811
    """The active watcher (streaming) and a standby with metrics on the port given."""
    port = free_port()
    active = Watch("--dsn", seeded, *ARGS, env=ENV)
    standby: Watch | None = None
    try:
        active.wait_record(lambda r: r["msg"].startswith("watch started"))
        standby = Watch("--dsn", seeded, *ARGS, "--metrics-addr", f"127.0.0.1:{port}", env=ENV)
        yield active, standby, port
    finally:
        active.kill()
        if standby is not None:
            standby.kill()


def test_kill_9_of_the_active_watcher_the_standby_takes_over(
    seeded: str,  # noqa: F811 - the fixture
    pair: tuple[Watch, Watch, int],
) -> None:
    active, standby, port = pair
    waiting = standby_line(standby)
    assert waiting["holder_pid"] == store_pid(seeded) and waiting["role"] == "standby"
    # the lock as sql/standby.sql documents it: two int4 keys of a hash of database and slot
    locks = rows(
        seeded,
        "SELECT l.classid::text::bigint, l.objid::text::bigint,"
        "       hashtextextended(current_database() || '/cdc_events', 0) AS k"
        "  FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted"
        f"   AND l.pid = {waiting['holder_pid']}",
    )
    assert len(locks) == 1
    classid, objid, k = locks[0]
    assert (classid, objid) == ((k >> 32) & 0xFFFFFFFF, k & 0xFFFFFFFF)
    assert sum(1 for r in standby.records() if r["msg"].startswith("standby: waiting")) == 1  # once
    # a standby: counted by `cdc lag`, healthy, not ready, its role in the metrics
    assert wait_for(lambda: lag(seeded)["standbyCount"] == 1, timeout=10)
    assert wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=10)
    status, body = get(port, "/readyz")
    assert status == 503 and orjson.loads(body)["role"] == "standby", body
    assert by_label(scrape(port), "cdc_standby_role", "cdc_standby_role") == {"active": 0, "standby": 1}
    with Workload(seeded) as work:
        work.wait_done(30)
        active.proc.kill()
        took_over(standby)
        work.wait_done(30)
    assert_exactly_once(seeded)
    assert_no_replay(active, standby)
    assert by_label(scrape(port), "cdc_standby_role", "cdc_standby_role") == {"active": 1, "standby": 0}
    assert wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=10)
    assert lag(seeded)["standbyCount"] == 0
    standby.proc.send_signal(signal.SIGTERM)
    assert standby.finish() == 0, "\n".join(standby.lines)


def test_sigstop_of_the_active_watcher_the_standby_takes_over(
    seeded: str,  # noqa: F811 - the fixture
    pair: tuple[Watch, Watch, int],
) -> None:
    active, standby, _ = pair
    standby_line(standby)
    frozen_walsender = slot_streamer(seeded)
    try:
        with Workload(seeded) as work:
            work.wait_done(30)
            active.proc.send_signal(signal.SIGSTOP)
            took_over(standby)  # after the lease (2 s): the server ended the frozen one's session
            work.wait_done(30)
        assert_exactly_once(seeded)
        assert_no_replay(active, standby)
        assert slot_streamer(seeded) not in (None, frozen_walsender)  # the frozen one's walsender was ended
    finally:
        active.proc.kill()  # SIGKILL ends a stopped process too
    standby.proc.send_signal(signal.SIGTERM)
    assert standby.finish() == 0, "\n".join(standby.lines)


def test_the_active_watchers_lock_session_cut_it_stops_delivering(
    seeded: str,  # noqa: F811 - the fixture
    pair: tuple[Watch, Watch, int],
) -> None:
    active, standby, _ = pair
    standby_line(standby)
    first = store_pid(seeded)
    with Workload(seeded) as work:
        work.wait_done(30)
        rows(seeded, f"SELECT pg_terminate_backend({first})")
        # the cut watcher reconnects; one of the two holds the lock and streams, the other waits
        assert wait_for(
            lambda: any(r["msg"].startswith("reconnecting in ") for r in active.records()), timeout=20
        ), "\n".join(active.lines)
        assert wait_for(lambda: len(rows(seeded, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'cdc watch cdc_events: standby'")) == 1, timeout=20)  # fmt: skip
        work.wait_done(30)
    assert_exactly_once(seeded)
    assert_no_replay(active, standby)
    assert active.proc.poll() is None and standby.proc.poll() is None
    for watch in (active, standby):
        watch.proc.send_signal(signal.SIGTERM)
        assert watch.finish() == 0, "\n".join(watch.lines)


def test_sigterm_of_a_waiting_standby_exits_0(pair: tuple[Watch, Watch, int]) -> None:
    active, standby, _ = pair
    standby_line(standby)
    standby.proc.send_signal(signal.SIGTERM)
    assert standby.finish() == 0, "\n".join(standby.lines)
    summary = standby.records()[-1]
    assert summary["reason"] == "stopped by SIGTERM while waiting as a standby", summary
    assert summary["events"] == 0
    assert active.proc.poll() is None  # the active one streams on
    assert_no_replay(active, standby)


# -- the slot's other consumers, a busy leader ----------------------------------------------------
@pytest.fixture
def recvlogical(seeded: str) -> Iterator[subprocess.Popen[bytes]]:  # noqa: F811
    """pg_recvlogical streaming from the watchers' slot (a consumer that is no watcher)."""
    binary = shutil.which("pg_recvlogical") or str(find_bindir() / "pg_recvlogical")
    argv = [binary, "-d", seeded, "--slot", "cdc_events", "--start", "-o", "proto_version=1"]
    argv += ["-o", "publication_names=cdc_events", "-f", os.devnull, "-s", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: slot_streamer(seeded) is not None, timeout=20), proc.poll()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_slot_streamed_by_another_tool_stops_the_watcher(
    seeded: str,  # noqa: F811 - the fixture
    recvlogical: subprocess.Popen[bytes],
) -> None:
    """Not a watcher's walsender: nothing to end, nothing to wait for — one line, exit 1."""
    res = cdc("watch", "--dsn", seeded, "--log-level", "warning", timeout=60, **ENV)
    line = one_error_line(res.stderr)
    assert res.returncode == 1, res.stderr
    assert "replication slot cdc_events is streamed by pid " in line and "not a watcher of it" in line
    assert "stop it or pass a different --slot" in line and "reconnecting" not in res.stderr
    assert recvlogical.poll() is None  # left alone


def test_a_leader_waiting_in_a_long_copy_keeps_the_lock_while_its_slot_streams(
    seeded: str,  # noqa: F811 - the fixture
    recvlogical: subprocess.Popen[bytes],
) -> None:
    """A lock holder in the middle of a COPY for longer than the lease looks frozen to the
    server's timeouts, but a busy leader keeps its walsender (here pg_recvlogical's stands in for
    it): the standby leaves it alone; once the slot streams no more, the holder counts as frozen
    and the standby ends it and takes over."""
    with psycopg.connect(seeded, autocommit=True) as holder:
        held = holder.execute(queries.raw("standby", "try_lock"), {"slot": "cdc_events"}).fetchone()
        assert held == (True,)
        holder_pid = holder.info.backend_pid
        holder.execute("CREATE TEMP TABLE copied (x int)")
        with contextlib.suppress(psycopg.Error), holder.cursor() as cur, cur.copy("COPY copied FROM STDIN"):
            standby = Watch("--dsn", seeded, *ARGS, env=ENV)
            try:
                assert standby_line(standby)["holder_pid"] == holder_pid
                # waiting on its client for three leases (2 s), polled by the standby each second
                assert wait_for(lambda: copying_for(seeded, holder_pid) > 6, timeout=30)
                assert not any(r["msg"].startswith("standby: ended") for r in standby.records())
                recvlogical.terminate()  # the slot streams no more: a frozen leader
                ended = standby.wait_record(lambda r: r["msg"].startswith("standby: ended the session"))
                assert ended["holder_pid"] == holder_pid
                took_over(standby)
                standby.proc.send_signal(signal.SIGTERM)
                assert standby.finish() == 0, "\n".join(standby.lines)
            finally:
                standby.kill()
    assert_no_replay(standby)


def copying_for(dsn: str, pid: int) -> float:
    """Seconds the session ``pid`` has been active, waiting on its client (0: it is not)."""
    found = rows(
        dsn,
        "SELECT extract(epoch FROM clock_timestamp() - state_change) FROM pg_stat_activity"
        f" WHERE pid = {pid} AND state = 'active' AND wait_event = 'ClientRead'",
    )
    return float(found[0][0]) if found else 0.0


# -- a real watcher frozen in the middle of a statement -------------------------------------------
#: The frozen watcher's walsender outlives the lease (2 s) by far: it is ended at least half its
#: wal_sender_timeout after the freeze (the watcher answers the walsender's half-time pings).
FROZEN_WAL_SENDER_TIMEOUT = "16s"  # ended 8-16 s after the freeze: 4 s and more of slack below
#: The outbox's COPY as the store session sends it (sql/outbox.sql, copy_outbox).
OUTBOX_COPY = 'COPY "cdc".outbox ('


def test_a_watcher_frozen_in_the_middle_of_a_copy_is_taken_over_once_its_walsender_is_gone(
    seeded: str,  # noqa: F811 - the fixture
) -> None:
    """SIGSTOP of the active watcher while the server waits for its outbox COPY's rows: the store
    session stays `active` (not idle: no lease timeout ends it), so the standby leaves it alone
    past the lease while the frozen watcher's walsender still holds the slot, ends it once the
    server ended that walsender (wal_sender_timeout) and takes over — every event exactly once."""
    # wal_sender_timeout is a setting of the replication connection: this test's own, via the DSN
    dsn = make_conninfo(seeded, options=f"-c wal_sender_timeout={FROZEN_WAL_SENDER_TIMEOUT}")
    active = Watch("--dsn", dsn, *ARGS, env=ENV)
    try:
        active.wait_record(lambda r: r["msg"].startswith("watch started"))
        standby = Watch("--dsn", dsn, *ARGS, env=ENV)
    except BaseException:
        active.kill()
        raise
    try:
        frozen_store = standby_line(standby)["holder_pid"]
        assert frozen_store == store_pid(seeded)
        frozen_walsender = slot_streamer(seeded)
        assert frozen_walsender is not None
        with Workload(seeded) as work:
            work.wait_done(30)
            freeze_in_outbox_copy(seeded, active, frozen_store)
            # mid-statement: the server waits for the COPY's rows from the frozen client
            assert wait_for(lambda: copying_for(seeded, frozen_store) > 0, timeout=10), activity(
                seeded, frozen_store
            )
            assert OUTBOX_COPY in str(activity(seeded, frozen_store)[1])
            # While the frozen watcher's walsender holds the slot, its store session is left alone.
            # Each look reads the session first: gone (or no longer in the COPY) then, with the
            # walsender still there after, means it was ended while the slot streamed.
            silent_while_streaming = 0.0

            def walsender_gone() -> bool:
                nonlocal silent_while_streaming
                silent = copying_for(seeded, frozen_store)
                if slot_streamer(seeded) != frozen_walsender:
                    return True
                assert silent > 0, ("ended while its walsender streamed", "\n".join(standby.lines))
                silent_while_streaming = max(silent_while_streaming, silent)
                return False

            assert wait_for(walsender_gone, timeout=120, interval=0.1)
            assert silent_while_streaming > 2 * 2  # past the lease (2 s) and a standby's poll (1 s)
            ended = standby.wait_record(
                lambda r: r["msg"].startswith("standby: ended the session"), timeout=30
            )
            assert ended["holder_pid"] == frozen_store
            took_over(standby)
            work.wait_done(30)
        assert_exactly_once(seeded)
        assert_no_replay(active, standby)
        assert slot_streamer(seeded) not in (None, frozen_walsender)
        active.proc.kill()  # SIGKILL ends a stopped process too
        standby.proc.send_signal(signal.SIGTERM)
        assert standby.finish() == 0, "\n".join(standby.lines)
    finally:
        active.kill()
        standby.kill()


def freeze_in_outbox_copy(dsn: str, watch: Watch, store: int) -> None:
    """SIGSTOP ``watch`` while its store session ``store`` waits to start the outbox's COPY.

    A SHARE lock on the outbox (SELECTs pass it, a COPY does not) holds the COPY before the server
    asks for its rows, so the client has sent none when it stops; the lock goes once it is stopped,
    and the server waits for the rows of a client that will not send them."""
    copy_waits = (
        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        f" AND strpos(query, '{OUTBOX_COPY}') > 0 AND pid = {store}"
    )
    with psycopg.connect(dsn) as blocker:
        blocker.execute("LOCK TABLE cdc.outbox IN SHARE MODE")
        assert wait_for(lambda: rows(dsn, copy_waits) != [], timeout=30), activity(dsn, store)
        watch.proc.send_signal(signal.SIGSTOP)
        assert wait_for(lambda: process_state(watch.proc.pid) == "T", timeout=10)
        blocker.commit()


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def activity(dsn: str, pid: int) -> tuple[Any, ...]:
    """The session's state, query, wait event type and wait event."""
    found = rows(
        dsn, f"SELECT state, query, wait_event_type, wait_event FROM pg_stat_activity WHERE pid = {pid}"
    )
    return found[0] if found else ()


def test_a_standby_with_a_wrong_publication_stops_at_once_instead_of_waiting(
    seeded: str,  # noqa: F811 - the fixture
) -> None:
    """The preflight runs before the wait for the lock too: a standby started with a
    configuration it could never stream with says so now, not at a take-over hours later."""
    active = Watch("--dsn", seeded, *ARGS, env=ENV)
    try:
        active.wait_record(lambda r: r["msg"].startswith("watch started"))
        res = cdc("watch", "--dsn", seeded, "--publication", "cdc_nope")
        assert_one_line_error(res, "publication cdc_nope does not exist", "run `cdc setup`")
        assert res.returncode == 1 and "standby" not in res.stderr
        assert active.proc.poll() is None  # the active one streams on
    finally:
        active.kill()
