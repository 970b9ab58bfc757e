"""The sink contract: :class:`Sink` with its optional abilities, and what every sink shares.

Shared: the :class:`Batch` a sink is handed, :class:`PlainSink` (the defaults of a sink without
the optional abilities), the one-line refusal of an unknown ``--sink`` option, and the size check
that turns an event too big for its sink into a dead letter instead of a write that can never
succeed (:func:`take_oversized`). The factory that turns ``--sink`` text into a sink is
:mod:`cdc.sinks.factory` (it imports every sink; every sink imports this module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from catalog.envelope import Envelope, envelopes_json

from ..errors import ConfigError

if TYPE_CHECKING:
    import psycopg


@dataclass
class Batch:
    """Events handed to a sink in one call, in commit order: one or more whole transactions, or
    a chunk of a huge one (the checkpoint moves past whole transactions only, cdc/batch.py)."""

    envelopes: list[Envelope] = field(default_factory=list)
    end_lsn: int = 0  # end LSN of the last transaction in the batch
    transactions: int = 0
    _json: list[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    def json(self) -> list[bytes]:
        """Each envelope's byte-stable JSON, serialised once per batch: the size check and the
        sink (and every retry of it) share the same bytes."""
        if self._json is None or len(self._json) != len(self.envelopes):
            self._json = envelopes_json(self.envelopes)
        return self._json


class StoreWriter(Protocol):
    """A sink's same-transaction ability (the Postgres outbox): its events commit in the
    transaction that also writes the watcher's own tables and moves the checkpoint."""

    @property
    def store_dsn(self) -> str | None:
        """The database of the watcher's own tables (they commit with the events); None: the
        watched database."""
        ...

    def prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Create the sink's tables on the watcher's store connection, at start (idempotent)."""
        ...

    def write_in(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        """Write ``batch`` inside the caller's open transaction; the caller commits. Called once
        per chunk of a batch, all chunks in the same transaction."""
        ...


class Sink(Protocol):
    """Where events go.

    Two optional abilities are typed members, so that a wrapper (retries, metrics) forwards
    them and mypy checks it does:

    * :meth:`store_writer` — the same-transaction checkpoint. A sink that returns a
      :class:`StoreWriter` has every batch written by its ``write_in`` inside the checkpoint's
      transaction, never by ``write`` (exactly once); None (the default of :class:`PlainSink`)
      means ``write`` makes the batch durable and the checkpoint commits after it.
    * :attr:`keepalive` — set by the watcher; a sink calls it while it waits (between retries),
      so the replication connection goes on reporting its position.
    """

    name: str
    keepalive: Callable[[], None] | None

    def write(self, batch: Batch) -> None:
        """Make every envelope of ``batch`` durable before returning; raise on failure.
        A batch may come in several chunks: each call is durable on its own."""
        ...

    def max_event_bytes(self) -> int:
        """The largest envelope (its JSON, :meth:`Batch.json`) this sink takes. The watcher
        makes a larger one a dead letter before ``write``, so ``write`` never sees it."""
        ...

    def store_writer(self) -> StoreWriter | None:
        """The same-transaction ability, or None."""
        ...

    def close(self) -> None: ...


class PlainSink:
    """The defaults of a sink with neither optional ability: it never waits and writes
    outside the checkpoint's transaction. Sinks inherit it; :class:`Sink` is the contract."""

    keepalive: Callable[[], None] | None = None

    def store_writer(self) -> StoreWriter | None:
        return None


def unknown_option(kind: str, option: str) -> ConfigError:
    """The refusal of an option a sink does not take (its name only: values may be secret)."""
    return ConfigError(
        f"--sink {kind}: unknown option {option!r}",
        hint=f"see docs/sinks.md for the options of the {kind} sink (every sink takes max_event_bytes)",
    )


def take_oversized(batch: Batch, sink: Sink) -> list[tuple[Envelope, str]]:
    """Take out of ``batch`` every envelope whose JSON is larger than ``sink`` takes, with the
    reason, in order; the batch keeps the rest (and their serialised JSON) for ``write``."""
    if not batch.envelopes:
        return []  # no question to the sink (NATS would connect) while there is nothing to send
    cap = sink.max_event_bytes()
    bodies = batch.json()
    if max(map(len, bodies)) <= cap:
        return []
    kept: list[Envelope] = []
    kept_json: list[bytes] = []
    taken: list[tuple[Envelope, str]] = []
    for env, body in zip(batch.envelopes, bodies, strict=True):
        if len(body) > cap:
            taken.append(
                (env, f"envelope is {len(body):,} bytes, over the {cap:,}-byte cap of sink {sink.name}")
            )
        else:
            kept.append(env)
            kept_json.append(body)
    batch.envelopes = kept
    batch._json = kept_json
    return taken
