"""`cdc demo` — the embedded default — runs end to end and cleans up after itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_and_prints_the_decoded_changes() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "demo"], capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "TICKET_CREATED" in out and "TICKET_MESSAGE_ADDED" in out
    assert "TICKET_CLOSED" in out and "TICKET_SLA_STAGE_BREACHED" in out
