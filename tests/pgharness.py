"""Pytest plugin: one real Postgres per test session and a fresh database per test.

Where the server comes from, first match wins:

1. ``CDC_TEST_DSN`` — an existing server (needs CREATEDB and REPLICATION, ``wal_level=logical``);
2. a testcontainers Postgres, when a Docker daemon answers (a ``docker`` client alone is not enough);
3. a throwaway cluster from :class:`cdc.localpg.LocalPostgres` (initdb in a temp dir, run as the
   ``postgres`` user when we are root), stopped and removed at exit, also after a failed run.

A template database with the sample PSA schema is built once; each test gets a clone.  At
teardown the clone's slots are dropped first (a database with slots cannot be dropped).
Nothing here holds a transaction open, since creating a slot waits for every open
transaction in the cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cdc.localpg import LocalPostgres
from cdc.sample import schema_sql


@dataclass
class PgServer:
    admin_dsn: str  # a DSN to a maintenance database on the server
    kind: str

    def dsn(self, dbname: str, **params: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=dbname, **params)

    def execute(self, statement: str | sql.Composable) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]


def _docker_daemon_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    env_dsn = os.environ.get("CDC_TEST_DSN")
    if env_dsn:
        yield PgServer(env_dsn, "external")
        return
    if _docker_daemon_answers():  # pragma: no cover - no Docker daemon on the dev machines
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:15", driver=None).with_command(
            "postgres -c wal_level=logical -c max_replication_slots=64 -c max_wal_senders=64 "
            "-c wal_sender_timeout=6s -c fsync=off"
        )
        with container:
            yield PgServer(container.get_connection_url(), "testcontainers")
        return
    with LocalPostgres() as local:
        yield PgServer(local.dsn("postgres"), "local")


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> str:
    name = f"cdc_template_{uuid.uuid4().hex[:8]}"
    pg_server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        conn.execute(schema_sql())  # type: ignore[call-overload]
    return name


def drop_database(server: PgServer, name: str) -> None:
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        for slot, pid in conn.execute(
            "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s", (name,)
        ).fetchall():
            if pid is not None:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            for _ in range(50):
                try:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    break
                except psycopg.errors.ObjectInUse:
                    import time

                    time.sleep(0.1)
                except psycopg.errors.UndefinedObject:
                    break
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db_name(pg_server: PgServer, template_db: str) -> Iterator[str]:
    name = f"cdc_test_{uuid.uuid4().hex[:10]}"
    pg_server.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_db))
    )
    yield name
    drop_database(pg_server, name)


@pytest.fixture
def db_dsn(pg_server: PgServer, db_name: str) -> str:
    """libpq DSN of a fresh database holding the sample PSA schema."""
    return pg_server.dsn(db_name)
