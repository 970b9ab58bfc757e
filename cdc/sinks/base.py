"""The sink contract and the factory that turns ``--sink`` text into a sink."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from catalog.envelope import Envelope

from ..errors import ConfigError


@dataclass
class Batch:
    """Events of one or more whole transactions, in commit order, and the position they end at."""

    envelopes: list[Envelope] = field(default_factory=list)
    end_lsn: int = 0  # end LSN of the last transaction in the batch
    transactions: int = 0


class Sink(Protocol):
    """Where events go.

    A sink that lives in Postgres may also offer ``store_dsn`` (the database that holds the
    watcher's own tables, so they commit with the events), ``prepare(conn)`` (create its
    tables) and ``write_in(conn, batch)`` (write inside the caller's transaction, which
    also moves the checkpoint); the watcher then uses ``write_in`` instead of ``write``.
    """

    name: str

    def write(self, batch: Batch) -> None:
        """Make every envelope of ``batch`` durable before returning; raise on failure."""
        ...

    def close(self) -> None: ...


def open_sink(spec: str) -> Sink:
    """``jsonl:PATH`` (``jsonl:-`` or ``-`` for stdout), ``memory:`` (tests, benchmarks) or ``null:``."""
    from .jsonl import JsonLinesSink
    from .memory import DiscardSink, MemorySink

    if spec in ("-", "jsonl:-"):
        return JsonLinesSink("-")
    if spec.startswith("jsonl:"):
        return JsonLinesSink(spec[len("jsonl:") :])
    if spec in ("memory", "memory:"):
        return MemorySink()
    if spec in ("null", "null:", "discard", "discard:"):
        return DiscardSink()
    raise ConfigError(f"unknown sink {spec!r}: use jsonl:PATH (or - for stdout)")
