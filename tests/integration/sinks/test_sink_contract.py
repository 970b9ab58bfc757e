"""One contract, every sink: memory (the in-memory twin), jsonl, outbox, redis, nats.

Written batches read back complete, each event once, in write order; a replayed batch adds
nothing; closing and reopening loses nothing and keeps de-duplicating.  JSON lines is
at-least-once by design (DESIGN §4): a replay appends the same events again, so for it the
suite asserts that every duplicate is byte-identical to the first copy and that
de-duplicating by idempotency key gives back exactly what was written.  The in-memory twin
records what it is given, replays included, and is held to the same at-least-once contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from catalog.envelope import Envelope
from cdc.sinks import open_sink
from cdc.sinks.base import Batch, Sink
from cdc.sinks.memory import MemorySink
from cdc.sinks.outbox import OutboxSink
from cdc.sinks.retry import RetryingSink

from .helpers import make_envelopes, nats_spec, read_nats, read_outbox, read_redis, redis_spec
from .services import Service

pytestmark = pytest.mark.integration


@dataclass
class Harness:
    """How to open a sink of one kind and read back what it holds."""

    kind: str
    open: Callable[[], Sink]
    read: Callable[[], list[Any]]  # what the sink holds, as comparable values, in order
    view: Callable[[Envelope], Any]  # an envelope as ``read`` shows it
    at_least_once: bool = False
    opened: list[Sink] = field(default_factory=list)

    def sink(self) -> Sink:
        s = self.open()
        self.opened.append(s)
        return s


def _full(env: Envelope) -> Any:
    return env.to_dict()


def _bus(env: Envelope) -> Any:
    return env.bus_event()


@pytest.fixture(params=["memory", "jsonl", "outbox", "redis", "nats"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    kind = request.param
    if kind == "memory":
        # The twin lives as long as the process: reopening is the same sink.  It records what
        # it is given (cdc/sinks/memory.py), replays included: at-least-once, like JSON lines.
        twin = MemorySink()
        h = Harness(
            kind, lambda: twin, lambda: [e.to_dict() for e in twin.envelopes], _full, at_least_once=True
        )
    elif kind == "jsonl":
        path = tmp_path / "events.jsonl"

        def read_jsonl() -> list[Any]:
            return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []

        h = Harness(kind, lambda: open_sink(f"jsonl:{path}"), read_jsonl, _full, at_least_once=True)
    elif kind == "outbox":
        dsn = request.getfixturevalue("db_dsn")
        h = Harness(kind, lambda: OutboxSink(dsn), lambda: [e.to_dict() for e in read_outbox(dsn)], _full)
    elif kind == "redis":
        svc: Service = request.getfixturevalue("redis_service")
        ns = request.getfixturevalue("redis_ns")
        spec = redis_spec(svc.url, ns)
        h = Harness(kind, lambda: open_sink(spec), lambda: read_redis(svc.url, ns), _bus)
    else:
        svc = request.getfixturevalue("nats_service")
        ns = request.getfixturevalue("nats_ns")
        spec = nats_spec(svc.url, ns)

        def read_js() -> list[Any]:
            return [env.to_dict() for _, env, _ in read_nats(svc.url, ns)]

        h = Harness(kind, lambda: open_sink(spec), read_js, _full)
    yield h
    for s in h.opened:
        s.close()


def batch(envelopes: list[Envelope]) -> Batch:
    return Batch(list(envelopes), end_lsn=0x1000000 + len(envelopes), transactions=max(1, len(envelopes)))


def assert_holds(h: Harness, expected: list[Envelope]) -> None:
    got = h.read()
    want = [h.view(e) for e in expected]
    if not h.at_least_once:
        assert got == want
        return
    # at-least-once: duplicates are allowed, but each is the same bytes as the first copy
    first: dict[str, bytes] = {}
    order: list[Any] = []
    for item in got:
        raw = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
        key = item["idempotencyKey"]
        if key in first:
            assert first[key] == raw, "a replayed event differs from its first copy"
            continue
        first[key] = raw
        order.append(item)
    assert order == want


def test_batches_read_back_once_and_in_order(harness: Harness) -> None:
    events = make_envelopes(40)
    sink = harness.sink()
    sink.write(batch(events[:1]))
    sink.write(batch(events[1:12]))
    sink.write(batch(events[12:]))
    assert_holds(harness, events)


def test_an_empty_batch_writes_nothing(harness: Harness) -> None:
    sink = harness.sink()
    sink.write(Batch([], end_lsn=0x1000, transactions=3))  # transactions without events
    assert harness.read() == []


def test_a_replayed_batch_adds_nothing(harness: Harness) -> None:
    events = make_envelopes(30)
    sink = harness.sink()
    sink.write(batch(events[:10]))
    sink.write(batch(events[10:]))
    sink.write(batch(events[10:]))  # the crash-between-sink-and-checkpoint replay
    sink.write(batch(events[5:15]))  # a replay that straddles two batches
    assert_holds(harness, events)
    if harness.at_least_once:
        assert len(harness.read()) == 30 + 20 + 10


def test_a_replay_with_new_events_adds_only_the_new_ones(harness: Harness) -> None:
    events = make_envelopes(20)
    sink = harness.sink()
    sink.write(batch(events[:12]))
    sink.write(batch(events[8:]))  # 8..11 again, then 12..19 for the first time
    assert_holds(harness, events)


def test_close_and_reopen_keeps_everything_and_still_deduplicates(harness: Harness) -> None:
    events = make_envelopes(25)
    first = harness.sink()
    first.write(batch(events[:10]))
    first.close()
    second = harness.sink()
    second.write(batch(events[:10]))  # the restart replays the unconfirmed batch
    second.write(batch(events[10:]))
    second.close()
    assert_holds(harness, events)


def test_network_sinks_come_wrapped_in_retries(harness: Harness) -> None:
    sink = harness.sink()
    assert isinstance(sink, RetryingSink) == (harness.kind in ("redis", "nats"))
    sink.write(batch(make_envelopes(3)))
    if isinstance(sink, RetryingSink):
        assert sink.health.healthy and sink.health.consecutive_failures == 0
        assert sink.health.last_success is not None
