"""NATS JetStream as a sink (``--sink nats://host:port?…``): one message per event, acked.

Each event is published to ``psa.events.<category>.<EVENT_TYPE>`` (template configurable;
the category is the catalog's, lower-cased, with every character outside ``[a-z0-9_-]``
replaced by ``_`` — "Time Entries" becomes ``time_entries`` — since subjects cannot hold
spaces), with the envelope JSON as body and the header ``Nats-Msg-Id`` = the idempotency
key.  JetStream drops a message whose id it has seen within the stream's duplicate window:
that window is the de-duplication horizon of this sink.  A batch is published as a whole
(asynchronous publishes) and ``write`` returns only when every publish is acknowledged, so
the watcher moves its checkpoint only after the server has stored every event.

The stream is created when absent (``stream``, ``subjects``, ``storage``, ``duplicate_window``,
``replicas``, ``max_age``); an existing stream is used as it is (its configuration is the
operator's) and a duplicate window different from the configured one is logged.

nats-py is asyncio; this sink owns a private event loop in a background thread and runs each
batch on it with ``run_coroutine_threadsafe`` behind the synchronous ``Sink`` interface (an
``asyncio.run`` per batch would have to reconnect every time: see docs/sinks.md).  The client
does not reconnect on its own: after any failure the connection is dropped and the next
attempt (the :class:`~cdc.sinks.retry.RetryingSink` wrapper's) connects afresh, so nothing
is buffered in the client while the server is away.

URL query options (``nats://host:4222?stream=…``): ``stream`` (``PSA_EVENTS``), ``subjects``
(comma-separated, ``psa.events.>``), ``subject`` (``psa.events.{category}.{event_type}``),
``storage`` (``file`` or ``memory``), ``duplicate_window`` (seconds, 86400), ``replicas`` (1),
``max_age`` (seconds, 0 = unlimited), ``timeout`` (seconds to wait for a batch's acks, 10).
User and password in the URL go to the server; several servers: ``nats://a:4222,b:4222``.

The server refuses a message larger than its ``max_payload`` (1 MB by default), headers
included, and closes the connection: :meth:`NatsJetStreamSink.max_event_bytes` (the cap the
watcher checks every envelope against before a write) is the configured ``max_event_bytes``
lowered to the connected server's ``max_payload`` less :data:`HEADER_ALLOWANCE`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import re
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from catalog.registry import REGISTRY

from ..config import DEFAULT_MAX_EVENT_BYTES
from ..errors import CdcError, ConfigError
from .base import Batch, PlainSink, unknown_option
from .retry import SinkUnavailable

log = logging.getLogger("cdc.sinks.nats")

DEFAULT_STREAM = "PSA_EVENTS"
DEFAULT_SUBJECTS = ("psa.events.>",)
DEFAULT_SUBJECT = "psa.events.{category}.{event_type}"
DEFAULT_DUPLICATE_WINDOW = 24 * 3600.0
DEFAULT_TIMEOUT = 10.0
#: Bytes of a message's max_payload kept for its headers (``Nats-Msg-Id``: the idempotency key,
#: ``Nats-Expected-Stream``), which the server counts and the client's own check does not.
HEADER_ALLOWANCE = 1024

_OPTIONS = frozenset(
    {"stream", "subjects", "subject", "storage", "duplicate_window", "replicas", "max_age", "timeout"}
)
_NOT_SUBJECT = re.compile(r"[^a-z0-9_-]")
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]+")

T = TypeVar("T")


def subject_token(category: str) -> str:
    """A catalog category as one subject token: lower case, ``[a-z0-9_-]`` only."""
    return _NOT_SUBJECT.sub("_", category.lower()) or "_"


@dataclass(frozen=True)
class NatsConfig:
    servers: tuple[str, ...]
    stream: str = DEFAULT_STREAM
    subjects: tuple[str, ...] = DEFAULT_SUBJECTS
    subject: str = DEFAULT_SUBJECT
    storage: str = "file"
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW
    replicas: int = 1
    max_age: float = 0.0
    timeout: float = DEFAULT_TIMEOUT

    def subject_for(self, event_type: str) -> str:
        spec = REGISTRY.get(event_type)
        category = subject_token(spec.category if spec is not None else "other")
        return self.subject.format(category=category, event_type=event_type)

    @classmethod
    def from_url(cls, url: str) -> NatsConfig:
        parts = urlsplit(url)
        ours: dict[str, str] = {}
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            if k not in _OPTIONS:
                raise unknown_option("nats", k)
            ours[k] = v
        auth, _, hosts = parts.netloc.rpartition("@")
        servers = tuple(
            urlunsplit((parts.scheme, f"{auth}@{h}" if auth else h, "", "", ""))
            for h in hosts.split(",")
            if h
        )
        if not servers:
            raise ConfigError("--sink nats: give a server, e.g. nats://127.0.0.1:4222")
        try:
            cfg = cls(
                servers=servers,
                stream=ours.get("stream", DEFAULT_STREAM),
                subjects=tuple(s for s in ours.get("subjects", ",".join(DEFAULT_SUBJECTS)).split(",") if s),
                subject=ours.get("subject", DEFAULT_SUBJECT),
                storage=ours.get("storage", "file"),
                duplicate_window=float(ours.get("duplicate_window", DEFAULT_DUPLICATE_WINDOW)),
                replicas=int(ours.get("replicas", 1)),
                max_age=float(ours.get("max_age", 0)),
                timeout=float(ours.get("timeout", DEFAULT_TIMEOUT)),
            )
        except ValueError:
            raise ConfigError(
                "--sink nats: duplicate_window, max_age and timeout are seconds, replicas an integer"
            ) from None
        if not _STREAM_NAME.fullmatch(cfg.stream):
            raise ConfigError("--sink nats: the stream name may hold letters, digits, _ and - only")
        if cfg.storage not in ("file", "memory"):
            raise ConfigError("--sink nats: storage is file or memory")
        if (
            not (0 < cfg.duplicate_window < math.inf)
            or not (0 < cfg.timeout < math.inf)
            or cfg.replicas < 1
            or not (0 <= cfg.max_age < math.inf)
            or not cfg.subjects
        ):
            raise ConfigError("--sink nats: duplicate_window, timeout and replicas must be positive")
        try:
            probe = cfg.subject.format(category="c", event_type="E")
        except (KeyError, IndexError, ValueError):
            raise ConfigError(
                "--sink nats: the subject template may use {category} and {event_type} only"
            ) from None
        if not probe or any(ch in probe for ch in " \t*>") or ".." in probe:
            raise ConfigError("--sink nats: the subject template makes an invalid subject")
        if cfg.max_age and cfg.max_age < cfg.duplicate_window:
            raise ConfigError("--sink nats: max_age must not be shorter than duplicate_window")
        if len(_covered(list(cfg.subjects), REGISTRY, cfg)) < len({cfg.subject_for(t) for t in REGISTRY}):
            raise ConfigError("--sink nats: the subjects option does not cover the subject template")
        return cfg


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def _covered(patterns: list[str], event_types: Iterable[str], cfg: NatsConfig) -> set[str]:
    subjects = {cfg.subject_for(t) for t in event_types}
    return {s for s in subjects if any(subject_matches(p, s) for p in patterns)}


class _Loop:
    """A private asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cdc-nats-sink", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


_RETRYABLE: tuple[type[BaseException], ...] = (
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.TimeoutError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.AuthorizationError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    asyncio.TimeoutError,
    concurrent.futures.TimeoutError,
    OSError,
)


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__


class NatsJetStreamSink(PlainSink):
    """Events to a JetStream stream, de-duplicated by ``Nats-Msg-Id`` within its window."""

    name = "nats"

    def __init__(self, config: NatsConfig, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.config = config
        self._max_event_bytes = max_event_bytes
        self.added = 0  # messages stored
        self.skipped = 0  # messages JetStream reported as duplicates
        self._loop: _Loop | None = None
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._subjects: dict[str, str] = {}

    @classmethod
    def from_url(cls, url: str, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> NatsJetStreamSink:
        return cls(NatsConfig.from_url(url), max_event_bytes=max_event_bytes)

    # -- Sink ------------------------------------------------------------------------------
    def write(self, batch: Batch) -> None:
        if not batch.envelopes:
            return
        messages = [
            (self._subject(e.event_type), body, e.idempotency_key)
            for e, body in zip(batch.envelopes, batch.json(), strict=True)
        ]
        acks = self._run(self._publish(messages), "the batch")
        duplicates = sum(1 for a in acks if a)
        self.skipped += duplicates
        self.added += len(acks) - duplicates

    def max_event_bytes(self) -> int:
        """The configured cap, lowered to what the server takes (this connects, if need be)."""
        server = self._run(self._server_max_payload(), "the connection")
        return min(self._max_event_bytes, server - HEADER_ALLOWANCE)

    def close(self) -> None:
        if self._loop is not None:
            try:
                if self._nc is not None:
                    self._loop.run(self._close_nc(), 5)
            except Exception as exc:  # closing: nothing left to protect
                log.debug("nats sink: close: %s", _message(exc))
            self._loop.stop()
            self._loop = None
        self._nc = self._js = None

    # -- internals ---------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        """Run ``coro`` on the sink's loop, with the client's errors as this project's."""
        loop = self._loop or _Loop()
        self._loop = loop
        try:
            return loop.run(coro, self.config.timeout * 2 + 5)
        except ConfigError:
            self._drop()
            raise
        except _RETRYABLE as exc:
            self._drop()
            raise SinkUnavailable(f"nats sink: {_message(exc)}") from exc
        except nats.errors.Error as exc:
            self._drop()
            raise CdcError(
                f"nats sink: the server refused {what} ({_message(exc)})",
                hint="check the stream configuration and the subjects options of --sink",
            ) from exc

    # -- internals (run on the sink's loop) ---------------------------------------------------
    async def _server_max_payload(self) -> int:
        await self._connect()
        assert self._nc is not None
        return self._nc.max_payload

    def _subject(self, event_type: str) -> str:
        subject = self._subjects.get(event_type)
        if subject is None:
            subject = self._subjects[event_type] = self.config.subject_for(event_type)
        return subject

    async def _connect(self) -> JetStreamContext:
        if self._js is not None and self._nc is not None and self._nc.is_connected:
            return self._js
        await self._close_nc()
        cfg = self.config

        async def on_error(exc: Exception) -> None:
            log.debug("nats sink: %s", _message(exc))

        # One try per server (nats-py's max_reconnect_attempts also bounds the first connect:
        # 0 would mean "for ever"), bounded as a whole by the timeout.
        nc = await asyncio.wait_for(
            nats.connect(
                servers=list(cfg.servers),
                connect_timeout=max(1, int(cfg.timeout)),
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=on_error,
                name="alga-cdc",
            ),
            cfg.timeout,
        )
        js = nc.jetstream(timeout=cfg.timeout)
        self._nc = nc
        await self._ensure_stream(js)
        self._js = js
        return js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        cfg = self.config
        try:
            info = await js.stream_info(cfg.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=cfg.stream,
                    subjects=list(cfg.subjects),
                    storage=StorageType(cfg.storage),
                    duplicate_window=cfg.duplicate_window,
                    num_replicas=cfg.replicas,
                    max_age=cfg.max_age,
                )
            )
            log.info("nats sink: created stream %s for %s", cfg.stream, ", ".join(cfg.subjects))
            return
        subjects = list(info.config.subjects or [])
        missing = sorted({self.config.subject_for(t) for t in REGISTRY} - _covered(subjects, REGISTRY, cfg))
        if missing:
            raise ConfigError(
                f"nats sink: stream {cfg.stream} does not take subject {missing[0]} "
                f"({len(missing)} event subjects in all)",
                hint="add the subjects to the stream, or point stream=/subject= of --sink at one that takes them",
            )
        have = info.config.duplicate_window or 0
        if abs(have - cfg.duplicate_window) > 0.001:
            log.warning(
                "nats sink: stream %s has a duplicate window of %.0fs, not the configured %.0fs "
                "(the existing stream's is the de-duplication horizon)",
                cfg.stream,
                have,
                cfg.duplicate_window,
            )

    async def _publish(self, messages: list[tuple[str, bytes, str]]) -> list[bool]:
        """Publish every message, then wait for every ack; the result says which were duplicates."""
        cfg = self.config
        js = await self._connect()
        assert self._nc is not None
        # The watcher checked every envelope against max_event_bytes(); a reconnect since then
        # may have reached a server that takes less, which would drop the connection mid-batch.
        limit = self._nc.max_payload - HEADER_ALLOWANCE
        largest = max((len(body) for _, body, _ in messages), default=0)
        if largest > limit:
            raise CdcError(
                f"nats sink: an envelope of {largest:,} bytes is over the {limit:,}-byte cap of the "
                "server it reconnected to (its max_payload less the headers)",
                hint="start `cdc watch` again: it checks each event against the cap of the server "
                "it connects to and makes a larger one a dead letter",
            )

        async def all_of() -> list[bool]:
            futures = [
                await js.publish_async(subject, body, stream=cfg.stream, headers={"Nats-Msg-Id": key})
                for subject, body, key in messages
            ]
            acks = await asyncio.gather(*futures)
            return [bool(a.duplicate) for a in acks]

        return await asyncio.wait_for(all_of(), cfg.timeout)

    async def _close_nc(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception as exc:  # already broken: nothing to flush
                log.debug("nats sink: close: %s", _message(exc))

    def _drop(self) -> None:
        if self._loop is not None:
            try:
                self._loop.run(self._close_nc(), 5)
            except Exception as exc:
                log.debug("nats sink: dropping the connection: %s", _message(exc))
                self._nc = self._js = None
