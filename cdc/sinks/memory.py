"""In-memory sinks: one that keeps what it was given (tests) and one that discards (benchmarks)."""

from __future__ import annotations

from catalog.envelope import Envelope

from ..config import DEFAULT_MAX_EVENT_BYTES
from .base import Batch, PlainSink


class MemorySink(PlainSink):
    name = "memory"

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.envelopes: list[Envelope] = []
        self.batches = 0
        self._max_event_bytes = max_event_bytes

    def write(self, batch: Batch) -> None:
        self.envelopes.extend(batch.envelopes)
        self.batches += 1

    def max_event_bytes(self) -> int:
        return self._max_event_bytes

    def close(self) -> None:
        pass


class DiscardSink(PlainSink):
    """Serialises every envelope (the work a real sink would do) and keeps nothing."""

    name = "discard"

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.count = 0
        self.bytes = 0
        self._max_event_bytes = max_event_bytes

    def write(self, batch: Batch) -> None:
        self.bytes += sum(map(len, batch.json()))
        self.count += len(batch.envelopes)

    def max_event_bytes(self) -> int:
        return self._max_event_bytes

    def close(self) -> None:
        pass
