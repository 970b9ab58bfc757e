"""The command line an operator sees: --version, help text, `cdc catalog list`'s derived column."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import orjson
import pytest

from derivers import default_derivers
from derivers.not_derived import NOT_DERIVED

pytestmark = pytest.mark.e2e

SUBCOMMANDS = ("setup", "teardown", "tail", "watch", "lag", "demo", "catalog", "catalog list", "catalog sync")


def cdc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    res = cdc("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"cdc {version('alga-cdc')}"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_shows_plain_flags(command: str) -> None:
    res = cdc(*command.split(), "--help")
    assert res.returncode == 0, res.stderr
    assert "<bool>" not in res.stdout  # a flag takes no value
    assert "Usage: cdc " in res.stdout


def test_catalog_list_derived_is_what_the_registered_derivers_emit() -> None:
    res = cdc("catalog", "list", "--json")
    assert res.returncode == 0, res.stderr
    rows = orjson.loads(res.stdout)
    derived = {r["eventType"] for r in rows if r["derived"]}
    fed = {
        event_type
        for d in default_derivers()
        for columns in d.reads.values()
        for types in columns.values()
        for event_type in types
    }
    assert derived == fed
    assert {"TICKET_STATUS_CHANGED", "APPOINTMENT_CREATED", "CAPACITY_THRESHOLD_REACHED"} <= derived
    assert {"PROJECT_TASK_COMPLETED", "TIME_ENTRY_APPROVED"} <= derived
    # Every type of the four families: derived, or not derived with the reason derivers/not_derived.py gives.
    for r in rows:
        if r["family"] in ("tickets", "scheduling", "projects", "time"):
            assert r["derived"] != bool(r["whyNot"]), r
            assert r["whyNot"] == (None if r["derived"] else NOT_DERIVED[r["eventType"]])


def test_catalog_list_table_says_why_a_type_is_not_derived() -> None:
    res = cdc("catalog", "list")
    assert res.returncode == 0, res.stderr
    assert "why not" in res.stdout
    line = next(ln for ln in res.stdout.splitlines() if "TICKET_TAGS_CHANGED" in ln)
    assert "no table in the schema" in line


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_synopsis(command: str) -> set[str]:
    """The options the README's `### `cdc COMMAND`` section shows in its synopsis block."""
    text = README.read_text()
    top = command.split()[0]
    section = text.split(f"### `cdc {top}`\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    block = section.split("```\n", 2)[1]
    lines = (
        [ln for ln in block.splitlines() if ln.startswith(f"cdc {command}")] if top == "catalog" else [block]
    )
    return set(re.findall(r"--[a-z][a-z-]*", "\n".join(lines)))


def _help_options(command: str) -> set[str]:
    res = cdc(*command.split(), "--help")
    assert res.returncode == 0, res.stderr
    options = set(re.findall(r"^\s{2}(--[a-z][a-z-]*)(?: / (--[a-z][a-z-]*))?", res.stdout, re.MULTILINE))
    return {o for pair in options for o in pair if o} - {"--help"}


@pytest.mark.parametrize(
    "command",
    ["setup", "watch", "tail", "teardown", "lag", "demo", "catalog list", "catalog export", "catalog sync"],
)
def test_readme_shows_every_option_of_every_command(command: str) -> None:
    assert _readme_synopsis(command) == _help_options(command)


def test_catalog_export_to_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    from tests.e2e.test_cli_errors import assert_one_line_error

    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    res = cdc("catalog", "export", "--out", str(blocker / "sub"))
    assert_one_line_error(res, "cannot write to", "writable --out")
    assert res.returncode == 1
