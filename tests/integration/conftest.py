"""Shared helpers for tests that stream from a real Postgres."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import pytest

from cdc.config import DEFAULT_TABLES
from cdc.provision import SetupReport, setup
from cdc.state import make_bootstrap_hook
from cdc.tail import StopFlag, TailOptions, run_tail
from derivers import default_derivers

SLOT = "cdc_events"
PUB = "cdc_events"
#: A durable slot of the tests' own for `cdc tail --slot`: tail refuses the watcher's slot.
TAIL_SLOT = "cdc_tail"


def run_sql(dsn: str, *statements: str, params: Any = None) -> None:
    """Each statement in its own autocommit transaction (one transaction per call if a list)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s, params)  # type: ignore[call-overload]


def in_one_transaction(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        for s in statements:
            conn.execute(s)  # type: ignore[call-overload]


def do_setup(dsn: str, extra_tables: tuple[str, ...] = (), tables: tuple[str, ...] | None = None) -> None:
    setup(dsn, slot=SLOT, publication=PUB, tables=(tables or DEFAULT_TABLES) + extra_tables)


def setup_with_state(
    dsn: str, *, slot: str = SLOT, publication: str = PUB, tables: tuple[str, ...] = DEFAULT_TABLES
) -> SetupReport:
    """``cdc setup`` as a watcher of the default derivers needs it: the publication, the slot and
    the reference state bootstrapped from the slot's snapshot."""
    return setup(
        dsn,
        slot=slot,
        publication=publication,
        tables=tables,
        bootstrap=make_bootstrap_hook(default_derivers()),
    )


def setup_for_tail(dsn: str, extra_tables: tuple[str, ...] = ()) -> None:
    """The publication and a durable slot (TAIL_SLOT) no watcher's records name, for tail to consume."""
    setup(dsn, slot=SLOT, publication=PUB, tables=DEFAULT_TABLES + extra_tables, create_slot=False)
    run_sql(dsn, f"SELECT pg_create_logical_replication_slot('{TAIL_SLOT}', 'pgoutput')")


def tail_lines(
    dsn: str,
    *,
    slot: str | None = TAIL_SLOT,
    max_changes: int | None = None,
    idle_exit: float | None = 1.5,
    binary: bool = False,
    temporary: bool = False,
) -> list[dict[str, Any]]:
    out = io.BytesIO()
    run_tail(
        TailOptions(
            dsn,
            slot,
            PUB,
            temporary=temporary,
            max_changes=max_changes,
            idle_exit=idle_exit,
            binary=binary,
            status_interval=1.0,
        ),
        out,
    )
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


class BackgroundTail:
    """run_tail in a thread, for tests that write while streaming."""

    def __init__(self, dsn: str, **kw: Any) -> None:
        self.out = io.BytesIO()
        self.stop = StopFlag()
        self.error: BaseException | None = None
        opts = TailOptions(
            dsn, kw.pop("slot", TAIL_SLOT), PUB, status_interval=kw.pop("status_interval", 1.0), **kw
        )

        def target() -> None:
            try:
                run_tail(opts, self.out, self.stop)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)

    def __enter__(self) -> BackgroundTail:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.stopped = True
        self.join()

    def join(self, timeout: float = 30) -> None:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.out.getvalue().splitlines()]


def wait_for(predicate: Callable[[], bool], timeout: float = 30, interval: float = 0.1) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture
def tenant(db_dsn: str) -> str:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO tenants (client_name, email) VALUES ('Acme MSP', 'ops@acme.test') RETURNING tenant::text"
        ).fetchone()
        assert row is not None
        return str(row[0])
