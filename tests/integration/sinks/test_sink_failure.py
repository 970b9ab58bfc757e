"""A sink whose server goes away: the watcher retries, the checkpoint stays, and delivery resumes.

Each test runs its own server (stopped and started by the test) and a watcher in a thread.
The outage is kept shorter than the test cluster's ``wal_sender_timeout`` (6 s): while the
sink retries, the watcher does not read the replication stream.  A sink that stays down past
``retry_give_up`` ends ``cdc watch`` with one error line and exit code 3.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from cdc.errors import ConfigError
from cdc.localpg import free_port
from cdc.sinks import open_sink
from cdc.sinks.base import Batch
from cdc.sinks.retry import RetryingSink
from cdc.tail import StopFlag
from cdc.watch import Watcher, WatchOptions
from derivers import default_derivers
from tests.environ import command_env
from tests.integration.conftest import SLOT, setup_with_state, wait_for

from .helpers import (
    make_envelopes,
    nats_cleanup,
    nats_run,
    nats_spec,
    nats_stream,
    read_nats,
    redis_spec,
    redis_workflow_entries,
)
from .services import Service
from .workload import checkpoint, lsn_int, seed, status_updates

pytestmark = pytest.mark.integration

FAST = {"retry_initial": 0.1, "retry_max_delay": 0.5, "retry_give_up": 0}


class BackgroundWatcher:
    def __init__(self, dsn: str, sink: RetryingSink) -> None:
        self.stop = StopFlag()
        self.error: BaseException | None = None
        self.watcher = Watcher(
            WatchOptions(dsn, heartbeat_interval=0.5, status_interval=1.0, batch_max_delay=0.1),
            sink,
            default_derivers(),
        )

        def target() -> None:
            try:
                self.watcher.run(self.stop)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.stopped = True
        self.thread.join(30)
        if self.error is not None:
            raise self.error


def current_lsn(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return lsn_int(str(row[0]))


def outage(dsn: str, server: Service, sink: RetryingSink, count: Callable[[], int]) -> None:
    ids = seed(dsn, 3)
    setup_with_state(dsn, publication=SLOT)
    bg = BackgroundWatcher(dsn, sink)
    try:
        status_updates(dsn, ids, 3)
        assert wait_for(lambda: count() == 3), "delivered while the server is up"
        before = lsn_int(checkpoint(dsn))

        server.stop()
        status_updates(dsn, ids, 3, start=3)
        written = current_lsn(dsn)
        assert wait_for(lambda: sink.health.consecutive_failures >= 3, timeout=10), "the sink retried"
        health = sink.health
        assert not health.healthy and health.failing_since is not None and health.last_error
        assert lsn_int(checkpoint(dsn)) == before < written, "the checkpoint did not move"

        server.start()
        assert wait_for(lambda: lsn_int(checkpoint(dsn)) >= written, timeout=20), "delivery resumed"
        assert sink.health.healthy and sink.health.consecutive_failures == 0
    finally:
        bg.close()


def test_redis_down_then_back(db_dsn: str, own_redis: Service) -> None:
    ns = "outage"
    sink = open_sink(redis_spec(own_redis.url, ns, **FAST))
    assert isinstance(sink, RetryingSink)

    def status_events() -> int:
        try:
            entries = redis_workflow_entries(own_redis.url, ns)
        except Exception:
            return -1
        return sum(1 for e in entries if e["event_type"] == "TICKET_STATUS_CHANGED")

    outage(db_dsn, own_redis, sink, status_events)
    # Redis without persistence came back empty (docs/sinks.md): only what followed is there
    assert status_events() == 3


def test_nats_down_then_back(db_dsn: str, own_nats: Service) -> None:
    ns = "outage"
    sink = open_sink(nats_spec(own_nats.url, ns, storage="file", timeout=2, **FAST))
    assert isinstance(sink, RetryingSink)

    def status_events() -> int:
        try:
            messages = read_nats(own_nats.url, ns)
        except Exception:
            return -1
        return sum(1 for _, env, _ in messages if env.event_type == "TICKET_STATUS_CHANGED")

    try:
        outage(db_dsn, own_nats, sink, status_events)
        # file storage survived the restart: all six, each once
        messages = read_nats(own_nats.url, ns)
        assert status_events() == 6
        assert len({mid for _, _, mid in messages}) == len(messages)
    finally:
        nats_cleanup(own_nats.url, ns)


def test_a_sink_that_stays_down_ends_watch_with_one_line(db_dsn: str) -> None:
    ids = seed(db_dsn, 2)
    setup_with_state(db_dsn, publication=SLOT)
    status_updates(db_dsn, ids, 2)
    nobody = f"redis://127.0.0.1:{free_port()}/0?retry_initial=0.1&retry_max_delay=0.2&retry_give_up=1"
    env = command_env()
    res = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "watch", "--once", "--dsn", db_dsn, "--sink", nobody],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("cdc: error: sink redis failed for") and " — " in last, last
    assert "retries with backoff" not in last  # it has just stopped retrying
    assert last.count(" — ") == 1  # the cause, then the one hint: start it again
    assert checkpoint(db_dsn) is None, "nothing was checkpointed"


def test_an_existing_stream_that_does_not_take_our_subjects_is_not_retried(
    nats_service: Service, nats_ns: str
) -> None:
    async def other_stream(js: Any) -> None:
        await js.add_stream(name=nats_stream(nats_ns), subjects=[f"{nats_ns}.other.>"], storage="memory")

    nats_run(nats_service.url, other_stream)
    sink = open_sink(nats_spec(nats_service.url, nats_ns, **FAST))
    assert isinstance(sink, RetryingSink)
    with pytest.raises(ConfigError, match="does not take subject") as err:
        sink.write(Batch(make_envelopes(2), end_lsn=1, transactions=1))
    assert err.value.hint and sink.health.consecutive_failures == 1
    sink.close()
