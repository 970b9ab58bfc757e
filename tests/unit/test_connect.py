"""What :func:`cdc.connect.conninfo` adds to a DSN, and what it leaves to the DSN and libpq's PG* variables."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from psycopg.conninfo import conninfo_to_dict

import cdc.connect
from cdc.connect import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_STATEMENT_TIMEOUT_S,
    SESSION_OPTIONS,
    Pool,
    conninfo,
    set_defaults,
)
from cdc.errors import ServerUnreachable
from cdc.localpg import free_port

DSN = "host=db.example port=5432 user=cdc dbname=psa"


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("PGCONNECT_TIMEOUT", "PGOPTIONS", "PGAPPNAME"):
        monkeypatch.delenv(name, raising=False)
    yield
    set_defaults(connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S, statement_timeout_s=DEFAULT_STATEMENT_TIMEOUT_S)


def applied(dsn: str = DSN, **kw: bool) -> Mapping[str, object]:
    return conninfo_to_dict(conninfo(dsn, purpose="watch cdc_events: store", **kw))


def test_the_default_connect_timeout_is_ten_seconds() -> None:
    assert DEFAULT_CONNECT_TIMEOUT_S == 10
    assert applied()["connect_timeout"] == "10"


def test_the_configured_connect_timeout_applies() -> None:
    set_defaults(connect_timeout_s=3, statement_timeout_s=DEFAULT_STATEMENT_TIMEOUT_S)
    assert applied()["connect_timeout"] == "3"


def test_a_connect_timeout_of_the_dsn_or_pgconnect_timeout_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert applied(f"{DSN} connect_timeout=4")["connect_timeout"] == "4"
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "7")
    assert "connect_timeout" not in applied()  # libpq reads the variable itself


def test_the_application_name_is_a_fallback() -> None:
    assert applied()["fallback_application_name"] == "cdc watch cdc_events: store"
    assert applied(f"{DSN} application_name=mine")["application_name"] == "mine"  # libpq prefers it


def test_a_bounded_connection_has_the_statement_timeout_before_the_dsns_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "options" not in applied()
    assert applied(bounded=True)["options"] == "-c statement_timeout=60000"
    set_defaults(connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S, statement_timeout_s=1.5)
    assert applied(bounded=True)["options"] == "-c statement_timeout=1500"
    own = "-c statement_timeout=5s"  # later on the server's command line: it wins
    assert applied(f"{DSN} options='{own}'", bounded=True)["options"] == f"-c statement_timeout=1500 {own}"
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=64MB")  # unused by libpq once options is set: kept
    assert applied(bounded=True)["options"] == "-c statement_timeout=1500 -c work_mem=64MB"


def test_a_replication_connection_pins_the_value_formats_after_the_dsns_options() -> None:
    params = applied(f"{DSN} options='-c TimeZone=Europe/Berlin'", replication=True)
    assert params["replication"] == "database"
    assert params["options"] == f"-c TimeZone=Europe/Berlin {SESSION_OPTIONS}"


def test_a_pool_that_cannot_connect_says_why_as_a_direct_connection_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool only times out; the error an operator reads is libpq's own, translated."""
    monkeypatch.setattr(cdc.connect, "POOL_WAIT_S", 0.1)
    port = free_port()  # nothing listens there
    pool = Pool(f"host=127.0.0.1 port={port} user=cdc dbname=psa", purpose="watch cdc_events: pool")
    try:
        with (
            pytest.raises(ServerUnreachable, match=f"cannot reach the server: .*port {port} failed"),
            pool.connection(),
        ):
            pass
    finally:
        pool.close()
