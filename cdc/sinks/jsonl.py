"""JSON lines (a file, a FIFO or stdout): one envelope per line, fsynced before the checkpoint moves.

At-least-once: a crash after the write and before the checkpoint writes the same events
again on restart, with the same ids and keys, so a reader can de-duplicate by key.

Only a regular file is fsynced: a FIFO, a character device (``/dev/null``, a terminal) or a
socket has nothing to make durable, and ``fsync`` refuses them (EINVAL); they are flushed.
A path that cannot be opened for appending (empty, missing directory, no permission) is a
configuration error at start, not a failure of the first write.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import IO

from ..config import DEFAULT_MAX_EVENT_BYTES
from ..errors import CdcError, ConfigError
from .base import Batch, PlainSink


class JsonLinesWriteFailed(CdcError):
    """Appending a batch failed (disk full, I/O error, the reader of a FIFO went away)."""

    hint = "fix the file system or the reader, then start `cdc watch` again (the checkpoint did not move)"
    retryable = True


class JsonLinesSink(PlainSink):
    name = "jsonl"

    def __init__(self, path: str, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.path = path
        self._max_event_bytes = max_event_bytes
        self._out: IO[bytes]
        if path == "-":
            self._out = sys.stdout.buffer
            self._owned = False
            self._fsync = False
            return
        if not path:
            raise ConfigError(
                "--sink jsonl: no file given", hint="write jsonl:PATH, or jsonl:- (or -) for stdout"
            )
        try:
            # Opening a FIFO waits here for its reader, as any writer of a FIFO does.
            self._out = open(path, "ab")  # noqa: SIM115 - kept open for the sink's life
        except OSError as exc:
            raise ConfigError(
                f"--sink jsonl: cannot open {path} for appending ({exc.strerror or type(exc).__name__})",
                hint="give a file in an existing directory this user can write to, or jsonl:- for stdout",
            ) from exc
        self._owned = True
        self._fsync = stat.S_ISREG(os.fstat(self._out.fileno()).st_mode)

    def write(self, batch: Batch) -> None:
        if not batch.envelopes:
            return
        try:
            self._out.write(b"\n".join(batch.json()) + b"\n")
            self._out.flush()
            if self._fsync:
                os.fsync(self._out.fileno())
        except OSError as exc:
            raise JsonLinesWriteFailed(
                f"jsonl sink: cannot append to {self.path} ({exc.strerror or type(exc).__name__})"
            ) from exc

    def max_event_bytes(self) -> int:
        return self._max_event_bytes

    def close(self) -> None:
        if self._owned:
            self._out.close()
