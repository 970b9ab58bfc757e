"""`make test`'s runner, tests/run_both_impls.py: the suite once per CDC_IMPL, side by side or
(with TEST_SERIAL or CDC_TEST_DSN) one after the other, non-zero when either run failed, and an
interrupted runner interrupts both sessions so that they tear down. Run here on one small unit
module or a file of the test's own (no cluster), so each nested session takes a second or two."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RUNNER = [sys.executable, str(ROOT / "tests" / "run_both_impls.py")]

FAILS_UNDER_C = """
import os
import signal


def test_ctrl_c_is_not_ignored():  # the commands the tests run must get Ctrl-C
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_impl():
    assert os.environ["CDC_IMPL"] == "python"
"""

WAITS = """
import os
import time
from pathlib import Path

import pytest


@pytest.fixture
def marks():
    here = Path(os.environ["MARKS"])
    (here / (os.environ["CDC_IMPL"] + ".started")).touch()
    yield
    (here / (os.environ["CDC_IMPL"] + ".torn-down")).touch()


def test_waits(marks):
    time.sleep(120)
"""


def environ(**env: str) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if k not in ("CDC_IMPL", "TEST_SERIAL", "CDC_TEST_DSN")}
    return {**kept, **env}


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNNER, *args], capture_output=True, text=True, timeout=300, env=environ(**env), cwd=ROOT
    )


@pytest.mark.parametrize("serial", [False, True])
def test_both_implementations_run_and_pass(serial: bool) -> None:
    res = run(
        "tests/unit/test_error_classification.py",
        "-k",
        "retrying",
        **({"TEST_SERIAL": "1"} if serial else {}),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count(" passed") == 2, res.stdout
    if not serial:
        # the c run's output comes after the python run's, each under its heading
        assert res.stdout.index("== CDC_IMPL=python") < res.stdout.index("== CDC_IMPL=c ==")
        assert "CDC_IMPL=python: exit 0; CDC_IMPL=c: exit 0" in res.stdout


def test_a_failing_run_fails_the_whole(tmp_path: Path) -> None:
    failing = tmp_path / "test_fails_under_c.py"
    failing.write_text(FAILS_UNDER_C)
    res = run(str(failing))
    assert res.returncode == 1, res.stdout
    assert "CDC_IMPL=python: exit 0; CDC_IMPL=c: exit 1" in res.stdout
    assert "2 passed" in res.stdout and "1 failed, 1 passed" in res.stdout, res.stdout
    serial = run(str(failing), TEST_SERIAL="1")
    assert serial.returncode == 1 and serial.stdout.count("1 failed, 1 passed") == 1, serial.stdout


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_runner_interrupts_both_sessions_which_tear_down(tmp_path: Path, how: int) -> None:
    test = tmp_path / "test_waits.py"
    test.write_text(WAITS)
    runner = subprocess.Popen(
        [*RUNNER, str(test)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=environ(MARKS=str(tmp_path)),
        cwd=ROOT,
    )
    try:
        assert wait_for(
            lambda: {p.name for p in tmp_path.glob("*.started")} == {"python.started", "c.started"},
            timeout=60,
        )
        runner.send_signal(how)  # to the runner alone: the sessions are in groups of their own
        out, _ = runner.communicate(timeout=60)  # not the 120 s the tests would wait
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 130, out
    # each session got Ctrl-C once and ran its fixtures' teardown (where clusters stop)
    assert {p.name for p in tmp_path.glob("*.torn-down")} == {"python.torn-down", "c.torn-down"}, out
