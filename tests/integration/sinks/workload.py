"""A small tickets workload for the sink tests: a seeded tenant, tickets, and status updates.

The reference rows and the tickets exist before ``cdc setup`` (they come from the slot's
snapshot); every :func:`status_updates` transaction then changes one ticket's status, which
the tickets deriver turns into one TICKET_STATUS_CHANGED (neither status is closed).
"""

from __future__ import annotations

import psycopg

TENANT = "11111111-1111-4111-8111-111111111111"
CLIENT = "22222222-2222-4222-8222-222222222222"
USER = "33333333-3333-4333-8333-333333333333"
BOARD = "70707070-7070-4707-8707-707070707070"
OPEN = "66666666-6666-4666-8666-666666666661"
WORKING = "66666666-6666-4666-8666-666666666662"
CLOSED = "66666666-6666-4666-8666-666666666663"
PRIORITY = "88888888-8888-4888-8888-888888888881"

SEED = f"""
INSERT INTO tenants (tenant, client_name, email) VALUES ('{TENANT}', 'Acme MSP', 'ops@acme.test');
INSERT INTO clients (tenant, client_id, client_name) VALUES ('{TENANT}', '{CLIENT}', 'Globex');
INSERT INTO users (tenant, user_id, username, hashed_password, email, user_type)
  VALUES ('{TENANT}', '{USER}', 'dana', 'x', 'dana@acme.test', 'internal');
INSERT INTO boards (tenant, board_id, board_name) VALUES ('{TENANT}', '{BOARD}', 'Service Desk');
INSERT INTO statuses (tenant, status_id, name, status_type, order_number, is_closed) VALUES
  ('{TENANT}', '{OPEN}', 'Open', 'ticket', 1, false),
  ('{TENANT}', '{WORKING}', 'In Progress', 'ticket', 2, false),
  ('{TENANT}', '{CLOSED}', 'Closed', 'ticket', 3, true);
INSERT INTO priorities (tenant, priority_id, priority_name, created_by)
  VALUES ('{TENANT}', '{PRIORITY}', 'Medium', '{USER}');
"""


def ticket_id(i: int) -> str:
    return f"99999999-9999-4999-8999-{i:012d}"


def seed(dsn: str, tickets: int) -> list[str]:
    ids = [ticket_id(i) for i in range(1, tickets + 1)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SEED)
        for n, tid in enumerate(ids, 1):
            conn.execute(
                "INSERT INTO tickets (tenant, ticket_id, ticket_number, title, status_id, board_id, client_id,"
                " priority_id, entered_by, entered_at, source)"
                " VALUES (%s, %s, %s, 'Printer on fire', %s, %s, %s, %s, %s, now(), 'ui')",
                (TENANT, tid, f"T-{n}", OPEN, BOARD, CLIENT, PRIORITY, USER),
            )
    return ids


def status_updates(dsn: str, ids: list[str], transactions: int, start: int = 0) -> list[str]:
    """``transactions`` commits, each moving one ticket to the other open status; returns the
    tickets touched, in order."""
    touched = []
    current: dict[str, str] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for tid, status in conn.execute("SELECT ticket_id::text, status_id::text FROM tickets").fetchall():
            current[tid] = status
        for k in range(start, start + transactions):
            tid = ids[k % len(ids)]
            new = WORKING if current[tid] == OPEN else OPEN
            conn.execute(
                "UPDATE tickets SET status_id = %s WHERE tenant = %s AND ticket_id = %s", (new, TENANT, tid)
            )
            current[tid] = new
            touched.append(tid)
    return touched


def close_ticket(dsn: str, tid: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE tickets SET status_id = %s WHERE tenant = %s AND ticket_id = %s", (CLOSED, TENANT, tid)
        )


def checkpoint(dsn: str, slot: str = "cdc_events", schema: str = "cdc") -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT lsn::text FROM {schema}.checkpoints WHERE slot_name = %s", (slot,)
        ).fetchone()
    return str(row[0]) if row else None


def lsn_int(text: str | None) -> int:
    if not text:
        return 0
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)
