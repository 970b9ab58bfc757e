"""``cdc demo`` / ``make demo``: the main job on an embedded default.

A throwaway local Postgres (the launcher the tests use) gets the sample PSA schema and seed
data (a tenant, boards and statuses, users and a portal contact); ``cdc setup`` creates the
publication and the slot with the reference-state bootstrap; ``cdc watch`` runs in the
background writing JSON lines; a scripted ticket workload written the way the application
writes (``sql/sample/workload.sql``: create, assign, additional agent, status, priority,
internal note, portal reply, time entry, bundle, close, reopen, and a ticket whose SLA due
time passes while it is open) runs; then the derived events are printed as a table.
Everything is removed at the end: the server, its data directory and the events file
(``--keep`` leaves the server running and the events file in place, and prints both).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from derivers import default_derivers

from . import queries
from .config import DEFAULT_PUBLICATION, DEFAULT_SLOT, DEFAULT_TABLES
from .connect import connect
from .localpg import LocalPostgres
from .provision import setup
from .sample import schema_sql
from .sinks.jsonl import JsonLinesSink
from .state import make_bootstrap_hook
from .tail import StopFlag
from .watch import Watcher, WatchOptions, WatchStats

STEPS = (
    "create_ticket",
    "assign",
    "add_agent",
    "status_in_progress",
    "priority_high",
    "internal_note",
    "customer_reply",
    "time_entry",
    "bundle",
    "bundle_attach",
    "close",
    "reopen",
    "sla_ticket",
)

NAMES = {
    "99999999-9999-4999-8999-999999999991": "T-1001",
    "99999999-9999-4999-8999-999999999992": "T-1002",
    "99999999-9999-4999-8999-999999999993": "T-1003",
}

_KEY_FIELDS = (
    "newStatusId", "newPriorityId", "newAssigneeId", "additionalAgentId", "visibility", "channel",
    "authorType", "minutes", "billable", "targetTicketId", "reason", "stage", "targetAt", "newResponseState",
)  # fmt: skip


def run_step(dsn: str, name: str) -> None:
    with connect(dsn, purpose="demo", autocommit=False) as conn, conn.transaction():
        conn.execute(queries.raw("sample/workload", name))


def describe(payload: dict[str, Any]) -> str:
    parts = []
    for k in _KEY_FIELDS:
        if k in payload:
            v = payload[k]
            parts.append(f"{k}={NAMES.get(v, v) if isinstance(v, str) else v}")
    return ", ".join(parts)


def run_demo(keep: bool = False) -> None:
    console = Console(width=None if Console().is_terminal else 150)
    started = time.monotonic()
    pg = LocalPostgres()
    workdir = Path(tempfile.mkdtemp(prefix="cdc-demo-"))
    try:
        console.print("[bold]1.[/] throwaway Postgres (wal_level=logical), sample PSA schema and seed data")
        pg.start()
        dsn = pg.dsn("postgres")
        with connect(dsn, purpose="demo") as conn:
            conn.execute(schema_sql())
            conn.execute(queries.raw("sample/workload", "seed"))
        console.print("[bold]2.[/] cdc setup: publication, REPLICA IDENTITY FULL, slot + state bootstrap")
        setup(
            dsn,
            slot=DEFAULT_SLOT,
            publication=DEFAULT_PUBLICATION,
            tables=DEFAULT_TABLES,
            bootstrap=make_bootstrap_hook(default_derivers()),
        )
        out = workdir / "events.jsonl"
        console.print("[bold]3.[/] cdc watch --sink jsonl:… in the background")
        stop = StopFlag()
        stats: list[WatchStats] = []
        watcher = Watcher(
            WatchOptions(dsn, heartbeat_interval=0.5, status_interval=1.0, batch_max_delay=0.1),
            JsonLinesSink(str(out)),
            default_derivers(),
        )
        thread = threading.Thread(target=lambda: stats.append(watcher.run(stop)), daemon=True)
        thread.start()
        console.print(f"[bold]4.[/] the ticket workload: {', '.join(STEPS)}")
        for step in STEPS:
            run_step(dsn, step)
        console.print("    waiting for T-1003's SLA due time to pass while it is open ...")
        time.sleep(3.5)
        stop.stopped = True
        thread.join(30)
        if not stats:
            raise RuntimeError("the watcher stopped with an error (see above)")
        table = Table(title=f"{stats[0].events} derived events")
        for col in ("time", "type", "ticket", "actor", "key fields"):
            table.add_column(col)
        for line in out.read_bytes().splitlines():
            env = orjson.loads(line)
            p = env["payload"]
            ticket = p.get("ticketId") or p.get("sourceTicketId") or p.get("originalTicketId") or ""
            actor = p.get("actorType", "")
            if actor and (p.get("actorUserId") or p.get("actorContactId")):
                who = p.get("actorUserId") or p.get("actorContactId")
                actor = f"{actor} {str(who)[:8]}"
            table.add_row(
                env["timestamp"][11:23], env["eventType"], NAMES.get(ticket, ticket), actor, describe(p)
            )
        console.print(table)
        console.print(f"done in {time.monotonic() - started:.1f} s")
        if keep:
            console.print(f"server kept running: {dsn}")
            console.print(f"events file kept: {out}")
    finally:
        if not keep:
            pg.stop()
            shutil.rmtree(workdir, ignore_errors=True)
