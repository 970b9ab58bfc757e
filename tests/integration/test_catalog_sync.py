"""``cdc catalog sync`` against a real Postgres holding the application's schema."""

from __future__ import annotations

import socket

import psycopg
import pytest
from typer.testing import CliRunner

from catalog.registry import REGISTRY
from cdc.catalog_cli import app
from tests.e2e.test_cli_errors import assert_one_line_error, cdc

pytestmark = pytest.mark.integration

N = len(REGISTRY)


def run_sync(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(app, ["sync", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def catalog_rows(dsn: str, table: str) -> dict[str, tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT event_type, name, description, category, payload_schema_ref, updated_at FROM {table}"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_sync_is_idempotent_on_the_application_catalog(db_dsn: str) -> None:
    assert run_sync("--dsn", db_dsn) == f"public.system_event_catalog: {N} inserted, 0 updated, 0 unchanged"
    first = catalog_rows(db_dsn, "system_event_catalog")
    assert run_sync("--dsn", db_dsn) == f"public.system_event_catalog: 0 inserted, 0 updated, {N} unchanged"
    assert catalog_rows(db_dsn, "system_event_catalog") == first  # updated_at not bumped either
    for event_type, spec in REGISTRY.items():
        assert first[event_type][:4] == (spec.name, spec.description, spec.category, spec.payload_schema_ref)


def test_sync_updates_only_what_differs_and_leaves_other_rows_alone(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as conn:
        conn.execute(
            "INSERT INTO system_event_catalog (event_type, name, description, category, payload_schema, "
            "payload_schema_ref) VALUES ('TICKET_CREATED', 'Ticket Created', 'old text', 'Tickets', "
            "'{\"type\": \"object\"}', 'payload.TicketCreated.v1'), "
            "('INVOICE_SENT', 'Invoice Sent', 'Invoice delivered to customer.', 'Billing', NULL, "
            "'payload.InvoiceSent.v1')"
        )
    assert run_sync("--dsn", db_dsn) == (
        f"public.system_event_catalog: {N - 1} inserted, 1 updated, 0 unchanged"
    )
    with psycopg.connect(db_dsn) as conn:
        created = conn.execute(
            "SELECT description, payload_schema FROM system_event_catalog WHERE event_type = 'TICKET_CREATED'"
        ).fetchone()
        invoice = conn.execute(
            "SELECT name, payload_schema_ref FROM system_event_catalog WHERE event_type = 'INVOICE_SENT'"
        ).fetchone()
    assert created == (REGISTRY["TICKET_CREATED"].description, {"type": "object"})
    assert invoice == ("Invoice Sent", "payload.InvoiceSent.v1")


def test_sync_without_the_application_table_writes_the_watchers_copy(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as conn:
        conn.execute("DROP TABLE system_event_catalog")
    env = {"CDC_DSN": db_dsn}
    assert run_sync(env=env) == f"cdc.event_catalog: {N} inserted, 0 updated, 0 unchanged"
    assert run_sync(env=env) == f"cdc.event_catalog: 0 inserted, 0 updated, {N} unchanged"
    assert set(catalog_rows(db_dsn, "cdc.event_catalog")) == set(REGISTRY)


def test_sync_refuses_an_application_table_without_schema_refs(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as conn:
        conn.execute("ALTER TABLE system_event_catalog DROP COLUMN payload_schema_ref")
    res = cdc("catalog", "sync", "--dsn", db_dsn)
    assert_one_line_error(res, "payload_schema_ref", "migrations")
    assert res.returncode == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("dsn", "code", "needle"),
    [
        (f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres", 3, "cannot reach the server"),
        ("host=localhost port", 1, "connection string"),
    ],
    ids=["unreachable", "malformed"],
)
def test_sync_connection_errors_are_one_line(dsn: str, code: int, needle: str) -> None:
    res = cdc("catalog", "sync", "--dsn", dsn)
    assert_one_line_error(res, needle)
    assert res.returncode == code
