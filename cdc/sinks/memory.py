"""In-memory sinks: one that keeps what it was given (tests) and one that discards (benchmarks)."""

from __future__ import annotations

from catalog.envelope import Envelope, envelopes_json

from .base import Batch


class MemorySink:
    name = "memory"

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.batches = 0

    def write(self, batch: Batch) -> None:
        self.envelopes.extend(batch.envelopes)
        self.batches += 1

    def close(self) -> None:
        pass


class DiscardSink:
    """Serialises every envelope (the work a real sink would do) and keeps nothing."""

    name = "discard"

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    def write(self, batch: Batch) -> None:
        self.bytes += sum(map(len, envelopes_json(batch.envelopes)))
        self.count += len(batch.envelopes)

    def close(self) -> None:
        pass
