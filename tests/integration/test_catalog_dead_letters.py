"""``sql/dead_letters.sql`` on a real Postgres: idempotent DDL, one row per failed draft."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from catalog.dead_letters import dead_letter
from catalog.envelope import EventDraft, EventValidationError, build_envelope
from cdc import queries

pytestmark = pytest.mark.integration

TENANT = "6f1c2b1e-5d0e-4c7a-9a61-2f4b8f0d9c11"
TICKET = "0b5f4c1e-6f1a-4d6e-9a55-0c8e7f3b2a10"


def test_failed_draft_is_dead_lettered_once(db_dsn: str) -> None:
    schema = sql.Identifier("cdc")
    source: dict[str, Any] = {
        "slot": "cdc_events",
        "lsn": 0x16B3748,
        "xid": 771,
        "commit_time": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        "table": "public.tickets",
    }
    draft = EventDraft(
        "TICKET_STATUS_CHANGED", TENANT, TICKET, {"tenantId": TENANT, "occurredAt": "yesterday"}
    )
    with pytest.raises(EventValidationError) as info:
        build_envelope(draft, **source)
    letter = dead_letter(draft, info.value, **source)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        for _ in range(2):  # DDL is idempotent, a replayed draft adds nothing
            conn.execute(queries.query("dead_letters", "create_dead_letters", schema=schema))
            conn.execute(queries.query("dead_letters", "insert_dead_letter", schema=schema), letter.params())
        rows = conn.execute(
            "SELECT idempotency_key, event_type, payload, errors, lsn::text, commit_time, timer "
            "FROM cdc.dead_letters"
        ).fetchall()
    assert len(rows) == 1
    key, event_type, payload, errors, lsn, commit_time, timer = rows[0]
    assert key == f"TICKET_STATUS_CHANGED:{TENANT}:{TICKET}@0/16B3748"
    assert event_type == "TICKET_STATUS_CHANGED"
    assert payload == {"tenantId": TENANT, "occurredAt": "yesterday"}
    assert {e["path"] for e in errors} == {"occurredAt", "ticketId", "previousStatusId", "newStatusId"}
    assert (lsn, commit_time, timer) == ("0/16B3748", source["commit_time"], False)
