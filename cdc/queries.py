"""Named SQL queries loaded from the top-level ``sql/`` folder, shipped inside the package as
``cdc.sql`` (``pyproject.toml`` maps it).

Each ``.sql`` file holds one or more statements introduced by a ``-- name: <query_name>``
line; everything up to the next ``-- name:`` line belongs to that query.  Files are read
once and the texts are trusted constants: identifiers that come from configuration
(schema, publication, slot, table names) are written as ``{placeholders}`` and filled
with :class:`psycopg.sql.Identifier` / :class:`psycopg.sql.Literal` by the caller.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from psycopg import sql

_NAME_RE = re.compile(r"^--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    """Where the .sql files live: ``sql/`` beside this module once installed from a wheel
    (package data), else the checkout's top-level ``sql/`` (an editable install or the source
    tree). Found from this module's own path, so no other ``sql`` folder on sys.path is read."""
    here = Path(__file__).resolve().parent
    installed = here / "sql"
    if installed.is_dir():
        return installed
    return here.parent / "sql"


def parse(text: str) -> dict[str, str]:
    """Split a file's text into its named queries."""
    queries: dict[str, str] = {}
    matches = list(_NAME_RE.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = m.group(1)
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = text[m.end() : end].strip()
    return queries


@functools.cache
def load(file: str) -> dict[str, str]:
    """All named queries of ``sql/<file>.sql``."""
    path = sql_dir() / f"{file}.sql"
    return parse(path.read_text(encoding="utf-8"))


def query(file: str, name: str, **identifiers: sql.Composable) -> sql.Composed | sql.SQL:
    """One named query, with ``{placeholders}`` filled by the given composables."""
    stmt = sql.SQL(load(file)[name])
    return stmt.format(**identifiers) if identifiers else stmt


def raw(file: str, name: str) -> str:
    """The text of a named query, for statements without placeholders."""
    return load(file)[name]
