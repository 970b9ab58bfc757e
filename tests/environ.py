"""The environment a test gives the `cdc` command it runs as a subprocess."""

from __future__ import annotations

import os

#: Kept: the implementation under test (the Makefile runs the suite once per CDC_IMPL).
KEPT = frozenset({"CDC_IMPL"})


def command_env() -> dict[str, str]:
    """This process's environment less the settings a developer may have exported (``CDC_*``,
    libpq's ``PG*``), so that only what a test passes configures the command."""
    return {k: v for k, v in os.environ.items() if k in KEPT or not k.startswith(("CDC_", "PG"))}
