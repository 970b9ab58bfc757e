"""The Redis bus as the application reads it: a consumer group on ``workflow:events:global``.

:func:`parse_stream_event` does what the application's ``parseStreamEvent`` and
``WorkflowEventBaseSchema`` do (SPEC §2.6): empty strings back to undefined, ``payload_json``
parsed, uuids and the timestamp checked, unknown keys dropped; then what runtime v2 requires
before it uses an entry (SPEC §2.7: tenant, event_type and event_id present).  Entries come
from the real watch path (default derivers) and, for every catalog type, from the sink alone.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, cast

import orjson
import pytest
import redis

from catalog.envelope import Envelope
from catalog.registry import REGISTRY
from cdc.sinks import open_sink
from cdc.sinks.base import Batch, PlainSink
from cdc.sinks.memory import MemorySink
from cdc.sinks.redis_streams import RedisStreamsSink
from cdc.watch import Watcher, WatchOptions
from derivers import default_derivers
from tests.integration.conftest import SLOT, setup_with_state

from .helpers import make_envelopes, redis_client, redis_spec
from .services import Service
from .workload import CLOSED, TENANT, close_ticket, seed, status_updates

pytestmark = pytest.mark.integration

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
KNOWN = (
    "event_id",
    "execution_id",
    "workflow_correlation_key",
    "event_name",
    "event_type",
    "tenant",
    "timestamp",
    "from_state",
    "to_state",
    "user_id",
    "payload",
)
GROUP = "workflow-runtime-v2"


def parse_stream_event(fields: dict[str, str]) -> dict[str, Any]:
    """An entry as the runtime sees it, or AssertionError where the application would reject it."""
    raw: dict[str, Any] = {k: (None if v == "" else v) for k, v in fields.items()}
    payload_json = raw.pop("payload_json", None)
    raw["payload"] = orjson.loads(payload_json) if payload_json is not None else None
    event = {k: raw.get(k) for k in KNOWN}  # unknown keys stripped
    assert isinstance(event["event_id"], str) and UUID.fullmatch(event["event_id"])
    assert event["execution_id"] is None or UUID.fullmatch(event["execution_id"])
    assert event["workflow_correlation_key"] is None or len(event["workflow_correlation_key"]) >= 1
    assert isinstance(event["event_name"], str) and event["event_name"]
    assert isinstance(event["event_type"], str) and event["event_type"]
    assert isinstance(event["tenant"], str) and event["tenant"]
    assert isinstance(event["timestamp"], str) and ISO.fullmatch(event["timestamp"])
    datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert event["user_id"] is None or UUID.fullmatch(event["user_id"])
    assert event["payload"] is None or isinstance(event["payload"], dict)
    return event


def consume(url: str, stream: str) -> list[tuple[str, dict[str, Any]]]:
    """Everything in ``stream`` through a consumer group, acked as it is parsed."""
    client = redis_client(url)
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        out: list[tuple[str, dict[str, Any]]] = []
        while True:
            reply = cast(
                list[tuple[str, list[tuple[str, dict[str, str]]]]],
                client.xreadgroup(GROUP, "consumer-1", {stream: ">"}, count=10, block=200),
            )
            if not reply:
                return out
            for _, entries in reply:
                for entry_id, fields in entries:
                    out.append((entry_id, parse_stream_event(fields)))
                    client.xack(stream, GROUP, entry_id)
    finally:
        client.close()


class Tee(PlainSink):
    """Writes each batch to two sinks: the Redis one under test and a memory one to compare."""

    name = "tee"

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def write(self, batch: Batch) -> None:
        for s in self.sinks:
            s.write(batch)

    def max_event_bytes(self) -> int:
        return min(s.max_event_bytes() for s in self.sinks)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def test_runtime_consumer_reads_watched_events(db_dsn: str, redis_service: Service, redis_ns: str) -> None:
    ids = seed(db_dsn, 3)
    setup_with_state(db_dsn, publication=SLOT, tables=_tables())
    status_updates(db_dsn, ids, 4)
    close_ticket(db_dsn, ids[0])
    memory = MemorySink()
    redis_sink = open_sink(redis_spec(redis_service.url, redis_ns))
    Watcher(
        WatchOptions(db_dsn, once=True, heartbeat_interval=0.5, status_interval=1.0),
        Tee(redis_sink, memory),
        default_derivers(),
    ).run()
    delivered = memory.envelopes
    assert delivered, "the workload produced events"
    entries = consume(redis_service.url, f"{redis_ns}:workflow:events:global")
    assert [e["event_id"] for _, e in entries] == [env.id for env in delivered]
    for (_, event), env in zip(entries, delivered, strict=True):
        assert event["event_type"] == env.event_type and event["tenant"] == TENANT
        assert event["timestamp"] == env.timestamp == env.payload["occurredAt"]
        assert event["payload"] == env.payload
        if env.event_type == "TICKET_STATUS_CHANGED":
            assert event["event_name"] == "Ticket Status Changed"
            assert (event["from_state"], event["to_state"]) == (
                env.payload["previousStatusId"],
                env.payload["newStatusId"],
            )
    status_changes = [e for _, e in entries if e["event_type"] == "TICKET_STATUS_CHANGED"]
    assert len(status_changes) == 5 and status_changes[-1]["to_state"] == CLOSED
    closed = [e for _, e in entries if e["event_type"] == "TICKET_CLOSED"]
    assert [e["event_name"] for e in closed] == ["Ticket Closed"]
    last = status_changes[-1]
    assert (closed[0]["from_state"], closed[0]["to_state"]) == (last["from_state"], last["to_state"])


def test_every_catalog_type_parses(redis_service: Service, redis_ns: str) -> None:
    types = tuple(sorted(REGISTRY))
    envelopes = make_envelopes(len(types), types=types)
    sink = RedisStreamsSink.from_url(redis_spec(redis_service.url, redis_ns))
    sink.write(Batch(envelopes, end_lsn=1, transactions=1))
    sink.close()
    entries = consume(redis_service.url, f"{redis_ns}:workflow:events:global")
    assert [e["event_id"] for _, e in entries] == [env.id for env in envelopes]
    by_type = {e["event_type"]: e for _, e in entries}
    assert by_type["TICKET_CLOSED"]["event_name"] == "Ticket Closed"
    message = by_type["TICKET_MESSAGE_ADDED"]
    assert message["execution_id"] == _payload(envelopes, "TICKET_MESSAGE_ADDED")["messageId"]
    note = by_type["TICKET_INTERNAL_NOTE_ADDED"]
    assert note["execution_id"] == _payload(envelopes, "TICKET_INTERNAL_NOTE_ADDED")["noteId"]
    for event_type, event in by_type.items():
        payload = _payload(envelopes, event_type)
        user = payload.get("actorUserId", payload.get("userId"))
        assert event["user_id"] == (user if isinstance(user, str) and UUID.fullmatch(user) else None)
        if event_type not in ("TICKET_STATUS_CHANGED", "TICKET_CLOSED"):
            assert event["event_name"] == event_type


def test_entries_are_trimmed_at_maxlen(redis_service: Service, redis_ns: str) -> None:
    """The application's MAXLEN ~ 1000 trims unread entries: configurable, here exact and small."""
    sink = RedisStreamsSink.from_url(redis_spec(redis_service.url, redis_ns, maxlen=5, approx=0))
    envelopes = make_envelopes(12, types=("TICKET_STATUS_CHANGED",))
    sink.write(Batch(envelopes, end_lsn=1, transactions=1))
    client: redis.Redis = redis_client(redis_service.url)
    try:
        assert client.xlen(f"{redis_ns}:workflow:events:global") == 5
        assert client.xlen(f"{redis_ns}:event-stream:global:TICKET_STATUS_CHANGED") == 5
        ttl = client.ttl(f"{redis_ns}:cdc:seen:{envelopes[0].idempotency_key}")
        assert 0 < ttl <= 3 * 24 * 3600
    finally:
        client.close()
    sink.write(Batch(envelopes, end_lsn=1, transactions=1))  # trimmed, but still remembered
    assert sink.skipped == 12
    sink.close()


def _payload(envelopes: list[Envelope], event_type: str) -> dict[str, Any]:
    return next(e.payload for e in envelopes if e.event_type == event_type)


def _tables() -> tuple[str, ...]:
    from cdc.config import DEFAULT_TABLES

    return DEFAULT_TABLES


def test_a_lost_script_cache_is_reloaded(own_redis: Service) -> None:
    """A Redis restart or SCRIPT FLUSH empties the script cache: EVALSHA fails, the sink reloads."""
    sink = RedisStreamsSink.from_url(redis_spec(own_redis.url, "flush"))
    envelopes = make_envelopes(6)
    sink.write(Batch(envelopes[:3], end_lsn=1, transactions=1))
    client = redis_client(own_redis.url)
    try:
        client.script_flush()
    finally:
        client.close()
    sink.write(Batch(envelopes, end_lsn=2, transactions=1))  # the first three again, then three new
    assert (sink.added, sink.skipped) == (6, 3)
    sink.close()
