"""Settings layers (flags > CDC_* variables > CDC_CONFIG file > defaults) for every kind of field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc.config import DEFAULT_BATCH_EVENTS, DEFAULT_SLOT, DEFAULT_TABLES, load_settings
from cdc.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CDC_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cdc.toml"
    path.write_text(
        'dsn = "dbname=from_file"\nslot = "file_slot"\nschema_name = "file_schema"\n'
        'tables = ["public.tickets"]\nsink = "jsonl:-"\nbatch_events = 7\nbatch_delay_s = 0.25\n'
        "heartbeat_interval_s = 2.5\n"
    )
    monkeypatch.setenv("CDC_CONFIG", str(path))
    return path


def test_defaults() -> None:
    s = load_settings()
    assert (s.slot, s.batch_events, s.tables, s.sink) == (
        DEFAULT_SLOT,
        DEFAULT_BATCH_EVENTS,
        DEFAULT_TABLES,
        None,
    )


def test_file_over_defaults(config: Path) -> None:
    s = load_settings()
    assert s.dsn.get_secret_value() == "dbname=from_file"
    assert (s.slot, s.schema_name, s.tables, s.sink) == (
        "file_slot",
        "file_schema",
        ("public.tickets",),
        "jsonl:-",
    )
    assert (s.batch_events, s.batch_delay_s, s.heartbeat_interval_s) == (7, 0.25, 2.5)


def test_env_over_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_SLOT", "env_slot")
    monkeypatch.setenv("CDC_SCHEMA", "env_schema")
    monkeypatch.setenv("CDC_TABLES", "public.a, public.b")
    monkeypatch.setenv("CDC_BATCH_EVENTS", "9")
    monkeypatch.setenv("CDC_SINK", "discard")
    s = load_settings()
    assert (s.slot, s.schema_name, s.tables, s.batch_events, s.sink) == (
        "env_slot",
        "env_schema",
        ("public.a", "public.b"),
        9,
        "discard",
    )
    assert s.heartbeat_interval_s == 2.5  # not set by a variable: still the file's


def test_flags_over_env(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_SLOT", "env_slot")
    monkeypatch.setenv("CDC_BATCH_EVENTS", "9")
    s = load_settings(slot="flag_slot", batch_events=11, schema_name="flag_schema", tables="public.c")
    assert (s.slot, s.batch_events, s.schema_name, s.tables) == (
        "flag_slot",
        11,
        "flag_schema",
        ("public.c",),
    )


def test_a_flag_left_out_does_not_hide_the_layers_below(config: Path) -> None:
    s = load_settings(slot=None, batch_events=None, sink=None)
    assert (s.slot, s.batch_events, s.sink) == ("file_slot", 7, "jsonl:-")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('slot = "x"\nbatch_events = \n', "line 2"),
        ('nonsense = "x"\n', "unknown setting nonsense"),
        ("batch_events = 0\n", "invalid setting batch_events"),
    ],
)
def test_bad_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    monkeypatch.setenv("CDC_CONFIG", str(path))
    with pytest.raises(ConfigError, match=needle):
        load_settings()


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml .*does not exist"):
        load_settings()
