"""``cdc watch --sink …`` through the real command line: a bad ``--sink`` is one line and exit 1
before anything is streamed, and the JSON lines sink writes to whatever the path names —
a file, ``/dev/null``, a FIFO — fsyncing only what can be fsynced."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import orjson
import pytest

from tests.e2e.test_cli_errors import assert_one_line_error, cdc
from tests.integration.conftest import SLOT, setup_with_state
from tests.integration.sinks.helpers import as_uri
from tests.integration.sinks.workload import seed, status_updates

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

#: Status changes waiting in the slot; each is a TICKET_STATUS_CHANGED (and a TICKET_UPDATED).
PENDING = 2


@pytest.fixture
def pending(db_dsn: str) -> str:
    """A set-up database with PENDING events waiting in the slot (so a sink is really written)."""
    ids = seed(db_dsn, PENDING)
    setup_with_state(db_dsn, publication=SLOT)
    status_updates(db_dsn, ids, PENDING)
    return db_dsn


def watch_once(dsn: str, sink: str) -> subprocess.CompletedProcess[str]:
    return cdc("watch", "--once", "--dsn", dsn, "--sink", sink)


def delivered(res: subprocess.CompletedProcess[str]) -> int:
    """The event count of watch's closing line (``delivered N events from …``)."""
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("delivered "), res.stderr
    return int(last.split()[1])


# -- item 10: a bad --sink -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("redis://127.0.0.1:6379?bogus=1", "--sink redis: unknown option 'bogus'"),
        ("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", "--sink redis: unknown option 'ssl_cert_reqs'"),
        ("redis://127.0.0.1:6379?db=x", "--sink redis: Invalid value for 'db'"),
        ("redis://127.0.0.1:6379?maxlen=ten", "--sink redis: maxlen"),
        ("redis://127.0.0.1:6379?retry_initial=soon", "--sink redis: retry_initial"),
        ("nats://127.0.0.1:4222?bogus=1", "--sink nats: unknown option 'bogus'"),
        ("nats://127.0.0.1:4222?timeout=long", "--sink nats: duplicate_window, max_age and timeout"),
        ("nats://127.0.0.1:4222?max_event_bytes=1MB", "--sink nats: max_event_bytes"),
        ("postgres?bogus=1", "--sink postgres: unknown option 'bogus'"),
        ("postgres?max_event_bytes=0", "--sink postgres: max_event_bytes"),
        ("jsonl:-?bogus=1", "--sink jsonl: unknown option 'bogus'"),
        ("-?max_event_bytes=many", "--sink jsonl: max_event_bytes"),
        ("discard?retry_give_up=1", "--sink discard: unknown option 'retry_give_up'"),
        ("", "--sink is empty"),
        ("kafka://127.0.0.1:9092", "unknown --sink"),
    ],
)
def test_a_bad_sink_is_one_line_and_exit_1(pending: str, spec: str, needle: str) -> None:
    res = watch_once(pending, spec)
    assert_one_line_error(res, needle)
    assert res.returncode == 1  # needs a change, not worth retrying


def test_a_bad_option_of_the_outbox_in_another_database(pending: str, tmp_path: Path) -> None:
    jsonl = tmp_path / "x.jsonl"
    uri = as_uri(pending)
    res = watch_once(pending, uri + ("&" if "?" in uri else "?") + "max_event_bytes=x")
    assert_one_line_error(res, "--sink postgres: max_event_bytes")
    assert res.returncode == 1
    res = watch_once(pending, f"jsonl:{jsonl}?max_event_bytes=-1")
    assert_one_line_error(res, "--sink jsonl: max_event_bytes")
    assert res.returncode == 1 and not jsonl.exists()


# -- item 11: JSON lines to what is not a regular file, or to nowhere --------------------------


def test_jsonl_to_dev_null(pending: str) -> None:
    res = watch_once(pending, "jsonl:/dev/null")
    assert res.returncode == 0, res.stderr
    assert delivered(res) >= PENDING


def test_jsonl_to_a_fifo(pending: str, tmp_path: Path) -> None:
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    lines: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as f:  # returns when the watcher opens the other end
            lines.extend(f.read().splitlines())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    res = watch_once(pending, f"jsonl:{fifo}")
    if reader.is_alive():  # the watcher never opened it: give the reader its end of file
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(10)
    assert res.returncode == 0, res.stderr
    events = [orjson.loads(line) for line in lines]
    assert len(events) == delivered(res)
    assert [e["eventType"] for e in events].count("TICKET_STATUS_CHANGED") == PENDING


def test_jsonl_to_a_regular_file_is_appended(pending: str, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    out.write_bytes(b"")
    res = watch_once(pending, f"jsonl:{out}")
    assert res.returncode == 0, res.stderr
    assert len(out.read_bytes().splitlines()) == delivered(res) >= PENDING


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("", "--sink jsonl: no file given"),
        ("/nonexistent-dir/x.jsonl", "--sink jsonl: cannot open /nonexistent-dir/x.jsonl"),
        ("{tmp}", "Is a directory"),
    ],
)
def test_jsonl_to_nowhere_is_one_line_and_exit_1(
    pending: str, tmp_path: Path, path: str, needle: str
) -> None:
    res = watch_once(pending, f"jsonl:{path.format(tmp=tmp_path)}")
    assert_one_line_error(res, needle)
    assert res.returncode == 1
    assert "reconnect" not in res.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_jsonl_to_a_file_without_permission(pending: str, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    res = watch_once(pending, f"jsonl:{locked}/x.jsonl")
    assert_one_line_error(res, "Permission denied")
    assert res.returncode == 1
