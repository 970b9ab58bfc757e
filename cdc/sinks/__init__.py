"""Where events go: the ``Sink`` protocol and its implementations.

A sink makes a batch of envelopes durable and only then returns; the watcher moves the
checkpoint afterwards (or, for the Postgres outbox, in the same transaction).
"""

from __future__ import annotations

from .base import Batch, Sink
from .factory import open_sink

__all__ = ["Batch", "Sink", "open_sink"]
