"""The sample PSA schema (the application's tables, from its migrations) shipped with the package."""

from __future__ import annotations

from .queries import sql_dir


def schema_sql() -> str:
    return (sql_dir() / "sample" / "psa_schema.sql").read_text(encoding="utf-8")
