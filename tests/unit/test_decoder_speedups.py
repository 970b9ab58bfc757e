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

pytestmark = pytest.mark.skipif(
    not decoder.SPEEDUPS, reason="the compiled decoder is not in use (CDC_IMPL=python or not built)"
)

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
    """CDC_IMPL=python runs the pure-Python twins, as a build without a C compiler does."""
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
    for flag in ("c", "python"):
        env = {**os.environ, "CDC_IMPL": flag}
        out = subprocess.run(
            [sys.executable, "-c", script], input=hexes, capture_output=True, text=True, env=env, check=True
        )
        runs[flag] = json.loads(out.stdout)
    assert runs["c"][0] is True and runs["python"][0] is False
    assert runs["c"][1:] == runs["python"][1:] and len(runs["python"]) == len(GOLDEN) + 1


def test_has_unchanged_agrees_with_membership() -> None:
    cases = [
        (),
        (b"x",),
        (None, b"u"),
        (b"a", UNCHANGED_TOAST),
        (UNCHANGED_TOAST,),
        tuple(b"%d" % i for i in range(60)),
    ]
    for values in cases:
        assert (
            decoder.has_unchanged(values) is decoder._py_has_unchanged(values) is (UNCHANGED_TOAST in values)
        )
    assert decoder.has_unchanged is not decoder._py_has_unchanged
    with pytest.raises(TypeError):
        decoder.has_unchanged([UNCHANGED_TOAST])  # type: ignore[arg-type]


def _rows_both(buf: bytes) -> tuple[object, object]:
    """The Python handlers (on the compiled splitter, held equal above) and decode_row."""
    out = []
    try:
        msg, pos = decoder._DISPATCH[buf[0]](buf)
        out.append(("ok", msg) if pos == len(buf) else ("error", "trailing"))
    except DecodeError as exc:
        out.append(("error", str(exc)))
    except (IndexError, ValueError, struct.error) as exc:
        out.append(("error", f"malformed or truncated pgoutput message: {type(exc).__name__}"))
    try:
        out.append(("ok", decoder._decode_row(buf)))
    except DecodeError as exc:
        out.append(("error", str(exc)))
    return out[0], out[1]


def test_every_golden_row_message_decodes_the_same_whole() -> None:
    kinds = set()
    for msg in ROWS:
        py, c = _rows_both(msg)
        assert py == c and py[0] == "ok"  # type: ignore[index]
        assert type(py[1]) is type(c[1])  # type: ignore[index]
        kinds.add(msg[:1])
        assert decoder.decode_message(msg) == py[1]  # type: ignore[index]
    assert kinds == {b"I", b"U", b"D"}


@given(st.sampled_from(ROWS), st.data())
@settings(max_examples=500)
def test_truncated_and_flipped_row_messages_agree(msg: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=1, max_value=len(msg)))
    pos = data.draw(st.integers(min_value=0, max_value=len(msg) - 1))
    val = data.draw(st.integers(min_value=0, max_value=255))
    extra = data.draw(st.binary(max_size=3))
    flipped = msg[:pos] + bytes([val]) + msg[pos + 1 :]
    for candidate in (msg[:cut], flipped, msg + extra):
        if candidate[:1] not in (b"I", b"U", b"D"):
            continue
        py, c = _rows_both(candidate)
        assert py[0] == c[0], (candidate.hex(), py, c)  # type: ignore[index]
        if py[0] == "ok":  # type: ignore[index]
            assert py == c
        elif not str(py[1]).startswith(("row image", "column value", "unknown tuple")):  # type: ignore[index]
            # the message-level errors read the same (the splitter's own are held equal above)
            assert py == c or py[1] == "trailing", (candidate.hex(), py, c)  # type: ignore[index]


def test_row_message_errors_read_as_before() -> None:
    update = next(m for m in ROWS if m[:1] == b"U")
    cases = {
        update[:3]: "malformed or truncated pgoutput message: error",
        update[:5] + b"X": "update without a new tuple",
        b"I" + update[1:5] + b"O": "insert without a new tuple",
        b"D" + update[1:5] + b"N": "delete without an old tuple",
        update + b"\x00\x00": "2 unexpected trailing bytes after pgoutput message",
    }
    for buf, message in cases.items():
        with pytest.raises(DecodeError) as exc:
            decoder.decode_message(buf)
        assert str(exc.value) == message


def test_row_images_read_lazily_behave_as_their_tuples() -> None:
    """decode_row keeps row images as offsets into the message (Values): every tuple operation
    the pipeline uses answers as on the tuple the Python handlers build."""
    seen = 0
    for msg in ROWS:
        lazy = decoder._decode_row(msg)
        eager, _ = decoder._DISPATCH[msg[0]](msg)
        for mine, theirs in (
            (lazy.new if msg[:1] != b"D" else lazy.old, eager.new if msg[:1] != b"D" else eager.old),
        ):
            values, expected = mine.values, theirs.values
            assert type(values).__name__ == "Values" and type(expected) is tuple
            assert values == expected and expected == values
            assert (values != expected) is False
            assert len(values) == len(expected) and list(values) == list(expected)
            assert repr(values) == repr(expected) and values[1:] == expected[1:]
            assert values[-1] == expected[-1] and values[0] is values[0]
            assert (UNCHANGED_TOAST in values) is (UNCHANGED_TOAST in expected)
            assert decoder.has_unchanged(values) is decoder._py_has_unchanged(expected)
            with pytest.raises(IndexError):
                values[len(expected)]
            with pytest.raises(TypeError):
                hash(values)
            seen += 1
        if msg[:1] == b"U" and lazy.old is not None:
            names = tuple(f"c{i}" for i in range(len(lazy.new.values)))
            expected_changed = decoder._py_changed_names(names, eager.old.values, eager.new.values)
            assert decoder.changed_names(names, lazy.old.values, lazy.new.values) == expected_changed
            assert decoder.changed_names(names, lazy.old.values, eager.new.values) == expected_changed
            assert (lazy.old.values == lazy.new.values) is (eager.old.values == eager.new.values)
    assert seen >= len(ROWS)


def test_a_message_that_is_not_bytes_is_split_eagerly() -> None:
    update = next(m for m in ROWS if m[:1] == b"U")
    msg = decoder._decode_row(memoryview(update))
    assert type(msg.new.values) is tuple and msg == decoder._decode_row(update)


def test_a_position_past_any_message_is_a_decode_error() -> None:
    import sys

    for pos in (sys.maxsize, sys.maxsize - 1, 2**40):
        with pytest.raises(DecodeError):
            decoder._split(b"\x00\x01n", pos)
