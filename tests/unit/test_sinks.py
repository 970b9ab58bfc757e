"""Sinks without servers: ``--sink`` parsing, the Alga workflow record, NATS subjects, retries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from catalog.envelope import EventDraft, build_envelope
from catalog.jsonschema_export import example
from cdc.config import DEFAULT_MAX_EVENT_BYTES
from cdc.errors import ConfigError
from cdc.sinks.base import Batch, PlainSink, Sink, take_oversized
from cdc.sinks.factory import open_sink, store_dsn_of
from cdc.sinks.jsonl import JsonLinesSink
from cdc.sinks.memory import DiscardSink, MemorySink
from cdc.sinks.nats_jetstream import NatsConfig, NatsJetStreamSink, subject_matches, subject_token
from cdc.sinks.outbox import OutboxSink
from cdc.sinks.redis_streams import WORKFLOW_FIELDS, RedisStreamsConfig, RedisStreamsSink, workflow_fields
from cdc.sinks.retry import RetryingSink, RetryPolicy, SinkGaveUp, SinkUnavailable

TENANT = "6f1c2b1e-5d0e-4c7a-9a61-2f4b8f0d9c11"


def envelope(event_type: str, **payload: object):  # type: ignore[no-untyped-def]
    body = {**example(event_type), **payload}
    draft = EventDraft(event_type, body["tenantId"], str(uuid.uuid4()), body)
    return build_envelope(draft, slot="s", lsn=0x16B3748, xid=7, commit_time=datetime.now(UTC), table="t")


# -- open_sink -------------------------------------------------------------------------------


def test_the_default_sink_is_the_outbox_in_the_watched_database() -> None:
    for spec in (None, "postgres"):
        sink = open_sink(spec, schema="cdc2")
        assert isinstance(sink, OutboxSink) and sink.store_dsn is None and sink.schema == "cdc2"


def test_a_postgres_uri_is_the_store() -> None:
    uri = "postgresql://u@db.example:5432/events"
    sink = open_sink(uri)
    assert isinstance(sink, OutboxSink) and sink.store_dsn == uri
    assert store_dsn_of(uri) == uri and store_dsn_of("postgres://h/d") == "postgres://h/d"
    assert (
        store_dsn_of("postgres") is None and store_dsn_of("redis://h") is None and store_dsn_of(None) is None
    )


def test_network_sinks_are_wrapped_and_connect_lazily() -> None:
    redis_sink = open_sink("redis://127.0.0.1:1/0?retry_give_up=5&retry_initial=0.5&maxlen=10")
    assert isinstance(redis_sink, RetryingSink) and isinstance(redis_sink.inner, RedisStreamsSink)
    assert redis_sink.policy == RetryPolicy(initial_delay=0.5, give_up_after=5.0)
    assert redis_sink.inner.config.maxlen == 10 and "retry" not in redis_sink.inner.config.url
    nats_sink = open_sink("nats://127.0.0.1:1?retry_give_up=0")
    assert isinstance(nats_sink, RetryingSink) and isinstance(nats_sink.inner, NatsJetStreamSink)
    assert nats_sink.policy.give_up_after is None  # 0 = never give up
    redis_sink.close()
    nats_sink.close()


def test_local_sinks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(open_sink("memory:"), MemorySink)
    assert isinstance(open_sink("null:"), DiscardSink)
    sink = open_sink(f"jsonl:{tmp_path / 'x.jsonl'}")
    assert isinstance(sink, JsonLinesSink)
    sink.close()


@pytest.mark.parametrize(
    "spec",
    [
        "kafka://h:9092",
        "redis://:secret@h:6379/0?retry_initial=abc",
        "redis://h?retry_initial=2&retry_max_delay=1",
        "redis://h?maxlen=-1",
        "nats://h?storage=tape",
        "nats://h?subject=psa.{nope}",
        "nats://h?subject=psa.*.{event_type}",
        "nats://h?bogus=1",
        "nats://h?stream=bad.name",
        "nats://h?duplicate_window=60&max_age=30",
        "nats://h?subjects=other.>",
        "nats://h?timeout=nan",
        "",
        "redis://:secret@h:6379?bogus=1",
        "redis://:secret@h:6379?ssl_cert_reqs=none",  # TLS options need rediss://
        "redis://:secret@h:6379?db=x",
        "redis://:secret@h:6379?approx=maybe",
        "redis://:secret@h:6379?max_event_bytes=1MB",
        "nats://h?max_event_bytes=0",
        "postgres?bogus=1",
        "postgresql://u:secret@h/db?max_event_bytes=-5",
        "jsonl:/tmp/x.jsonl?bogus=1",
        "jsonl:",
        "-?retry_initial=1",
        "discard?max_event_bytes=",
    ],
)
def test_bad_sinks_are_config_errors_without_secrets(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_sink(spec)
    assert "secret" not in str(err.value) and err.value.hint


def test_max_event_bytes_is_an_option_of_every_sink(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert open_sink("postgres").max_event_bytes() == DEFAULT_MAX_EVENT_BYTES == 1024 * 1024
    assert open_sink("postgres?max_event_bytes=10").max_event_bytes() == 10
    assert open_sink("discard?max_event_bytes=11").max_event_bytes() == 11
    jsonl = open_sink(f"jsonl:{tmp_path / 'x.jsonl'}?max_event_bytes=12")
    assert isinstance(jsonl, JsonLinesSink) and jsonl.path == str(tmp_path / "x.jsonl")
    assert jsonl.max_event_bytes() == 12
    jsonl.close()
    redis_sink = open_sink("redis://127.0.0.1:1/0?max_event_bytes=13&maxlen=5")
    assert redis_sink.max_event_bytes() == 13  # no server needed to know it
    redis_sink.close()
    uri = "postgresql://u@db.example/events?sslmode=require&max_event_bytes=14"
    outbox = open_sink(uri)
    assert isinstance(outbox, OutboxSink) and outbox.max_event_bytes() == 14
    # libpq never sees the option
    assert outbox.store_dsn == store_dsn_of(uri) == "postgresql://u@db.example/events?sslmode=require"


def test_events_over_the_cap_are_taken_out_of_the_batch() -> None:
    small = [envelope("TICKET_CREATED") for _ in range(3)]
    big = envelope(
        "TICKET_UPDATED", updatedFields=["title"], changes={"title": {"previous": "a", "new": "x" * 5000}}
    )
    batch = Batch([small[0], big, small[1], small[2]], end_lsn=9, transactions=2)
    sink = MemorySink(max_event_bytes=4000)
    taken = take_oversized(batch, sink)
    assert [e for e, _ in taken] == [big] and batch.envelopes == small
    size = len(big.to_json_bytes())
    assert taken[0][1] == f"envelope is {size:,} bytes, over the 4,000-byte cap of sink memory"
    assert batch.json() == [e.to_json_bytes() for e in small] and (batch.end_lsn, batch.transactions) == (
        9,
        2,
    )
    assert take_oversized(batch, sink) == []


# -- Redis: configuration and the workflow record ----------------------------------------------


def test_redis_defaults_are_the_applications() -> None:
    cfg = RedisStreamsConfig.from_url("redis://localhost:6379/2")
    assert cfg.stream_key("TICKET_CREATED") == "alga-psa:event-stream:global:TICKET_CREATED"
    assert cfg.workflow_stream == "workflow:events:global"
    assert (cfg.maxlen, cfg.approximate, cfg.dedup_ttl) == (1000, True, 3 * 24 * 3600)
    assert cfg.seen_prefix == "alga-psa:cdc:seen:" and cfg.url == "redis://localhost:6379/2"


def test_redis_options_and_passthrough() -> None:
    cfg = RedisStreamsConfig.from_url(
        "rediss://h:1/0?prefix=x:&stream_prefix=s:&maxlen=0&approx=0&dedup_ttl=60&ssl_cert_reqs=none"
    )
    assert cfg.stream_key("A") == "x:s:global:A" and cfg.maxlen == 0 and not cfg.approximate
    assert cfg.dedup_ttl == 60 and cfg.url == "rediss://h:1/0?ssl_cert_reqs=none"


def test_only_the_global_channel_feeds_the_workflow_stream() -> None:
    assert RedisStreamsConfig.from_url("redis://h?channel=other").workflow_stream == ""
    assert RedisStreamsConfig.from_url("redis://h?channel=other&workflow_stream=w").workflow_stream == "w"


def test_workflow_record_of_a_status_change() -> None:
    env = envelope("TICKET_STATUS_CHANGED", actorUserId=str(uuid.uuid4()))
    rec = workflow_fields(env)
    assert list(rec) == list(WORKFLOW_FIELDS)
    assert rec["event_id"] == env.id and rec["event_type"] == "TICKET_STATUS_CHANGED"
    assert rec["event_name"] == "Ticket Status Changed"
    assert (rec["from_state"], rec["to_state"]) == (
        env.payload["previousStatusId"],
        env.payload["newStatusId"],
    )
    assert rec["tenant"] == TENANT and rec["timestamp"] == env.timestamp
    assert rec["user_id"] == env.payload["actorUserId"]
    assert rec["execution_id"] == "" and rec["workflow_correlation_key"] == ""


def test_workflow_record_of_a_close_reads_the_status_change() -> None:
    env = envelope("TICKET_CLOSED", changes={"status_id": {"previous": "a", "new": "b"}})
    rec = workflow_fields(env)
    assert (rec["event_name"], rec["from_state"], rec["to_state"]) == ("Ticket Closed", "a", "b")


def test_workflow_record_of_a_message_carries_the_comment_as_execution_id() -> None:
    env = envelope("TICKET_MESSAGE_ADDED")
    assert workflow_fields(env)["execution_id"] == env.payload["messageId"]
    note = envelope("TICKET_INTERNAL_NOTE_ADDED")
    assert workflow_fields(note)["execution_id"] == note.payload["noteId"]


def test_workflow_record_drops_what_the_runtime_schema_would_reject() -> None:
    env = envelope("TICKET_CREATED")
    object.__setattr__(env, "payload", {**env.payload, "actorUserId": None, "userId": "not-a-uuid"})
    rec = workflow_fields(env)
    assert rec["user_id"] == "" and rec["event_name"] == "TICKET_CREATED" and rec["from_state"] == ""


# -- NATS: configuration and subjects ----------------------------------------------------------


def test_nats_defaults_and_subjects() -> None:
    cfg = NatsConfig.from_url("nats://127.0.0.1:4222")
    assert cfg.servers == ("nats://127.0.0.1:4222",)
    assert (cfg.stream, cfg.subjects, cfg.storage) == ("PSA_EVENTS", ("psa.events.>",), "file")
    assert cfg.duplicate_window == 24 * 3600
    assert cfg.subject_for("TICKET_CREATED") == "psa.events.tickets.TICKET_CREATED"
    assert cfg.subject_for("TIME_ENTRY_CREATED") == "psa.events.time_entries.TIME_ENTRY_CREATED"
    assert cfg.subject_for("PROJECT_BILLING_CONFIG_CREATED").startswith("psa.events.project_billing.")


def test_nats_options_and_several_servers() -> None:
    cfg = NatsConfig.from_url(
        "nats://u:p@a:4222,b:4223?stream=S&subjects=x.>,y.>&subject=x.{event_type}&storage=memory"
        "&duplicate_window=60&replicas=3&timeout=2"
    )
    assert cfg.servers == ("nats://u:p@a:4222", "nats://u:p@b:4223")
    assert cfg.subjects == ("x.>", "y.>") and cfg.subject_for("A_B") == "x.A_B"
    assert (cfg.storage, cfg.duplicate_window, cfg.replicas, cfg.timeout) == ("memory", 60.0, 3, 2.0)


def test_subject_matching() -> None:
    assert subject_matches("psa.events.>", "psa.events.tickets.TICKET_CREATED")
    assert subject_matches("psa.*.tickets.*", "psa.events.tickets.TICKET_CREATED")
    assert subject_matches("a.b", "a.b") and not subject_matches("a.b", "a.b.c")
    assert not subject_matches("psa.events.>", "psa.events") and not subject_matches("x.>", "psa.events.a")


def test_subject_tokens() -> None:
    assert subject_token("Time Entries") == "time_entries"
    assert subject_token("Project Billing") == "project_billing"
    assert subject_token("A/B.c*d>e") == "a_b_c_d_e"


# -- retries -------------------------------------------------------------------------------------


class Flaky(PlainSink):
    name = "flaky"

    def __init__(self, failures: int, exc: Exception | None = None) -> None:
        self.failures = failures
        self.exc = exc or SinkUnavailable("server down")
        self.calls = 0
        self.written: list[Batch] = []

    def write(self, batch: Batch) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        self.written.append(batch)

    def close(self) -> None:
        pass


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def retrying(inner: Flaky, policy: RetryPolicy, t: FakeTime, **kw: object) -> RetryingSink:
    return RetryingSink(inner, policy, sleep=t.sleep, clock=t.clock, rand=lambda: 0.0, **kw)  # type: ignore[arg-type]


def test_a_wrapper_forwards_the_optional_abilities() -> None:
    """A retrying outbox stays exactly once, and the watcher's keepalive reaches the inner sink."""
    outbox = OutboxSink("postgresql://store.invalid/db")
    wrapped: Sink = RetryingSink(outbox)
    assert wrapped.store_writer() is outbox and outbox.store_writer() is outbox
    assert RetryingSink(MemorySink()).store_writer() is None

    def ping() -> None:
        pass

    wrapped.keepalive = ping
    assert wrapped.keepalive is ping and outbox.keepalive is ping


def test_backoff_grows_to_the_cap_with_jitter_below() -> None:
    p = RetryPolicy(initial_delay=1, max_delay=5, multiplier=2, jitter=0.5)
    assert [p.delay(n, 0.0) for n in range(5)] == [1, 2, 4, 5, 5]
    assert p.delay(1, 1.0) == 1.0  # jitter takes at most half


def test_retries_until_written_and_records_health() -> None:
    t = FakeTime()
    inner = Flaky(3)
    sink = retrying(inner, RetryPolicy(initial_delay=1, max_delay=10, give_up_after=None), t)
    seen: list[tuple[bool, int]] = []
    sink.keepalive = lambda: seen.append((sink.health.healthy, sink.health.consecutive_failures))
    batch = Batch([], end_lsn=1, transactions=1)
    sink.write(batch)
    assert inner.calls == 4 and inner.written == [batch]
    assert round(t.now) == 1 + 2 + 4
    assert seen and all(not healthy for healthy, _ in seen) and max(n for _, n in seen) == 3
    h = sink.health
    assert h.healthy and h.consecutive_failures == 0 and h.failing_since is None and h.retries_total == 3
    assert h.last_error is not None and "server down" in h.last_error and h.last_success is not None


def test_gives_up_after_the_limit_with_a_hint() -> None:
    t = FakeTime()
    sink = retrying(Flaky(10**6), RetryPolicy(initial_delay=1, max_delay=4, give_up_after=30), t)
    with pytest.raises(SinkGaveUp) as err:
        sink.write(Batch())
    assert t.now == pytest.approx(30) and err.value.retryable and err.value.hint
    assert "sink flaky failed for 30s" in err.value.one_line()
    assert not sink.health.healthy and sink.health.consecutive_failures > 5


def test_a_non_retryable_error_is_raised_at_once() -> None:
    t = FakeTime()
    inner = Flaky(1, ConfigError("bad option"))
    sink = retrying(inner, RetryPolicy(), t)
    with pytest.raises(ConfigError):
        sink.write(Batch())
    assert inner.calls == 1 and t.slept == [] and not sink.health.healthy


def test_stopping_ends_the_retries() -> None:
    class Stop:
        stopped = False

    t = FakeTime()
    stop = Stop()
    inner = Flaky(10**6)
    sink = retrying(inner, RetryPolicy(initial_delay=1, give_up_after=None), t, stop=stop)

    def sleep(seconds: float) -> None:
        t.sleep(seconds)
        stop.stopped = inner.calls >= 3

    sink._sleep = sleep
    with pytest.raises(SinkGaveUp, match="stopped while sink flaky was unavailable"):
        sink.write(Batch())
    assert inner.calls == 3
