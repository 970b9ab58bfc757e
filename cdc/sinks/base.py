"""The sink contract and the factory that turns ``--sink`` text into a sink."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from catalog.envelope import Envelope

from ..errors import ConfigError

if TYPE_CHECKING:
    from .retry import RetryPolicy, StopSignal


@dataclass
class Batch:
    """Events of one or more whole transactions, in commit order, and the position they end at."""

    envelopes: list[Envelope] = field(default_factory=list)
    end_lsn: int = 0  # end LSN of the last transaction in the batch
    transactions: int = 0


class Sink(Protocol):
    """Where events go.

    A sink that lives in Postgres may also offer ``store_dsn`` (the database that holds the
    watcher's own tables, so they commit with the events), ``prepare(conn)`` (create its
    tables) and ``write_in(conn, batch)`` (write inside the caller's transaction, which
    also moves the checkpoint); the watcher then uses ``write_in`` instead of ``write``.
    """

    name: str

    def write(self, batch: Batch) -> None:
        """Make every envelope of ``batch`` durable before returning; raise on failure."""
        ...

    def close(self) -> None: ...


#: ``--sink`` when none is given: the Postgres outbox in the watched database.
DEFAULT_SINK = "postgres"
_POSTGRES_URI = ("postgresql://", "postgres://")
_RETRY_OPTIONS = {"retry_give_up", "retry_initial", "retry_max_delay"}


def store_dsn_of(spec: str | None) -> str | None:
    """The database a ``--sink`` keeps the watcher's own tables in, when not the watched one."""
    return spec if spec and spec.startswith(_POSTGRES_URI) else None


def _retry_policy(spec: str) -> tuple[str, RetryPolicy]:
    """Take the ``retry_*`` query options off a sink URL."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    from .retry import RetryPolicy

    parts = urlsplit(spec)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in pairs if k in _RETRY_OPTIONS}
    rest = [(k, v) for k, v in pairs if k not in _RETRY_OPTIONS]
    try:
        initial = float(ours.get("retry_initial", RetryPolicy.initial_delay))
        max_delay = float(ours.get("retry_max_delay", RetryPolicy.max_delay))
        give_up = float(ours.get("retry_give_up", RetryPolicy.give_up_after or 0.0))
    except ValueError:
        raise ConfigError("--sink: retry_initial, retry_max_delay and retry_give_up are seconds") from None
    if initial <= 0 or max_delay < initial or give_up < 0:
        raise ConfigError("--sink: retry delays must be positive and retry_max_delay >= retry_initial")
    policy = RetryPolicy(initial_delay=initial, max_delay=max_delay, give_up_after=give_up or None)
    return urlunsplit(parts._replace(query=urlencode(rest))), policy


def open_sink(spec: str | None = None, *, schema: str = "cdc", stop: StopSignal | None = None) -> Sink:
    """A sink from its ``--sink`` text.

    ``postgres`` (the default): the outbox in the watched database; ``postgresql://…`` or
    ``postgres://…``: the outbox in that database (which then also holds the watcher's
    ``schema``); ``redis://host:port/db?…``: the Alga Redis Streams bus; ``nats://host:port?…``:
    NATS JetStream; ``jsonl:PATH`` (``jsonl:-`` or ``-`` for stdout); ``memory:`` (tests) or
    ``null:`` (benchmarks).  The Redis and NATS sinks come wrapped in a
    :class:`~cdc.sinks.retry.RetryingSink` (options ``retry_initial``, ``retry_max_delay``,
    ``retry_give_up`` in the URL query; ``stop`` is the watcher's StopFlag).  See docs/sinks.md.
    """
    from .jsonl import JsonLinesSink
    from .memory import DiscardSink, MemorySink

    spec = spec or DEFAULT_SINK
    if spec in ("postgres", "postgres:", "postgresql", "postgresql:"):
        from .outbox import OutboxSink

        return OutboxSink(None, schema=schema)
    if spec.startswith(_POSTGRES_URI):
        from .outbox import OutboxSink

        return OutboxSink(spec, schema=schema)
    if spec.startswith(("redis://", "rediss://", "nats://", "tls://")):
        from .retry import RetryingSink

        url, policy = _retry_policy(spec)
        inner: Sink
        if spec.startswith(("redis://", "rediss://")):
            from .redis_streams import RedisStreamsSink

            inner = RedisStreamsSink.from_url(url)
        else:
            from .nats_jetstream import NatsJetStreamSink

            inner = NatsJetStreamSink.from_url(url)
        return RetryingSink(inner, policy, stop=stop)
    if spec in ("-", "jsonl:-"):
        return JsonLinesSink("-")
    if spec.startswith("jsonl:"):
        return JsonLinesSink(spec[len("jsonl:") :])
    if spec in ("memory", "memory:"):
        return MemorySink()
    if spec in ("null", "null:", "discard", "discard:"):
        return DiscardSink()
    raise ConfigError(
        "unknown --sink: use postgres, postgresql://…, redis://…, nats://… or jsonl:PATH (- for stdout)"
    )
