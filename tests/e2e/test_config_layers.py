"""Configuration layers through the real command: flags > CDC_* variables > CDC_CONFIG file > defaults.

`cdc setup --check` names the slot it would create, which shows which layer won; a missing or
malformed file, or a key that is no setting, is one line naming the file, exit 1.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli_errors import assert_one_line_error
from tests.environ import command_env

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def cdc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = command_env()
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
    )


def would_create_slot(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 1, res  # --check: something would change
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("would: create logical slot ")]
    assert len(lines) == 1, res.stdout
    return lines[0].split()[4]


@pytest.fixture
def config_file(tmp_path: Path, db_dsn: str) -> Path:
    path = tmp_path / "cdc.toml"
    path.write_text(f'dsn = "{db_dsn}"\nslot = "file_slot"\nbatch_events = 7\n')
    return path


def test_defaults_when_no_layer_sets_a_value(db_dsn: str) -> None:
    assert would_create_slot(cdc("setup", "--check", "--dsn", db_dsn)) == "cdc_events"


def test_the_file_over_the_defaults(config_file: Path) -> None:
    # The DSN too comes from the file: no --dsn, no CDC_DSN.
    assert would_create_slot(cdc("setup", "--check", env={"CDC_CONFIG": str(config_file)})) == "file_slot"


def test_variables_over_the_file(config_file: Path) -> None:
    env = {"CDC_CONFIG": str(config_file), "CDC_SLOT": "env_slot"}
    assert would_create_slot(cdc("setup", "--check", env=env)) == "env_slot"


def test_flags_over_the_variables(config_file: Path) -> None:
    env = {"CDC_CONFIG": str(config_file), "CDC_SLOT": "env_slot"}
    assert would_create_slot(cdc("setup", "--check", "--slot", "flag_slot", env=env)) == "flag_slot"


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    res = cdc("setup", "--check", env={"CDC_CONFIG": str(tmp_path / "nope.toml")})
    assert_one_line_error(res, "nope.toml", "does not exist")
    assert res.returncode == 1


def test_a_malformed_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('slot = "x"\nbatch_events = \n')
    res = cdc("setup", "--check", env={"CDC_CONFIG": str(path)})
    assert_one_line_error(res, "bad.toml", "not valid TOML", "line 2")
    assert res.returncode == 1


def test_an_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('slott = "x"\n')
    res = cdc("setup", "--check", env={"CDC_CONFIG": str(path)})
    assert_one_line_error(res, "typo.toml", "unknown setting slott")
    assert res.returncode == 1


def test_a_bad_value_from_a_variable_is_an_error(db_dsn: str) -> None:
    res = cdc("watch", "--dsn", db_dsn, "--once", env={"CDC_BATCH_EVENTS": "many"})
    assert_one_line_error(res, "invalid setting batch_events (from CDC_BATCH_EVENTS)")
    assert res.returncode == 1


def test_a_bad_value_in_the_file_names_the_file(tmp_path: Path, db_dsn: str) -> None:
    path = tmp_path / "values.toml"
    path.write_text("batch_events = 0\n")
    res = cdc("watch", "--dsn", db_dsn, "--once", env={"CDC_CONFIG": str(path)})
    assert_one_line_error(res, f"invalid setting batch_events (from config file {path})")
    assert res.returncode == 1
