"""``cdc demo`` / ``make demo``: the main job on an embedded default.

Starts a throwaway local Postgres (the same launcher as the tests), loads the sample PSA
schema and a little seed data, runs ``cdc setup``, performs a few writes shaped like the
application's own (a ticket created, assigned, moved to a closed status in the
application's three-statement pattern, a comment, a time entry), then runs ``cdc tail``
until it is idle and prints the decoded changes.  The server is removed at the end.
"""

from __future__ import annotations

import io
import sys
import time

import orjson
import psycopg
from rich.console import Console
from rich.table import Table

from .config import DEFAULT_PUBLICATION, DEFAULT_SLOT, DEFAULT_TABLES
from .localpg import LocalPostgres
from .provision import setup
from .sample import schema_sql
from .tail import TailOptions, run_tail

SEED = """
INSERT INTO tenants (tenant, client_name, email) VALUES
  ('11111111-1111-4111-8111-111111111111', 'Acme MSP', 'ops@acme.test');
INSERT INTO clients (tenant, client_id, client_name) VALUES
  ('11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222', 'Globex');
INSERT INTO users (tenant, user_id, username, hashed_password, email, user_type) VALUES
  ('11111111-1111-4111-8111-111111111111', '33333333-3333-4333-8333-333333333333', 'dana', 'x', 'dana@acme.test', 'internal'),
  ('11111111-1111-4111-8111-111111111111', '44444444-4444-4444-8444-444444444444', 'lee', 'x', 'lee@acme.test', 'internal');
INSERT INTO boards (tenant, board_id, board_name) VALUES
  ('11111111-1111-4111-8111-111111111111', '55555555-5555-4555-8555-555555555555', 'Service Desk');
INSERT INTO statuses (tenant, status_id, name, status_type, order_number, is_closed) VALUES
  ('11111111-1111-4111-8111-111111111111', '66666666-6666-4666-8666-666666666661', 'Open', 'ticket', 1, false),
  ('11111111-1111-4111-8111-111111111111', '66666666-6666-4666-8666-666666666662', 'Closed', 'ticket', 2, true);
"""

T = "'11111111-1111-4111-8111-111111111111'"
TICKET = "'77777777-7777-4777-8777-777777777777'"
NOTE = "'99999999-9999-4999-8999-999999999999'"

WORKLOAD: list[list[str]] = [
    [
        f"""INSERT INTO tickets (tenant, ticket_id, ticket_number, title, status_id, board_id, client_id,
              entered_by, entered_at, itil_priority_level)
            VALUES ({T}, {TICKET}, 'T-1001', 'Printer on fire', '66666666-6666-4666-8666-666666666661',
              '55555555-5555-4555-8555-555555555555', '22222222-2222-4222-8222-222222222222',
              '33333333-3333-4333-8333-333333333333', now(), 3)""",
    ],
    [
        f"UPDATE tickets SET assigned_to = '44444444-4444-4444-8444-444444444444', updated_at = now() "
        f"WHERE tenant = {T} AND ticket_id = {TICKET}",
    ],
    [  # a comment and its thread, as the application writes them
        f"""INSERT INTO comment_threads (tenant, thread_id, ticket_id, root_comment_id, is_internal)
            VALUES ({T}, '88888888-8888-4888-8888-888888888888', {TICKET}, {NOTE}, true)""",
        f"""INSERT INTO comments (tenant, comment_id, ticket_id, note, is_internal, is_resolution, user_id,
              author_type, thread_id)
            VALUES ({T}, {NOTE}, {TICKET}, 'Extinguisher applied.', true, false,
              '44444444-4444-4444-8444-444444444444', 'internal', '88888888-8888-4888-8888-888888888888')""",
    ],
    [  # the application's close: main update, then is_closed / closed_at as separate statements
        f"UPDATE tickets SET status_id = '66666666-6666-4666-8666-666666666662', updated_at = now() "
        f"WHERE tenant = {T} AND ticket_id = {TICKET}",
        f"UPDATE tickets SET is_closed = true WHERE tenant = {T} AND ticket_id = {TICKET}",
        f"UPDATE tickets SET closed_at = now(), closed_by = '44444444-4444-4444-8444-444444444444' "
        f"WHERE tenant = {T} AND ticket_id = {TICKET}",
    ],
]


def _short(value: object) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 48 else text[:45] + "..."


def run_demo(keep: bool = False) -> None:
    console = Console()
    started = time.monotonic()
    pg = LocalPostgres()
    try:
        console.print("[bold]1.[/] starting a throwaway Postgres (wal_level=logical) ...")
        pg.start()
        dsn = pg.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            console.print("[bold]2.[/] loading the sample PSA schema and seed data ...")
            conn.execute(schema_sql())
            conn.execute(SEED)
        console.print("[bold]3.[/] cdc setup ...")
        report = setup(dsn, slot=DEFAULT_SLOT, publication=DEFAULT_PUBLICATION, tables=DEFAULT_TABLES)
        console.print(f"    {len(report.changes)} changes made (publication, REPLICA IDENTITY FULL, slot)")
        console.print("[bold]4.[/] application-shaped writes: create, assign, internal note, close ...")
        for statements in WORKLOAD:
            with psycopg.connect(dsn) as conn, conn.transaction():
                for s in statements:
                    conn.execute(s)
        console.print("[bold]5.[/] cdc tail (until idle):")
        out = io.BytesIO()
        run_tail(TailOptions(dsn, DEFAULT_SLOT, DEFAULT_PUBLICATION, idle_exit=1.0, status_interval=1.0), out)
        table = Table(show_lines=False)
        for col in ("lsn", "xid", "table", "op", "changed columns"):
            table.add_column(col)
        for line in out.getvalue().splitlines():
            rec = orjson.loads(line)
            before, after = rec["before"] or {}, rec["after"] or {}
            if rec["op"] == "update":
                changed = [
                    f"{k}: {_short(before.get(k))} → {_short(v)}"
                    for k, v in after.items()
                    if before.get(k) != v
                ]
            else:
                changed = [f"{k}={_short(v)}" for k, v in (after or before).items() if v is not None][:4]
            table.add_row(rec["lsn"], str(rec["xid"]), rec["table"], rec["op"], "\n".join(changed))
        console.print(table)
        console.print(f"done in {time.monotonic() - started:.1f} s")
        if keep:
            console.print(f"server kept running: {dsn}")
            return
    finally:
        if not keep:
            pg.stop()
    sys.stdout.flush()
