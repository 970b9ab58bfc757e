"""``cdc demo`` / ``make demo``: the main job on an embedded default.

A throwaway local Postgres (the launcher the tests use) gets the sample PSA schema and seed
data (a tenant, boards and statuses, users and a portal contact, a team with daily capacities,
project statuses); ``cdc setup`` creates the publication and the slot with the reference-state
bootstrap; ``cdc watch`` runs in the background writing JSON lines; a scripted workload written
the way the application writes runs, one transaction per step:

* tickets (``sql/sample/workload.sql``): create, assign, additional agent, status, priority,
  internal note, portal reply, time entry, bundle, close, reopen, and a ticket whose SLA due
  time passes while it is open;
* scheduling and capacity (``sql/sample/families.sql``): an appointment created with two
  technicians, rescheduled, reassigned (the writer saying who acts through the ``cdc.context``
  message), the dispatch walk en route → arrived → checked out, completed; a private block
  created and deleted; the Field team booked across its daily capacity, and one booking past it
  that emits nothing;
* projects: a project created, renamed with a status change, closed; a task created with an
  assignee, moved through the board's columns into the closed one, given an additional agent;
  a ``blocks`` dependency added and removed;
* time: the ticket's time entry submitted and approved.

The family steps run while the SLA ticket's clock runs. Then the derived events are printed as
a table, with a summary of the event types per family. Everything is removed at the end: the
server, its data directory and the events file (``--keep`` leaves the server running and the
events file in place, and prints both).
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
from rich.markup import escape
from rich.table import Table

from catalog.registry import get as get_spec
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

#: ``sql/sample/workload.sql``: the ticket workload, in order; the last one starts the SLA clock.
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

#: ``sql/sample/families.sql``: scheduling, capacity, projects and time approval, in order.
FAMILY_STEPS = (
    "appointment_create",
    "appointment_reschedule",
    "appointment_reassign",
    "dispatch_en_route",
    "dispatch_arrived",
    "dispatch_checked_out",
    "appointment_complete",
    "block_create",
    "block_delete",
    "capacity_dana_6h",
    "capacity_lee_2h",
    "capacity_lee_1h_more",
    "project_create",
    "phase_add",
    "project_update",
    "task_create",
    "task_doing",
    "task_agent",
    "task_done",
    "task_second",
    "dependency_add",
    "dependency_remove",
    "project_close",
    "time_submit",
    "time_approve",
)

#: Seconds from the SLA ticket's creation until its due time (2 s) has safely passed.
SLA_WAIT_S = 3.5

NAMES = {
    "99999999-9999-4999-8999-999999999991": "T-1001",
    "99999999-9999-4999-8999-999999999992": "T-1002",
    "99999999-9999-4999-8999-999999999993": "T-1003",
    "33333333-3333-4333-8333-333333333333": "dana",
    "44444444-4444-4444-8444-444444444444": "lee",
    "34343434-3434-4343-8343-343434343434": "kim",
    "66666666-6666-4666-8666-666666666661": "Open",
    "66666666-6666-4666-8666-666666666662": "In Progress",
    "66666666-6666-4666-8666-666666666663": "Closed",
    "88888888-8888-4888-8888-888888888882": "High",
    "7a7a7a7a-7a7a-47a7-87a7-7a7a7a7a7a7a": "team Field",
    "5c5c5c5c-0000-4000-8000-000000000001": "appointment",
    "5c5c5c5c-0000-4000-8000-000000000002": "block",
    "6a6a6a6a-0000-4000-8000-000000000001": "Active",
    "6a6a6a6a-0000-4000-8000-000000000002": "On Hold",
    "6a6a6a6a-0000-4000-8000-000000000003": "Completed",
    "9a9a9a9a-0000-4000-8000-000000000001": "PRJ-0001",
    "9a9a9a9a-0000-4000-8000-000000000002": "phase 1.1",
    "9c9c9c9c-0000-4000-8000-000000000001": "task 1.1.1",
    "9c9c9c9c-0000-4000-8000-000000000002": "task 1.1.2",
    "eeeeeeee-eeee-4eee-8eee-eeeeeeeeeee1": "time entry",
}

#: Payload fields naming what an event is about, most specific first.
_SUBJECT_FIELDS = (
    "ticketId", "sourceTicketId", "originalTicketId", "appointmentId", "scheduleBlockId", "entryId",
    "teamId", "taskId", "phaseId", "projectId", "timeEntryId",
)  # fmt: skip

_KEY_FIELDS = (
    "newStatusId", "newPriorityId", "newAssigneeId", "additionalAgentId", "visibility", "channel",
    "authorType", "minutes", "billable", "targetTicketId", "reason", "stage", "targetAt", "newResponseState",
    "assigneeId", "technicianUserId", "ownerId", "newStartAt", "newEndAt", "date", "capacityLimit",
    "currentBooked", "previousStatus", "newStatus", "status", "assignedToId", "blockedByTaskId",
    "unblockedByTaskId", "updatedFields",
)  # fmt: skip


def run_step(dsn: str, name: str, file: str = "sample/workload") -> None:
    with connect(dsn, purpose="demo", autocommit=False) as conn, conn.transaction():
        conn.execute(queries.raw(file, name))


def _show(v: Any) -> Any:
    if isinstance(v, str):
        return NAMES.get(v, v)
    if isinstance(v, list):
        return "[" + ", ".join(str(_show(x)) for x in v) + "]"
    return v


def describe(payload: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_show(payload[k])}" for k in _KEY_FIELDS if k in payload)


def subject(payload: dict[str, Any]) -> str:
    """What the event is about: its most specific id, with the ticket of an appointment."""
    ticket = payload.get("ticketId")
    for k in _SUBJECT_FIELDS[3:]:
        v = payload.get(k)
        if v:
            return f"{NAMES.get(v, v)} ({NAMES.get(ticket, ticket)})" if ticket else str(NAMES.get(v, v))
    for k in _SUBJECT_FIELDS[:3]:
        v = payload.get(k)
        if v:
            return str(NAMES.get(v, v))
    return ""


def run_demo(keep: bool = False) -> None:
    console = Console(width=None if Console().is_terminal else 170)
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
            conn.execute(queries.raw("sample/families", "seed"))
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
        sla_started = time.monotonic()
        console.print(f"[bold]5.[/] scheduling, capacity, projects, time: {', '.join(FAMILY_STEPS)}")
        for step in FAMILY_STEPS:
            run_step(dsn, step, "sample/families")
        console.print("    waiting for T-1003's SLA due time to pass while it is open ...")
        time.sleep(max(0.0, SLA_WAIT_S - (time.monotonic() - sla_started)))
        stop.stopped = True
        thread.join(30)
        if not stats:
            raise RuntimeError("the watcher stopped with an error (see above)")
        table = Table(title=f"{stats[0].events} derived events")
        table.add_column("time", no_wrap=True)
        table.add_column("type", no_wrap=True)
        table.add_column("about", no_wrap=True)
        table.add_column("actor", no_wrap=True)
        table.add_column("key fields", overflow="fold")
        families: dict[str, dict[str, int]] = {}
        for line in out.read_bytes().splitlines():
            env = orjson.loads(line)
            p = env["payload"]
            actor = p.get("actorType", "")
            who = p.get("actorUserId") or p.get("actorContactId")
            if actor and who:
                actor = f"{actor} {NAMES.get(who, str(who)[:8])}"
            cells = (env["timestamp"][11:23], env["eventType"], subject(p), actor, describe(p))
            table.add_row(*(escape(c) for c in cells))
            counts = families.setdefault(get_spec(env["eventType"]).family, {})
            counts[env["eventType"]] = counts.get(env["eventType"], 0) + 1
        console.print(table)
        summary = Table(title="event types per family")
        summary.add_column("family", no_wrap=True)
        summary.add_column("events", justify="right")
        summary.add_column("types", overflow="fold")
        for family, counts in families.items():
            summary.add_row(family, str(sum(counts.values())), ", ".join(sorted(counts)))
        console.print(summary)
        console.print(f"done in {time.monotonic() - started:.1f} s")
        if keep:
            console.print(f"server kept running: {dsn}")
            console.print(f"events file kept: {out}")
    finally:
        if not keep:
            pg.stop()
            shutil.rmtree(workdir, ignore_errors=True)
