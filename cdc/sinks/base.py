"""The sink contract and the factory that turns ``--sink`` text into a sink.

It also owns what every sink shares: the ``--sink`` options common to all of them
(``max_event_bytes``; ``retry_*`` for the network sinks), the one-line refusal of an unknown or
malformed option, and the size check that turns an event too big for its sink into a dead
letter instead of a write that can never succeed (:func:`take_oversized`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from catalog.envelope import Envelope, envelopes_json

from ..config import DEFAULT_MAX_EVENT_BYTES
from ..errors import ConfigError

if TYPE_CHECKING:
    from .retry import RetryPolicy, StopSignal


@dataclass
class Batch:
    """Events of one or more whole transactions, in commit order, and the position they end at."""

    envelopes: list[Envelope] = field(default_factory=list)
    end_lsn: int = 0  # end LSN of the last transaction in the batch
    transactions: int = 0
    _json: list[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    def json(self) -> list[bytes]:
        """Each envelope's byte-stable JSON, serialised once per batch: the size check and the
        sink (and every retry of it) share the same bytes."""
        if self._json is None or len(self._json) != len(self.envelopes):
            self._json = envelopes_json(self.envelopes)
        return self._json


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

    def max_event_bytes(self) -> int:
        """The largest envelope (its JSON, :meth:`Batch.json`) this sink takes. The watcher
        makes a larger one a dead letter before ``write``, so ``write`` never sees it."""
        ...

    def close(self) -> None: ...


#: ``--sink`` when none is given: the Postgres outbox in the watched database.
DEFAULT_SINK = "postgres"
_POSTGRES_URI = ("postgresql://", "postgres://")
_MAX_EVENT_BYTES = "max_event_bytes"
_RETRY_OPTIONS = frozenset({"retry_give_up", "retry_initial", "retry_max_delay"})


def unknown_option(kind: str, option: str) -> ConfigError:
    """The refusal of an option a sink does not take (its name only: values may be secret)."""
    return ConfigError(
        f"--sink {kind}: unknown option {option!r}",
        hint=f"see docs/sinks.md for the options of the {kind} sink (every sink takes max_event_bytes)",
    )


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


def take_oversized(batch: Batch, sink: Sink) -> list[tuple[Envelope, str]]:
    """Take out of ``batch`` every envelope whose JSON is larger than ``sink`` takes, with the
    reason, in order; the batch keeps the rest (and their serialised JSON) for ``write``."""
    if not batch.envelopes:
        return []  # no question to the sink (NATS would connect) while there is nothing to send
    cap = sink.max_event_bytes()
    bodies = batch.json()
    if max(map(len, bodies)) <= cap:
        return []
    kept: list[Envelope] = []
    kept_json: list[bytes] = []
    taken: list[tuple[Envelope, str]] = []
    for env, body in zip(batch.envelopes, bodies, strict=True):
        if len(body) > cap:
            taken.append(
                (env, f"envelope is {len(body):,} bytes, over the {cap:,}-byte cap of sink {sink.name}")
            )
        else:
            kept.append(env)
            kept_json.append(body)
    batch.envelopes = kept
    batch._json = kept_json
    return taken
