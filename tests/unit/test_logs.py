"""cdc.logs: redaction of every DSN/URI password, the text and JSON formats; cdc.lifecycle.Signals."""

from __future__ import annotations

import io
import logging
import os
import signal
from collections.abc import Iterator

import orjson
import pytest

from cdc import logs
from cdc.lifecycle import Signals


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=db password=s3cret user=x", "host=db password=*** user=x"),
        ("password = 's3 cr\\'et' dbname=psa", "password = *** dbname=psa"),
        ("PASSWORD=s3cret", "PASSWORD=***"),
        ("PGPASSWORD=s3cret psql", "PGPASSWORD=*** psql"),
        ("postgresql://cdc:s3cret@db:5432/psa", "postgresql://cdc:***@db:5432/psa"),
        ("postgres://cdc:s%40cret@db/psa?sslmode=require", "postgres://cdc:***@db/psa?sslmode=require"),
        (
            "postgresql://db/psa?user=cdc&password=s3cret&sslmode=require",
            "postgresql://db/psa?user=cdc&password=***&sslmode=require",
        ),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("sink nats://u:s3cret@bus:4222 failed", "sink nats://u:***@bus:4222 failed"),
        # nothing secret: unchanged
        ("postgresql://cdc@db/psa", "postgresql://cdc@db/psa"),
        ("host=db port=5432 dbname=psa", "host=db port=5432 dbname=psa"),
        ("delivered 3 events", "delivered 3 events"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert logs.redact(text) == expected


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """A logger writing through a handler of :func:`cdc.logs.make_handler`, per format."""
    logger = logging.getLogger("cdc.test_logs")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    out = io.StringIO()
    yield out, logger
    for h in list(logger.handlers):
        logger.removeHandler(h)


def use(logger: logging.Logger, out: io.StringIO, fmt: logs.LogFormat) -> None:
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.addHandler(logs.make_handler(fmt, out))


def boom() -> BaseException:
    try:
        raise RuntimeError("connect to postgresql://u:pw-in-traceback@h/db failed")
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_part_of_a_record_is_redacted(captured: tuple[io.StringIO, logging.Logger], fmt: str) -> None:
    out, logger = captured
    use(logger, out, fmt)  # type: ignore[arg-type]
    logger.info("dsn %s", "host=h password=pw-in-args", extra=logs.fields(sink="redis://:pw-in-field@r/0"))
    logger.error("failed", exc_info=boom())
    logger.warning("literal password=pw-in-msg")
    text = out.getvalue()
    assert "pw-in" not in text, text
    assert text.count("***") >= 4  # args, message, traceback (source line and message); json: field


def test_json_lines(captured: tuple[io.StringIO, logging.Logger]) -> None:
    out, logger = captured
    use(logger, out, "json")
    logger.info("progress: %d events", 5, extra=logs.fields(slot="s", lsn="0/10", events=5))
    logger.error("failed", exc_info=boom())
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first.keys() == {"ts", "level", "logger", "msg", "slot", "lsn", "events"}
    assert first["msg"] == "progress: 5 events" and first["level"] == "INFO"
    assert first["logger"] == "cdc.test_logs" and first["events"] == 5 and first["ts"].endswith("Z")
    assert second["level"] == "ERROR" and "Traceback" in second["exc"] and "RuntimeError" in second["exc"]


def test_text_lines_and_the_bare_summary(captured: tuple[io.StringIO, logging.Logger]) -> None:
    out, logger = captured
    use(logger, out, "text")
    logger.info("watch started", extra=logs.fields(slot="s"))
    logger.info("delivered 1 events from 1 transactions", extra=logs.plain(events=1))
    started, summary = out.getvalue().splitlines()
    assert started.endswith(" INFO cdc.test_logs: watch started") and started[:4].isdigit()
    assert summary == "delivered 1 events from 1 transactions"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_error_line(fmt: str) -> None:
    before = logs.current_format()
    out = io.StringIO()
    try:
        logs.setup(fmt=fmt, stream=io.StringIO())  # type: ignore[arg-type]
        logs.error_line("cdc: error: cannot reach postgresql://u:pw@h/db — check it", out, exit_status=3)
    finally:
        logs.setup(fmt=before)
    line = out.getvalue().strip()
    assert "pw" not in line.replace("postgresql://u:***", "")
    if fmt == "json":
        obj = orjson.loads(line)
        assert obj["level"] == "ERROR" and obj["exit_status"] == 3
        assert obj["msg"] == "cdc: error: cannot reach postgresql://u:***@h/db — check it"
    else:
        assert line == "cdc: error: cannot reach postgresql://u:***@h/db — check it"


def test_levels() -> None:
    before = logs.current_level()
    try:
        logs.set_level("debug")
        assert logs.current_level() == "debug"
        logs.set_level("WARNING")
        assert logs.current_level() == "warning"
    finally:
        logs.set_level(before)


def test_signals_stop_then_abort_and_hup() -> None:
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    flags = Signals()
    try:
        flags.install()
        os.kill(os.getpid(), signal.SIGHUP)
        assert flags.reload_requested and not flags.stopped
        os.kill(os.getpid(), signal.SIGTERM)
        assert flags.stopped and flags.reason == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # the second one: at once
            os.kill(os.getpid(), signal.SIGINT)
        assert flags.reason == "SIGTERM"
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
