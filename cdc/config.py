"""Configuration: CLI flags over ``CDC_*`` variables over an optional TOML file, validated.

``Settings`` is frozen and built once per command.  libpq's own ``PG*`` variables keep
working because an empty DSN lets libpq fill in host, port, user and database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import BadDsn

DEFAULT_SLOT: Final = "cdc_events"
DEFAULT_PUBLICATION: Final = "cdc_events"
DEFAULT_SCHEMA: Final = "cdc"

#: The tables events come from, and the reference tables the derivers look things up in.
DEFAULT_TABLES: Final[tuple[str, ...]] = (
    # event sources
    "public.tickets",
    "public.comments",
    "public.ticket_resources",
    "public.ticket_bundle_settings",
    "public.ticket_bundle_mirrors",
    "public.ticket_audit_logs",
    "public.schedule_entries",
    "public.schedule_entry_assignees",
    "public.appointment_requests",
    "public.projects",
    "public.project_phases",
    "public.project_tasks",
    "public.task_resources",
    "public.project_task_dependencies",
    "public.time_entries",
    # reference state
    "public.statuses",
    "public.boards",
    "public.priorities",
    "public.categories",
    "public.users",
    "public.teams",
    "public.team_members",
    "public.resources",
    "public.project_status_mappings",
    "public.standard_statuses",
)


def check_dsn(dsn: str) -> None:
    """Raise BadDsn (without echoing the string, which may hold a password) if libpq cannot parse it."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise BadDsn("bad connection string: libpq cannot parse it") from exc


def _toml_path() -> Path | None:
    p = os.environ.get("CDC_CONFIG")
    return Path(p) if p else None


class Settings(BaseSettings):
    """Every knob the commands share."""

    model_config = SettingsConfigDict(env_prefix="CDC_", frozen=True, extra="ignore", populate_by_name=True)

    dsn: SecretStr = Field(default=SecretStr(""), description="libpq DSN or URI of the watched database")
    slot: str = DEFAULT_SLOT
    publication: str = DEFAULT_PUBLICATION
    schema_name: str = Field(default=DEFAULT_SCHEMA, validation_alias="CDC_SCHEMA")
    tables: Annotated[tuple[str, ...], NoDecode] = DEFAULT_TABLES
    status_interval_s: float = Field(default=10.0, gt=0)
    binary: bool = False

    @field_validator("dsn")
    @classmethod
    def _dsn_parses(cls, v: SecretStr) -> SecretStr:
        check_dsn(v.get_secret_value())
        return v

    @field_validator("tables", mode="before")
    @classmethod
    def _split_tables(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(t.strip() for t in v.split(",") if t.strip())
        return v

    @field_validator("slot", "publication")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v or len(v) > 63:
            raise ValueError("must be 1 to 63 characters")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        path = _toml_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def qualified_tables(self) -> tuple[str, ...]:
        return tuple(t if "." in t else f"public.{t}" for t in self.tables)
