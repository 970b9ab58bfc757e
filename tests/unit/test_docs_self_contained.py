"""The README and docs/ stand on their own: they cite files of this repository only.

A clone has no project workspace, so a reference to the workspace's design and fact files
(``shared/``, ``DESIGN.md``, ``SPEC.md``, ``events.md``, "SPEC §…") leaves its reader with
nothing to open; what a reader needs is carried over into docs/architecture.md and
docs/application.md. Every relative markdown link must name a file (or directory) of the
repository and, for an ``#anchor`` into a markdown file, a heading of that file as GitHub
spells its anchor.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Text that points at files a clone does not have (matched anywhere, code spans included).
FORBIDDEN = ("shared/", "DESIGN.md", "SPEC.md", "SPEC §", "DESIGN §", "events.md")
#: A bare citation of the workspace documents in prose ("as SPEC says"); in code spans the
#: words may stand for something else (``--sink SPEC``).
BARE_CITATION = re.compile(r"\b(?:SPEC|DESIGN)\b")

_FENCE = re.compile(r"^(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def outside_fences(text: str) -> list[str]:
    """The lines of ``text``, those in fenced code blocks (fences included) blanked, so that
    line numbers stay those of the file."""
    lines: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        opened = _FENCE.match(line.lstrip())
        if fence is not None:
            if opened and opened.group(1) == fence:
                fence = None
            lines.append("")
        elif opened:
            fence = opened.group(1)
            lines.append("")
        else:
            lines.append(line)
    return lines


def prose_lines(text: str) -> list[str]:
    """The lines of ``text``, fenced code blanked and inline code spans removed."""
    return [_CODE_SPAN.sub("", line) for line in outside_fences(text)]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text without markup, lower-cased, every character
    that is not a letter, mark, number, connector (``_``), space or hyphen dropped, spaces
    turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.replace("`", "").strip().lower()
    kept = [
        ch
        for ch in text
        if ch in " -" or unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Pc"
    ]
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file; repeated headings get ``-1``, ``-2``, … as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in outside_fences(path.read_text(encoding="utf-8")):  # a code span counts by its text
        m = _HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def relative_links(text: str) -> list[str]:
    """Targets of inline and reference links that are not URLs (``http:``, ``mailto:``, …)."""
    targets: list[str] = []
    for line in prose_lines(text):
        targets += _INLINE_LINK.findall(line)
        ref = _REFERENCE_LINK.match(line)
        if ref:
            targets.append(ref.group(1))
    return [t for t in targets if t and not _SCHEME.match(t)]


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_docs_exist() -> None:
    names = {_name(p) for p in DOCS}
    assert {"README.md", "docs/architecture.md", "docs/application.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_no_reference_to_files_outside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    found = [
        f"line {n}: {needle!r}"
        for n, line in enumerate(text.splitlines(), 1)
        for needle in FORBIDDEN
        if needle in line
    ]
    found += [
        f"line {n}: bare {m.group(0)!r}"
        for n, line in enumerate(prose_lines(text), 1)
        for m in BARE_CITATION.finditer(line)
    ]
    assert not found, (
        f"{_name(doc)} cites the project workspace, which a clone does not have; "
        f"link to docs/architecture.md or docs/application.md instead: {found}"
    )


def broken_links(doc: Path, root: Path) -> list[str]:
    """The relative links of ``doc`` that name no file under ``root``, or no heading of it."""
    broken: list[str] = []
    for target in relative_links(doc.read_text(encoding="utf-8")):
        path_part, _, fragment = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.is_relative_to(root) or not dest.exists():
            broken.append(f"{target}: no such file in the repository")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: {dest.name} has no heading with anchor #{fragment}")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_relative_links_point_into_the_repository(doc: Path) -> None:
    broken = broken_links(doc, ROOT)
    assert not broken, f"{_name(doc)} has broken links: {broken}"


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("The watcher's own tables", "the-watchers-own-tables"),
        ("Failover (PostgreSQL 15)", "failover-postgresql-15"),
        ("Redis Streams: the Alga bus layout (`redis://…`)", "redis-streams-the-alga-bus-layout-redis"),
        ("Sinks: where `cdc watch` delivers events", "sinks-where-cdc-watch-delivers-events"),
        ("TICKET_STATUS_CHANGED and [links](x.md)", "ticket_status_changed-and-links"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """Links outside code count, links inside it do not; a missing file, a missing heading and a
    path out of the tree are reported."""
    text = "see [a](a.md#x) and `[b](b.md)`\n```\n[c](c.md)\n```\n[d]: d.md\n[e](https://e.test)\n"
    assert relative_links(text) == ["a.md#x", "d.md"]
    (tmp_path / "a.md").write_text("# A\n## The `x` part\n", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](a.md#the-x-part) [self](#top) [gone](b.md) [anchor](a.md#y) [out](../x.md)\n# Top\n",
        encoding="utf-8",
    )
    assert broken_links(doc, tmp_path) == [
        "b.md: no such file in the repository",
        "a.md#y: a.md has no heading with anchor #y",
        "../x.md: no such file in the repository",
    ]
    assert prose_lines("as SPEC says, `--sink SPEC`\n```\nSPEC\n```") == ["as SPEC says, ", "", "", ""]


def test_make_test_runs_the_suite_under_each_implementation() -> None:
    """README § Build internals: `make test` runs the whole suite once per CDC_IMPL."""
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    # the runner (tests/e2e/test_run_both_impls.py runs it), given no selection of tests
    assert [line.strip() for line in recipe.splitlines()[1:]] == ["$(BIN)/python tests/run_both_impls.py"]
