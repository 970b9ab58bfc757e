"""The shortcut of cdc.values for a timestamp's text against what a real server writes: the
texts of a replication-like session (``DateStyle=ISO``, ``TimeZone=UTC``) over a spread of
instants and fractions give the loader path's canonical text (tests/unit/test_timestamp_text.py
holds the rest)."""

from __future__ import annotations

import psycopg
import pytest

from cdc.values import timestamp_json

from ..unit.test_timestamp_text import SHAPE

pytestmark = pytest.mark.integration


def test_the_servers_texts(db_dsn: str) -> None:
    tz, naive = SHAPE.json_converters()
    with psycopg.connect(db_dsn, options="-c DateStyle=ISO -c TimeZone=UTC") as conn:
        rows = conn.execute(
            """SELECT t::text, t::timestamp::text FROM (
                 SELECT timestamptz '1000-01-01 00:00:00+00'
                        + random() * interval '9000 years' + (i % 7) * interval '1.0001 ms' AS t
                 FROM generate_series(1, 3000) AS i
                 UNION ALL VALUES ('2026-01-02 03:04:05+00'::timestamptz), ('2026-01-02 03:04:05.5+00'),
                                  ('2024-02-29 23:59:59.999999+00')) AS s"""
        ).fetchall()
    assert len(rows) == 3003
    for with_zone, without in rows:
        assert with_zone.endswith("+00")
        assert tz(with_zone.encode()) == timestamp_json(SHAPE.load(0, with_zone.encode(), False))
        assert naive(without.encode()) == timestamp_json(SHAPE.load(1, without.encode(), False))
