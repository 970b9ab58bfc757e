"""JSON lines (a file or stdout): one envelope per line, fsynced before the checkpoint moves.

At-least-once: a crash after the write and before the checkpoint writes the same events
again on restart, with the same ids and keys, so a reader can de-duplicate by key.
"""

from __future__ import annotations

import os
import sys
from typing import IO

from catalog.envelope import envelopes_json

from .base import Batch


class JsonLinesSink:
    name = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = path
        self._out: IO[bytes]
        if path == "-":
            self._out = sys.stdout.buffer
            self._owned = False
        else:
            self._out = open(path, "ab")  # noqa: SIM115 - kept open for the sink's life
            self._owned = True

    def write(self, batch: Batch) -> None:
        if not batch.envelopes:
            return
        self._out.write(b"\n".join(envelopes_json(batch.envelopes)) + b"\n")
        self._out.flush()
        if self._owned:
            os.fsync(self._out.fileno())

    def close(self) -> None:
        if self._owned:
            self._out.close()
