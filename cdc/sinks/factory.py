"""``--sink`` text → a sink: :func:`open_sink`, and the options every sink shares.

The options common to all sinks (``max_event_bytes``; ``retry_*`` for the network sinks, which
come wrapped in a :class:`~cdc.sinks.retry.RetryingSink`); an unknown or malformed option is a
one-line :class:`~cdc.errors.ConfigError`. :func:`store_dsn_of` says which database a
``--sink`` puts the watcher's own tables in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..config import DEFAULT_MAX_EVENT_BYTES
from ..errors import ConfigError
from .base import Sink, unknown_option

if TYPE_CHECKING:
    from .retry import RetryPolicy, StopSignal


#: ``--sink`` when none is given: the Postgres outbox in the watched database.
DEFAULT_SINK = "postgres"
_POSTGRES_URI = ("postgresql://", "postgres://")
_MAX_EVENT_BYTES = "max_event_bytes"
_RETRY_OPTIONS = frozenset({"retry_give_up", "retry_initial", "retry_max_delay"})


def _max_event_bytes(kind: str, value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        cap = int(value)
    except ValueError:
        cap = 0
    if cap <= 0:
        raise ConfigError(
            f"--sink {kind}: max_event_bytes must be a positive number of bytes",
            hint=f"e.g. max_event_bytes={DEFAULT_MAX_EVENT_BYTES} (1 MiB, the default)",
        )
    return cap


def _without(url: str, names: Iterable[str]) -> tuple[str, dict[str, str]]:
    """``url`` without the query options ``names``, and their values (the last of a repeated one)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    taken = {k: v for k, v in pairs if k in names}
    if not taken:
        return url, {}
    rest = [(k, v) for k, v in pairs if k not in names]
    return urlunsplit(parts._replace(query=urlencode(rest))), taken


def _local_options(kind: str, query: str, default: int) -> int:
    """The options of a sink that has no URL (``postgres``, ``jsonl:PATH``, ``discard``): only
    ``max_event_bytes``; returns the cap."""
    ours: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k != _MAX_EVENT_BYTES:
            raise unknown_option(kind, k)
        ours[k] = v
    return _max_event_bytes(kind, ours.get(_MAX_EVENT_BYTES), default)


def store_dsn_of(spec: str | None) -> str | None:
    """The database a ``--sink`` keeps the watcher's own tables in, when not the watched one
    (the URI as libpq takes it: without this project's own options)."""
    if spec is None:
        return None
    _refuse_empty(spec)
    if not spec.startswith(_POSTGRES_URI):
        return None
    return _without(spec, {_MAX_EVENT_BYTES})[0]


def _refuse_empty(spec: str) -> None:
    if not spec.strip():
        raise ConfigError(
            "--sink is empty",
            hint=f"leave --sink out for the default ({DEFAULT_SINK}: the outbox in the watched "
            "database), or give postgres, postgresql://…, redis://…, nats://…, jsonl:PATH or -",
        )


def _retry_policy(kind: str, ours: dict[str, str]) -> RetryPolicy:
    """The retry policy from the ``retry_*`` options of a network sink."""
    from .retry import RetryPolicy

    try:
        initial = float(ours.get("retry_initial", RetryPolicy.initial_delay))
        max_delay = float(ours.get("retry_max_delay", RetryPolicy.max_delay))
        give_up = float(ours.get("retry_give_up", RetryPolicy.give_up_after or 0.0))
    except ValueError:
        raise ConfigError(
            f"--sink {kind}: retry_initial, retry_max_delay and retry_give_up are seconds"
        ) from None
    if not (initial > 0 and max_delay >= initial and give_up >= 0):  # also refuses nan
        raise ConfigError(
            f"--sink {kind}: retry delays must be positive and retry_max_delay >= retry_initial"
        )
    return RetryPolicy(initial_delay=initial, max_delay=max_delay, give_up_after=give_up or None)


def open_sink(
    spec: str | None = None,
    *,
    schema: str = "cdc",
    stop: StopSignal | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Sink:
    """A sink from its ``--sink`` text.

    ``postgres`` (the default when ``spec`` is None): the outbox in the watched database;
    ``postgresql://…`` or ``postgres://…``: the outbox in that database (which then also holds
    the watcher's ``schema``); ``redis://host:port/db?…``: the Alga Redis Streams bus;
    ``nats://host:port?…``: NATS JetStream; ``jsonl:PATH`` (``jsonl:-`` or ``-`` for stdout);
    ``discard`` (``null:``; benchmarks) or ``memory:`` (tests).  Every sink takes the option
    ``max_event_bytes`` (``postgres?max_event_bytes=…``, ``jsonl:PATH?max_event_bytes=…``),
    which overrides the ``max_event_bytes`` argument;
    the Redis and NATS sinks come wrapped in a :class:`~cdc.sinks.retry.RetryingSink` (options
    ``retry_initial``, ``retry_max_delay``, ``retry_give_up``; ``stop`` is the watcher's
    StopFlag).  An empty spec, an unknown option or a malformed value is a
    :class:`~cdc.errors.ConfigError`.  See docs/sinks.md.
    """
    from .jsonl import JsonLinesSink
    from .memory import DiscardSink, MemorySink

    if spec is None:
        spec = DEFAULT_SINK
    _refuse_empty(spec)
    if spec.startswith(_POSTGRES_URI):
        from .outbox import OutboxSink

        uri, ours = _without(spec, {_MAX_EVENT_BYTES})
        cap = _max_event_bytes("postgres", ours.get(_MAX_EVENT_BYTES), max_event_bytes)
        return OutboxSink(uri, schema=schema, max_event_bytes=cap)
    if spec.startswith(("redis://", "rediss://", "nats://", "tls://")):
        from .retry import RetryingSink

        kind = "redis" if spec.startswith(("redis://", "rediss://")) else "nats"
        url, ours = _without(spec, _RETRY_OPTIONS | {_MAX_EVENT_BYTES})
        policy = _retry_policy(kind, ours)
        cap = _max_event_bytes(kind, ours.get(_MAX_EVENT_BYTES), max_event_bytes)
        inner: Sink
        if kind == "redis":
            from .redis_streams import RedisStreamsSink

            inner = RedisStreamsSink.from_url(url, max_event_bytes=cap)
        else:
            from .nats_jetstream import NatsJetStreamSink

            inner = NatsJetStreamSink.from_url(url, max_event_bytes=cap)
        return RetryingSink(inner, policy, stop=stop)
    # The sinks without a URL: options after the first "?" (a jsonl path cannot hold one).
    head, _, query = spec.partition("?")
    if head in ("postgres", "postgres:", "postgresql", "postgresql:"):
        from .outbox import OutboxSink

        return OutboxSink(
            None, schema=schema, max_event_bytes=_local_options("postgres", query, max_event_bytes)
        )
    if head in ("-", "jsonl:-"):
        return JsonLinesSink("-", max_event_bytes=_local_options("jsonl", query, max_event_bytes))
    if head.startswith("jsonl:"):
        cap = _local_options("jsonl", query, max_event_bytes)
        return JsonLinesSink(head[len("jsonl:") :], max_event_bytes=cap)
    if head in ("memory", "memory:"):
        return MemorySink(max_event_bytes=_local_options("memory", query, max_event_bytes))
    if head in ("null", "null:", "discard", "discard:"):
        return DiscardSink(max_event_bytes=_local_options("discard", query, max_event_bytes))
    raise ConfigError(
        "unknown --sink: use postgres, postgresql://…, redis://…, nats://…, jsonl:PATH (- for stdout) or discard"
    )
