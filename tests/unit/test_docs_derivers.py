"""docs/derivers.md says what the registry does: its "Not derived" table is
derivers/not_derived.py's NOT_DERIVED (type and reason, in order), and every event type a
registered deriver emits is named there in full. The README's settings list names every setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cdc.catalog_cli import emitted_types
from cdc.config import Settings
from derivers.not_derived import NOT_DERIVED

ROOT = Path(__file__).resolve().parents[2]
DERIVERS_MD = ROOT / "docs" / "derivers.md"
README = ROOT / "README.md"


def _section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section, up to the next level-2 heading."""
    start = text.index(f"\n## {heading}\n") + len(heading) + 5
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def not_derived_table(text: str) -> list[tuple[str, str]]:
    """The rows of the ``| event type | why |`` table of the "Not derived" section."""
    section = _section(text, "Not derived")
    lines = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("|")]
    assert lines[:2] == ["| event type | why |", "|---|---|"], lines[:2]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 2, line
        rows.append((cells[0], cells[1]))
    return rows


def test_not_derived_table_is_the_registry_list() -> None:
    rows = not_derived_table(DERIVERS_MD.read_text(encoding="utf-8"))
    assert rows == list(NOT_DERIVED.items())


def test_not_derived_table_parser_sees_a_difference() -> None:
    text = DERIVERS_MD.read_text(encoding="utf-8")
    first = next(iter(NOT_DERIVED))
    changed = text.replace(f"| {first} | {NOT_DERIVED[first]} |", f"| {first} | another reason |")
    assert changed != text
    assert not_derived_table(changed) != list(NOT_DERIVED.items())


def _named(text: str, event_type: str) -> bool:
    return re.search(rf"(?<![A-Z_]){re.escape(event_type)}(?![A-Z_])", text) is not None


@pytest.mark.parametrize("event_type", sorted(emitted_types()))
def test_every_emitted_type_is_documented(event_type: str) -> None:
    text = DERIVERS_MD.read_text(encoding="utf-8")
    rules = text[: text.index("\n## Not derived\n")]
    assert _named(rules, event_type), f"{event_type} is emitted but docs/derivers.md does not name it"


def test_no_type_is_both_documented_as_not_derived_and_emitted() -> None:
    names = {name for name, _ in not_derived_table(DERIVERS_MD.read_text(encoding="utf-8"))}
    assert not names & emitted_types()


def test_readme_configuration_names_every_setting() -> None:
    section = _section(README.read_text(encoding="utf-8"), "Configuration")
    missing = [name for name in Settings.model_fields if f"`{name}`" not in section]
    assert not missing, f"README's Configuration does not name {missing}"
