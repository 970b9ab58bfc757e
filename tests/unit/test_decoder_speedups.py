"""The compiled tuple splitter and column differ equal their pure-Python twins.

Both twins must agree on every real message (golden fixtures, text and binary), and on
random, truncated and byte-flipped row images: the same values and binary mask, or both
a DecodeError.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.errors import DecodeError
from cdc.pgoutput import decoder
from cdc.pgoutput.messages import UNCHANGED_TOAST

pytestmark = pytest.mark.skipif(not decoder.SPEEDUPS, reason="the C extension is not built")

FIXTURES = json.loads((Path(__file__).parent.parent / "fixtures" / "pgoutput_golden.json").read_text())
GOLDEN = [bytes.fromhex(h) for fmt in ("text", "binary") for h in FIXTURES[fmt]]
# Row messages and where their first tuple starts: I/D after (oid, 'N'|'K'|'O'), U likewise.
ROWS = [m for m in GOLDEN if m[:1] in (b"I", b"U", b"D")]


def _both(buf: bytes, pos: int) -> tuple[object, object]:
    out = []
    for split in (decoder._py_tuple, decoder._tuple):
        try:
            td, end = split(buf, pos)
            out.append(("ok", td.values, td.binary_mask, end))
        except DecodeError:
            out.append(("error",))
        except (IndexError, ValueError, struct.error):  # the Python twin leaves these to decode_message
            out.append(("error",))
    return out[0], out[1]


def test_the_extension_is_in_use() -> None:
    assert decoder._tuple is not decoder._py_tuple


def test_every_golden_row_image_splits_the_same() -> None:
    assert len(ROWS) >= 6
    seen_kinds = set()
    for msg in ROWS:
        py, c = _both(msg, 6)
        assert py == c and py[0] == "ok"
        seen_kinds |= {type(v) for v in py[1]}  # type: ignore[index]
    assert bytes in seen_kinds and type(None) in seen_kinds


@given(st.sampled_from(ROWS), st.data())
@settings(max_examples=500)
def test_truncated_and_flipped_images_agree(msg: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=6, max_value=len(msg)))
    pos = data.draw(st.integers(min_value=0, max_value=len(msg) - 1))
    val = data.draw(st.integers(min_value=0, max_value=255))
    for candidate in (msg[:cut], msg[:pos] + bytes([val]) + msg[pos + 1 :]):
        py, c = _both(candidate, 6)
        assert py[0] == c[0]  # type: ignore[index]
        if py[0] == "ok":  # type: ignore[index]
            assert py == c


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just(b"t"), st.binary(max_size=20)),
            st.tuples(st.just(b"b"), st.binary(max_size=20)),
            st.just((b"n", b"")),
            st.just((b"u", b"")),
        ),
        max_size=80,
    )
)
@settings(max_examples=300)
def test_generated_images_with_binary_columns_past_64(cols: list[tuple[bytes, bytes]]) -> None:
    body = len(cols).to_bytes(2, "big")
    for kind, value in cols:
        body += kind + (len(value).to_bytes(4, "big") + value if kind in (b"t", b"b") else b"")
    py, c = _both(body, 0)
    assert py == c and py[0] == "ok"  # type: ignore[index]
    assert py[2] == sum(1 << i for i, (k, _) in enumerate(cols) if k == b"b")  # type: ignore[index]
    assert list(py[1]).count(UNCHANGED_TOAST) == sum(k == b"u" for k, _ in cols)  # type: ignore[index]


@given(
    st.lists(
        st.tuples(st.sampled_from([b"a", b"b", None, UNCHANGED_TOAST]), st.sampled_from([b"a", b"bb", None])),
        max_size=60,
    )
)
def test_changed_names_agree(pairs: list[tuple[object, object]]) -> None:
    names = tuple(f"c{i}" for i in range(len(pairs)))
    before = tuple(p[0] for p in pairs)
    after = tuple(p[1] for p in pairs)
    assert decoder.changed_names(names, before, after) == decoder._py_changed_names(names, before, after)  # type: ignore[arg-type]


def test_changed_names_rejects_uneven_images() -> None:
    with pytest.raises(ValueError):
        decoder.changed_names(("a", "b"), (b"x",), (b"x", b"y"))


def test_the_built_extension_is_not_older_than_its_source() -> None:
    from cdc.pgoutput import _speedups

    built = Path(_speedups.__file__)
    source = Path(decoder.__file__).with_name("_speedups.c")
    if built.parent == source.parent:  # an in-place (editable) build
        assert built.stat().st_mtime >= source.stat().st_mtime, "stale build: run `make venv`"


def test_without_the_extension_every_golden_message_decodes_the_same() -> None:
    """CDC_NO_SPEEDUPS=1 runs the pure-Python twins, as a build without a C compiler does."""
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from cdc.pgoutput import decoder\n"
        "print(json.dumps([decoder.SPEEDUPS] + [repr(decoder.decode_message(bytes.fromhex(h)))"
        " for h in json.load(sys.stdin)]))\n"
    )
    hexes = json.dumps([m.hex() for m in GOLDEN])
    runs = {}
    for flag in ("", "1"):
        env = {**os.environ, "CDC_NO_SPEEDUPS": flag}
        out = subprocess.run(
            [sys.executable, "-c", script], input=hexes, capture_output=True, text=True, env=env, check=True
        )
        runs[flag] = json.loads(out.stdout)
    assert runs[""][0] is True and runs["1"][0] is False
    assert runs[""][1:] == runs["1"][1:] and len(runs["1"]) == len(GOLDEN) + 1
