"""Bounded memory and a live stream through one huge transaction.

One 200,000-row UPDATE of ``tickets`` goes through the real ``cdc watch --once --sink discard``
subprocess under an address-space limit (``RLIMIT_AS``) that the watcher which held a
transaction whole as Python objects exceeded. Measured on this transaction: that watcher peaked
at 1,373 MB resident, and died under a 512 MB and a 1,024 MB limit (MemoryError, SystemError),
passing only at 1,600 MB; the spilling watcher peaks at 137 MB resident and passes under 512 MB
with either decoder implementation. The watcher must exit 0 having delivered every event. The test cluster's ``wal_sender_timeout`` is 6 s and the transaction takes far
longer to go through, so the run also shows the stream kept alive meanwhile.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys

import psycopg
import pytest

from tests.environ import command_env

from .conftest import setup_with_state

pytestmark = pytest.mark.integration

ROWS = 200_000
#: Address space for the watcher: room to spare over what the spilling watcher needs (it passes
#: under 512 MB), less than what holding the transaction whole takes (it fails under 1,024 MB).
AS_LIMIT = 768 << 20

T = "11111111-1111-4111-8111-111111111111"
OPEN = "66666666-6666-4666-8666-666666666661"
WORKING = "66666666-6666-4666-8666-666666666662"
SEED = f"""
INSERT INTO tenants (tenant, client_name, email) VALUES ('{T}', 'Memory', 'm@m.test');
INSERT INTO clients (tenant, client_id, client_name) VALUES ('{T}', '22222222-2222-4222-8222-222222222222', 'C');
INSERT INTO statuses (tenant, status_id, name, status_type, order_number, is_closed) VALUES
  ('{T}', '{OPEN}', 'Open', 'ticket', 1, false), ('{T}', '{WORKING}', 'Working', 'ticket', 2, false);
INSERT INTO tickets (tenant, ticket_number, title, status_id, client_id, entered_at, updated_at, source)
SELECT '{T}', 'M' || g, 'Ticket ' || g, '{OPEN}', '22222222-2222-4222-8222-222222222222', now(), now(), 'email'
  FROM generate_series(1, {ROWS}) g;
"""


def limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def test_a_200000_row_update_goes_through_in_a_small_address_space(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(SEED)  # type: ignore[call-overload]
    setup_with_state(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE tickets SET status_id = '{WORKING}', updated_at = now()")  # type: ignore[call-overload]
    res = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "watch", "--once", "--sink", "discard", "--dsn", db_dsn],
        capture_output=True,
        text=True,
        timeout=900,
        env=command_env(),
        preexec_fn=limit_address_space,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    found = re.search(r"delivered (\d+) events from (\d+) transactions", res.stderr)
    assert found is not None, res.stderr[-2000:]
    # every ticket's status change and its update, from the one transaction (and the heartbeat's)
    assert int(found.group(1)) == 2 * ROWS
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT c.lsn >= s.confirmed_flush_lsn FROM cdc.checkpoints c, pg_replication_slots s "
            "WHERE s.slot_name = 'cdc_events'"
        ).fetchone()
    assert row == (True,)  # the server was told no more than the checkpoint
