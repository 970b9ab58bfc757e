"""History from the application's audit log (cdc.audit_history) through a real Postgres: app-shaped
``ticket_audit_logs`` rows in the sample schema, read with the server-side cursor, to exact
envelopes; a second run gives the same bytes; the range, tenant and event-type filters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest

from catalog.envelope import event_id
from catalog.registry import REGISTRY
from cdc import queries
from cdc.audit_history import AuditLogMissing, AuditMapping, AuditStats, audit_envelopes
from derivers.audit_history import YIELDS, audit_drafts

from .conftest import run_sql

MAPPING = AuditMapping(YIELDS, audit_drafts)

pytestmark = pytest.mark.integration

T = "11111111-1111-4111-8111-111111111111"
T1 = "99999999-9999-4999-8999-999999999991"
DANA = "33333333-3333-4333-8333-333333333333"
SAM_CONTACT = "56565656-5656-4565-8565-565656565656"
OPEN, WORKING, CLOSED = (f"66666666-6666-4666-8666-66666666666{n}" for n in (1, 2, 3))
REPLY = "cccccccc-cccc-4ccc-8ccc-cccccccccc01"
NOTE = "cccccccc-cccc-4ccc-8ccc-cccccccccc02"
# audit ids: A_NOTE sorts before A_CLOSE, and both rows share one occurred_at.
A_STATUS, A_REPLY, A_CLOSE, A_NOTE, A_DOC = (
    "a0000000-0000-4000-8000-000000000003",
    "a0000000-0000-4000-8000-000000000004",
    "a0000000-0000-4000-8000-000000000009",
    "a0000000-0000-4000-8000-000000000001",
    "a0000000-0000-4000-8000-000000000002",
)

INSERT = """
INSERT INTO ticket_audit_logs (tenant, audit_id, ticket_id, event_type, entity_type, entity_id, actor_type,
                               actor_user_id, actor_contact_id, actor_display_name, source, occurred_at,
                               changes, details)
VALUES (%(tenant)s, %(audit_id)s, %(ticket)s, %(event_type)s, %(entity_type)s, %(entity_id)s, %(actor_type)s,
        %(user)s, %(contact)s, %(name)s, %(source)s, %(at)s, %(changes)s, %(details)s)
"""

# What the application writes (writeTicketActivity): an MSP status change with labels, an inbound
# e-mail customer reply, an internal note, the auto-close job's close, a document attachment.
ROWS: list[dict[str, Any]] = [
    {
        "audit_id": A_STATUS,
        "event_type": "TICKET_STATUS_CHANGED",
        "entity_type": "ticket",
        "entity_id": T1,
        "actor_type": "user",
        "user": DANA,
        "name": "Dana Admin",
        "source": "ui",
        "at": "2026-03-01T10:00:00.123456Z",
        "changes": {
            "status_id": {"old": OPEN, "new": WORKING, "oldLabel": "Open", "newLabel": "In Progress"}
        },
    },
    {
        "audit_id": A_REPLY,
        "event_type": "TICKET_CUSTOMER_REPLIED",
        "entity_type": "comment",
        "entity_id": REPLY,
        "actor_type": "email_sender",
        "contact": SAM_CONTACT,
        "name": "Sam Client",
        "source": "inbound_email",
        "at": "2026-03-01T11:00:00Z",
        "details": {"author_type": "client", "email": {"messageId": "<m1@globex.test>", "provider": "imap"}},
    },
    {
        "audit_id": A_CLOSE,
        "event_type": "TICKET_CLOSED",
        "entity_type": "ticket",
        "entity_id": T1,
        "actor_type": "system",
        "source": "system",
        "at": "2026-03-01T12:00:00Z",
        "changes": {
            "status_id": {"old": WORKING, "new": CLOSED, "oldLabel": "In Progress", "newLabel": "Closed"},
            "closed_at": {"old": None, "new": "2026-03-01T12:00:00.000Z"},
        },
    },
    {
        "audit_id": A_NOTE,
        "event_type": "TICKET_INTERNAL_NOTE_ADDED",
        "entity_type": "comment",
        "entity_id": NOTE,
        "actor_type": "user",
        "user": DANA,
        "source": "ui",
        "at": "2026-03-01T12:00:00Z",
        "details": {"is_internal": True, "is_resolution": False},
    },
    {
        "audit_id": A_DOC,
        "event_type": "TICKET_DOCUMENT_ATTACHED",
        "entity_type": "document",
        "entity_id": "d0000000-0000-4000-8000-000000000001",
        "actor_type": "api",
        "user": DANA,
        "source": "api",
        "at": "2026-03-01T12:30:00Z",
        "details": {"file_name": "screenshot.png"},
    },
]


def insert_rows(dsn: str) -> None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        for r in ROWS:
            params = {"tenant": T, "ticket": T1, "user": None, "contact": None, "name": None} | r
            params["changes"] = orjson.dumps(r.get("changes", {})).decode()
            params["details"] = orjson.dumps(r.get("details", {})).decode()
            conn.execute(INSERT, params)


def envelope(event_type: str, audit_id: str, at: str, payload: dict[str, Any]) -> dict[str, Any]:
    key = f"{event_type}:{T}:{T1}:audit-{audit_id}@0/0"
    return {
        "id": event_id(key),
        "eventType": event_type,
        "timestamp": at,
        "payload": {"tenantId": T, "occurredAt": at, **payload},
        "idempotencyKey": key,
        "payloadSchemaRef": REGISTRY[event_type].payload_schema_ref,
        "source": {
            "slot": "cdc_events",
            "lsn": "0/0",
            "xid": 0,
            "commitTime": at,
            "table": "public.ticket_audit_logs",
        },
    }


DANA_ACTS = {"actorType": "USER", "actorUserId": DANA}
SAM_ACTS = {"actorType": "CONTACT", "actorContactId": SAM_CONTACT}
SYSTEM = {"actorType": "SYSTEM"}
T10, T11, T12 = "2026-03-01T10:00:00.123Z", "2026-03-01T11:00:00.000Z", "2026-03-01T12:00:00.000Z"

EXPECTED = [
    envelope(
        "TICKET_STATUS_CHANGED",
        A_STATUS,
        T10,
        DANA_ACTS | {"ticketId": T1, "previousStatusId": OPEN, "newStatusId": WORKING, "changedAt": T10},
    ),
    envelope(
        "TICKET_UPDATED",
        A_STATUS,
        T10,
        DANA_ACTS
        | {
            "ticketId": T1,
            "updatedByUserId": DANA,
            "updatedFields": ["status_id"],
            "changes": {"status_id": {"previous": OPEN, "new": WORKING}},
        },
    ),
    envelope(
        "TICKET_MESSAGE_ADDED",
        A_REPLY,
        T11,
        SAM_ACTS
        | {
            "ticketId": T1,
            "messageId": REPLY,
            "visibility": "public",
            "authorId": SAM_CONTACT,
            "authorType": "contact",
            "channel": "email",
            "createdAt": T11,
        },
    ),
    envelope(
        "TICKET_CUSTOMER_REPLIED",
        A_REPLY,
        T11,
        SAM_ACTS
        | {
            "ticketId": T1,
            "messageId": REPLY,
            "contactId": SAM_CONTACT,
            "channel": "email",
            "receivedAt": T11,
        },
    ),
    envelope(
        "TICKET_COMMENT_ADDED",
        A_REPLY,
        T11,
        SAM_ACTS
        | {
            "ticketId": T1,
            "commentId": REPLY,
            "visibility": "public",
            "authorId": SAM_CONTACT,
            "authorType": "contact",
            "createdAt": T11,
        },
    ),
    envelope(
        "TICKET_MESSAGE_ADDED",
        A_NOTE,
        T12,
        DANA_ACTS
        | {
            "ticketId": T1,
            "messageId": NOTE,
            "visibility": "internal",
            "authorId": DANA,
            "authorType": "user",
            "channel": "ui",
            "createdAt": T12,
        },
    ),
    envelope(
        "TICKET_INTERNAL_NOTE_ADDED",
        A_NOTE,
        T12,
        DANA_ACTS | {"ticketId": T1, "noteId": NOTE, "createdAt": T12},
    ),
    envelope(
        "TICKET_COMMENT_ADDED",
        A_NOTE,
        T12,
        DANA_ACTS
        | {
            "ticketId": T1,
            "commentId": NOTE,
            "visibility": "internal",
            "authorId": DANA,
            "authorType": "user",
            "createdAt": T12,
        },
    ),
    envelope(
        "TICKET_STATUS_CHANGED",
        A_CLOSE,
        T12,
        SYSTEM | {"ticketId": T1, "previousStatusId": WORKING, "newStatusId": CLOSED, "changedAt": T12},
    ),
    envelope(
        "TICKET_CLOSED",
        A_CLOSE,
        T12,
        SYSTEM
        | {
            "ticketId": T1,
            "closedAt": T12,
            "updatedFields": ["status_id"],
            "changes": {"status_id": {"previous": WORKING, "new": CLOSED}},
        },
    ),
]

UNTIL = datetime(2026, 6, 1, tzinfo=UTC)  # before the sample's own create_ticket row (now())


def read(conn: psycopg.Connection[Any], **kw: Any) -> list[bytes]:
    return [e.to_json_bytes() for e in audit_envelopes(conn, MAPPING, slot="cdc_events", **kw)]


def test_audit_rows_become_exact_envelopes_and_a_rerun_the_same_bytes(db_dsn: str) -> None:
    run_sql(db_dsn, queries.raw("sample/workload", "seed"))
    with psycopg.connect(db_dsn) as conn, conn.transaction():
        conn.execute(queries.raw("sample/workload", "create_ticket"))  # T1, and its TICKET_CREATED row
    insert_rows(db_dsn)

    stats = AuditStats()
    with psycopg.connect(db_dsn) as conn:
        first = read(conn, until=UNTIL, stats=stats, itersize=2)  # several fetches of the cursor
    assert [orjson.loads(b) for b in first] == EXPECTED
    assert stats.rows == 5
    assert stats.events == {
        "TICKET_STATUS_CHANGED": 2,
        "TICKET_UPDATED": 1,
        "TICKET_MESSAGE_ADDED": 2,
        "TICKET_CUSTOMER_REPLIED": 1,
        "TICKET_COMMENT_ADDED": 2,
        "TICKET_INTERNAL_NOTE_ADDED": 1,
        "TICKET_CLOSED": 1,
    }
    assert stats.unmapped == {"TICKET_DOCUMENT_ATTACHED": 1}
    assert stats.skipped == {} and stats.invalid == {}

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert read(conn, until=UNTIL) == first  # byte-stable, also from an autocommit connection
        # [since, until) on occurred_at
        since = datetime(2026, 3, 1, 11, tzinfo=UTC)
        until = datetime(2026, 3, 1, 12, tzinfo=UTC)
        assert [orjson.loads(b)["idempotencyKey"] for b in read(conn, since=since, until=until)] == [
            e["idempotencyKey"] for e in EXPECTED[2:5]
        ]
        # only the wanted event types (the rows that cannot yield them are not read)
        stats = AuditStats()
        closed = read(conn, until=UNTIL, event_types=["TICKET_CLOSED"], stats=stats)
        assert [orjson.loads(b) for b in closed] == [EXPECTED[-1]]
        assert stats.rows == 2  # the status change and the close
        assert read(conn, event_types=["TICKET_ESCALATED"]) == []
        # the tenant filter
        assert read(conn, until=UNTIL, tenant=T) == first
        assert read(conn, tenant="22222222-2222-4222-8222-222222222299") == []
        # the sample's own create row, written at now()
        created = [orjson.loads(b) for b in read(conn, since=UNTIL)]
        assert [(e["eventType"], e["payload"].get("createdByUserId")) for e in created] == [
            ("TICKET_CREATED", DANA)
        ]


def test_a_database_without_the_audit_log_says_so(db_dsn: str) -> None:
    run_sql(db_dsn, "DROP TABLE ticket_audit_logs")
    with psycopg.connect(db_dsn) as conn, pytest.raises(AuditLogMissing) as info:
        read(conn)
    assert info.value.one_line().startswith("the database has no table public.ticket_audit_logs — ")
