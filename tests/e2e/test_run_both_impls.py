"""`make test`'s runner, tests/run-both-impls: the suite once per CDC_IMPL, side by side or (with
TEST_SERIAL or CDC_TEST_DSN) one after the other, non-zero when either run failed. Run here on
one small unit module (no cluster), so each nested session takes a second or two."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "run-both-impls"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CDC_IMPL", "TEST_SERIAL", "CDC_TEST_DSN")}
    return subprocess.run(
        [str(RUNNER), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**environ, "PYTHON_BIN": sys.executable, **env},
        cwd=ROOT,
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
    failing.write_text(
        "import os\nimport signal\n\n"
        "def test_ctrl_c_is_not_ignored():\n"  # the tests' own commands must get Ctrl-C
        "    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n\n"
        "def test_impl():\n    assert os.environ['CDC_IMPL'] == 'python'\n"
    )
    res = run(str(failing), "-p", "no:cacheprovider")
    assert res.returncode != 0, res.stdout
    assert "CDC_IMPL=python: exit 0; CDC_IMPL=c: exit 1" in res.stdout
    assert "2 passed" in res.stdout and "1 failed, 1 passed" in res.stdout, res.stdout
    serial = run(str(failing), "-p", "no:cacheprovider", TEST_SERIAL="1")
    assert serial.returncode == 1 and serial.stdout.count("1 failed, 1 passed") == 1, serial.stdout
