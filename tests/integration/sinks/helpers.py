"""Envelopes to write and readers that fetch back what each sink holds, for the sink tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import quote

import nats
import nats.js.errors
import orjson
import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict

from catalog.envelope import Envelope, EventDraft, build_envelope
from catalog.jsonschema_export import example
from catalog.registry import REGISTRY
from cdc.sinks.redis_streams import WORKFLOW_FIELDS

#: A spread of event types: several categories (so several NATS subjects and Redis streams),
#: the ones with workflow hooks, and one with a space in its category.
TYPES = (
    "TICKET_STATUS_CHANGED",
    "TICKET_CLOSED",
    "TICKET_MESSAGE_ADDED",
    "TICKET_REOPENED",
    "APPOINTMENT_CREATED",
    "PROJECT_TASK_CREATED",
    "TIME_ENTRY_CREATED",
    "PROJECT_BILLING_CONFIG_CREATED",
)
_EXAMPLES = {t: example(t) for t in REGISTRY}
_BASE_TIME = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def make_envelopes(n: int, *, start: int = 0, types: tuple[str, ...] = TYPES) -> list[Envelope]:
    """``n`` valid envelopes with distinct keys, LSNs increasing from ``start``."""
    out = []
    for i in range(start, start + n):
        event_type = types[i % len(types)]
        payload = dict(_EXAMPLES[event_type])
        subject = str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:cdc-test:subject:{i}"))
        when = _BASE_TIME + timedelta(seconds=i)
        payload["occurredAt"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        draft = EventDraft(event_type, payload["tenantId"], subject, payload)
        out.append(
            build_envelope(
                draft, slot="cdc_events", lsn=0x1000000 + i * 0x100, xid=1000 + i, commit_time=when, table="t"
            )
        )
    return out


# -- Redis ---------------------------------------------------------------------------------


def redis_spec(url: str, ns: str, **extra: Any) -> str:
    opts = {"prefix": f"{ns}:", "workflow_stream": f"{ns}:workflow:events:global", **extra}
    return url + "?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in opts.items())


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.split("?", 1)[0], decode_responses=True)


def xrange(client: redis.Redis, key: str) -> list[dict[str, str]]:
    """The fields of every entry of a stream (the client decodes responses to str)."""
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(key))
    return [fields for _, fields in entries]


def redis_workflow_entries(url: str, ns: str) -> list[dict[str, str]]:
    client = redis_client(url)
    try:
        return xrange(client, f"{ns}:workflow:events:global")
    finally:
        client.close()


def redis_type_streams(url: str, ns: str) -> dict[str, list[dict[str, str]]]:
    """Per-type stream key -> its entries, for every per-type stream of the namespace."""
    client = redis_client(url)
    try:
        keys = sorted(str(k) for k in client.scan_iter(match=f"{ns}:event-stream:*", _type="stream"))
        return {k: xrange(client, k) for k in keys}
    finally:
        client.close()


def read_redis(url: str, ns: str) -> list[dict[str, Any]]:
    """The bus events ``{id, eventType, timestamp, payload}`` the Redis bus holds, in
    workflow-stream order (the per-type streams must hold the same events, each once)."""
    wf = redis_workflow_entries(url, ns)
    per_type = redis_type_streams(url, ns)
    bus: dict[str, dict[str, Any]] = {}
    for key, entries in per_type.items():
        for fields in entries:
            event = orjson.loads(fields["event"])
            assert fields["channel"] == "global"
            assert key == f"{ns}:event-stream:global:{event['eventType']}"
            assert event["id"] not in bus, "an event appears twice in the per-type streams"
            bus[event["id"]] = event
    assert len(bus) == len(wf), "per-type streams and the workflow stream disagree"
    out = []
    for fields in wf:
        assert list(fields) == list(WORKFLOW_FIELDS)
        event = bus[fields["event_id"]]
        assert orjson.loads(fields["payload_json"]) == event["payload"]
        out.append(event)
    return out


def redis_cleanup(url: str, ns: str) -> None:
    client = redis_client(url)
    try:
        keys = list(client.scan_iter(match=f"{ns}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# -- NATS ----------------------------------------------------------------------------------


def nats_stream(ns: str) -> str:
    return f"CDCT_{ns}"


def nats_spec(url: str, ns: str, **extra: Any) -> str:
    opts = {
        "stream": nats_stream(ns),
        "subjects": f"{ns}.psa.events.>",
        "subject": f"{ns}.psa.events.{{category}}.{{event_type}}",
        "storage": "memory",
        **extra,
    }
    return url + "?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in opts.items())


def nats_run(url: str, body: Any) -> Any:
    async def main() -> Any:
        async def quiet(exc: Exception) -> None:
            pass

        nc = await nats.connect(
            url.split("?", 1)[0],
            connect_timeout=2,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            error_cb=quiet,
        )
        try:
            return await body(nc.jetstream(timeout=5))
        finally:
            await nc.close()

    return asyncio.run(main())


def read_nats(url: str, ns: str) -> list[tuple[str, Envelope, str]]:
    """(subject, envelope, Nats-Msg-Id) of every message of the namespace's stream, in order."""

    async def body(js: Any) -> list[tuple[str, Envelope, str]]:
        try:
            info = await js.stream_info(nats_stream(ns))
        except nats.js.errors.NotFoundError:
            return []
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if info.state.messages == 0:
                break
            msg = await js.get_msg(nats_stream(ns), seq)
            headers = msg.headers or {}
            out.append(
                (msg.subject, Envelope.from_dict(orjson.loads(msg.data)), headers.get("Nats-Msg-Id", ""))
            )
        return out

    result: list[tuple[str, Envelope, str]] = nats_run(url, body)
    return result


def nats_subject_counts(url: str, ns: str) -> dict[str, int]:
    async def body(js: Any) -> dict[str, int]:
        info = await js.stream_info(nats_stream(ns), subjects_filter=">")
        return dict(info.state.subjects or {})

    result: dict[str, int] = nats_run(url, body)
    return result


def nats_cleanup(url: str, ns: str) -> None:
    async def body(js: Any) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(nats_stream(ns))

    with contextlib.suppress(Exception):  # the server may be gone (a test stopped it)
        nats_run(url, body)


# -- outbox --------------------------------------------------------------------------------


def as_uri(dsn: str) -> str:
    """A libpq key=value DSN as a ``postgresql://`` URI (what ``--sink`` takes)."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    user = params.pop("user", "")
    password = params.pop("password", "")
    auth = f"{quote(user, safe='')}{':' + quote(password, safe='') if password else ''}@" if user else ""
    dbname = params.pop("dbname", "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    if host.startswith("/"):  # a socket directory goes in the query
        params["host"] = host
        host = ""
    netloc = f"{auth}{host}{':' + port if port and host else ''}"
    if port and not host:
        params["port"] = port
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return f"postgresql://{netloc}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")


def read_outbox(dsn: str, schema: str = "cdc") -> list[Envelope]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT envelope FROM {schema}.outbox ORDER BY seq").fetchall()
    return [Envelope.from_dict(r[0]) for r in rows]
