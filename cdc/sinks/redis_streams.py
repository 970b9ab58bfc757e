"""The Alga Redis Streams bus as a sink (``--sink redis://host:port/db?…``), SPEC §2.5–§2.7.

For each event, in batch order, exactly what the application's ``EventBus.publish`` writes
on the default channel ``global``:

1. ``XADD workflow:events:global MAXLEN ~ 1000 *`` with the flat string fields of
   ``convertToWorkflowEvent`` (SPEC §2.6): ``event_id`` (the envelope id), ``execution_id``,
   ``workflow_correlation_key``, ``event_name``, ``event_type``, ``tenant``, ``timestamp``,
   ``user_id``, ``from_state``, ``to_state``, ``payload_json`` — a missing value is ``""``;
2. ``XADD <prefix><stream_prefix><channel>:<EVENT_TYPE> MAXLEN ~ 1000 *`` with ``event`` (the
   bus JSON ``{id, eventType, timestamp, payload}``) and ``channel``.

How the workflow fields are filled where the application passes *hooks* (SPEC §2.6, §5.1,
§5.3): ``event_name`` is "Ticket Status Changed" for TICKET_STATUS_CHANGED and "Ticket Closed"
for TICKET_CLOSED, else ``payload.eventName``, else the event type; ``from_state``/``to_state``
are the previous/new status ids of TICKET_STATUS_CHANGED, TICKET_REOPENED and TICKET_CLOSED;
``execution_id`` (the application's ``ctx.correlationId``) is the comment id of
TICKET_MESSAGE_ADDED, TICKET_CUSTOMER_REPLIED and TICKET_INTERNAL_NOTE_ADDED; ``user_id`` is
``payload.actorUserId``, else ``payload.userId``; ``tenant`` is ``payload.tenantId``;
``workflow_correlation_key`` is empty (product emitters never set it).  ``execution_id`` and
``user_id`` must be uuids for the runtime's schema, so anything else is written as ``""``.

Replays add nothing: one Lua script (loaded once, called with ``EVALSHA``) checks a
de-duplication key ``<dedup_prefix><idempotency key>``, does both ``XADD``s and then sets the
key with a TTL — the de-duplication horizon — all atomically; a batch is one pipeline of
script calls (sent as one buffer, then every reply read).  A replay after the TTL expired
is written again (with the same ``event_id``, which the workflow runtime de-duplicates on
its own).  Durability is Redis's: with
``appendonly no`` (the development default) a Redis restart loses the streams *and* the
de-duplication keys, and ``MAXLEN ~ 1000`` (the application's default) trims entries that no
consumer has read yet.  docs/sinks.md has the details and every URL option.

URL query options (``redis://host:6379/0?prefix=…&maxlen=…``): ``prefix`` (``alga-psa:``),
``stream_prefix`` (``event-stream:``), ``channel`` (``global``), ``workflow_stream``
(``workflow:events:global`` on channel ``global``; empty disables it), ``maxlen`` (1000;
0 = no trimming), ``approx`` (1: ``MAXLEN ~``; 0: exact), ``dedup_ttl`` (seconds, 259200 =
3 days), ``dedup_prefix`` (``<prefix>cdc:seen:``), ``timeout`` (seconds, 5).  The redis-py
options of :data:`CLIENT_OPTIONS` (and, for ``rediss://``, :data:`TLS_OPTIONS`) go to redis-py;
any other option is refused when the sink is opened (redis-py would fail on it only at the
first write).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from catalog.envelope import Envelope

from ..config import DEFAULT_MAX_EVENT_BYTES
from ..errors import CdcError, ConfigError
from .base import Batch, PlainSink, unknown_option
from .retry import SinkUnavailable

DEFAULT_PREFIX = "alga-psa:"  # REDIS_PREFIX
DEFAULT_STREAM_PREFIX = "event-stream:"  # REDIS_EVENT_STREAM_PREFIX
DEFAULT_CHANNEL = "global"
DEFAULT_WORKFLOW_STREAM = "workflow:events:global"  # not prefixed, SPEC §2.5
DEFAULT_MAXLEN = 1000  # REDIS_STREAM_MAX_LENGTH
DEFAULT_DEDUP_TTL = 3 * 24 * 3600  # as long as the application's processed_events sets live
DEFAULT_TIMEOUT = 5.0

#: Workflow stream field order, as ``convertToWorkflowEvent`` builds the record.
WORKFLOW_FIELDS = (
    "event_id",
    "execution_id",
    "workflow_correlation_key",
    "event_name",
    "event_type",
    "tenant",
    "timestamp",
    "user_id",
    "from_state",
    "to_state",
    "payload_json",
)

#: hooks.eventName of the application's transition events (SPEC §5.1).
EVENT_NAMES = {
    "TICKET_STATUS_CHANGED": "Ticket Status Changed",
    "TICKET_CLOSED": "Ticket Closed",
}
#: hooks.executionId = ctx.correlationId: the comment id for ticket message events (SPEC §5.3).
EXECUTION_ID_FIELD = {
    "TICKET_MESSAGE_ADDED": "messageId",
    "TICKET_CUSTOMER_REPLIED": "messageId",
    "TICKET_INTERNAL_NOTE_ADDED": "noteId",
}
_STATE_EVENTS = frozenset({"TICKET_STATUS_CHANGED", "TICKET_REOPENED"})

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# KEYS: 1 dedup key, 2 per-type stream, [3 workflow stream]
# ARGV: 1 ttl, 2 maxlen (0 = none), 3 '~' or '=', 4 event JSON, 5 channel,
#       6.. the workflow values in WORKFLOW_FIELDS order (the names are in the script)
PUBLISH_LUA = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local maxlen = tonumber(ARGV[2])
if #KEYS >= 3 then
  local names = {"""
    + ", ".join(f"'{name}'" for name in WORKFLOW_FIELDS)
    + """}
  local wf = {}
  for i, name in ipairs(names) do
    wf[2 * i - 1] = name
    wf[2 * i] = ARGV[5 + i]
  end
  if maxlen > 0 then
    redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], maxlen, '*', unpack(wf))
  else
    redis.call('XADD', KEYS[3], '*', unpack(wf))
  end
end
local id
if maxlen > 0 then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], maxlen, '*', 'event', ARGV[4], 'channel', ARGV[5])
else
  id = redis.call('XADD', KEYS[2], '*', 'event', ARGV[4], 'channel', ARGV[5])
end
redis.call('SET', KEYS[1], id, 'EX', tonumber(ARGV[1]))
return 1
"""
)


def _command(args: list[bytes]) -> bytes:
    """One command in RESP, the Redis wire format (redis-py's own packer costs ~5x more)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


_OPTIONS = frozenset(
    {
        "prefix",
        "stream_prefix",
        "channel",
        "workflow_stream",
        "maxlen",
        "approx",
        "dedup_ttl",
        "dedup_prefix",
        "timeout",
    }
)
#: redis-py's own URL options that this sink passes on (its timeouts and retries are the sink's).
CLIENT_OPTIONS = frozenset({"db", "client_name", "health_check_interval", "protocol", "max_connections"})
#: redis-py's TLS options, for ``rediss://`` only (a plain connection refuses them).
TLS_OPTIONS = frozenset(
    {
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
    }
)


@dataclass(frozen=True)
class RedisStreamsConfig:
    url: str  # the redis-py URL, without this sink's own options
    prefix: str = DEFAULT_PREFIX
    stream_prefix: str = DEFAULT_STREAM_PREFIX
    channel: str = DEFAULT_CHANNEL
    workflow_stream: str = DEFAULT_WORKFLOW_STREAM
    maxlen: int = DEFAULT_MAXLEN
    approximate: bool = True
    dedup_ttl: int = DEFAULT_DEDUP_TTL
    dedup_prefix: str = ""  # "" = "<prefix>cdc:seen:"
    timeout: float = DEFAULT_TIMEOUT

    @property
    def seen_prefix(self) -> str:
        return self.dedup_prefix or f"{self.prefix}cdc:seen:"

    def stream_key(self, event_type: str) -> str:
        return f"{self.prefix}{self.stream_prefix}{self.channel}:{event_type}"

    @classmethod
    def from_url(cls, url: str) -> RedisStreamsConfig:
        parts = urlsplit(url)
        ours: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        passed_on = CLIENT_OPTIONS | (TLS_OPTIONS if parts.scheme == "rediss" else frozenset())
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            if k in _OPTIONS:
                ours[k] = v
            elif k in passed_on:
                rest.append((k, v))
            else:
                raise unknown_option("redis", k)
        channel = ours.get("channel", DEFAULT_CHANNEL)
        try:
            cfg = cls(
                url=urlunsplit(parts._replace(query=urlencode(rest))),
                prefix=ours.get("prefix", DEFAULT_PREFIX),
                stream_prefix=ours.get("stream_prefix", DEFAULT_STREAM_PREFIX),
                channel=channel,
                # the application writes the workflow stream for the default channel only
                workflow_stream=ours.get(
                    "workflow_stream", DEFAULT_WORKFLOW_STREAM if channel == DEFAULT_CHANNEL else ""
                ),
                maxlen=int(ours.get("maxlen", DEFAULT_MAXLEN)),
                approximate=_flag(ours.get("approx", "1")),
                dedup_ttl=int(ours.get("dedup_ttl", DEFAULT_DEDUP_TTL)),
                dedup_prefix=ours.get("dedup_prefix", ""),
                timeout=float(ours.get("timeout", DEFAULT_TIMEOUT)),
            )
        except ValueError:
            raise ConfigError(
                "--sink redis: maxlen and dedup_ttl are integers, timeout is seconds, approx is 0 or 1"
            ) from None
        if cfg.maxlen < 0 or cfg.dedup_ttl <= 0 or not cfg.timeout > 0 or not channel:
            raise ConfigError(
                "--sink redis: maxlen >= 0, dedup_ttl > 0, timeout > 0 and a channel are needed"
            )
        try:  # redis-py checks its values (db, protocol, ssl_*) when it builds a connection, not here
            pool = redis.ConnectionPool.from_url(cfg.url)
            pool.make_connection()  # builds it, does not connect
            pool.disconnect()
        except (ValueError, TypeError, redis.exceptions.RedisError) as exc:
            first = str(exc).strip().splitlines()
            raise ConfigError(
                f"--sink redis: {first[0].rstrip('.') if first else type(exc).__name__}"
            ) from None
        return cfg


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise ValueError(text)


def _uuid_or_empty(value: Any) -> str:
    return value if isinstance(value, str) and _UUID_RE.fullmatch(value) else ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _status_change(payload: dict[str, Any]) -> tuple[str, str]:
    changes = payload.get("changes")
    if isinstance(changes, dict):
        for name in ("status_id", "statusId"):
            change = changes.get(name)
            if isinstance(change, dict):
                before = change.get("previous", change.get("old"))
                return _text(before), _text(change.get("new"))
    return "", ""


def workflow_fields(env: Envelope, payload_json: bytes | None = None) -> dict[str, str | bytes]:
    """The flat record ``convertToWorkflowEvent`` puts on ``workflow:events:global`` (SPEC §2.6)."""
    p = env.payload
    etype = env.event_type
    name = EVENT_NAMES.get(etype) or _text(p.get("eventName")) or etype
    if etype in _STATE_EVENTS:
        from_state, to_state = _text(p.get("previousStatusId")), _text(p.get("newStatusId"))
    elif etype == "TICKET_CLOSED":
        from_state, to_state = _status_change(p)
    else:
        from_state = to_state = ""
    execution = EXECUTION_ID_FIELD.get(etype)
    user = p.get("actorUserId")
    if user is None:
        user = p.get("userId")
    tenant = p.get("tenantId")
    if tenant is None:
        tenant = p.get("tenant")
    return {
        "event_id": env.id,
        "execution_id": _uuid_or_empty(p.get(execution)) if execution else "",
        "workflow_correlation_key": "",
        "event_name": name,
        "event_type": etype,
        "tenant": _text(tenant),
        "timestamp": env.timestamp,
        "user_id": _uuid_or_empty(user),
        "from_state": from_state,
        "to_state": to_state,
        "payload_json": payload_json
        if payload_json is not None
        else orjson.dumps(p, option=orjson.OPT_SORT_KEYS),
    }


def bus_event_json(env: Envelope) -> bytes:
    """The ``event`` field: the bus event ``{id, eventType, timestamp, payload}`` as JSON."""
    return orjson.dumps(env.bus_event(), option=orjson.OPT_SORT_KEYS)


def _unavailable(exc: BaseException) -> SinkUnavailable:
    first = str(exc).strip().splitlines()
    detail = first[0] if first else type(exc).__name__
    return SinkUnavailable(f"redis sink: {type(exc).__name__}: {detail}")


class RedisStreamsSink(PlainSink):
    """Per-type streams and the workflow stream, de-duplicated by idempotency key."""

    name = "redis"

    def __init__(self, config: RedisStreamsConfig, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.config = config
        self._max_event_bytes = max_event_bytes
        self.added = 0  # events written
        self.skipped = 0  # events found already written (replays within the horizon)
        self._client: redis.Redis | None = None
        self._sha: str | None = None

    @classmethod
    def from_url(cls, url: str, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> RedisStreamsSink:
        return cls(RedisStreamsConfig.from_url(url), max_event_bytes=max_event_bytes)

    # -- Sink ------------------------------------------------------------------------------
    def write(self, batch: Batch) -> None:
        if not batch.envelopes:
            return
        try:
            client = self._connect()
            results = self._run(client, batch.envelopes)
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
                # the server lost its script cache (restart, SCRIPT FLUSH): load it and redo;
                # events already written are skipped by their de-duplication keys
                self._sha = None
                results = self._run(client, batch.envelopes)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            self._reset()
            raise _unavailable(exc) from exc
        except redis.exceptions.ReadOnlyError as exc:  # a replica, e.g. during failover
            self._reset()
            raise _unavailable(exc) from exc
        except redis.exceptions.RedisError as exc:
            raise CdcError(
                f"redis sink: the server refused the batch ({type(exc).__name__})",
                hint="check that the stream and de-duplication keys are not used by something else",
            ) from exc
        for r in results:
            if isinstance(r, redis.exceptions.ReadOnlyError | redis.exceptions.BusyLoadingError):
                raise _unavailable(r)
            if isinstance(r, Exception):
                raise CdcError(
                    f"redis sink: the server refused an event ({type(r).__name__})",
                    hint="check that the stream and de-duplication keys are not used by something else",
                ) from r
            if r == 1:
                self.added += 1
            else:
                self.skipped += 1

    def max_event_bytes(self) -> int:
        return self._max_event_bytes

    def close(self) -> None:
        self._reset()

    # -- internals -------------------------------------------------------------------------
    def _connect(self) -> redis.Redis:
        if self._client is None:
            cfg = self.config
            self._client = redis.Redis.from_url(
                cfg.url,
                socket_timeout=cfg.timeout,
                socket_connect_timeout=cfg.timeout,
                retry=Retry(NoBackoff(), 0),  # the RetryingSink wrapper does the retrying
                health_check_interval=30,
            )
        return self._client

    def _reset(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None
                self._sha = None

    def _run(self, client: redis.Redis, envelopes: list[Envelope]) -> list[Any]:
        """One script call per event, all sent at once, then every reply read (a pipeline)."""
        cfg = self.config
        if self._sha is None:
            self._sha = str(client.script_load(PUBLISH_LUA))
        head = [b"EVALSHA", self._sha.encode()]
        tail = [str(cfg.dedup_ttl).encode(), str(cfg.maxlen).encode(), b"~" if cfg.approximate else b"="]
        channel = cfg.channel.encode()
        seen = cfg.seen_prefix.encode()
        wf_stream = cfg.workflow_stream.encode()
        streams: dict[str, bytes] = {}
        commands = []
        for env in envelopes:
            stream = streams.get(env.event_type)
            if stream is None:
                stream = streams[env.event_type] = cfg.stream_key(env.event_type).encode()
            event = bus_event_json(env)
            if wf_stream:
                values = [v if isinstance(v, bytes) else v.encode() for v in workflow_fields(env).values()]
                args = [*head, b"3", seen + env.idempotency_key.encode(), stream, wf_stream]
                args += [*tail, event, channel, *values]
            else:
                args = [*head, b"2", seen + env.idempotency_key.encode(), stream, *tail, event, channel]
            commands.append(_command(args))
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(commands)])  # type: ignore[no-untyped-call]
            results: list[Any] = []
            for _ in commands:
                try:
                    results.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:  # this event's error; the rest go on
                    results.append(exc)
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]  # unread replies: not reusable
            raise
        finally:
            pool.release(conn)
        return results
