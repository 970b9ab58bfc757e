"""Configuration: CLI flags over ``CDC_*`` variables over an optional TOML file over defaults.

``Settings`` is frozen and built once per command by :func:`load_settings`, which is handed
only the flags the user gave (a flag left out must not hide the layers below it).  The TOML
file named by ``CDC_CONFIG`` uses the field names below as keys; a missing or malformed file,
or a key that is not a setting, is a :class:`ConfigError` naming the file (and the line).
libpq's own ``PG*`` variables keep working because an empty DSN lets libpq fill in host,
port, user and database.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .connect import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_STATEMENT_TIMEOUT_S
from .errors import BadDsn, ConfigError
from .logs import LOG_LEVELS

DEFAULT_SLOT: Final = "cdc_events"
DEFAULT_PUBLICATION: Final = "cdc_events"
DEFAULT_SCHEMA: Final = "cdc"
DEFAULT_HEARTBEAT_INTERVAL_S: Final = 5.0
DEFAULT_BATCH_EVENTS: Final = 5000
DEFAULT_BATCH_TRANSACTIONS: Final = 1000
DEFAULT_BATCH_DELAY_S: Final = 0.5
DEFAULT_STATUS_INTERVAL_S: Final = 10.0
#: A transaction's changes go to a temporary file past this many changes or MiB (cdc/changelog.py).
DEFAULT_SPILL_CHANGES: Final = 50_000
DEFAULT_SPILL_MB: Final = 64
#: The cap on one event's envelope JSON, for every sink: NATS's default max_payload.
DEFAULT_MAX_EVENT_BYTES: Final = 1024 * 1024
#: The share of an SLA stage's time after which TICKET_SLA_THRESHOLD_REACHED fires (the ticket
#: deriver's default, derivers.ticket_sla.DEFAULT_THRESHOLD_SHARE; a test keeps them equal).
DEFAULT_SLA_THRESHOLD_SHARE: Final = 0.75
DEFAULT_LOG_LEVEL: Final = "info"
DEFAULT_LOG_FORMAT: Final = "text"
#: Seconds between the watcher's progress lines while it is busy.
DEFAULT_PROGRESS_INTERVAL_S: Final = 10.0
#: Seconds the stream may be disconnected, or the sink failing, before /healthz says unhealthy.
DEFAULT_HEALTH_GRACE_S: Final = 30.0
#: A running ``cdc watch`` that lost its server waits this long before its first reconnect,
#: doubling up to the cap (full jitter: a random wait up to that bound), cdc/watch.py.
DEFAULT_RECONNECT_INITIAL_S: Final = 0.5
DEFAULT_RECONNECT_MAX_S: Final = 30.0
#: Seconds the active watcher's lock session may stay silent before the server ends it and a
#: standby takes over (idle_session_timeout on that session), cdc/standby.py.
DEFAULT_STANDBY_LEASE_S: Final = 10.0
#: Days of change journal ``cdc journal prune`` keeps (cdc/journal.py, DESIGN §4).
DEFAULT_JOURNAL_RETENTION_DAYS: Final = 14
#: The settings a running ``cdc watch`` takes over on SIGHUP; any other changed setting is
#: logged as needing a restart.
LIVE_SETTINGS: Final = (
    "log_level",
    "progress_interval_s",
    "status_interval_s",
    "heartbeat_interval_s",
    "batch_events",
    "batch_transactions",
    "batch_delay_s",
)

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


def parse_addr(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6; an empty host listens on every address)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9187")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if any(c.isspace() for c in host) or "/" in host:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9187")
    return host or "0.0.0.0", int(port)


def check_dsn(dsn: str) -> None:
    """Raise BadDsn (without echoing the string, which may hold a password) if libpq cannot parse it."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise BadDsn("bad connection string: libpq cannot parse it") from exc


def _toml_path() -> Path | None:
    p = os.environ.get("CDC_CONFIG")
    return Path(p) if p else None


def _check_toml(path: Path, known: set[str]) -> None:
    """Refuse a config file that is missing, unreadable, malformed or names no setting."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} (CDC_CONFIG) does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} (CDC_CONFIG) cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:  # its text ends with "(at line L, column C)"
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting {', '.join(unknown)}",
            hint=f"use the keys {', '.join(sorted(known))}",
        )


class Settings(BaseSettings):
    """Every knob the commands share."""

    model_config = SettingsConfigDict(env_prefix="CDC_", frozen=True, extra="ignore", populate_by_name=True)

    # Every field is a key of the config file and a CDC_<NAME> variable (CDC_SCHEMA for schema_name).

    dsn: SecretStr = Field(default=SecretStr(""), description="libpq DSN or URI of the watched database")
    slot: str = DEFAULT_SLOT
    publication: str = DEFAULT_PUBLICATION
    schema_name: str = Field(default=DEFAULT_SCHEMA, validation_alias="CDC_SCHEMA")
    tables: Annotated[tuple[str, ...], NoDecode] = DEFAULT_TABLES
    status_interval_s: float = Field(default=DEFAULT_STATUS_INTERVAL_S, gt=0)
    binary: bool = False
    #: ``--sink`` text; None is the Postgres outbox in the watched database.
    sink: str | None = None
    heartbeat_interval_s: float = Field(default=DEFAULT_HEARTBEAT_INTERVAL_S, ge=0.1)
    batch_events: int = Field(default=DEFAULT_BATCH_EVENTS, ge=1)
    batch_transactions: int = Field(default=DEFAULT_BATCH_TRANSACTIONS, ge=1)
    batch_delay_s: float = Field(default=DEFAULT_BATCH_DELAY_S, ge=0)
    spill_changes: int = Field(default=DEFAULT_SPILL_CHANGES, ge=1)
    spill_mb: int = Field(default=DEFAULT_SPILL_MB, ge=1)
    #: An event whose envelope is larger goes to the dead letters (a sink option may lower it).
    max_event_bytes: int = Field(default=DEFAULT_MAX_EVENT_BYTES, ge=1024)
    #: libpq's connect_timeout of every connection whose DSN (or PGCONNECT_TIMEOUT) sets none;
    #: whole seconds, at least 2 (libpq's minimum). See cdc/connect.py.
    connect_timeout_s: int = Field(default=DEFAULT_CONNECT_TIMEOUT_S, ge=2)
    #: statement_timeout of the watcher's own-table, preflight, setup and teardown connections.
    statement_timeout_s: float = Field(default=DEFAULT_STATEMENT_TIMEOUT_S, gt=0)
    #: When a ticket's SLA stage reports TICKET_SLA_THRESHOLD_REACHED: this share of the stage's
    #: time (0 < share < 1). Timers already armed keep their due time (docs: derivers.ticket_sla).
    sla_threshold_share: float = Field(default=DEFAULT_SLA_THRESHOLD_SHARE, gt=0, lt=1)
    #: debug, info, warning or error (any case).
    log_level: str = DEFAULT_LOG_LEVEL
    #: text (a line per record) or json (an object per line: ts, level, logger, msg, fields).
    log_format: Literal["text", "json"] = DEFAULT_LOG_FORMAT
    #: Seconds between progress lines while ``cdc watch`` is busy.
    progress_interval_s: float = Field(default=DEFAULT_PROGRESS_INTERVAL_S, gt=0)
    #: ``HOST:PORT`` where ``cdc watch`` serves /metrics, /healthz and /readyz (None: no server).
    metrics_addr: str | None = None
    #: /healthz turns unhealthy once the stream is disconnected, or the sink failing, this long.
    health_grace_s: float = Field(default=DEFAULT_HEALTH_GRACE_S, ge=0)
    #: /healthz turns unhealthy past this replication lag in bytes (None: lag never does).
    health_max_lag_bytes: int | None = Field(default=None, ge=0)
    #: ``cdc watch`` reconnects after a lost connection: first wait (bound), doubling to the cap.
    reconnect_initial_s: float = Field(default=DEFAULT_RECONNECT_INITIAL_S, gt=0)
    reconnect_max_s: float = Field(default=DEFAULT_RECONNECT_MAX_S, gt=0)
    #: How long a frozen active watcher keeps the standby lock before the server ends its session.
    standby_lease_s: float = Field(default=DEFAULT_STANDBY_LEASE_S, ge=1)
    #: ``cdc watch`` records every consumed change in the change journal (``--no-journal``: off).
    journal: bool = True
    #: Days ``cdc journal prune`` keeps of the journal (whole days past them are dropped).
    journal_retention_days: int = Field(default=DEFAULT_JOURNAL_RETENTION_DAYS, ge=1)

    @field_validator("dsn")
    @classmethod
    def _dsn_parses(cls, v: SecretStr) -> SecretStr:
        check_dsn(v.get_secret_value())
        return v

    @field_validator("metrics_addr")
    @classmethod
    def _metrics_addr(cls, v: str | None) -> str | None:
        if v is not None:
            parse_addr(v)
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return v.lower()

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
            _check_toml(path, set(settings_cls.model_fields))
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def qualified_tables(self) -> tuple[str, ...]:
        return tuple(t if "." in t else f"public.{t}" for t in self.tables)


def load_settings(**flags: Any) -> Settings:
    """The settings of one command: ``flags`` are the options given on the command line
    (None for an option left out, which then falls through to the variables, the file and
    the defaults)."""
    given = {k: v for k, v in flags.items() if v is not None}
    if isinstance(given.get("dsn"), str):
        check_dsn(given["dsn"])
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        raise ConfigError(f"invalid setting {field} ({_layer_of(field, given)}): {first['msg']}") from None


def _layer_of(field: str, given: dict[str, Any]) -> str:
    """Which layer gave ``field`` its value: the first of flag, variable, file."""
    if field in given:
        return "from the command line"
    variable = "CDC_SCHEMA" if field == "schema_name" else f"CDC_{field.upper()}"
    if variable in os.environ:
        return f"from {variable}"
    path = _toml_path()
    return f"from config file {path}" if path is not None else "its default"
