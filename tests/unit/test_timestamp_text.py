"""A timestamp column's JSON form from the text the replication session (``DateStyle=ISO``,
``TimeZone=UTC``) writes: the canonical text of the instant (milliseconds truncated), a
``timestamp`` read as UTC, another zone converted; what is no instant is the loader's to refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.forms import format_timestamp
from cdc.pgoutput.messages import Column, Relation
from cdc.values import TIMESTAMP_MEMO, RowShape, timestamp_json

SHAPE = RowShape(
    Relation(1, "public", "t", "f", (Column(0, "tz", 1184, -1), Column(0, "naive", 1114, -1))),
    None,
)
TZ, NAIVE = SHAPE.json_converters()


def server_text(value: datetime, zone: str) -> bytes:
    """What Postgres writes with ``DateStyle=ISO``: the fraction without trailing zeros (none
    when whole), then the zone for a timestamptz."""
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return (text + zone).encode()


def loader_path(i: int, raw: bytes) -> str:
    return timestamp_json(SHAPE.load(i, raw, False))


instants = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999))


@given(instants)
def test_the_utc_text_of_a_timestamptz_is_the_canonical_text(value: datetime) -> None:
    raw = server_text(value, "+00")
    assert TZ(raw) == loader_path(0, raw) == format_timestamp(value.replace(tzinfo=UTC))


@given(instants)
def test_the_text_of_a_timestamp_is_read_as_utc(value: datetime) -> None:
    raw = server_text(value, "")
    assert NAIVE(raw) == loader_path(1, raw) == format_timestamp(value.replace(tzinfo=UTC))


@given(instants, st.sampled_from(["+05:30", "-08", "+01", "-00:30", "+14"]))
def test_another_zone_is_converted_to_utc(value: datetime, zone: str) -> None:
    raw = server_text(value, zone)
    sign = 1 if zone[0] == "+" else -1
    hours, _, minutes = zone[1:].partition(":")
    offset = timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))
    instant = value.replace(tzinfo=offset)
    if not datetime(1, 1, 2, tzinfo=UTC) <= instant <= datetime(9999, 12, 30, tzinfo=UTC):
        return  # outside the years format_timestamp writes
    assert TZ(raw) == format_timestamp(instant)


@pytest.mark.parametrize(
    ("i", "raw", "expected"),
    [
        (0, b"2026-01-02 03:04:05+00", "2026-01-02T03:04:05.000Z"),
        (0, b"2026-01-02 03:04:05.5+00", "2026-01-02T03:04:05.500Z"),
        (0, b"2026-01-02 03:04:05.0009+00", "2026-01-02T03:04:05.000Z"),  # truncated, not rounded
        (0, b"2026-01-02 03:04:05.999999+00", "2026-01-02T03:04:05.999Z"),
        (0, b"2024-02-29 23:59:59.123+00", "2024-02-29T23:59:59.123Z"),
        (0, b"2026-01-02 03:04:05+01", "2026-01-02T02:04:05.000Z"),
        (1, b"0999-12-31 23:59:59.9", "0999-12-31T23:59:59.900Z"),
        (1, b"2026-01-02 03:04:05.25", "2026-01-02T03:04:05.250Z"),
    ],
)
def test_examples(i: int, raw: bytes, expected: str) -> None:
    assert SHAPE.json_converters()[i](raw) == expected == loader_path(i, raw)


@pytest.mark.parametrize(
    ("i", "raw"),
    [(0, b"infinity"), (0, b"-infinity"), (0, b"2026-01-02 03:04:05+00 BC"), (1, b"12026-01-02 03:04:05")],
)
def test_what_is_no_instant_is_the_loaders_to_refuse(i: int, raw: bytes) -> None:
    conv = SHAPE.json_converters()[i]
    try:
        expected: object = loader_path(i, raw)
    except Exception as exc:  # the loader's refusal stays the answer
        with pytest.raises(type(exc)):
            conv(raw)
    else:
        assert conv(raw) == expected


def memo_of(conv: object) -> dict[bytes, str]:
    """The converter's memo (the one dict its closure holds)."""
    cells = getattr(conv, "__closure__", None) or ()
    (memo,) = [c.cell_contents for c in cells if isinstance(c.cell_contents, dict)]
    return memo  # type: ignore[no-any-return]


def test_a_recurring_text_keeps_its_answer_past_the_memos_bound() -> None:
    """The converter keeps the canonical form of the texts it saw last (at most TIMESTAMP_MEMO
    per column): the same answer as the loader's for a text seen before and after the memo
    filled and was cleared; each column has a memo of its own; a refused text is refused again
    and never kept."""
    shape = RowShape(
        Relation(2, "public", "m", "f", (Column(0, "at", 1184, -1), Column(0, "naive", 1114, -1)))
    )
    conv, naive = shape.json_converters()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    texts = [
        server_text(start + timedelta(seconds=s, microseconds=s * 7), "+00")
        for s in range(TIMESTAMP_MEMO + 10)
    ]
    for _ in range(2):
        for raw in (*texts, texts[0]):
            assert conv(raw) == loader_path(0, raw)
    memo = memo_of(conv)
    assert texts[0] in memo and 0 < len(memo) <= TIMESTAMP_MEMO
    assert naive(texts[0][:-3]) == conv(texts[0])  # the same instant, in the other column's memo
    assert (
        memo_of(naive) is not memo and texts[0][:-3] not in memo and list(memo_of(naive)) == [texts[0][:-3]]
    )
    kept = len(memo)
    for _ in range(2):
        with pytest.raises(psycopg.DataError):  # the loader's own refusal, never memoised
            conv(b"2026-01-02 03:04:05+00 BC")
    assert len(memo) == kept
