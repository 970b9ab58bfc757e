"""The canonical text forms (catalog/forms.py): instants, LSNs, uuids — and that they are the only ones.

Property tests over the whole domain of each form, the refusals (a naive datetime, text
without a zone, a malformed LSN or uuid) with their error type, and a check that the engine and
the derivers use these functions rather than formatting times or LSNs themselves.
"""

from __future__ import annotations

import ast
import re
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.errors import CdcError, FormError
from catalog.forms import (
    CANONICAL_UUID_PATTERN,
    TIMESTAMP_PATTERN,
    UUID_PATTERN,
    format_lsn,
    format_timestamp,
    format_uuid,
    parse_lsn,
    parse_timestamp,
)

ROOT = Path(__file__).resolve().parents[2]
ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=-7, minutes=-30)), timezone(timedelta(hours=14)), timezone(timedelta(0))]
)
# Instants whose UTC reading is a year 1-9999 in any of the zones above
AWARE = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES)


def _ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


# --- instants ----------------------------------------------------------------------------------


def test_format_timestamp_examples() -> None:
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)) == "2026-01-02T03:04:05.678Z"
    berlin = timezone(timedelta(hours=1))
    assert format_timestamp(datetime(2026, 1, 2, 4, 4, 5, tzinfo=berlin)) == "2026-01-02T03:04:05.000Z"
    assert format_timestamp(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"


@given(AWARE)
def test_format_timestamp_is_the_instant_truncated_to_milliseconds(value: datetime) -> None:
    text = format_timestamp(value)
    assert re.fullmatch(TIMESTAMP_PATTERN, text), text
    assert parse_timestamp(text) == _ms(value.astimezone(UTC))
    assert value - parse_timestamp(text) < timedelta(milliseconds=1)


@given(AWARE)
def test_the_zone_does_not_change_the_text(value: datetime) -> None:
    assert format_timestamp(value) == format_timestamp(value.astimezone(UTC))


@given(st.datetimes())
def test_a_naive_datetime_is_refused(value: datetime) -> None:
    with pytest.raises(FormError, match="naive datetime has no instant"):
        format_timestamp(value)


@pytest.mark.parametrize("value", [date(2026, 1, 2), "2026-01-02T03:04:05.678Z", 0, None])
def test_format_timestamp_takes_only_datetimes(value: object) -> None:
    with pytest.raises(FormError):
        format_timestamp(value)  # type: ignore[arg-type]


def test_an_instant_beyond_year_9999_in_utc_is_refused() -> None:
    with pytest.raises(FormError):
        format_timestamp(datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2))))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05.678Z", datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)),
        ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02T05:04:05.5+02:00", datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
        ("2026-01-02 03:04:05.678901+00", datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_gives_the_instant_in_utc(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected and parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text", ["2026-01-02T03:04:05.678", "2026-01-02", "yesterday", "", "2026-02-30T00:00:00Z"]
)
def test_parse_timestamp_refuses_text_without_an_instant(text: str) -> None:
    with pytest.raises(FormError) as info:
        parse_timestamp(text)
    assert text not in str(info.value) or not text  # never echoes a value (it may come from a row)


@given(st.dates(min_value=date(1, 1, 1)), st.integers(min_value=0, max_value=86_399_999))
def test_the_pattern_accepts_exactly_the_calendar(day: date, ms: int) -> None:
    when = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert re.fullmatch(TIMESTAMP_PATTERN, format_timestamp(when))


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29T00:00:00.000Z",  # not a leap year
        "1900-02-29T00:00:00.000Z",  # a century not divisible by 400
        "2026-04-31T00:00:00.000Z",
        "2026-02-30T00:00:00.000Z",
        "2026-13-01T00:00:00.000Z",
        "0000-01-01T00:00:00.000Z",
        "2026-01-02T24:00:00.000Z",
        "2026-01-02T03:04:60.000Z",
        "2026-01-02T03:04:05.67Z",
        "2026-01-02T03:04:05.678+00:00",
        "2026-01-02T03:04:05.678Z\n",
    ],
)
def test_the_pattern_refuses_what_is_not_canonical(text: str) -> None:
    assert not re.fullmatch(TIMESTAMP_PATTERN, text)


@pytest.mark.parametrize(
    "text", ["2000-02-29T00:00:00.000Z", "2024-02-29T12:00:00.000Z", "0004-02-29T00:00:00.000Z"]
)
def test_the_pattern_knows_leap_days(text: str) -> None:
    assert re.fullmatch(TIMESTAMP_PATTERN, text)
    assert format_timestamp(parse_timestamp(text)) == text


# --- LSNs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lsn", "text"),
    [(0, "0/0"), (0x16B3748, "0/16B3748"), ((1 << 32) | 0xAB, "1/AB"), ((1 << 64) - 1, "FFFFFFFF/FFFFFFFF")],
)
def test_lsn_examples(lsn: int, text: str) -> None:
    assert format_lsn(lsn) == text
    assert parse_lsn(text) == lsn


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_lsn_round_trip(lsn: int) -> None:
    text = format_lsn(lsn)
    assert parse_lsn(text) == lsn
    assert text == text.upper()
    assert all(part == "0" or not part.startswith("0") for part in text.split("/"))


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_parse_lsn_takes_any_case_leading_zeros_and_blanks(lsn: int) -> None:
    hi, lo = lsn >> 32, lsn & 0xFFFFFFFF
    assert parse_lsn(f" {hi:08x}/{lo:08x}\n") == lsn


@pytest.mark.parametrize("bad", [-1, 1 << 64])
def test_format_lsn_range(bad: int) -> None:
    with pytest.raises(FormError, match="out of range"):
        format_lsn(bad)


@pytest.mark.parametrize(
    "bad", ["", "0", "0/", "/0", "0/0/0", "G/0", "0x1/0", "123456789/0", "0/-1", "1_0/0"]
)
def test_parse_lsn_refuses_malformed_text(bad: str) -> None:
    with pytest.raises(FormError) as info:
        parse_lsn(bad)
    # an LSN never comes from a row: the operator is shown what was given
    assert "expected the X/Y form" in str(info.value) and repr(bad) in str(info.value)


# --- uuids -------------------------------------------------------------------------------------


@given(st.uuids())
def test_uuid_text_is_lower_case(value: uuid.UUID) -> None:
    text = str(value)
    assert format_uuid(value) == format_uuid(text) == format_uuid(text.upper()) == text
    assert re.fullmatch(CANONICAL_UUID_PATTERN, text) and re.fullmatch(UUID_PATTERN, text.upper())


@pytest.mark.parametrize(
    "bad", ["", "not-a-uuid", "0b5f4c1e6f1a4d6e9a550c8e7f3b2a10", "0b5f4c1e-6f1a-4d6e-9a55-0c8e7f3b2a1", 7]
)
def test_format_uuid_refuses_other_values(bad: object) -> None:
    with pytest.raises(FormError):
        format_uuid(bad)  # type: ignore[arg-type]


# --- one definition ------------------------------------------------------------------------------


def test_form_errors_are_cdc_errors_and_value_errors() -> None:
    assert issubclass(FormError, CdcError) and issubclass(FormError, ValueError)


def test_the_engine_and_the_derivers_use_these_forms() -> None:
    import cdc.lsn
    import cdc.values
    import derivers.base

    assert (cdc.lsn.format_lsn, cdc.lsn.parse_lsn) == (format_lsn, parse_lsn)
    assert (derivers.base.canonical_time, derivers.base.parse_time) == (format_timestamp, parse_timestamp)
    assert cdc.values.canonical_timestamp is format_timestamp


def _formatting_spots(tree: ast.AST) -> list[int]:
    """Lines that write a time or an LSN by hand: strftime, isoformat(timespec=…), a "Z"
    suffix, or an LSN's ``:X}/{`` format."""
    spots = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "strftime" or any(k.arg == "timespec" for k in node.keywords):
                spots.append(node.lineno)
        elif isinstance(node, ast.Constant) and node.value in ("Z", "+00:00"):
            spots.append(node.lineno)
        elif isinstance(node, ast.JoinedStr):
            pieces = [
                v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
            ]
            if any(p.endswith("Z") for p in pieces) or any(
                isinstance(v, ast.FormattedValue) and "X" in ast.unparse(v.format_spec or ast.Constant(""))
                for v in node.values
            ):
                spots.append(node.lineno)
    return spots


def test_no_other_module_formats_times_or_lsns() -> None:
    found = {}
    for package in ("cdc", "derivers", "catalog"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "catalog" / "forms.py":
                continue
            spots = _formatting_spots(ast.parse(path.read_text(encoding="utf-8")))
            if spots:
                found[str(path.relative_to(ROOT))] = spots
    assert found == {}


def test_row_json_writes_timestamps_in_the_canonical_form() -> None:
    """``cdc tail`` and the row images write timestamps through catalog.forms: a timestamptz
    value as its instant; a ``timestamp without time zone`` value read as UTC (cdc/values.py's
    documented convention), never in the machine's zone."""
    from cdc.values import dumps

    aware = datetime(2026, 1, 2, 4, 4, 5, 678901, tzinfo=timezone(timedelta(hours=1)))
    assert dumps({"at": aware}) == b'{"at":"2026-01-02T03:04:05.678Z"}'
    assert dumps({"at": datetime(2026, 1, 2, 3, 4, 5, 678901)}) == b'{"at":"2026-01-02T03:04:05.678Z"}'
