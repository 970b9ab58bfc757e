"""Property tests: malformed or truncated pgoutput input only ever raises DecodeError."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.errors import DecodeError
from cdc.pgoutput import decode_message

GOLDEN = [
    bytes.fromhex(h)
    for fmt in ("text", "binary")
    for h in json.loads((Path(__file__).parent.parent / "fixtures" / "pgoutput_golden.json").read_text())[fmt]
]
KINDS = b"BCORYIUDTM"


def _decode_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(data)


@given(st.binary(max_size=300))
@settings(max_examples=400)
def test_random_bytes(data: bytes) -> None:
    _decode_or_decode_error(data)


@given(st.sampled_from(KINDS), st.binary(max_size=200))
@settings(max_examples=600)
def test_known_kind_with_random_body(kind: int, body: bytes) -> None:
    _decode_or_decode_error(bytes([kind]) + body)


@given(st.sampled_from(GOLDEN), st.data())
@settings(max_examples=600)
def test_every_truncation_of_a_real_message(msg: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=max(0, len(msg) - 1)))
    try:
        decode_message(msg[:cut])
    except DecodeError:
        return
    raise AssertionError("a truncated message decoded without error")


@given(st.sampled_from(GOLDEN), st.data())
@settings(max_examples=600)
def test_byte_flips_of_real_messages(msg: bytes, data: st.DataObject) -> None:
    pos = data.draw(st.integers(min_value=0, max_value=len(msg) - 1))
    val = data.draw(st.integers(min_value=0, max_value=255))
    mutated = msg[:pos] + bytes([val]) + msg[pos + 1 :]
    _decode_or_decode_error(mutated)
