"""Round trip through a real server: SQL writes → pgoutput → decoder → `cdc tail` JSON lines."""

from __future__ import annotations

import base64

import psycopg
import pytest

from .conftest import BackgroundTail, in_one_transaction, run_sql, setup_for_tail, tail_lines, wait_for

pytestmark = pytest.mark.integration

ALL_TYPES = """
CREATE TYPE cdc_test_mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE public.all_types (
    id          uuid PRIMARY KEY,
    t           text,
    vc          varchar(20),
    b           boolean,
    i2          smallint,
    i4          integer,
    i8          bigint,
    r           real,
    n           numeric(12, 4),
    d           date,
    tm          time,
    ts          timestamp,
    tstz        timestamptz,
    iv          interval,
    j           json,
    jb          jsonb,
    ta          text[],
    ua          uuid[],
    ia          integer[],
    by          bytea,
    e           cdc_test_mood,
    rs          ticket_response_state,
    big         text
);
ALTER TABLE public.all_types ALTER COLUMN big SET STORAGE EXTERNAL;
"""

UID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
INSERT = f"""
INSERT INTO public.all_types VALUES (
  '{UID}', 'héllo "world"', 'short', true, 12, 123456, 9007199254740993, 1.5, 1234.5678,
  '2026-03-04', '05:06:07', '2026-03-04 05:06:07.891', '2026-03-04 05:06:07.891234+02',
  '1 day 02:03:04', '{{"a": [1, 2]}}', '{{"z": null, "k": "v"}}', '{{x,"y z",NULL}}',
  '{{{UID}}}', '{{1,2,3}}', '\\x00ff10', 'happy', 'awaiting_client', repeat('T', 25000)
)"""


def test_every_column_type_insert_update_delete_truncate(db_dsn: str) -> None:
    run_sql(db_dsn, ALL_TYPES)
    setup_for_tail(db_dsn, ("public.all_types",))
    run_sql(
        db_dsn,
        INSERT,
        "UPDATE public.all_types SET t = 'changed', big = big WHERE id = '"
        + UID
        + "'",  # big unchanged TOAST
        "UPDATE public.all_types SET big = repeat('U', 21000), i4 = NULL",  # TOAST value updated, a NULL
        "DELETE FROM public.all_types",
        INSERT,
        "TRUNCATE public.all_types",
    )
    lines = tail_lines(db_dsn, max_changes=6)
    assert [(x["table"], x["op"]) for x in lines] == [
        ("public.all_types", "insert"),
        ("public.all_types", "update"),
        ("public.all_types", "update"),
        ("public.all_types", "delete"),
        ("public.all_types", "insert"),
        ("public.all_types", "truncate"),
    ]
    ins = lines[0]["after"]
    assert ins == {
        "id": UID,
        "t": 'héllo "world"',
        "vc": "short",
        "b": True,
        "i2": 12,
        "i4": 123456,
        "i8": 9007199254740993,
        "r": 1.5,
        "n": "1234.5678",
        "d": "2026-03-04",
        "tm": "05:06:07",
        "ts": "2026-03-04T05:06:07.891Z",
        "tstz": "2026-03-04T03:04:05.891Z".replace("03:04:05", "03:06:07"),
        "iv": "1 day, 2:03:04",
        "j": {"a": [1, 2]},
        "jb": {"z": None, "k": "v"},
        "ta": ["x", "y z", None],
        "ua": [UID],
        "ia": [1, 2, 3],
        "by": base64.b64encode(b"\x00\xff\x10").decode(),
        "e": "happy",
        "rs": "awaiting_client",
        "big": "T" * 25000,
    }
    assert lines[0]["before"] is None and lines[0]["unknown"] == []
    unchanged = lines[1]
    assert unchanged["before"]["t"] == 'héllo "world"' and unchanged["after"]["t"] == "changed"
    assert unchanged["after"]["big"] == "T" * 25000  # unchanged TOAST filled from the old image
    assert unchanged["unknown"] == []
    updated = lines[2]
    assert updated["after"]["big"] == "U" * 21000 and updated["before"]["big"] == "T" * 25000
    assert updated["after"]["i4"] is None
    assert lines[3]["after"] is None and lines[3]["before"]["id"] == UID
    assert lines[5]["before"] is None and lines[5]["after"] is None
    for x in lines:
        assert x["lsn"].count("/") == 1 and x["lsn"] == x["lsn"].upper()
        assert x["commitTime"].endswith("Z") and len(x["commitTime"]) == 24
        assert isinstance(x["xid"], int)
    assert len({x["lsn"] for x in lines}) == 6


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_application_tables_and_multi_statement_transactions(db_dsn: str, tenant: str, binary: bool) -> None:
    setup_for_tail(db_dsn)
    in_one_transaction(
        db_dsn,
        f"INSERT INTO boards (tenant, board_name) VALUES ('{tenant}', 'Service Desk')",
        f"INSERT INTO statuses (tenant, name, status_type, order_number, is_closed) VALUES ('{tenant}', 'Open', 'ticket', 1, false)",
        f"UPDATE statuses SET order_number = 2 WHERE tenant = '{tenant}'",
    )
    lines = tail_lines(db_dsn, max_changes=3, binary=binary)
    assert [(x["table"], x["op"]) for x in lines] == [
        ("public.boards", "insert"),
        ("public.statuses", "insert"),
        ("public.statuses", "update"),
    ]
    assert len({(x["lsn"], x["xid"]) for x in lines}) == 1  # one transaction
    assert lines[1]["after"]["tenant"] == tenant and lines[1]["after"]["is_closed"] is False
    assert lines[2]["before"]["order_number"] == 1 and lines[2]["after"]["order_number"] == 2


def test_rolled_back_and_unpublished_changes_never_arrive(db_dsn: str, tenant: str) -> None:
    setup_for_tail(db_dsn)
    with psycopg.connect(db_dsn) as conn:
        conn.execute(f"INSERT INTO boards (tenant, board_name) VALUES ('{tenant}', 'Rolled back')")
        conn.rollback()
    run_sql(db_dsn, f"INSERT INTO clients (tenant, client_name) VALUES ('{tenant}', 'not watched')")
    run_sql(db_dsn, f"INSERT INTO boards (tenant, board_name) VALUES ('{tenant}', 'Kept')")
    lines = tail_lines(db_dsn, idle_exit=2.0)
    assert [(x["table"], x["after"]["board_name"]) for x in lines] == [("public.boards", "Kept")]


def test_alter_table_add_and_drop_column_while_streaming(db_dsn: str, tenant: str) -> None:
    setup_for_tail(db_dsn)
    ins = f"INSERT INTO boards (tenant, board_name) VALUES ('{tenant}', %s)"
    with BackgroundTail(db_dsn, max_changes=3) as bg:
        run_sql(db_dsn, ins, params=("before",))
        assert wait_for(lambda: len(bg.lines()) == 1)
        run_sql(db_dsn, "ALTER TABLE boards ADD COLUMN sla_note text DEFAULT 'n/a'")
        run_sql(db_dsn, ins, params=("added",))
        assert wait_for(lambda: len(bg.lines()) == 2)
        run_sql(
            db_dsn,
            "ALTER TABLE boards DROP COLUMN sla_note",
            "ALTER TABLE boards DROP COLUMN description",
        )
        run_sql(db_dsn, ins, params=("dropped",))
        bg.join()
    lines = bg.lines()
    assert [x["after"]["board_name"] for x in lines] == ["before", "added", "dropped"]
    assert "sla_note" not in lines[0]["after"]
    assert lines[1]["after"]["sla_note"] == "n/a"
    assert "sla_note" not in lines[2]["after"] and "description" not in lines[2]["after"]


def test_temporary_slot_consumes_nothing(db_dsn: str, tenant: str) -> None:
    setup_for_tail(db_dsn)
    with BackgroundTail(db_dsn, slot="cdc_tmp_view", temporary=True, max_changes=1) as bg:
        # the temporary slot starts at the current position: wait until it exists
        def slot_exists() -> bool:
            with psycopg.connect(db_dsn) as c:
                return (
                    c.execute(
                        "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'cdc_tmp_view'"
                    ).fetchone()
                    is not None
                )

        assert wait_for(slot_exists)
        run_sql(db_dsn, f"INSERT INTO boards (tenant, board_name) VALUES ('{tenant}', 'live')")
        bg.join()
    assert [x["after"]["board_name"] for x in bg.lines()] == ["live"]
    # the durable slot still holds the change: nothing was consumed from it
    assert [x["after"]["board_name"] for x in tail_lines(db_dsn, max_changes=1)] == ["live"]
