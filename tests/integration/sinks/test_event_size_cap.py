"""An event larger than its sink takes is a dead letter, and the stream goes on (issue 11, item 7).

A ticket title of 1.5 MB makes a TICKET_UPDATED of more than 1.5 MB; NATS refuses a message
over its ``max_payload`` (1 MB by default). ``cdc watch --once`` must put that event in
``cdc.dead_letters`` with the reason and its source position, deliver every other event, and
exit 0 — and a second run must not try it again. The cap is an option of every sink
(``max_event_bytes``): the JSON lines and outbox sinks show it with a small one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from tests.e2e.test_cli_errors import cdc
from tests.integration.conftest import SLOT, setup_with_state

from .helpers import nats_spec, read_nats, read_outbox
from .services import Service
from .workload import TENANT, seed, status_updates

pytestmark = pytest.mark.integration

REASON = re.compile(r"envelope is ([\d,]+) bytes, over the ([\d,]+)-byte cap of sink (\w+)")


def prepare(dsn: str, title_bytes: int) -> tuple[int, str]:
    """Status changes, then one title edit of ``title_bytes`` bytes, then more status changes;
    returns the title edit's xid and the ticket it edited."""
    ids = seed(dsn, 3)
    setup_with_state(dsn, publication=SLOT)
    status_updates(dsn, ids[1:], 2)
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(
            "UPDATE tickets SET title = %s WHERE tenant = %s AND ticket_id = %s",
            # not one repeated letter, so that nothing on the way compresses it to nothing
            ("".join(chr(0x61 + (i * 7) % 26) for i in range(title_bytes)), TENANT, ids[0]),
        )
        row = conn.execute("SELECT txid_current()").fetchone()
        assert row is not None
        xid = int(row[0])
    status_updates(dsn, ids[1:], 2, start=2)
    return xid, ids[0]


def dead_letters(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, event_type, errors, lsn::text, xid, source_table, payload"
            " FROM cdc.dead_letters ORDER BY dead_at"
        ).fetchall()
    keys = ("key", "event_type", "errors", "lsn", "xid", "table", "payload")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def watch_once(dsn: str, sink: str) -> subprocess.CompletedProcess[str]:
    return cdc("watch", "--once", "--dsn", dsn, "--sink", sink)


def the_dead_letter(dsn: str, xid: int, ticket: str, sink: str) -> tuple[dict[str, Any], int, int]:
    """The one dead letter: the title edit, at its source position, with the reason; returns it
    with the envelope size and the cap its reason names."""
    dead = dead_letters(dsn)
    assert len(dead) == 1, dead
    d = dead[0]
    assert d["event_type"] == "TICKET_UPDATED" and d["payload"]["ticketId"] == ticket
    assert d["xid"] == xid and d["table"] == "public.tickets" and d["key"].endswith(f"@{d['lsn']}")
    assert [e["type"] for e in d["errors"]] == ["envelope_too_large"]
    m = REASON.fullmatch(d["errors"][0]["message"])
    assert m is not None, d["errors"]
    size, cap = int(m[1].replace(",", "")), int(m[2].replace(",", ""))
    assert m[3] == sink and size > cap
    return d, size, cap


def test_nats_takes_the_rest_and_the_large_event_is_a_dead_letter(
    db_dsn: str, nats_service: Service, nats_ns: str
) -> None:
    xid, ticket = prepare(db_dsn, 1_500_000)
    spec = nats_spec(nats_service.url, nats_ns)
    first = watch_once(db_dsn, spec)
    assert first.returncode == 0, first.stderr
    assert "1 dead letters" in first.stderr.splitlines()[-1]
    _, size, cap = the_dead_letter(db_dsn, xid, ticket, "nats")
    # below the default 1 MiB: the server's max_payload (1 MB by default) less room for the headers
    assert size > 1_500_000 and cap < 1024 * 1024

    delivered = [env for _, env, _ in read_nats(nats_service.url, nats_ns)]
    assert [e.event_type for e in delivered].count("TICKET_STATUS_CHANGED") == 4  # before and after
    assert not any(e.source.xid == xid for e in delivered)

    again = watch_once(db_dsn, spec)  # nothing left to retry: no loop, no second dead letter
    assert again.returncode == 0, again.stderr
    assert len(dead_letters(db_dsn)) == 1 and len(read_nats(nats_service.url, nats_ns)) == len(delivered)


def test_the_cap_is_an_option_of_the_jsonl_sink(db_dsn: str, tmp_path: Path) -> None:
    xid, ticket = prepare(db_dsn, 3000)
    out = tmp_path / "events.jsonl"
    res = watch_once(db_dsn, f"jsonl:{out}?max_event_bytes=2500")
    assert res.returncode == 0, res.stderr
    _, size, cap = the_dead_letter(db_dsn, xid, ticket, "jsonl")
    assert cap == 2500 and size > 3000
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [e["eventType"] for e in events].count("TICKET_STATUS_CHANGED") == 4
    assert all(len(orjson.dumps(e)) <= 2500 for e in events)
    assert not any(e["source"]["xid"] == xid for e in events)


def test_the_cap_is_an_option_of_the_outbox(db_dsn: str) -> None:
    xid, ticket = prepare(db_dsn, 3000)
    res = watch_once(db_dsn, "postgres?max_event_bytes=2500")
    assert res.returncode == 0, res.stderr
    _, _, cap = the_dead_letter(db_dsn, xid, ticket, "outbox")
    assert cap == 2500
    events = read_outbox(db_dsn)
    assert [e.event_type for e in events].count("TICKET_STATUS_CHANGED") == 4
    assert not any(e.source.xid == xid for e in events)
