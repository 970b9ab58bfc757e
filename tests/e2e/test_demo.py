"""`cdc demo` — the embedded default — runs end to end and cleans up after itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_and_prints_the_decoded_changes() -> None:
    # A temp directory of its own (readable by the postgres user the server may run as) shows
    # that the demo leaves nothing behind: no data directory, no events file.
    tmp = Path(tempfile.mkdtemp(prefix="cdc-demo-test-"))
    tmp.chmod(0o755)
    try:
        res = subprocess.run(
            [sys.executable, "-m", "cdc.cli", "demo"],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "TMPDIR": str(tmp)},
        )
        left = sorted(p.name for p in tmp.iterdir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert res.returncode == 0, res.stderr
    assert left == [], left
    out = res.stdout
    assert "TICKET_CREATED" in out and "TICKET_MESSAGE_ADDED" in out
    assert "TICKET_CLOSED" in out and "TICKET_SLA_STAGE_BREACHED" in out
