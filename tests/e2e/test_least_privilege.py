"""The README's least-privilege recipe, as written: `cdc setup` once by the owner, then `cdc watch`
as a role with only REPLICATION, SELECT on the watched tables and its own `cdc` schema."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from cdc import queries
from tests.environ import command_env
from tests.integration.conftest import run_sql

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def cdc(*args: str) -> subprocess.CompletedProcess[str]:
    env = command_env()
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_watch_runs_as_a_role_with_only_the_documented_privileges(db_dsn: str) -> None:
    role = f"cdc_watcher_{uuid.uuid4().hex[:8]}"
    # The recipe of README.md § Least-privilege role (the password is not needed on this server).
    run_sql(
        db_dsn,
        f"CREATE ROLE {role} LOGIN REPLICATION",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
        f"CREATE SCHEMA cdc AUTHORIZATION {role}",
    )
    try:
        run_sql(db_dsn, queries.raw("sample/workload", "seed"))
        res = cdc("setup", "--dsn", db_dsn)  # once, by the owner of the tables
        assert res.returncode == 0, res.stderr
        watcher_dsn = make_conninfo(db_dsn, user=role)
        with psycopg.connect(watcher_dsn) as conn:
            row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            assert row == (False,)

        run_sql(db_dsn, queries.raw("sample/workload", "create_ticket"))
        run_sql(db_dsn, queries.raw("sample/workload", "status_in_progress"))
        res = cdc("watch", "--dsn", watcher_dsn, "--once", "--heartbeat-interval", "0.5")
        assert res.returncode == 0, res.stderr
        assert "WARNING" not in res.stderr and "ERROR" not in res.stderr, res.stderr  # heartbeats too
        with psycopg.connect(db_dsn) as conn:
            types = [r[0] for r in conn.execute("SELECT envelope->>'eventType' FROM cdc.outbox ORDER BY seq")]
        assert "TICKET_CREATED" in types and "TICKET_STATUS_CHANGED" in types

        # A second run, with the checkpoint and state it wrote itself, goes on from there.
        run_sql(db_dsn, queries.raw("sample/workload", "priority_high"))
        res = cdc("watch", "--dsn", watcher_dsn, "--once", "--heartbeat-interval", "0.5")
        assert res.returncode == 0, res.stderr
        with psycopg.connect(db_dsn) as conn:
            later = [r[0] for r in conn.execute("SELECT envelope->>'eventType' FROM cdc.outbox ORDER BY seq")]
        assert later[: len(types)] == types and "TICKET_PRIORITY_CHANGED" in later[len(types) :]
    finally:
        run_sql(
            db_dsn,
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = current_database()",
            "DROP SCHEMA IF EXISTS cdc CASCADE",
            f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
            f"DROP ROLE IF EXISTS {role}",
        )
