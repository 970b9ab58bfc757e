"""Named crash points for reliability tests: ``CDC_FAULT=<point>:<n>`` kills the process
with SIGKILL the n-th time it reaches ``<point>`` (no cleanup, like a power cut).

Points: ``tail.after_print`` (a transaction's lines are flushed, not yet acknowledged);
``watch.after_sink`` (a batch is durable in a non-Postgres sink, the checkpoint not yet
written); ``watch.after_checkpoint`` (checkpoint committed, the server not yet told);
``outbox.after_insert`` (outbox rows inserted inside the checkpoint transaction, not committed).
Unset in production, where :func:`reached` is a dictionary lookup that finds nothing.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("CDC_FAULT", "")
_POINT, _, _COUNT = _SPEC.partition(":")
_remaining = int(_COUNT) if _COUNT.isdigit() else 1


def reached(point: str) -> None:
    global _remaining
    if _POINT and point == _POINT:
        _remaining -= 1
        if _remaining <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
